import Crypto
import Foundation
import HummingbirdBcrypt
public import NIOCore
import NIOPosix
import Synchronization

/// HTTP Basic authentication against an htpasswd file of bcrypt hashes (`htpasswd -B`), as nginx's
/// `auth_basic_user_file`.
///
/// - Only bcrypt hashes are accepted; a file with plaintext, MD5 or SHA entries is refused with its line.
/// - bcrypt runs on NIO's thread pool, never on an event loop; verdicts are remembered under a SHA-256 of the
///   header (never the password itself) so a returning client costs one hash and one lookup.
/// - Unknown users are checked against a dummy hash, so response time does not reveal which users exist;
///   the comparison inside bcrypt is constant-time.
/// - ``reloadIfChanged()`` re-reads the file once a change has held still for one check (the watcher checks every
///   two seconds), so a file caught while it is being written is not taken half-written; ``reload()`` (SIGHUP)
///   reads it at once. Either way the file is read in one consistent snapshot and taken only when every line is
///   valid; otherwise the previous users stay and the error is reported once for that version of the file.
/// - Credentials are never logged.
public final class BasicAuthenticator: Sendable {
    /// The outcome of ``authenticate(_:on:)``.
    public enum Decision: Sendable {
        /// Valid credentials.
        case allowed
        /// Missing or wrong credentials: answer 401 with ``challenge``.
        case denied
        /// bcrypt must run; the future tells whether the credentials are valid.
        case pending(EventLoopFuture<Bool>)
    }

    /// A problem with the htpasswd file.
    public struct FileError: Error, CustomStringConvertible {
        /// What is wrong, with the path and line.
        public var description: String
        /// The version of the file the problem is with; `nil` when it is passing (the file changed while it was
        /// read), so that the same version is tried again once it holds still.
        var version: HtpasswdFile.Version?
    }

    private struct Table: Sendable {
        var users: [String: String]
        /// The version of the file the users were read from.
        var version: HtpasswdFile.Version
        /// Bumped on every reload; a verdict counts only for the generation it was computed against.
        var generation = 0
        /// A version that differs from ``version``, seen by the last check and not yet read: it is read when the
        /// next check finds the file still the same.
        var settling: HtpasswdFile.Version?
        /// The last version that could not be used, so its error is reported once, not at every check.
        var refused: HtpasswdFile.Version?
    }

    /// The `WWW-Authenticate` header value.
    public let challenge: String
    /// The htpasswd file.
    public let path: String
    private let table: Mutex<Table>
    private let verified = Mutex<[SHA256Digest: (generation: Int, valid: Bool)]>([:])
    private let dummyHash: String
    private static let maxRemembered = 10_000

    /// Loads the htpasswd file at `path`.
    /// - Throws: ``FileError`` when the file is unreadable or has a line that is not `user:bcrypt-hash`.
    public init(realm: String, path: String) throws {
        self.challenge = "Basic realm=\"\(realm.replacingOccurrences(of: "\"", with: "'"))\", charset=\"UTF-8\""
        self.path = path
        let loaded = try HtpasswdFile.load(path)
        self.table = Mutex(Table(users: loaded.users, version: loaded.version))
        let cost = loaded.users.values.first.flatMap { Int($0.dropFirst(4).prefix(2)) } ?? 10
        self.dummyHash = Bcrypt.hash(UUID().uuidString, cost: UInt8(clamping: cost))
    }

    /// Number of users in the current table.
    public var userCount: Int { table.withLock { $0.users.count } }

    /// Re-reads the file if it changed and the change has held still since the previous call: the first call that
    /// sees a new version only notes it, the next one reads it if the file is still that version. Returns the
    /// new user count, or `nil` when nothing was read.
    /// - Throws: ``FileError`` when the changed file cannot be used (once per version of the file); the previous
    ///   users stay in force.
    @discardableResult
    public func reloadIfChanged() throws -> Int? {
        let current = HtpasswdFile.Version.current(of: path)
        let ready = table.withLock { table in
            guard current != table.version, current != table.refused else {
                table.settling = nil
                return false
            }
            defer { table.settling = current }
            return table.settling == current
        }
        return ready ? try reload() : nil
    }

    /// Re-reads the file now, whether or not it changed (SIGHUP). Returns the new user count.
    /// - Throws: ``FileError`` when the file cannot be used (unreadable, changed while it was read, a line that
    ///   is not `user:bcrypt-hash`); the previous users stay in force.
    @discardableResult
    public func reload() throws -> Int {
        let loaded: HtpasswdFile
        do {
            loaded = try HtpasswdFile.load(path)
        } catch {
            if let version = error.version { table.withLock { $0.refused = version } }
            throw error
        }
        table.withLock { table in
            table = Table(users: loaded.users, version: loaded.version, generation: table.generation + 1)
        }
        verified.withLock { $0.removeAll() }
        return loaded.users.count
    }

    /// Checks an `Authorization` header value.
    ///
    /// Verdicts are remembered under a SHA-256 of the header value (never the credentials themselves), so a
    /// returning client costs one hash and one lookup. Each verdict is tied to the table generation it was
    /// computed against, so one that finishes after a reload is never trusted.
    public func authenticate(_ authorization: Substring?, on eventLoop: any EventLoop) -> Decision {
        guard let authorization else { return .denied }
        let key = SHA256.hash(data: Array(authorization.utf8))
        let generation = table.withLock { $0.generation }
        if let known = verified.withLock({ $0[key] }), known.generation == generation {
            return known.valid ? .allowed : .denied
        }
        guard let (user, password) = Self.credentials(authorization) else { return .denied }
        let hash = table.withLock { $0.users[user] }
        let knownUser = hash != nil
        let checkedHash = hash ?? dummyHash
        let future = NIOThreadPool.singleton.runIfActive(eventLoop: eventLoop) {
            Bcrypt.verify(password, hash: checkedHash) && knownUser
        }
        return .pending(
            future.map { valid in
                self.verified.withLock { cache in
                    if cache.count >= Self.maxRemembered { cache.removeAll() }
                    cache[key] = (generation, valid)
                }
                return valid
            }.recover { _ in false }
        )
    }

    /// Splits `Basic base64(user:password)`.
    static func credentials(_ header: Substring) -> (user: String, password: String)? {
        let parts = header.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2, parts[0].lowercased() == "basic",
            let data = Data(base64Encoded: String(parts[1].trimmingCharacters(in: .whitespaces))),
            let text = String(data: data, encoding: .utf8),
            let colon = text.firstIndex(of: ":")
        else { return nil }
        return (String(text[..<colon]), String(text[text.index(after: colon)...]))
    }

    /// What is wrong with the htpasswd file at `path` (unreadable, or a line that is not `user:bcrypt-hash`),
    /// or `nil`; for the configuration checks, which run before any authenticator exists.
    static func fileProblem(_ path: String) -> String? {
        do {
            _ = try HtpasswdFile.load(path)
            return nil
        } catch {
            return "\(error)"
        }
    }
}
