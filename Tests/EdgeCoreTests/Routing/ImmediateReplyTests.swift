@testable import EdgeCore
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Testing

@Suite("Immediate replies: what the HTTP/2 fast path may answer without a stream channel")
struct ImmediateReplyTests {
    /// What a reply says, in values that can leave the event loop.
    struct Summary: Sendable {
        enum Kind: Sendable { case file, response, cached }
        var kind: Kind
        var status: HTTPResponseStatus
        var headers: [String: String] = [:]
        var body: String?
        var hasHandle = false
        var http2Status: String?
        var http2Length: String?

        init(_ reply: Reply) {
            switch reply {
            case .file(let file):
                kind = .file
                status = file.status
                headers = Dictionary(file.headers.map { ($0.name.lowercased(), $0.value) }, uniquingKeysWith: { a, _ in a })
                body = file.body.map { String(buffer: $0) }
                hasHandle = file.handle != nil
                http2Status = file.http2Block?.first(name: ":status")
                http2Length = file.http2Block?.first(name: "content-length")
            case .response(let response):
                kind = .response
                status = response.status
            case .cached(let entry, _):
                kind = .cached
                status = entry.status
            case .stream(let streamed):
                kind = .response
                status = streamed.status
            case .upgrade:
                kind = .response
                status = .switchingProtocols
            }
        }
    }

    /// A server's services with a static route over a folder holding one small text file, and a dispatcher on
    /// one event loop of a real group (file lookups go through NIO's thread pool). The loop state is only
    /// touched on that loop.
    final class Fixture: @unchecked Sendable {
        let folder: URL
        let loop: any EventLoop
        let services: EdgeServices
        let loopState: LoopState
        let file = "hello.txt"
        let bytes = String(repeating: "small file ", count: 40)

        init(extraRoute: String = "") throws {
            folder = FileManager.default.temporaryDirectory.appendingPathComponent("edge-immediate-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            try Data(bytes.utf8).write(to: folder.appendingPathComponent(file))
            let text = """
                [[route]]
                path = "/files"
                static = "\(folder.path)"
                \(extraRoute)
                """
            let configuration = try ConfigurationLoader.load(text: text, source: "test.toml")
            loop = MultiThreadedEventLoopGroup.singleton.next()
            services = try EdgeServices(configuration: configuration, group: loop, state: ServerState())
            loopState = LoopState(localCacheCapacity: 16, staticFileValidity: .seconds(600))
        }

        deinit {
            try? FileManager.default.removeItem(at: folder)
        }

        /// `immediateReply` on the loop.
        func immediate(_ target: String, method: HTTPMethod = .GET, _ conditional: StaticRequestHeaders = .init()) async throws -> Summary? {
            try await loop.submit { [self] in
                RequestDispatcher(services: services, loop: loopState).immediateReply(
                    method: method, target: target[...], host: "localhost", conditional: conditional
                ).map(Summary.init)
            }.get()
        }

        /// What `answerAtHead` says of `target`, in values that can leave the loop.
        enum AtHead: Sendable, Equatable {
            case reply(HTTPResponseStatus)
            case streamed
            case other
        }

        /// `answerAtHead` on the loop.
        func atHead(_ target: String, method: HTTPMethod = .GET) async throws -> AtHead {
            try await loop.submit { [self] in
                switch RequestDispatcher(services: services, loop: loopState).answerAtHead(
                    method: method, target: target[...], host: "localhost"
                ) {
                case .reply(let reply): return .reply(Summary(reply).status)
                case .streamed: return .streamed
                case .other: return .other
                }
            }.get()
        }

        /// The full path for `target`, which fills the loop's small-file cache; returns the reply's status.
        func dispatch(_ target: String) async throws -> HTTPResponseStatus {
            try await loop.flatSubmit { [self] () -> EventLoopFuture<HTTPResponseStatus> in
                let dispatch = RequestDispatcher(services: services, loop: loopState).dispatch(
                    method: .GET, target: target[...], headers: RequestHeaderValues(host: "localhost"), bodyBytes: 0,
                    client: ClientAddress(SocketAddress?.none), on: loop
                )
                switch dispatch {
                case .ready(let reply): return loop.makeSucceededFuture(Summary(reply).status)
                case .pending(let future): return future.map { Summary($0).status }
                }
            }.get()
        }
    }

    @Test("a small file is answered at once only after the full path has put it in the loop's cache")
    func fileOnceCached() async throws {
        let fixture = try Fixture()
        #expect(try await fixture.immediate("/files/hello.txt") == nil)
        #expect(try await fixture.dispatch("/files/hello.txt") == .ok)
        let file = try #require(try await fixture.immediate("/files/hello.txt"))
        #expect(file.kind == .file)
        #expect(file.status == .ok)
        #expect(!file.hasHandle)
        #expect(file.body == fixture.bytes)
        #expect(file.headers["content-length"] == String(fixture.bytes.utf8.count))
        #expect(file.http2Status == "200")
        #expect(file.http2Length == String(fixture.bytes.utf8.count))
    }

    @Test("HEAD, validators and ranges get the answers the full path gives")
    func conditionalAnswers() async throws {
        let fixture = try Fixture()
        #expect(try await fixture.dispatch("/files/hello.txt") == .ok)
        let whole = try #require(try await fixture.immediate("/files/hello.txt"))
        let etag = try #require(whole.headers["etag"])
        let head = try #require(try await fixture.immediate("/files/hello.txt", method: .HEAD))
        #expect(head.kind == .file)
        #expect(head.body == nil)
        #expect(head.headers["content-length"] == String(fixture.bytes.utf8.count))
        let notModified = try await fixture.immediate("/files/hello.txt", StaticRequestHeaders(ifNoneMatch: etag))
        #expect(notModified?.status == .notModified)
        let range = try #require(try await fixture.immediate("/files/hello.txt", StaticRequestHeaders(range: "bytes=0-4")))
        #expect(range.kind == .file)
        #expect(range.status == .partialContent)
        #expect(range.body == "small")
        #expect(range.headers["content-range"] == "bytes 0-4/\(fixture.bytes.utf8.count)")
        let unsatisfiable = try await fixture.immediate("/files/hello.txt", StaticRequestHeaders(range: "bytes=99999-"))
        #expect(unsatisfiable?.status == .rangeNotSatisfiable)
    }

    @Test("files not in the cache, other paths and routes with policies take the full path")
    func fullPathCases() async throws {
        let fixture = try Fixture(extraRoute: """
            [[route]]
            path = "/private"
            static = "\(FileManager.default.temporaryDirectory.path)"
            rate_limit = { per_second = 10, burst = 10 }
            """)
        #expect(try await fixture.dispatch("/files/hello.txt") == .ok)
        #expect(try await fixture.immediate("/files/other.txt") == nil)
        // Accept-Encoding is part of the cache key: a client accepting gzip has not been served yet.
        #expect(try await fixture.immediate("/files/hello.txt", StaticRequestHeaders(acceptEncoding: "gzip")) == nil)
        #expect(try await fixture.immediate("/files/hello.txt", method: .POST) == nil)
        #expect(try await fixture.immediate("/private/x") == nil)
    }

    @Test("one look-up at the head answers what immediateReply answers and tells streaming (proxy) routes apart")
    func answerAtHead() async throws {
        let fixture = try Fixture(extraRoute: """
            [[upstream]]
            name = "origin"
            servers = ["127.0.0.1:9"]

            [[route]]
            path = "/api"
            proxy = { upstream = "origin" }

            [[route]]
            path = "/limited-api"
            proxy = { upstream = "origin" }
            rate_limit = { per_second = 10, burst = 10 }
            """)
        #expect(try await fixture.dispatch("/files/hello.txt") == .ok)
        #expect(try await fixture.atHead("/files/hello.txt") == .reply(.ok))
        #expect(try await fixture.atHead("/files/other.txt") == .other)
        #expect(try await fixture.atHead("/files/hello.txt", method: .POST) == .other)
        #expect(try await fixture.atHead("/healthz") == .reply(.ok))
        #expect(try await fixture.atHead("/healthz", method: .POST) == .other)
        // A proxy route streams whatever the method, and with a policy too (the dispatch applies it).
        #expect(try await fixture.atHead("/api/x?q=1") == .streamed)
        #expect(try await fixture.atHead("/api/x", method: .POST) == .streamed)
        #expect(try await fixture.atHead("/limited-api/x") == .streamed)
        // A path with no normal form is neither: the full path answers it 400.
        #expect(try await fixture.atHead("/api/../../x") == .other)
        #expect(try await fixture.atHead("/nowhere") == .other)
    }
}
