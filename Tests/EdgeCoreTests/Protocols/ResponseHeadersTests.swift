@testable import EdgeCore
import NIOHPACK
import NIOHTTP1
import Testing

@Suite("HTTP/2 response header blocks")
struct ResponseHeadersTests {
    /// The block read straight from a field block's lines must be the one NIOHPACK's normalisation makes from the
    /// same lines as `HTTPHeaders`, field for field and in order.
    @Test(
        "a block from field lines equals NIOHPACK's normalised block",
        arguments: [
            [("Content-Type", "text/plain"), ("X-Upstream", "a"), ("Set-Cookie", "a=1"), ("set-cookie", "b=2")],
            [("content-length", "5"), ("ETag", "\"v1\""), ("Keep-Alive", "timeout=5"), ("Transfer-Encoding", "chunked")],
            [("UPGRADE", "h2c"), ("Proxy-Connection", "close"), ("X-Mixed-Case-Name", "Value With Spaces  ")],
            [("Connection", "x-secret"), ("X-Secret", "leak"), ("Cache-Control", "no-store")],
            [],
        ] as [[(String, String)]]
    )
    func sameBlock(fields: [(String, String)]) {
        var block = FieldBlock()
        for (name, value) in fields { block.add(name: name, value: value) }
        let direct = ResponseHeaders.http2Block(status: .ok, fields: block)
        // What the writer did before: the lines as `HTTPHeaders` (trailing white space trimmed), then normalised.
        let viaHeaders = ResponseHeaders.http2Block(status: .ok, headers: block.headers)
        #expect(direct.map { "\($0.name): \($0.value)" } == viaHeaders.map { "\($0.name): \($0.value)" })
        #expect(direct.first?.name == ":status" && direct.first?.value == "200")
        #expect(!direct.contains { $0.name.utf8.contains { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") } })
    }

    @Test("per-request fields are added in lower case")
    func lowercased() {
        var block = HPACKHeaders()
        ResponseHeaders.addLowercased("Strict-Transport-Security", "max-age=1", to: &block)
        ResponseHeaders.addLowercased("x-frame-options", "DENY", to: &block)
        #expect(block.map(\.name) == ["strict-transport-security", "x-frame-options"])
    }
}
