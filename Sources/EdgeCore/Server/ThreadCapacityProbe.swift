#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Checks, before SwiftNIO starts its threads, that the system lets the process start that many.
///
/// NIO stops the process with a trap when `pthread_create` fails, after a backtrace that can take half a
/// minute; a `threads` value beyond what the process's limits allow (memory for the stacks, a cgroup's
/// `pids.max`, `RLIMIT_NPROC`) would end that way. The probe starts the threads itself, each waiting on a
/// pipe until all have started or one could not, then ends them, so the failure becomes a start-up error that
/// names the setting.
enum ThreadCapacityProbe {
    /// Why the threads could not all be started.
    struct Failure: Error, Equatable {
        /// How many threads had started when one could not.
        var started: Int
        /// The `errno` value `pthread_create` returned.
        var code: Int32

        /// `strerror`'s text for ``code``.
        var reason: String { String(cString: strerror(code)) }
    }

    /// Starts `count` threads at once and ends them; returns why not if the system refused one.
    static func check(threads count: Int) -> Failure? {
        var ends: [Int32] = [0, 0]
        guard pipe(&ends) == 0 else { return nil }  // cannot probe: let NIO try
        let readEnd = ends[0]
        var threads: [pthread_t] = []
        threads.reserveCapacity(count)
        var failure: Failure?
        for _ in 0..<count {
            #if canImport(Darwin)
            var thread: pthread_t?
            #else
            var thread = pthread_t()
            #endif
            // The thread blocks reading the pipe until its write end closes. The descriptor travels as the
            // argument's address (plus one, so that it is never null).
            let argument = UnsafeMutableRawPointer(bitPattern: Int(readEnd) + 1)
            let result = pthread_create(&thread, nil, { argument in
                var byte: UInt8 = 0
                _ = read(Int32(Int(bitPattern: argument) - 1), &byte, 1)
                return nil
            }, argument)
            guard result == 0 else {
                failure = Failure(started: threads.count, code: result)
                break
            }
            #if canImport(Darwin)
            threads.append(thread!)
            #else
            threads.append(thread)
            #endif
        }
        close(ends[1])
        for thread in threads { pthread_join(thread, nil) }
        close(readEnd)
        return failure
    }
}
