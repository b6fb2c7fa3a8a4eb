@testable import EdgeCore
import Foundation
import Testing

/// Hashes made by Apache's `htpasswd` (apache2-utils 2.4) and `openssl passwd`, the tools people use.
@Suite("htpasswd hash formats")
struct PasswordHashTests {
    static let vectors: [(hash: String, password: String)] = [
        ("$2y$04$JIWZUVs4uoE9En8uEzPkWefrmSpYC4yy7bmLsjW3KsjBh11.05m5y", "secret"),  // htpasswd -B -C 4
        ("$apr1$d1amzGO0$OGOunTz0EY1GxG1Vs6JvS1", "p@ss wörd"),  // htpasswd -m
        ("$apr1$abcdefgh$h9FWgUz3n9YxylKLlR5SQ/", "secret"),  // openssl passwd -apr1 -salt abcdefgh
        ("{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=", "secret"),  // htpasswd -s
        ("{SSHA}uJDd0BIdJ9Z7yDCZNWdgYeb33+cBAgME", "secret"),  // SHA-1 of "secret" + 01020304, then the salt
    ]

    @Test("each format verifies its password and refuses others", arguments: vectors)
    func verifies(hash: String, password: String) throws {
        let parsed = try PasswordHash.parse(hash[...]).get()
        #expect(parsed.verify(Array(password.utf8)))
        #expect(!parsed.verify(Array((password + "x").utf8)))
        #expect(!parsed.verify([]))
    }

    @Test("$2y$, $2a$ and $2b$ are one algorithm")
    func bcryptPrefixes() throws {
        let y = "$2y$04$JIWZUVs4uoE9En8uEzPkWefrmSpYC4yy7bmLsjW3KsjBh11.05m5y"
        for prefix in ["$2y$", "$2b$", "$2a$"] {
            let hash = try PasswordHash.parse((prefix + y.dropFirst(4))[...]).get()
            #expect(hash.verify(Array("secret".utf8)), "\(prefix)")
        }
    }

    @Test("a bcrypt password with a NUL byte is refused, not cut short at it")
    func nulInPassword() throws {
        let hash = try PasswordHash.parse("$2y$04$JIWZUVs4uoE9En8uEzPkWefrmSpYC4yy7bmLsjW3KsjBh11.05m5y"[...]).get()
        #expect(!hash.verify(Array("secret\u{0}anything".utf8)))
    }

    @Test("only bcrypt is strong; the dummy of a format is in that format and cost")
    func weakness() throws {
        for vector in Self.vectors {
            let hash = try PasswordHash.parse(vector.hash[...]).get()
            #expect(hash.isWeak == !vector.hash.hasPrefix("$2"))
            let dummy = hash.dummy()
            #expect(dummy.formatName == hash.formatName)
            #expect(dummy.kind == hash.kind)
            #expect(!dummy.verify(Array(vector.password.utf8)))
        }
    }

    @Test("malformed and unknown hashes are refused with a reason", arguments: [
        "plaintext", "$1$abc$def", "$2y$04$short", "$2y$99$" + String(repeating: "a", count: 53), "$apr1$nosalt",
        "$apr1$abc$tooshort", "{SHA}notbase64!", "{SHA}" + Data(count: 19).base64EncodedString(), "{SSHA}" + Data(count: 20).base64EncodedString(),
        "$2y$04$" + String(repeating: "a", count: 52) + "!", "crypt13chars",
    ])
    func refuses(hash: String) {
        #expect(throws: PasswordHash.Problem.self) { try PasswordHash.parse(hash[...]).get() }
    }
}

@Suite("htpasswd files")
struct HtpasswdFileTests {
    func load(_ text: String) throws -> HtpasswdFile {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("edge-htpasswd-\(UUID().uuidString)").path
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        return try HtpasswdFile.load(path)
    }

    @Test("mixed formats, CRLF line ends and comments load; weak formats are named with their line")
    func mixed() throws {
        let file = try load(
            "# users\r\nbc:$2y$04$JIWZUVs4uoE9En8uEzPkWefrmSpYC4yy7bmLsjW3KsjBh11.05m5y\r\napr:$apr1$d1amzGO0$OGOunTz0EY1GxG1Vs6JvS1\r\n\r\nsha:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\r\n"
        )
        #expect(file.users.count == 3)
        #expect(file.users[Array("apr".utf8)]?.verify(Array("p@ss wörd".utf8)) == true)
        #expect(file.warnings.count == 2)
        #expect(file.warnings[0].contains(":3: user \"apr\" has a $apr1$"))
        #expect(file.warnings[1].contains(":5: user \"sha\" has a {SHA}"))
    }

    @Test("every line that cannot be verified is named")
    func badLines() throws {
        #expect {
            _ = try load("ok:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\nplain:text\nnocolon\n$1:$1$x$y\n")
        } throws: { error in
            let text = "\(error)"
            return text.contains(":2: not a password hash") && text.contains(":3: expected user:hash") && text.contains(":4: not a password hash")
        }
    }

    @Test("user names are matched by bytes: a name in another Unicode normal form is another user")
    func userBytes() throws {
        let file = try load("jos\u{E9}:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\n")
        #expect(file.users[Array("jos\u{E9}".utf8)] != nil)
        #expect(file.users[Array("jose\u{301}".utf8)] == nil)
    }
}
