import NIOCore
import NIOHPACK
import NIOHTTP2

/// Drives one HTTP/2 connection at the frame level: opens up to `streams` concurrent streams, each
/// carrying the prepared request, and reports each response to the connection's ``TransportDelegate``.
///
/// It sits directly behind `NIOHTTP2Handler` (no stream multiplexer, no per-stream channels), the way
/// h2load works, so that the generator's cost per request stays well below a server's. Without a
/// multiplexer, flow control is this handler's job: streams get the largest initial window in SETTINGS,
/// and the connection window is topped up as DATA is consumed.
final class HTTP2LoadHandler: ChannelInboundHandler, LoadTransport {
    typealias InboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    /// The settings this client announces: no push, the largest stream window.
    static let initialSettings: HTTP2Settings = [
        HTTP2Setting(parameter: .enablePush, value: 0),
        HTTP2Setting(parameter: .initialWindowSize, value: Int(Int32.max)),
        HTTP2Setting(parameter: .maxHeaderListSize, value: 64 * 1024),
    ]
    /// The connection window this handler keeps open (bytes the server may send before a WINDOW_UPDATE).
    private static let connectionWindow = 1 << 30
    private static let defaultConnectionWindow = 65_535

    private struct Stream {
        var stamp: RequestStamp
        var status: Int?
    }

    private let delegate: any TransportDelegate
    private let template: RequestTemplate
    private let depth: Int
    private var streams: [Int32: Stream] = [:]
    private var nextStreamID: Int32 = 1
    private var context: ChannelHandlerContext?
    private var ready = false
    private var closing = false
    private var goingAway = false
    private var reportedClose = false
    private var failure: TransportFailure?
    private var unacknowledgedBytes = 0

    /// A handler sending `template` on up to `depth` concurrent streams.
    init(template: RequestTemplate, depth: Int, delegate: any TransportDelegate) {
        self.delegate = delegate
        self.template = template
        self.depth = depth
        self.streams.reserveCapacity(depth)
    }

    // MARK: LoadTransport

    var canSend: Bool { ready && !closing && !goingAway && streams.count < depth && nextStreamID < Int32.max - 2 }
    var inFlight: Int { streams.count }
    var oldestSentAt: UInt64? { streams.values.lazy.map(\.stamp.sent).min() }

    func send(_ stamp: RequestStamp) {
        guard let context else { return }
        let id = nextStreamID
        nextStreamID += 2
        streams[id] = Stream(stamp: stamp)
        let streamID = HTTP2StreamID(id)
        let headers = HTTP2Frame.FramePayload.Headers(headers: template.http2Headers, endStream: template.body == nil)
        context.write(wrapOutboundOut(HTTP2Frame(streamID: streamID, payload: .headers(headers))), promise: nil)
        if let body = template.body {
            let data = HTTP2Frame.FramePayload.Data(data: .byteBuffer(body), endStream: true)
            context.write(wrapOutboundOut(HTTP2Frame(streamID: streamID, payload: .data(data))), promise: nil)
        }
    }

    func flush() {
        context?.flush()
    }

    func close() {
        guard let context, !closing else { return }
        closing = true
        context.close(promise: nil)
    }

    func abandon() -> Int {
        let count = streams.count
        streams.removeAll()
        reportedClose = true
        closing = true
        context?.close(promise: nil)
        return count
    }

    // MARK: ChannelHandler

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { becomeReady(context: context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        becomeReady(context: context)
        context.fireChannelActive()
    }

    private func becomeReady(context: ChannelHandlerContext) {
        guard !ready else { return }
        ready = true
        let increment = Self.connectionWindow - Self.defaultConnectionWindow
        context.writeAndFlush(wrapOutboundOut(HTTP2Frame(streamID: .rootStream, payload: .windowUpdate(windowSizeIncrement: increment))), promise: nil)
        delegate.transportReady(self, protocol: "h2")
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        guard !reportedClose else { return }
        let id = Int32(frame.streamID)
        switch frame.payload {
        case .headers(let headers):
            guard var stream = streams[id] else { return }
            guard let statusText = headers.headers.first(name: ":status"), let status = Int(statusText) else {
                streams[id] = nil
                delegate.transportFailed(stamp: stream.stamp, failure: TransportFailure(kind: .protocol, message: "HTTP/2 response without :status"))
                return
            }
            if stream.status == nil && (100..<200).contains(status) { return }
            if stream.status == nil { stream.status = status }
            if headers.endStream {
                complete(id, stream)
            } else {
                streams[id] = stream
            }
        case .data(let payload):
            unacknowledgedBytes += payload.data.readableBytes
            if payload.endStream, let stream = streams[id] { complete(id, stream) }
        case .rstStream(let code):
            if let stream = streams.removeValue(forKey: id) {
                delegate.transportFailed(stamp: stream.stamp, failure: TransportFailure(kind: .reset, message: "HTTP/2 stream reset by the server (\(code))"))
            }
        case .goAway(let lastStreamID, let code, _):
            goingAway = true
            let last = Int32(lastStreamID)
            for (streamID, stream) in streams where streamID > last {
                streams[streamID] = nil
                delegate.transportFailed(stamp: stream.stamp, failure: TransportFailure(kind: .reset, message: "HTTP/2 GOAWAY from the server (\(code)) before the stream was processed"))
            }
            if streams.isEmpty { close() }
        default:
            break
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if unacknowledgedBytes >= Self.connectionWindow / 2 {
            context.write(wrapOutboundOut(HTTP2Frame(streamID: .rootStream, payload: .windowUpdate(windowSizeIncrement: unacknowledgedBytes))), promise: nil)
            unacknowledgedBytes = 0
            context.flush()
        }
        if !closing { delegate.transportReadComplete() }
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        reportClosed()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // Stream-level errors from NIOHTTP2 (e.g. a content-length mismatch) carry a stream ID; they fail one request.
        if let streamError = error as? NIOHTTP2Errors.StreamError, let stream = streams.removeValue(forKey: Int32(streamError.streamID)) {
            delegate.transportFailed(stamp: stream.stamp, failure: TransportFailure(kind: .protocol, message: "HTTP/2: \(streamError.baseError)"))
            return
        }
        if failure == nil { failure = FailureClassifier.classify(error, beforeReady: !ready) }
        close()
    }

    private func complete(_ id: Int32, _ stream: Stream) {
        streams[id] = nil
        guard let status = stream.status else {
            delegate.transportFailed(stamp: stream.stamp, failure: TransportFailure(kind: .protocol, message: "HTTP/2 stream ended before its response headers"))
            return
        }
        delegate.transportCompleted(status: status, stamp: stream.stamp)
        if goingAway && streams.isEmpty { close() }
    }

    private func reportClosed() {
        guard !reportedClose else { return }
        reportedClose = true
        closing = true
        let count = streams.count
        streams.removeAll()
        delegate.transportClosed(outstanding: count, failure: failure)
    }
}
