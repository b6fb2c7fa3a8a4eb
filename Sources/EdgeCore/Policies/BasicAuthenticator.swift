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
/// - ``reloadIfChanged()`` re-reads the file when its modification time or size changes.
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
    }

    private struct Table: Sendable {
        var users: [String: String]
        var modified: Date?
        var size: Int
        /// Bumped on every reload; a verdict counts only for the generation it was computed against.
        var generation = 0
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
        let loaded = try Self.load(path)
        self.table = Mutex(loaded)
        let cost = loaded.users.values.first.flatMap { Int($0.dropFirst(4).prefix(2)) } ?? 10
        self.dummyHash = Bcrypt.hash(UUID().uuidString, cost: UInt8(clamping: cost))
    }

    /// Number of users in the current table.
    public var userCount: Int { table.withLock { $0.users.count } }

    /// Re-reads the file if it changed. Returns the new user count, or `nil` when nothing changed.
    /// - Throws: ``FileError`` when the changed file is invalid; the previous table stays in force.
    @discardableResult
    public func reloadIfChanged() throws -> Int? {
        let attributes = try? FileManager.default.attributesOfItem(atPath: path)
        let modified = attributes?[.modificationDate] as? Date
        let size = (attributes?[.size] as? NSNumber)?.intValue ?? -1
        let unchanged = table.withLock { $0.modified == modified && $0.size == size }
        if unchanged { return nil }
        return try reload()
    }

    /// Re-reads the file whether or not it changed (SIGHUP). Returns the new user count.
    /// - Throws: ``FileError`` when the file is invalid; the previous table stays in force.
    @discardableResult
    public func reload() throws -> Int {
        var loaded = try Self.load(path)
        table.withLock { current in
            loaded.generation = current.generation + 1
            current = loaded
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
            _ = try load(path)
            return nil
        } catch {
            return "\(error)"
        }
    }

    private static func load(_ path: String) throws -> Table {
        let attributes = try? FileManager.default.attributesOfItem(atPath: path)
        guard let data = FileManager.default.contents(atPath: path) else {
            let reason = FileManager.default.fileExists(atPath: path) ? "not a readable file" : "no such file"
            throw FileError(description: "\(path): cannot read the htpasswd file: \(reason)")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw FileError(description: "\(path): the htpasswd file is not UTF-8 text")
        }
        var users: [String: String] = [:]
        for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = rawLine.trimmingCharacters(in: .whitespacesAndNewlines)
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let colon = line.firstIndex(of: ":"), colon != line.startIndex else {
                throw FileError(description: "\(path):\(index + 1): expected user:hash")
            }
            let hash = String(line[line.index(after: colon)...])
            guard ["$2a$", "$2b$", "$2y$"].contains(where: hash.hasPrefix), hash.count == 60 else {
                throw FileError(description: "\(path):\(index + 1): only bcrypt hashes are accepted (create them with htpasswd -B)")
            }
            users[String(line[..<colon])] = hash
        }
        return Table(
            users: users,
            modified: attributes?[.modificationDate] as? Date,
            size: (attributes?[.size] as? NSNumber)?.intValue ?? -1
        )
    }
}
