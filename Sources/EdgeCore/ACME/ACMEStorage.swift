#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// The files ``ACMEManager`` keeps under the state folder, per CA:
///
///     <state_dir>/acme/<directory-host>/account.key                      (0600)
///     <state_dir>/acme/<directory-host>/certificates/<id>/cert.pem       (chain, leaf first)
///     <state_dir>/acme/<directory-host>/certificates/<id>/key.pem        (0600)
///
/// Folders are 0700: they hold private keys. `<directory-host>` is the directory URL's host, with `_<port>`
/// when the URL names a port, so that a staging and a production CA (or two Pebbles) never share an account
/// key or a certificate.
struct ACMEStorage: Sendable {
    let root: String

    init(stateDirectory: String, directoryURL: URL) {
        var host = directoryURL.host ?? "ca"
        if let port = directoryURL.port { host += "_\(port)" }
        root = (stateDirectory as NSString).appendingPathComponent("acme/" + Self.safeComponent(host))
    }

    var accountKeyPath: String { (root as NSString).appendingPathComponent("account.key") }

    func certificateFolder(id: String) -> String {
        (root as NSString).appendingPathComponent("certificates/" + Self.safeComponent(id))
    }

    func certificatePath(id: String) -> String { (certificateFolder(id: id) as NSString).appendingPathComponent("cert.pem") }
    func privateKeyPath(id: String) -> String { (certificateFolder(id: id) as NSString).appendingPathComponent("key.pem") }

    /// `text` with anything but letters, digits, `.`, `-` and `_` replaced by `_` (a wildcard's `*`, a `/`),
    /// and never `.` or `..`, so that an id or host always names one folder inside ours.
    static func safeComponent(_ text: String) -> String {
        let safe = String(text.unicodeScalars.map { scalar -> Character in
            switch scalar {
            case "a"..."z", "A"..."Z", "0"..."9", ".", "-", "_": return Character(scalar)
            default: return "_"
            }
        })
        if safe.isEmpty || safe == "." || safe == ".." { return "_" + safe }
        return safe
    }

    // MARK: Account key

    /// The account key, created on first use. A key file that exists but cannot be read is an error, never
    /// replaced: a new key would be a new account, losing the old one's orders and rate-limit history.
    func loadOrCreateAccountKey() throws -> (key: ACMEAccountKey, created: Bool) {
        if FileManager.default.fileExists(atPath: accountKeyPath) {
            let text = try String(contentsOfFile: accountKeyPath, encoding: .utf8)
            return (try ACMEAccountKey(pemRepresentation: text), false)
        }
        try makeFolder(root)
        let key = ACMEAccountKey()
        try Self.writeAtomically(Array((key.pemRepresentation + "\n").utf8), to: accountKeyPath, mode: 0o600)
        return (key, true)
    }

    // MARK: Certificates

    func loadCertificate(id: String) -> (chainPEM: String, keyPEM: String)? {
        guard let chain = try? String(contentsOfFile: certificatePath(id: id), encoding: .utf8),
            let key = try? String(contentsOfFile: privateKeyPath(id: id), encoding: .utf8)
        else { return nil }
        return (chain, key)
    }

    /// Writes the key, then the chain, each through a temporary file and a rename, so that a reader never sees
    /// half a file. A crash between the two renames leaves a key that does not match the chain, which the
    /// next start finds (``ACMEManager`` checks the pair) and orders anew.
    func storeCertificate(id: String, chainPEM: String, keyPEM: String) throws {
        try makeFolder(certificateFolder(id: id))
        try Self.writeAtomically(Array(keyPEM.utf8), to: privateKeyPath(id: id), mode: 0o600)
        try Self.writeAtomically(Array(chainPEM.utf8), to: certificatePath(id: id), mode: 0o644)
    }

    /// Moves a revoked pair aside (kept for the record, named by serial) so that it is never loaded again.
    func retireCertificate(id: String, serial: String) throws {
        for (path, suffix) in [(certificatePath(id: id), "cert.pem"), (privateKeyPath(id: id), "key.pem")] {
            let target = (certificateFolder(id: id) as NSString).appendingPathComponent("revoked-\(serial)-\(suffix)")
            guard rename(path, target) == 0 else { throw ACMEStorageError(path: path, operation: "rename", code: errno) }
        }
    }

    /// Creates `path` and its parents up to and including `<state_dir>/acme`, mode 0700.
    private func makeFolder(_ path: String) throws {
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        // createDirectory applies the mode to new folders only; ours are made private even if they existed.
        var folders = [(root as NSString).deletingLastPathComponent, root]
        if path != root { folders += [(path as NSString).deletingLastPathComponent, path] }
        for folder in folders { _ = chmod(folder, 0o700) }
    }

    /// Writes `bytes` to a new temporary file beside `path` (created with `mode`, so a key is never readable by
    /// others, even briefly), flushes it and renames it over `path`.
    static func writeAtomically(_ bytes: [UInt8], to path: String, mode: mode_t) throws {
        let temporary = path + ".tmp-\(UInt32.random(in: 0...UInt32.max))"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard descriptor >= 0 else { throw ACMEStorageError(path: temporary, operation: "create", code: errno) }
        var failure: ACMEStorageError?
        bytes.withUnsafeBytes { buffer in
            guard let base = buffer.baseAddress else { return }
            var offset = 0
            while offset < buffer.count {
                let written = write(descriptor, base + offset, buffer.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    failure = ACMEStorageError(path: temporary, operation: "write", code: errno)
                    return
                }
                offset += written
            }
        }
        if failure == nil, fsync(descriptor) != 0 { failure = ACMEStorageError(path: temporary, operation: "fsync", code: errno) }
        _ = close(descriptor)
        if failure == nil, rename(temporary, path) != 0 { failure = ACMEStorageError(path: path, operation: "rename", code: errno) }
        if let failure {
            _ = unlink(temporary)
            throw failure
        }
        // The rename itself is durable only once the folder is flushed.
        let folder = open((path as NSString).deletingLastPathComponent, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if folder >= 0 {
            _ = fsync(folder)
            _ = close(folder)
        }
    }
}

struct ACMEStorageError: Error, CustomStringConvertible {
    var path: String
    var operation: String
    var code: Int32

    var description: String { "\(operation) \(path): \(String(cString: strerror(code)))" }
}
