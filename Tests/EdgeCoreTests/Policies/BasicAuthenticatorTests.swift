@testable import EdgeCore
import Foundation
import Testing

@Suite("Basic auth: htpasswd reloads")
struct BasicAuthenticatorTests {
    /// A well-formed bcrypt hash (cost 4, so the dummy hash made at start is cheap); its value is never checked here.
    static let hash = "$2b$04$" + String(repeating: "a", count: 53)

    /// A fresh htpasswd file with `users`, and a cleanup.
    func makeFile(_ users: [String]) throws -> (path: String, remove: () -> Void) {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("edge-htpasswd-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let path = folder + "/htpasswd"
        try write(users, to: path)
        return (path, { try? FileManager.default.removeItem(atPath: folder) })
    }

    func write(_ users: [String], to path: String, extra: String = "") throws {
        try Data((users.map { "\($0):\(Self.hash)\n" }.joined() + extra).utf8).write(to: URL(fileURLWithPath: path))
    }

    @Test("a file caught half-written is not taken: a change is read once it has held still for one check")
    func halfWrittenFileIsNotTaken() throws {
        let (path, remove) = try makeFile(["alice", "bob"])
        defer { remove() }
        let authenticator = try BasicAuthenticator(realm: "r", path: path)
        #expect(authenticator.userCount == 2)
        // The watcher looks while a writer has put down only the first line (a valid file on its own).
        try write(["alice"], to: path)
        #expect(try authenticator.reloadIfChanged() == nil)
        #expect(authenticator.userCount == 2, "bob was dropped by a half-written file")
        // The writer finishes; the next check sees another version and waits for it to hold still.
        try write(["alice", "bob", "carol"], to: path)
        #expect(try authenticator.reloadIfChanged() == nil)
        #expect(authenticator.userCount == 2)
        #expect(try authenticator.reloadIfChanged() == 3)
        #expect(authenticator.userCount == 3)
        #expect(try authenticator.reloadIfChanged() == nil)
    }

    @Test("a broken file keeps the previous users and is reported once, until it changes again")
    func brokenFileKeepsUsers() throws {
        let (path, remove) = try makeFile(["alice", "bob"])
        defer { remove() }
        let authenticator = try BasicAuthenticator(realm: "r", path: path)
        try write(["alice"], to: path, extra: "bob:$2b$04$cut-short")
        #expect(try authenticator.reloadIfChanged() == nil)
        #expect(throws: BasicAuthenticator.FileError.self) { try authenticator.reloadIfChanged() }
        #expect(authenticator.userCount == 2)
        #expect(try authenticator.reloadIfChanged() == nil)
        #expect(try authenticator.reloadIfChanged() == nil)
        try write(["alice"], to: path)
        #expect(try authenticator.reloadIfChanged() == nil)
        #expect(try authenticator.reloadIfChanged() == 1)
    }

    @Test("a file that disappears keeps the previous users; it is read again when it is back")
    func missingFile() throws {
        let (path, remove) = try makeFile(["alice", "bob"])
        defer { remove() }
        let authenticator = try BasicAuthenticator(realm: "r", path: path)
        try FileManager.default.removeItem(atPath: path)
        #expect(try authenticator.reloadIfChanged() == nil)
        #expect(throws: BasicAuthenticator.FileError.self) { try authenticator.reloadIfChanged() }
        #expect(try authenticator.reloadIfChanged() == nil)
        #expect(authenticator.userCount == 2)
        try write(["carol"], to: path)
        #expect(try authenticator.reloadIfChanged() == nil)
        #expect(try authenticator.reloadIfChanged() == 1)
    }

    @Test("reload() (SIGHUP) reads at once, changed or not, and still refuses a broken file")
    func reloadNow() throws {
        let (path, remove) = try makeFile(["alice", "bob"])
        defer { remove() }
        let authenticator = try BasicAuthenticator(realm: "r", path: path)
        #expect(try authenticator.reload() == 2)
        try write(["carol"], to: path)
        #expect(try authenticator.reload() == 1)
        try write([], to: path, extra: "plain:text\n")
        #expect(throws: BasicAuthenticator.FileError.self) { try authenticator.reload() }
        #expect(authenticator.userCount == 1)
    }

    @Test("a file rewritten with the same size and time is still seen to change when it is replaced")
    func replacedByRename() throws {
        let (path, remove) = try makeFile(["alice"])
        defer { remove() }
        let authenticator = try BasicAuthenticator(realm: "r", path: path)
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        let replacement = path + ".new"
        try write(["bobby"], to: replacement)
        try FileManager.default.setAttributes([.modificationDate: attributes[.modificationDate]!], ofItemAtPath: replacement)
        #expect(rename(replacement, path) == 0)
        #expect(try authenticator.reloadIfChanged() == nil)
        #expect(try authenticator.reloadIfChanged() == 1)
    }
}
