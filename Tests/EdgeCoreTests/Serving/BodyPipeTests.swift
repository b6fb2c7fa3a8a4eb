@testable import EdgeCore
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@Suite("BodyPipe: taking a small body whole")
struct BodyPipeTests {
    private func pipe(_ chunks: [String]) -> BodyPipe {
        let pipe = BodyPipe(eventLoop: EmbeddedEventLoop())
        for chunk in chunks { pipe.write(ByteBuffer(string: chunk)) }
        return pipe
    }

    @Test("a body the producer has ended is taken whole, its chunks joined, and nothing is left")
    func finished() throws {
        let body = pipe(["hello, ", "world"])
        body.finish()
        let whole = try #require(body.takeWhole(maxBytes: 64))
        #expect(String(buffer: whole) == "hello, world")
        guard case .success(.end(nil))? = body.nextIfReady() else {
            Issue.record("the end should follow")
            return
        }
    }

    @Test("an ended empty body is an empty buffer")
    func empty() throws {
        let body = pipe([])
        body.finish()
        #expect(try #require(body.takeWhole(maxBytes: 64)).readableBytes == 0)
    }

    @Test("nothing is taken from a body still coming, with trailers, broken, or larger than asked")
    func refused() throws {
        let open = pipe(["abc"])
        #expect(open.takeWhole(maxBytes: 64) == nil)
        guard case .success(.chunk(let chunk))? = open.nextIfReady() else {
            Issue.record("the chunk should still be there")
            return
        }
        #expect(String(buffer: chunk) == "abc")

        let trailers = pipe(["abc"])
        trailers.finish(trailers: ["grpc-status": "0"])
        #expect(trailers.takeWhole(maxBytes: 64) == nil)

        let broken = pipe(["abc"])
        broken.fail(BodyPipe.Broken(description: "upstream died"))
        #expect(broken.takeWhole(maxBytes: 64) == nil)

        let large = pipe(["abcdef"])
        large.finish()
        #expect(large.takeWhole(maxBytes: 5) == nil)
        #expect(large.takeWhole(maxBytes: 6).map { String(buffer: $0) } == "abcdef")
    }
}
