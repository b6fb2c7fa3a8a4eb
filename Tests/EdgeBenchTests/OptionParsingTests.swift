import Testing

@testable import EdgeBench

@Suite("URLs and durations")
struct OptionParsingTests {
    @Test func urls() throws {
        let plain = try TargetURL("http://example.com/a?b=1")
        #expect(!plain.isTLS && plain.host == "example.com" && plain.port == 80 && plain.pathAndQuery == "/a?b=1")
        #expect(plain.authority == "example.com")
        let tls = try TargetURL("https://127.0.0.1:8443")
        #expect(tls.isTLS && tls.port == 8443 && tls.pathAndQuery == "/" && tls.hostIsIPAddress)
        #expect(tls.authority == "127.0.0.1:8443")
        let v6 = try TargetURL("https://[::1]:9/x#frag")
        #expect(v6.host == "::1" && v6.port == 9 && v6.pathAndQuery == "/x" && v6.authority == "[::1]:9")
        #expect(try TargetURL("http://h?q").pathAndQuery == "/?q")
    }

    @Test("bad URLs are refused", arguments: ["example.com", "ftp://x/", "http://", "http://h:0/", "http://h:99999/", "http://u:p@h/", "http://[::1/"])
    func badURLs(text: String) {
        #expect(throws: BenchError.self) { try TargetURL(text) }
    }

    @Test func durations() {
        #expect(DurationText.parse("10s") == .seconds(10))
        #expect(DurationText.parse("500ms") == .milliseconds(500))
        #expect(DurationText.parse("2m") == .seconds(120))
        #expect(DurationText.parse("1.5") == .milliseconds(1500))
        #expect(DurationText.parse("soon") == nil)
        #expect(DurationText.parse("-1s") == nil)
    }

    @Test func validation() throws {
        var configuration = BenchConfiguration(target: try TargetURL("http://h/"))
        configuration.duration = nil
        #expect(throws: BenchError.self) { try configuration.validate() }
        configuration.requestLimit = 10
        try configuration.validate()
        configuration.rate = 0
        #expect(throws: BenchError.self) { try configuration.validate() }
    }
}
