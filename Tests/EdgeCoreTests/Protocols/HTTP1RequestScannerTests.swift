@testable import EdgeCore
import NIOCore
import NIOHTTP1
import Testing

@Suite("HTTP/1.1 fast-path scanner")
struct HTTP1RequestScannerTests {
    func scan(_ text: String, limit: Int = 32_768) -> HTTP1RequestScanner.Outcome {
        HTTP1RequestScanner.scan(ByteBuffer(string: text), limit: limit)
    }

    @Test("a plain GET is taken, with target, host and keep-alive")
    func simpleGet() throws {
        let head = "GET /a/b?c=d HTTP/1.1\r\nHost: Example.test:8080\r\nAccept: */*\r\n\r\n"
        guard case .simple(let request, let length) = scan(head + "GET /next") else {
            Issue.record("expected a simple request")
            return
        }
        #expect(length == head.utf8.count)
        #expect(request.method == .GET)
        #expect(request.target == "/a/b?c=d")
        #expect(request.host == "Example.test:8080")
        #expect(request.keepAlive)
        #expect(!request.isHTTP10)
    }

    @Test("HEAD, Connection: close, HTTP/1.0 keep-alive, Content-Length: 0")
    func variants() {
        if case .simple(let request, _) = scan("HEAD / HTTP/1.1\r\nHost: x\r\nConnection: Close\r\n\r\n") {
            #expect(request.method == .HEAD)
            #expect(!request.keepAlive)
        } else {
            Issue.record("HEAD with Connection: close should be taken")
        }
        if case .simple(let request, _) = scan("GET / HTTP/1.0\r\n\r\n") {
            #expect(request.isHTTP10 && !request.keepAlive)
        } else {
            Issue.record("HTTP/1.0 should be taken")
        }
        if case .simple(let request, _) = scan("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n") {
            #expect(request.keepAlive)
        } else {
            Issue.record("HTTP/1.0 keep-alive should be taken")
        }
        if case .simple = scan("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n") {} else {
            Issue.record("Content-Length: 0 should be taken")
        }
    }

    @Test("partial heads wait for more bytes", arguments: ["", "GE", "GET /", "GET / HTTP/1.1\r\n", "GET / HTTP/1.1\r\nHost: x\r\n", "GET / HTTP/1.1\r\nHost: x\r\n\r"])
    func incomplete(text: String) {
        guard case .incomplete = scan(text) else {
            Issue.record("expected incomplete for \(text.debugDescription)")
            return
        }
    }

    @Test("anything unusual goes to the full parser", arguments: [
        "POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
        "get / HTTP/1.1\r\n\r\n",
        "GET http://x/ HTTP/1.1\r\n\r\n",
        "GET / HTTP/2.0\r\n\r\n",
        "GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
        "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
        "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET / HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n",
        "GET / HTTP/1.1\nHost: x\n\n",
        "GET / HTTP/1.1\r\nHost : x\r\n\r\n",
        "GET / HTTP/1.1\r\nX-A: caf\u{e9}\r\n\r\n",
        "GET / HTTP/1.1\r\nX-A: a\u{0}b\r\n\r\n",
        "GET /a\u{7f} HTTP/1.1\r\n\r\n",
        "\r\nGET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n",
    ])
    func fallback(text: String) {
        guard case .fallback = scan(text) else {
            Issue.record("expected fallback for \(text.debugDescription)")
            return
        }
    }

    @Test("a head longer than the limit goes to the full parser (which answers 431)")
    func overLimit() {
        let text = "GET / HTTP/1.1\r\nX-Big: \(String(repeating: "a", count: 200))\r\n\r\n"
        guard case .fallback = scan(text, limit: 100) else {
            Issue.record("expected fallback")
            return
        }
    }

    @Test("too many header fields go to the full parser")
    func manyFields() {
        let fields = (0...HTTP1RequestScanner.maxHeaderFields).map { "X-\($0): v\r\n" }.joined()
        guard case .fallback = scan("GET / HTTP/1.1\r\nHost: x\r\n\(fields)\r\n") else {
            Issue.record("expected fallback")
            return
        }
    }
}
