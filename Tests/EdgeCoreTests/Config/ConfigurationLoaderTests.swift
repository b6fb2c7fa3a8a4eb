import EdgeCore
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

    @Test("HOST:PORT parsing", arguments: [
        ("127.0.0.1:8080", HostPort(host: "127.0.0.1", port: 8080)),
        ("[::1]:0", HostPort(host: "::1", port: 0)),
        ("localhost:443", HostPort(host: "localhost", port: 443)),
        (":80", HostPort(host: "0.0.0.0", port: 80)),
    ])
    func hostPort(text: String, expected: HostPort) {
        #expect(HostPort(parsing: text) == expected)
    }

    @Test("malformed HOST:PORT is rejected", arguments: ["127.0.0.1", "::1:80", "host:http", "h:-1", "h:65536", "[::1]80"])
    func badHostPort(text: String) {
        #expect(HostPort(parsing: text) == nil)
    }
}
