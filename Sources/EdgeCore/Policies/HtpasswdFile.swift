#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// An htpasswd file of bcrypt hashes (`htpasswd -B`), read in one consistent snapshot and accepted only
/// when every line is valid.
///
/// The file is read through one descriptor, with `fstat` before and after: a file that changed while it was
/// read (a writer still at work) is refused rather than taken half-written. ``Version`` tells a reloader
/// whether the file on disk is still the one it read.
struct HtpasswdFile: Sendable {
    /// What `stat` says about a file: enough to tell that it was rewritten, appended to or replaced by a rename.
    struct Version: Sendable, Equatable {
        var device: UInt64
        var inode: UInt64
        var size: Int
        var modifiedNanoseconds: Int

        /// The version of a file that cannot be looked at (missing, no permission).
        static let unavailable = Version(device: 0, inode: 0, size: -1, modifiedNanoseconds: 0)

        /// The version of the file at `path` now, or ``unavailable``.
        static func current(of path: String) -> Version {
            var info = stat()
            return stat(path, &info) == 0 ? Version(info) : .unavailable
        }

        init(_ info: stat) {
            self.device = UInt64(info.st_dev)
            self.inode = UInt64(info.st_ino)
            self.size = Int(info.st_size)
            self.modifiedNanoseconds = Int(info.st_mtim.tv_sec) * 1_000_000_000 + Int(info.st_mtim.tv_nsec)
        }

        private init(device: UInt64, inode: UInt64, size: Int, modifiedNanoseconds: Int) {
            self.device = device
            self.inode = inode
            self.size = size
            self.modifiedNanoseconds = modifiedNanoseconds
        }
    }

    /// User name → bcrypt hash.
    var users: [String: String]
    /// The version that was read.
    var version: Version

    /// Reads and validates the file at `path`.
    /// - Throws: ``BasicAuthenticator/FileError`` when it cannot be read, changed while being read, is not
    ///   UTF-8, or has a line that is not `user:bcrypt-hash` (comments and blank lines aside).
    static func load(_ path: String) throws(BasicAuthenticator.FileError) -> HtpasswdFile {
        let (bytes, version) = try snapshot(path)
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw .init(description: "\(path): the htpasswd file is not UTF-8 text", version: version)
        }
        var users: [String: String] = [:]
        for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = rawLine.trimming(" \t\r")
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let colon = line.firstIndex(of: ":"), colon != line.startIndex else {
                throw .init(description: "\(path):\(index + 1): expected user:hash", version: version)
            }
            let hash = String(line[line.index(after: colon)...])
            guard ["$2a$", "$2b$", "$2y$"].contains(where: hash.hasPrefix), hash.utf8.count == 60 else {
                throw .init(
                    description: "\(path):\(index + 1): only bcrypt hashes are accepted (create them with htpasswd -B)", version: version
                )
            }
            // `$2b$NN$`: the cost (log2 of the rounds) bcrypt allows is 04 to 31.
            let costText = hash.dropFirst(4).prefix(3)
            guard costText.count == 3, costText.last == "$", costText.dropLast().allSatisfy({ $0.isASCII && $0.isNumber }),
                let cost = Int(costText.dropLast()), (4...31).contains(cost)
            else {
                throw .init(description: "\(path):\(index + 1): the bcrypt cost (the number after $2b$) must be 04 to 31", version: version)
            }
            users[String(line[..<colon])] = hash
        }
        return HtpasswdFile(users: users, version: version)
    }

    /// The whole file and its version, from one descriptor; refused when the file changed while it was read.
    private static func snapshot(_ path: String) throws(BasicAuthenticator.FileError) -> ([UInt8], Version) {
        func unreadable() -> BasicAuthenticator.FileError {
            .init(description: "\(path): cannot read the htpasswd file: \(systemErrorText(errno))", version: .current(of: path))
        }
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw unreadable() }
        defer { close(descriptor) }
        var before = stat()
        guard fstat(descriptor, &before) == 0 else { throw unreadable() }
        let version = Version(before)
        guard (before.st_mode & S_IFMT) == S_IFREG else {
            throw .init(description: "\(path): the htpasswd file is not a regular file", version: version)
        }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            if count < 0, errno == EINTR { continue }
            guard count >= 0 else { throw unreadable() }
            if count == 0 { break }
            bytes += chunk[..<count]
        }
        var after = stat()
        guard fstat(descriptor, &after) == 0 else { throw unreadable() }
        guard Version(after) == version, bytes.count == version.size else {
            throw .init(description: "\(path): the htpasswd file changed while it was read (still being written?)", version: nil)
        }
        return (bytes, version)
    }
}
