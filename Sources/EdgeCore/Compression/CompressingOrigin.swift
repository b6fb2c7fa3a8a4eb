import NIOCore
import NIOHTTP1

/// Compression in front of an origin whose answers stream (a proxy route's `compress`): a response that arrives
/// uncompressed, of a type worth compressing, is encoded on the fly in the coding the client prefers among the
/// route's (`Accept-Encoding` q-values; the route's order breaks ties), as nginx's `gzip_proxied any` and Caddy's
/// `encode` do.
///
/// It sits under the HTTP cache when the route caches, so the cache stores each compressed variant beside the
/// others (every response it may compress carries `Vary: Accept-Encoding`) and a hit costs no compression. It
/// knows ``Reply`` values and bodies, never a wire format.
///
/// A response is left as it is when it already has a `Content-Encoding`, is a range (`206`, `Content-Range`),
/// has no body (`HEAD` aside: its head says what a `GET` would get), is shorter than ``minimumBytes``, or says
/// `Cache-Control: no-transform` (RFC 9110 §7.7). A compressed response loses its `Content-Length` (it streams
/// chunked over HTTP/1.1) and its `ETag` becomes weak, since the bytes are no longer the upstream's (nginx does
/// the same; conditional requests upstream still match, as `If-None-Match` compares weakly).
final class CompressingOrigin: Origin {
    let origin: any Origin
    /// The codings the route offers, in its order of preference; only those this machine has.
    let codings: [ContentCoding]

    /// Bodies with a `Content-Length` below this are sent as they are: the coding's own overhead outweighs it.
    static let minimumBytes = 256

    /// How many responses the server compresses at once.
    let budget: CompressionBudget

    init(_ origin: any Origin, codings: [ContentCoding], budget: CompressionBudget) {
        self.origin = origin
        self.codings = codings.filter(\.isAvailable)
        self.budget = budget
    }

    var requestBody: OriginRequestBody { origin.requestBody }
    var answersTrace: Bool { origin.answersTrace }

    func serve(_ request: OriginRequest, context: OriginContext) -> Dispatch {
        let header = request.streamed.map { $0.headers.values(of: "accept-encoding").joined(separator: ", ") }
            ?? request.headers.conditional.acceptEncoding
        let accepted = AcceptedEncodings(header: header)
        let coding = accepted.preferred(among: codings)
        let isHead = request.method == .HEAD
        let ifNoneMatch = request.streamed.map { $0.headers.values(of: "if-none-match").joined(separator: ", ") }
            ?? request.headers.conditional.ifNoneMatch
        let exchange = Exchange(coding: coding, isHead: isHead, ifNoneMatch: ifNoneMatch)
        switch origin.serve(request, context: context) {
        case .ready(let reply):
            return .ready(compressed(reply, exchange, eventLoop: context.eventLoop))
        case .pending(let future):
            let eventLoop = context.eventLoop
            return .pending(future.assumeIsolated().map { self.compressed($0, exchange, eventLoop: eventLoop) }.nonisolated())
        }
    }

    /// What of the request decides how its response is treated.
    private struct Exchange {
        /// The coding to use (`nil`: the client accepts none of the route's).
        var coding: ContentCoding?
        var isHead: Bool
        var ifNoneMatch: String?
    }

    /// Fields that describe the bytes as the upstream sent them, wrong once they are encoded — digests (RFC 9530,
    /// RFC 1864) and `Accept-Ranges` (a range of the encoded stream cannot be asked for) — and the two written anew.
    private static let fieldsReplaced: [[UInt8]] = [
        "content-length", "content-md5", "digest", "content-digest", "repr-digest", "accept-ranges", "content-encoding", "etag",
    ].map { Array($0.utf8) }

    /// `reply` compressed when it qualifies; any response that could have been compressed gets `Vary:
    /// Accept-Encoding`. A `304` answering a client's `If-None-Match` with the weak tag a compressed `200` gave it
    /// gets that weak tag and `Vary` back, as the `200` had them (RFC 9110 §15.4.5).
    private func compressed(_ reply: Reply, _ exchange: Exchange, eventLoop: any EventLoop) -> Reply {
        guard case .stream(var response) = reply else { return reply }
        if response.status == .notModified {
            guard exchange.coding != nil, let etag = response.headers.values(of: "etag").first, !etag.hasPrefix("W/"),
                let ifNoneMatch = exchange.ifNoneMatch, ifNoneMatch.contains("W/" + etag)
            else { return reply }
            response.headers.replaceOrAdd(name: "etag", value: "W/" + etag)
            Self.addVary(&response.headers)
            return .stream(response)
        }
        guard Self.qualifies(response, isHead: exchange.isHead) else { return reply }
        Self.addVary(&response.headers)
        guard let coding = exchange.coding else { return .stream(response) }
        if !exchange.isHead {
            // Past the budget, or should an encoder fail to start, the response goes as it is.
            guard let body = response.body, let slot = budget.take(),
                let encoder = try? BodyEncoder(coding: coding, settings: .streaming)
            else { return .stream(response) }
            response.body = CompressingBody.start(source: body, encoder: encoder, slot: slot, eventLoop: eventLoop)
        }
        // One pass over the head: an upstream's `Content-Encoding: identity` (which names no coding) is replaced
        // rather than added to, and the `ETag` comes back weak.
        let etag = response.headers.values(of: "etag").first
        response.headers.remove(names: Self.fieldsReplaced)
        response.headers.add(name: "content-encoding", value: coding.token)
        if let etag { response.headers.add(name: "etag", value: etag.hasPrefix("W/") ? etag : "W/" + etag) }
        return .stream(response)
    }

    /// Adds `Vary: Accept-Encoding` unless the upstream's `Vary` already names it (or is `*`).
    private static func addVary(_ headers: inout FieldBlock) {
        let names = HTTPCachePolicy.varyNames(headers.values(of: "vary"))
        if !names.contains("accept-encoding") && !names.contains("*") { headers.add(name: "vary", value: "Accept-Encoding") }
    }

    /// Whether `response` is one Edge compresses for a client that accepts a coding.
    static func qualifies(_ response: StreamedResponse, isHead: Bool) -> Bool {
        switch response.status.code {
        case 200, 201, 202, 203, 400..<600: break
        default: return false  // 1xx, 204, 206, 3xx (304 and redirects carry little or nothing)
        }
        guard response.body != nil || isHead else { return false }
        let headers = response.headers
        if let encoding = headers.values(of: "content-encoding").first, !encoding.equalsIgnoringASCIICase("identity") { return false }
        guard !headers.contains(name: "content-range") else { return false }
        guard let type = headers.values(of: "content-type").first, MediaTypes.isCompressible(type.lowercased()) else { return false }
        if let length = headers.values(of: "content-length").first.flatMap({ Int($0) }), length < minimumBytes { return false }
        return !listElements(headers.values(of: "cache-control")).contains { $0.equalsIgnoringASCIICase("no-transform") }
    }
}

/// A response body encoded as it streams: what the source has at hand is encoded and passed on, flushed whenever
/// the source has nothing more at hand (so a client sees each part when the upstream sent it — an event stream
/// stays live), and finished with the source's end. The source is read no faster than the client takes the output.
/// Every call is made on the pipes' event loop.
final class CompressingBody: BodyPipeForwarder {
    private let source: BodyPipe
    private let client: BodyPipe
    private let encoder: BodyEncoder
    /// This response's share of the server's ``CompressionBudget``, given back with this object.
    private let slot: CompressionBudget.Slot
    private var paused = false
    private var done = false
    /// Input encoded since the last flush.
    private var pending = false

    /// Starts encoding `source`; returns the pipe the client's front end reads.
    static func start(source: BodyPipe, encoder: BodyEncoder, slot: CompressionBudget.Slot, eventLoop: any EventLoop) -> BodyPipe {
        let client = BodyPipe(eventLoop: eventLoop)
        let body = CompressingBody(source: source, client: client, encoder: encoder, slot: slot)
        client.onDemand = { [body] in
            body.paused = false
            body.source.pump(into: body)
        }
        client.onCancel = { [body] error in
            body.done = true
            body.source.cancel(error)
        }
        source.onBatchEnd = { [weak client] in client?.batchEnded() }
        source.pump(into: body)
        return client
    }

    private init(source: BodyPipe, client: BodyPipe, encoder: BodyEncoder, slot: CompressionBudget.Slot) {
        self.source = source
        self.client = client
        self.encoder = encoder
        self.slot = slot
    }

    /// The client is full, or the body has ended.
    var holdsOff: Bool { paused || done }

    /// Before the pump waits for the source, what was encoded is flushed, so the client has every part the upstream
    /// has sent.
    func sourceRanDry() {
        guard pending, !done else { return }
        pending = false
        do {
            let output = try encoder.encode(ByteBuffer(), flush: true)
            if output.readableBytes > 0, !client.write(output) { paused = true }
        } catch {
            broke(error)
        }
    }

    func take(_ part: Result<BodyPipe.Part, any Error>) {
        guard !done else { return }
        do {
            switch part {
            case .success(.chunk(let chunk)):
                pending = true
                let output = try encoder.encode(chunk, flush: false)
                if output.readableBytes > 0, !client.write(output) { paused = true }
            case .success(.end(let trailers)):
                done = true
                let output = try encoder.finish()
                if output.readableBytes > 0 { client.write(output) }
                client.finish(trailers: trailers)
            case .failure(let error):
                done = true
                client.fail(error)
            }
        } catch {
            broke(error)
        }
    }

    /// The encoder failed: the client's body ends broken, and the source is told to stop.
    private func broke(_ error: any Error) {
        done = true
        client.fail(BodyPipe.Broken(description: "compression failed: \(error)"))
        source.cancel(error)
    }
}
