import Crypto
import Foundation
public import NIOCore
import Synchronization

/// HTTP Basic authentication against an htpasswd file, as nginx's `auth_basic_user_file`.
///
/// - The hash formats Apache's tools write are accepted (``PasswordHash``): bcrypt (`$2a$`, `$2b$`, `$2y$`),
///   `$apr1$`, `{SHA}` and `{SSHA}`; the weak ones are named in ``warnings`` for a warning at load. A line in any
///   other format refuses the file, naming the line.
/// - Checks run on the ``PasswordCheckPool``'s own threads, never on an event loop nor on the pool that opens
///   files; when its queue is full the request is answered at once (``Decision/busy``). Verdicts are remembered
///   under a SHA-256 of the header (never the password itself), so a returning client costs one hash and one
///   lookup.
/// - Every check runs one verification per kind of hash in the file (format and cost): the named user's own for
///   its kind, a dummy for each other kind (all of them for an unknown user), so that response time reveals
///   neither which users exist nor which kind of hash a user has. Digests are compared in constant time.
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
        /// A check must run; the future tells whether the credentials are valid.
        case pending(EventLoopFuture<Bool>)
        /// The password-check queue is full: answer 503 with `Retry-After` without checking.
        case busy
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
        var users: [[UInt8]: PasswordHash]
        /// One random password hashed in each kind of hash in ``users`` (format and cost): every check runs one
        /// verification per kind — the user's own hash for its kind, the dummy for every other — so that a check
        /// costs the same whoever is named, known or not, whatever the mix of formats in the file.
        var dummies: [String: PasswordHash]
        /// The weak formats in the file, one line each.
        var warnings: [String]
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
    private let checks: PasswordCheckPool
    private static let maxRemembered = 10_000

    /// Loads the htpasswd file at `path`; checks run on `checks`.
    /// - Throws: ``FileError`` when the file is unreadable or has a line that is not `user:hash` in a known format.
    init(realm: String, path: String, checks: PasswordCheckPool = .standalone) throws {
        self.challenge = "Basic realm=\"\(realm.replacingOccurrences(of: "\"", with: "'"))\", charset=\"UTF-8\""
        self.path = path
        self.checks = checks
        let loaded = try HtpasswdFile.load(path)
        self.table = Mutex(Self.table(loaded, generation: 0))
    }

    private static func table(_ loaded: HtpasswdFile, generation: Int) -> Table {
        var dummies: [String: PasswordHash] = [:]
        for hash in loaded.users.values where dummies[hash.kind] == nil { dummies[hash.kind] = hash.dummy() }
        if dummies.isEmpty { dummies["bcrypt-10"] = PasswordHash.bcrypt(hash: "", cost: 10).dummy() }
        return Table(users: loaded.users, dummies: dummies, warnings: loaded.warnings, version: loaded.version, generation: generation)
    }

    /// The weak hash formats in the file in force, one line each (`path:line: user "x" has …`).
    public var warnings: [String] { table.withLock { $0.warnings } }

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
        var next = Self.table(loaded, generation: 0)  // built outside the lock: it hashes the dummy passwords
        table.withLock { table in
            next.generation = table.generation + 1
            table = next
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
        let (hash, dummies) = table.withLock { ($0.users[user], $0.dummies) }
        let future = checks.submit(on: eventLoop) {
            var valid = false
            for (kind, dummy) in dummies {
                if let hash, hash.kind == kind {
                    valid = hash.verify(password)
                } else {
                    _ = dummy.verify(password)
                }
            }
            return valid
        }
        guard let future else { return .busy }
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

    /// Splits `Basic base64(user:password)` at the first `:` of the decoded bytes. The user name must be UTF-8
    /// (it is looked up by its bytes); the password is returned as the bytes the client sent.
    static func credentials(_ header: Substring) -> (user: [UInt8], password: [UInt8])? {
        let bytes = header.utf8
        guard let space = bytes.firstIndex(where: { $0 == UInt8(ascii: " ") }), bytes.distance(from: bytes.startIndex, to: space) == 5,
            bytes[..<space].map(\.asciiLowercased).elementsEqual("basic".utf8)
        else { return nil }
        guard let decoded = Data(base64Encoded: Data(bytes[space...].trimming())) else { return nil }
        let text = Array(decoded)
        guard let colon = text.firstIndex(of: UInt8(ascii: ":")), String(validating: text[..<colon], as: UTF8.self) != nil else {
            return nil
        }
        return (Array(text[..<colon]), Array(text[(colon + 1)...]))
    }

    /// What is wrong with the htpasswd file at `path` (unreadable, or lines that are not `user:hash` in a known
    /// format, each named), or `nil`; for the configuration checks, which run before any authenticator exists.
    static func fileProblem(_ path: String) -> String? {
        do {
            _ = try HtpasswdFile.load(path)
            return nil
        } catch {
            return "\(error)"
        }
    }
}
