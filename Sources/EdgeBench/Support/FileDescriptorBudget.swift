#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Makes sure the process may open enough sockets: raises the soft `RLIMIT_NOFILE` to the hard limit,
/// or says why the run cannot have the connections it asks for.
enum FileDescriptorBudget {
    /// Descriptors needed besides the connections (event loops, stdio, the resolver, …).
    static let overhead = 64

    /// Ensures `connections` sockets fit; returns the limit now in force.
    @discardableResult
    static func ensure(connections: Int) throws(BenchError) -> Int {
        let needed = connections + overhead
        var limits = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limits) == 0 else { return needed }
        if limits.rlim_cur < limits.rlim_max && limits.rlim_cur < rlim_t(needed) {
            var raised = limits
            raised.rlim_cur = limits.rlim_max
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { limits = raised }
        }
        let current = Int(clamping: limits.rlim_cur)
        guard current >= needed else {
            throw .fileDescriptors(
                "--connections \(connections) needs about \(needed) file descriptors, but this process may open only \(current) "
                    + "(hard limit \(Int(clamping: limits.rlim_max))). Raise it first, e.g. `ulimit -n \(needed)` "
                    + "(beyond the hard limit that takes root or /etc/security/limits.conf), or use fewer connections."
            )
        }
        return current
    }
}
