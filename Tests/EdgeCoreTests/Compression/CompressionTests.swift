import CEdgeCompression
import CompressNIO
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import EdgeCore

/// Decodes `body` in `coding` with the libraries' own decoders (brotli and zstd) and zlib (gzip).
private func decode(_ body: ByteBuffer, _ coding: ContentCoding, expectedSize: Int) -> [UInt8]? {
    let encoded = Array(body.readableBytesView)
    var decoded = [UInt8](repeating: 0, count: expectedSize + 1)
    switch coding {
    case .brotli:
        var size = decoded.count
        let ok = encoded.withUnsafeBufferPointer { source in
            decoded.withUnsafeMutableBufferPointer { CEdgeCompression_brotliDecompress(source.baseAddress, source.count, $0.baseAddress, &size) }
        }
        return ok == 1 ? Array(decoded[..<size]) : nil
    case .zstd:
        let size = encoded.withUnsafeBufferPointer { source in
            decoded.withUnsafeMutableBufferPointer { CEdgeCompression_zstdDecompress($0.baseAddress, $0.count, source.baseAddress, source.count) }
        }
        return CEdgeCompression_zstdIsError(size) == 0 ? Array(decoded[..<size]) : nil
    case .gzip:
        var input = body
        return (try? input.decompress(with: .gzip())).map { Array($0.readableBytesView) }
    }
}

private func text(_ count: Int) -> [UInt8] {
    var bytes: [UInt8] = []
    var line = 0
    while bytes.count < count {
        bytes += Array("<li id=\"item-\(line)\">entry \(line * 7919 % 1000) of the list</li>\n".utf8)
        line += 1
    }
    return Array(bytes[..<count])
}

@Suite("Compression")
struct CompressionTests {
    @Test("brotli and zstd load from the system's shared libraries")
    func librariesLoad() {
        // The test command installs libbrotli1 and libzstd1; a machine without them would run Edge without the codings.
        #expect(ContentCoding.brotli.isAvailable)
        #expect(ContentCoding.zstd.isAvailable)
        #expect(ContentCoding.gzip.isAvailable)
    }

    @Test("each coding round-trips a body given in chunks with flushes between", arguments: ContentCoding.allCases)
    func roundTrip(coding: ContentCoding) throws {
        let original = text(300_000)
        let encoder = try BodyEncoder(coding: coding, settings: .streaming)
        var encoded = ByteBuffer()
        var offset = 0
        var sizes = [1, 10, 4096, 65_536, 100_000]
        while offset < original.count {
            let size = min(sizes.removeFirst(), original.count - offset)
            sizes.append(size)
            var output = try encoder.encode(ByteBuffer(bytes: original[offset..<offset + size]), flush: offset % 2 == 0)
            encoded.writeBuffer(&output)
            offset += size
        }
        var flushAgain = try encoder.encode(ByteBuffer(), flush: true)  // a flush with nothing new is harmless
        encoded.writeBuffer(&flushAgain)
        var rest = try encoder.finish()
        encoded.writeBuffer(&rest)
        #expect(encoded.readableBytes < original.count / 4, "\(coding): \(encoded.readableBytes) bytes")
        let decoded = decode(encoded, coding, expectedSize: original.count)
        #expect(decoded?.count == original.count)
        #expect(decoded == original, "decoded differs")
    }

    @Test("one-shot encoding of a whole file, and of an empty one", arguments: ContentCoding.allCases)
    func oneShot(coding: ContentCoding) throws {
        for (size, settings) in [(0, CompressionSettings.smallFile), (20_000, .smallFile), (200_000, .largeFile)] {
            let original = text(size)
            let encoded = try #require(BodyEncoder.encode(ByteBuffer(bytes: original), coding: coding, settings: settings))
            let decoded = decode(encoded, coding, expectedSize: size)
            #expect(decoded?.count == size)
            #expect(decoded == original, "decoded differs")
        }
    }

    @Test("a flush makes everything given so far decodable (gzip, checked with zlib's streaming inflate)")
    func flushIsDecodable() throws {
        let encoder = try BodyEncoder(coding: .gzip, settings: .streaming)
        let first = Array("data: first event\n\n".utf8)
        let flushed = try encoder.encode(ByteBuffer(bytes: first), flush: true)
        let decompressor = CompressionAlgorithm.gzip().decompressor
        try decompressor.startStream()
        var input = flushed
        var output = ByteBuffer()
        output.reserveCapacity(1024)
        try? decompressor.streamInflate(from: &input, to: &output)
        #expect(String(buffer: output) == "data: first event\n\n")
    }

    @Test("the coding chosen follows the client's q-values, then the server's order")
    func preference() {
        let proxyOrder: [ContentCoding] = [.zstd, .brotli, .gzip]
        let cases: [(String?, [ContentCoding], ContentCoding?)] = [
            ("gzip, deflate, br, zstd", ContentCoding.staticPreference, .brotli),
            ("gzip, deflate, br, zstd", proxyOrder, .zstd),
            ("gzip, br;q=0.5", proxyOrder, .gzip),
            ("br;q=0.9, zstd;q=0.8, gzip;q=1", ContentCoding.staticPreference, .gzip),
            ("*", proxyOrder, .zstd),
            ("zstd;q=0, *", proxyOrder, .brotli),
            ("br", [.gzip], nil),
            ("identity", proxyOrder, nil),
            (nil, proxyOrder, nil),
        ]
        for (header, offered, expected) in cases {
            #expect(AcceptedEncodings(header: header).preferred(among: offered) == expected, "\(header ?? "none") \(offered)")
        }
        #expect(AcceptedEncodings(header: "gzip;q=0.5, zstd;q=0.7, br").ranked(ContentCoding.staticPreference) == [.brotli, .zstd, .gzip])
    }

    @Test("which proxied responses are compressed")
    func qualifies() {
        let loop = EmbeddedEventLoop()
        func response(_ status: Int = 200, _ fields: [(String, String)] = [("content-type", "text/html; charset=utf-8")], body: Bool = true) -> StreamedResponse {
            var headers = FieldBlock()
            for (name, value) in fields { headers.add(name: name, value: value) }
            return StreamedResponse(status: .init(statusCode: status), headers: headers, body: body ? BodyPipe(eventLoop: loop) : nil)
        }
        #expect(CompressingOrigin.qualifies(response(), isHead: false))
        #expect(CompressingOrigin.qualifies(response(404), isHead: false))
        #expect(CompressingOrigin.qualifies(response(200, [("Content-Type", "Application/JSON")]), isHead: false))
        #expect(CompressingOrigin.qualifies(response(200, [("content-type", "text/plain"), ("content-length", "1000")]), isHead: false))
        #expect(CompressingOrigin.qualifies(response(body: false), isHead: true))
        // Not: a range, no body, a redirect, an incompressible type, no type, already encoded, too short, no-transform.
        #expect(!CompressingOrigin.qualifies(response(206), isHead: false))
        #expect(!CompressingOrigin.qualifies(response(body: false), isHead: false))
        #expect(!CompressingOrigin.qualifies(response(301), isHead: false))
        #expect(!CompressingOrigin.qualifies(response(200, [("content-type", "image/png")]), isHead: false))
        #expect(!CompressingOrigin.qualifies(response(200, []), isHead: false))
        #expect(!CompressingOrigin.qualifies(response(200, [("content-type", "text/css"), ("content-encoding", "gzip")]), isHead: false))
        #expect(CompressingOrigin.qualifies(response(200, [("content-type", "text/css"), ("content-encoding", "identity")]), isHead: false))
        #expect(!CompressingOrigin.qualifies(response(200, [("content-type", "text/css"), ("content-length", "100")]), isHead: false))
        #expect(!CompressingOrigin.qualifies(response(200, [("content-type", "text/css"), ("content-range", "bytes 0-9/100")]), isHead: false))
        #expect(!CompressingOrigin.qualifies(response(200, [("content-type", "text/css"), ("cache-control", "public, No-Transform")]), isHead: false))
    }

    @Test("the budget hands out at most its limit of slots, and a released slot is given back")
    func budget() {
        let budget = CompressionBudget(limit: 2)
        var first = budget.take()
        let second = budget.take()
        #expect(first != nil && second != nil)
        #expect(budget.take() == nil)
        #expect(budget.inUse == 2)
        first = nil
        #expect(budget.inUse == 1)
        #expect(budget.take() != nil)  // taken and released at once
        budget.setLimit(0)
        #expect(budget.take() == nil)
        _ = second
    }

    @Test("compress in a proxy route: true, a list, and errors naming the key")
    func configuration() throws {
        func load(_ compress: String) throws -> EdgeConfiguration {
            try ConfigurationLoader.load(
                text: """
                    [[upstream]]
                    name = "app"
                    servers = ["127.0.0.1:9"]

                    [[route]]
                    path = "/"
                    proxy = { upstream = "app", compress = \(compress) }
                    """,
                source: "x.toml"
            )
        }
        func compress(_ configuration: EdgeConfiguration) -> [String] {
            guard case .proxy(let proxy) = configuration.routes[0].handler else { return ["not a proxy"] }
            return proxy.compress
        }
        #expect(compress(try load("true")) == ["zstd", "br", "gzip"])
        #expect(compress(try load("false")) == [])
        #expect(compress(try load("[\"gzip\", \"brotli\"]")) == ["gzip", "br"])
        for (bad, message) in [
            ("[\"deflate\"]", "route[0].proxy.compress[0]: unknown content coding \"deflate\""),
            ("[\"gzip\", \"gzip\"]", "route[0].proxy.compress[1]: \"gzip\" is listed twice"),
            ("\"yes\"", "route[0].proxy.compress: expected true, false or a list"),
        ] {
            #expect {
                _ = try load(bad)
            } throws: { error in
                "\(error)".contains(message)
            }
        }
    }
}
