#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// An htpasswd file (bcrypt, `$apr1$`, `{SHA}` or `{SSHA}` hashes: ``PasswordHash``), read in one consistent
/// snapshot and accepted only when every line is valid.
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

    /// User name (its bytes) → password hash.
    var users: [[UInt8]: PasswordHash]
    /// The version that was read.
    var version: Version
    /// One line per weak format in the file (`path:line: user "x" has an $apr1$ (MD5-crypt) hash …`), for a
    /// warning at load.
    var warnings: [String] = []

    /// Reads and validates the file at `path`: lines `user:hash` in the formats of ``PasswordHash``, blank lines
    /// and `#` comments; LF or CRLF line ends. Parsed as bytes.
    /// - Throws: ``BasicAuthenticator/FileError`` when it cannot be read, changed while being read, or has lines
    ///   whose hash cannot be verified (every such line is named, up to ten).
    static func load(_ path: String) throws(BasicAuthenticator.FileError) -> HtpasswdFile {
        let (bytes, version) = try snapshot(path)
        var users: [[UInt8]: PasswordHash] = [:]
        var problems: [String] = []
        var weak: [Int: (user: String, format: String)] = [:]
        for (index, rawLine) in bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).enumerated() {
            let line = rawLine.trimming(" \t\r")
            if line.isEmpty || line.first == UInt8(ascii: "#") { continue }
            let number = index + 1
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")), colon != line.startIndex else {
                problems.append("\(path):\(number): expected user:hash")
                continue
            }
            let user = Array(line[..<colon])
            guard String(validating: user, as: UTF8.self) != nil, let hashText = String(validating: line[(colon + 1)...], as: UTF8.self) else {
                problems.append("\(path):\(number): the line is not UTF-8 text")
                continue
            }
            switch PasswordHash.parse(hashText[...]) {
            case .success(let hash):
                users[user] = hash
                if hash.isWeak { weak[number] = (String(decoding: user, as: UTF8.self), hash.formatName) }
            case .failure(let problem):
                problems.append("\(path):\(number): \(problem)")
            }
        }
        if !problems.isEmpty {
            let shown = problems.prefix(10).joined(separator: "; ")
            let more = problems.count > 10 ? "; and \(problems.count - 10) more lines" : ""
            throw .init(description: shown + more, version: version)
        }
        let warnings = weak.keys.sorted().map { number in
            "\(path):\(number): user \"\(weak[number]!.user)\" has a \(weak[number]!.format) hash, which is fast to guess "
                + "from a stolen file; prefer bcrypt (htpasswd -B)"
        }
        return HtpasswdFile(users: users, version: version, warnings: warnings)
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
