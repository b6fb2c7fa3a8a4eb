@testable import EdgeCore
import Foundation
import NIOCore
import Testing

@Suite("Configuration loading")
struct ConfigurationLoaderTests {
    @Test("the example edge.toml at the repository root is valid and matches the documented defaults")
    func exampleFileIsValid() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
        let configuration = try ConfigurationSource.load(file: root.appendingPathComponent("edge.toml").path)
        #expect(configuration.listeners.count == 2)
        #expect(configuration.listeners[0].tls == .selfSigned)
        #expect(configuration.listeners[1].tls == nil)
        #expect(configuration.limits == LimitsConfiguration())
        #expect(configuration.timeouts == TimeoutsConfiguration())
        #expect(configuration.cache == CacheConfiguration())
        #expect(configuration.routes.map(\.path) == ["/", "/hello"])
    }

    @Test("every error is reported with its key and line")
    func collectsErrorsWithLines() {
        let text = """
            thread = 2

            [[listener]]
            address = "127.0.0.1:70000"

            [limits]
            max_in_flight = "lots"

            [[route]]
            path = "/a"
            demo = { delay_ms = "slow" }
            respond = { status = 200 }
            """
        #expect {
            _ = try ConfigurationLoader.load(text: text, source: "bad.toml")
        } throws: { error in
            guard let error = error as? ConfigurationError else { return false }
            let found = error.issues.map { "\($0.line ?? 0) \($0.key)" }
            return found == ["1 thread", "4 listener[0].address", "7 limits.max_in_flight", "12 route[0].respond"]
                && error.description.contains("bad.toml:1: thread: unknown key (did you mean \"threads\"?)")
        }
    }

    @Test("a TOML syntax error names its line")
    func syntaxErrorHasLine() {
        #expect {
            _ = try ConfigurationLoader.load(text: "threads = 2\nlimits = [\n", source: "x.toml")
        } throws: { error in
            (error as? ConfigurationError)?.issues.first?.line == 2 || (error as? ConfigurationError)?.issues.first?.line == 3
        }
    }

    @Test("values are range-checked")
    func rangeChecks() {
        #expect(throws: ConfigurationError.self) {
            try ConfigurationLoader.load(text: "threads = 0", source: "x")
        }
        #expect(throws: ConfigurationError.self) {
            try ConfigurationLoader.load(text: "[limits]\nmax_header_bytes = 100", source: "x")
        }
        #expect(throws: ConfigurationError.self) {
            try ConfigurationLoader.load(text: "[[route]]\npath = \"/\"\nrespond = { status = 42 }", source: "x")
        }
    }

    @Test("a route needs exactly one handler and unique paths")
    func routeHandlers() {
        #expect(throws: ConfigurationError.self) {
            try ConfigurationLoader.load(text: "[[route]]\npath = \"/\"", source: "x")
        }
        #expect(throws: ConfigurationError.self) {
            try ConfigurationLoader.load(text: "[[route]]\npath = \"/\"\ndemo = {}\n[[route]]\npath = \"/\"\ndemo = {}", source: "x")
        }
    }

    @Test(
        "a route path must be in the normal form requests are matched in",
        arguments: [
            ("/%70rivate", "\"/%70rivate\" is matched as \"/private\""), ("//a", "is matched as \"/a\""),
            ("/a/./b", "is matched as \"/a/b\""), ("/..", "climbs above the root"), ("/%zz", "malformed %-escape"),
            ("/café", "is matched as \"/caf%C3%A9\""), ("/a b", "is matched as \"/a%20b\""), ("/%c3%a9", "as \"/%C3%A9\""),
            ("/a?x=1", "without a query or fragment"),
        ]
    )
    func routePathInNormalForm(prefix: String, message: String) {
        #expect {
            try ConfigurationLoader.load(text: "[[route]]\npath = \"\(prefix)\"\ndemo = {}", source: "x.toml")
        } throws: { error in
            let description = (error as? ConfigurationError)?.description ?? ""
            return description.contains("x.toml:2: route[0].path: ") && description.contains(message)
        }
        #expect((try? ConfigurationLoader.load(text: "[[route]]\npath = \"/a%20b/.well-known/\"\ndemo = {}", source: "x")) != nil)
    }

    @Test("listeners: TLS from files, self-signed, or plain")
    func listeners() throws {
        let configuration = try ConfigurationLoader.load(
            text: """
                [[listener]]
                address = "[::1]:0"
                tls = true
                certificate = "c.pem"
                private_key = "k.pem"
                [[listener]]
                address = ":8080"
                """,
            source: "x"
        )
        #expect(configuration.listeners[0].address == HostPort(host: "::1", port: 0))
        #expect(configuration.listeners[0].tls == .files(certificate: "c.pem", privateKey: "k.pem"))
        #expect(configuration.listeners[1].address == HostPort(host: "0.0.0.0", port: 8080))
        #expect(throws: ConfigurationError.self) {
            try ConfigurationLoader.load(text: "[[listener]]\naddress = \"1.2.3.4:1\"\ncertificate = \"c.pem\"", source: "x")
        }
    }

    @Test("flags override the environment, which overrides the file")
    func precedence() throws {
        var flags = Overrides()
        flags.threads = "3"
        flags.http = "127.0.0.1:0"
        let configuration = try ConfigurationSource.resolve(
            file: nil,
            environment: ["EDGE_THREADS": "5", "EDGE_MAX_IN_FLIGHT": "7", "EDGE_HTTPS": "none"],
            flags: flags
        )
        #expect(configuration.threads == 3)
        #expect(configuration.limits.maxInFlight == 7)
        #expect(configuration.listeners == [ListenerConfiguration(address: HostPort(host: "127.0.0.1", port: 0), tls: nil)])
    }

    @Test("a bad environment value names the variable")
    func badEnvironment() {
        #expect {
            _ = try EnvironmentOverrides.apply(["EDGE_THREADS": "abc"], to: .embeddedDefault)
        } throws: { error in
            (error as? ConfigurationError)?.description == "environment: EDGE_THREADS: expected a positive integer, got \"abc\""
        }
    }

    @Test("io: the file, EDGE_IO and --io choose the transport; a bad value names its key")
    func transport() throws {
        #expect(try ConfigurationLoader.load(text: "io = \"io_uring\"", source: "x").io == .ioUring)
        #expect(try ConfigurationLoader.load(text: "threads = 2", source: "x").io == .epoll)
        #expect {
            try ConfigurationLoader.load(text: "\nio = \"uring\"", source: "x.toml")
        } throws: { error in
            (error as? ConfigurationError)?.description == "x.toml:2: io: expected \"epoll\" or \"io_uring\", got \"uring\""
        }
        var flags = Overrides()
        flags.io = "epoll"
        let configuration = try ConfigurationSource.resolve(file: nil, environment: ["EDGE_IO": "io_uring"], flags: flags)
        #expect(configuration.io == .epoll)
        #expect(try ConfigurationSource.resolve(file: nil, environment: ["EDGE_IO": "io_uring"], flags: Overrides()).io == .ioUring)
        #expect {
            _ = try EnvironmentOverrides.apply(["EDGE_IO": "kqueue"], to: .embeddedDefault)
        } throws: { error in
            (error as? ConfigurationError)?.description == "environment: EDGE_IO: expected \"epoll\" or \"io_uring\", got \"kqueue\""
        }
    }

    @Test("HOST:PORT parsing", arguments: [
        ("127.0.0.1:8080", HostPort(host: "127.0.0.1", port: 8080)),
        ("[::1]:0", HostPort(host: "::1", port: 0)),
        ("localhost:443", HostPort(host: "localhost", port: 443)),
        (":80", HostPort(host: "0.0.0.0", port: 80)),
    ])
    func hostPort(text: String, expected: HostPort) {
        #expect(HostPort(parsing: text) == expected)
    }

    @Test("malformed HOST:PORT is rejected", arguments: [
        "127.0.0.1", "::1:80", "host:http", "h:-1", "h:65536", "[::1]80", "999.1.1.1:80", "1.2.3:80", "[zz]:80", "[localhost]:80",
    ])
    func badHostPort(text: String) {
        #expect(HostPort(parsing: text) == nil)
    }

    @Test("listeners that cannot both bind conflict; ephemeral ports and other hosts do not", arguments: [
        ("127.0.0.1:80", "127.0.0.1:80", true),
        ("LOCALHOST:80", "localhost:80", true),
        ("0.0.0.0:80", "127.0.0.1:80", true),
        ("127.0.0.1:80", "0.0.0.0:80", true),
        ("[::]:80", "[::1]:80", true),
        ("127.0.0.1:0", "127.0.0.1:0", false),
        ("127.0.0.1:80", "127.0.0.1:81", false),
        ("127.0.0.1:80", "127.0.0.2:80", false),
        ("0.0.0.0:80", "[::1]:80", false),
        ("127.0.0.1:80", "[::1]:80", false),
    ])
    func listenerConflicts(first: String, second: String, conflict: Bool) throws {
        let a = try #require(HostPort(parsing: first)), b = try #require(HostPort(parsing: second))
        #expect(a.conflicts(with: b) == conflict)
    }

    @Test("a host name conflicts with the address it binds, and not with another port")
    func hostNameConflicts() {
        let name = HostPort(host: "localhost", port: 80)
        let bound = name.boundAddress
        #expect(bound == "127.0.0.1" || bound == "::1")
        #expect(name.conflicts(with: HostPort(host: bound, port: 80)))
        #expect(HostPort(host: bound == "::1" ? "::" : "0.0.0.0", port: 80).conflicts(with: name))
        #expect(!name.conflicts(with: HostPort(host: bound, port: 81)))
        #expect(HostPort(host: "no-such-host.invalid", port: 80).boundAddress == "no-such-host.invalid")
    }

    @Test("two listeners on one address are refused, naming both")
    func duplicateListeners() {
        #expect {
            _ = try ConfigurationLoader.load(
                text: "[[listener]]\naddress = \"127.0.0.1:8080\"\n[[listener]]\naddress = \"127.0.0.1:8080\"\n", source: "x"
            )
        } throws: { error in
            (error as? ConfigurationError)?.description == "x:4: listener[1].address: listener[0] (line 2) already listens on 127.0.0.1:8080"
        }
    }

    @Test("NUL bytes and \\u0000 escapes are found; the same text in comments and literal strings is not")
    func nulScanner() {
        #expect(TOMLPreScanner.scan("a = 1\n\u{0}\n").map(\.line) == [2])
        #expect(TOMLPreScanner.scan("a = \"x\\u0000\"\nb = \"\\U00000000\"").map(\.line) == [1, 2])
        #expect(TOMLPreScanner.scan("a = \"\"\"\nx\n\\u0000\"\"\"").map(\.line) == [3])
        #expect(TOMLPreScanner.scan("# \\u0000\na = '\\u0000'\nb = '''\n\\u0000'''\nc = \"\\\\u0000\"").isEmpty)
        #expect(TOMLPreScanner.scan("a = \"\"\"x\"\"\"\"\nb = \"\\u0000\"").map(\.line) == [2])
    }

    @Test("a table header that does not start with a key is found (toml++ would abort on it)", arguments: [
        "[=]", "[.a]", "[[,]]", "[ #x]", "[", "a = 1\n[\nb = 2", "[[\t~]]", "[a]\n  [{]",
    ])
    func headerWithoutKey(text: String) throws {
        #expect(TOMLPreScanner.scan(text).map(\.kind).contains(.headerWithoutKey))
        #expect(throws: ConfigurationError.self) { try ConfigurationLoader.load(text: text, source: "x") }
    }

    @Test("brackets inside values, strings and comments are not table headers", arguments: [
        "a = [\n  [{ b = 1 }],\n  [\n  1],\n]",
        "a = \"\"\"\n[=]\n\"\"\"",
        "a = '''\n[=]'''",
        "# [=]\n[\"quoted key\"]\n['literal']\n[ spaced . dotted ]\n[[ array ]]",
        "a = \"[=]\"\nb = { c = [1, [2]] }\n[t]",
        "[]",
    ])
    func bracketsThatAreNoHeaders(text: String) throws {
        #expect(!TOMLPreScanner.scan(text).map(\.kind).contains(.headerWithoutKey))
    }

    @Test("a '}' where an array expects an element is found (toml++ would abort on it)", arguments: [
        "a = [}", "a = [1, }", "a = [ # comment\n}", "a = [[}]]", "a = { b = [ } }", "a = [ { }, } ]",
        "a = [\n  1,\n\n  }",
    ])
    func braceInArray(text: String) throws {
        #expect(TOMLPreScanner.scan(text).map(\.kind).contains(.braceInArray))
        #expect(throws: ConfigurationError.self) { try ConfigurationLoader.load(text: text, source: "x") }
    }

    @Test("braces that close inline tables, in arrays or not, and braces in strings and comments are fine", arguments: [
        "a = [ { b = 1 }, { c = [ 2 ] } ]", "a = { b = [ 1, 2 ], c = {} }", "a = [ \"}\", '}' ] # }",
        "a = [ # }\n 1 ]", "a = [\n]", "a = [ 1, ]", "[[t]]\nb = [ {}, ]", "a = \"\"\"\n[}\"\"\"",
    ])
    func bracesThatAreFine(text: String) throws {
        #expect(!TOMLPreScanner.scan(text).map(\.kind).contains(.braceInArray))
        // And valid TOML as toml++ reads it: the load fails only on the unknown keys, not on syntax.
        #expect {
            _ = try ConfigurationLoader.load(text: text, source: "x")
        } throws: { error in
            let issues = (error as? ConfigurationError)?.issues ?? []
            return !issues.isEmpty && !issues.contains { $0.key == "syntax" }
        }
    }

    @Test("a '}' in an array names the key and the line")
    func braceInArrayNamesItsKey() {
        #expect {
            _ = try ConfigurationLoader.load(text: "threads = 1\n[client_address]\ntrusted_proxies = [\n  \"::1\",\n}\n", source: "x")
        } throws: { error in
            let issues = (error as? ConfigurationError)?.issues ?? []
            return issues.map(\.key) == ["client_address.trusted_proxies"] && issues.map(\.line) == [5]
        }
    }

    @Test("a NUL escape names the key it is in; a NUL byte stops the load")
    func nulIssues() {
        #expect {
            _ = try ConfigurationLoader.load(text: "threads = 1\nserver_name = \"a\\u0000b\"\n", source: "x")
        } throws: { error in
            let issues = (error as? ConfigurationError)?.issues ?? []
            return issues.map(\.key) == ["server_name"] && issues.map(\.line) == [2]
        }
        #expect {
            _ = try ConfigurationLoader.load(text: "threads = 1\n\u{0}\nthreads = 2\n", source: "x")
        } throws: { error in
            (error as? ConfigurationError)?.issues.map(\.key) == ["syntax"]
        }
    }

    @Test("file checks: only when asked, then every problem with its key and line")
    func fileChecks() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("edge-file-checks-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let file = folder + "/file"
        _ = FileManager.default.createFile(atPath: file, contents: Data("x\n".utf8))
        let text = """
            state_dir = "\(file)"
            [[listener]]
            address = "127.0.0.1:0"
            tls = true
            certificate = "\(folder)/missing.pem"
            private_key = "\(file)"
            [[route]]
            path = "/a"
            static = "\(file)"
            [[route]]
            path = "/b"
            static = { root = "\(folder)/none" }
            basic_auth = { htpasswd = "\(folder)/none" }
            [[route]]
            path = "/c"
            static = "\(folder)"
            """
        _ = try ConfigurationLoader.load(text: text, source: "x")
        #expect {
            _ = try ConfigurationLoader.load(text: text, source: "x", checkingFiles: true)
        } throws: { error in
            let issues = (error as? ConfigurationError)?.issues ?? []
            return issues.map { "\($0.line ?? 0) \($0.key)" } == [
                "1 state_dir", "5 listener[0].certificate", "6 listener[0].private_key", "9 route[0].static",
                "12 route[1].static.root", "13 route[1].basic_auth.htpasswd",
            ]
        }
    }

    @Test("a state_dir that does not exist yet is fine; a file, or a path under one, is not")
    func stateDirectoryProblems() {
        #expect(ConfigurationFileChecks.stateDirectoryProblem("/nonexistent-edge-state/sub") == nil)
        #expect(ConfigurationFileChecks.stateDirectoryProblem(FileManager.default.temporaryDirectory.path) == nil)
        #expect(ConfigurationFileChecks.stateDirectoryProblem(#filePath + "/sub") != nil)
        #expect(ConfigurationFileChecks.stateDirectoryProblem(#filePath) == "\(#filePath) exists and is not a folder")
    }

    @Test("a state_dir that must take the self-signed certificate is tried, and the try leaves nothing behind")
    func stateDirectoryForTheCertificate() throws {
        // Nothing can be created in /proc, not even by root, whatever its permission bits say.
        #expect(ConfigurationFileChecks.stateDirectoryProblem("/proc/edge-state") == nil)
        #expect(
            ConfigurationFileChecks.stateDirectoryProblem("/proc/edge-state/sub", storesCertificate: true)
                == "cannot create /proc/edge-state/sub for the self-signed certificate: /proc: no such file or directory"
        )
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("edge-state-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        #expect(ConfigurationFileChecks.stateDirectoryProblem(folder, storesCertificate: true) == nil)
        #expect(ConfigurationFileChecks.stateDirectoryProblem(folder + "/a/b", storesCertificate: true) == nil)
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder).isEmpty)
    }

    @Test("a fixed response has a final status, and no body when its status has no content", arguments: [
        ("{ status = 204, body = \"x\" }", "route[0].respond.body"),
        ("{ status = 205, body = \"x\" }", "route[0].respond.body"),
        ("{ status = 304, body = \"x\" }", "route[0].respond.body"),
        ("{ status = 101 }", "route[0].respond.status"),
        ("{ status = 999 }", "route[0].respond.status"),
        ("{ status = 204 }", nil),
        ("{ status = 304, body = \"\" }", nil),
    ])
    func fixedResponseStatus(respond: String, failingKey: String?) {
        let text = "[[route]]\npath = \"/\"\nrespond = \(respond)\n"
        do {
            _ = try ConfigurationLoader.load(text: text, source: "x")
            #expect(failingKey == nil)
        } catch {
            #expect(error.issues.map { "\($0.line ?? 0) \($0.key)" } == ["3 \(failingKey ?? "-")"])
        }
    }
}
