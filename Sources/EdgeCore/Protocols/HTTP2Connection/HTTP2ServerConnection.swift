import NIOCore
import NIOHPACK
import NIOHTTP2

/// Edge's own server side of an HTTP/2 connection (RFC 9113), in place of `NIOHTTP2Handler`: frames parsed in
/// place from the read buffer, stream state in one dictionary of small structs, flow control, the abuse limits,
/// and every frame of a read batch written into one buffer. Its face towards the handlers behind it is
/// `NIOHTTP2Handler`'s — it passes on `HTTP2Frame`s and the stream events `HTTP2StreamMultiplexer` and
/// ``HTTP2FastPathHandler`` consume, takes `HTTP2Frame`s to write and tells a `NIOHTTP2FrameDelegate` what it
/// wrote — so either can sit in the pipeline (`http2_engine`), and NIOHTTP2 stays the reference it is tested
/// against.
///
/// What it keeps from NIOHTTP2, each with the same limit: HPACK (NIOHPACK's encoder and decoder, with the
/// header list limit), `CONTINUATION` floods (5 in a row and the header list size), rapid reset (200
/// `RST_STREAM` in 30 s), control-frame floods (200 `PING`/`SETTINGS`/`PRIORITY` in 30 s), empty `DATA`
/// floods, stream-error floods (200 in 30 s), window overflows, and frame-size checks. A connection error is
/// answered with `GOAWAY` and its code; ``HTTP2GoAwayCloser`` closes the connection after it. Beyond the
/// advertised stream limit the fast path refuses streams with `REFUSED_STREAM`; at twice that, this layer does.
final class HTTP2ServerConnection: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = HTTP2Frame
    typealias OutboundIn = HTTP2Frame
    typealias OutboundOut = IOData

    /// What Edge's SETTINGS say, and the limits behind them.
    struct Settings {
        /// SETTINGS_MAX_CONCURRENT_STREAMS as advertised.
        var maxConcurrentStreams: Int
        /// The open streams past which this layer refuses new ones itself.
        var enforcedStreamLimit: Int
        var maxHeaderListSize: Int
        var headerTableSize: Int
        var enableConnectProtocol: Bool
    }

    private struct Stream {
        /// The client may still send on the stream (no END_STREAM yet).
        var remoteOpen: Bool
        /// Edge may still send on the stream.
        var localOpen: Bool
        var sendWindow: Int
        var receiveWindow: Int
        /// The request body bytes its `content-length` says are still to come; -1 without one.
        var bodyBytesExpected: Int = -1
    }

    /// A frame waiting for flow-control window, in the order it was written.
    private enum Queued {
        case data(IOData, endStream: Bool, promise: EventLoopPromise<Void>?)
        case headers(HPACKHeaders, endStream: Bool, promise: EventLoopPromise<Void>?)
    }

    /// A header block being collected from HEADERS and CONTINUATION frames.
    private struct OpenHeaderBlock {
        var streamID: UInt32
        var endStream: Bool
        var dependsOnItself: Bool
        var fragments: ByteBuffer
        var continuations: Int
    }

    private enum State {
        case awaitingPreface
        case awaitingSettings
        case open
        /// A connection error was answered with GOAWAY: input is dropped from here on.
        case failed
    }

    private let settings: Settings
    private let delegate: (any NIOHTTP2FrameDelegate)?
    /// The fast path behind this handler, offered each new stream's request head first
    /// (``HTTP2FastPathHandler/answerInline(_:headers:)``). Cleared when this handler leaves the pipeline.
    var fastPath: HTTP2FastPathHandler?
    private var state = State.awaitingPreface
    private var decoder: HPACKDecoder
    private var encoder: HPACKEncoder
    private var streams: [UInt32: Stream] = [:]
    private var queued: [UInt32: CircularBuffer<Queued>] = [:]
    /// Streams with queued frames, in the order they were blocked.
    private var blocked: [UInt32] = []
    private var headerBlock: OpenHeaderBlock?
    /// The highest stream the client has opened (or skipped over).
    private var lastClientStreamID: UInt32 = 0
    /// Set once Edge has sent GOAWAY: streams above it are ignored.
    private var goAwayLastStreamID: UInt32?
    /// Streams Edge reset recently: frames still arriving on them are ignored (RFC 9113 §5.1, "closed").
    private var resetByUs = RecentStreams(capacity: 64)
    /// Streams that closed otherwise recently: frames on them are a connection error of type STREAM_CLOSED.
    private var closedOtherwise = RecentStreams(capacity: 64)
    /// Streams the client reset recently: a further RST_STREAM on one is ignored and not counted again.
    private var resetByClient = RecentStreams(capacity: 64)

    private var peerInitialWindow = HTTP2Wire.defaultInitialWindow
    private var peerMaxFrameSize = HTTP2Wire.defaultMaxFrameSize
    private var connectionSendWindow = HTTP2Wire.defaultInitialWindow
    private var connectionReceiveWindow = HTTP2Wire.defaultInitialWindow
    /// The connection's receive window is topped up to this whenever half of it is used.
    private static let connectionWindowTarget = 1 << 20
    private let localInitialWindow = HTTP2Wire.defaultInitialWindow
    private var settingsAcknowledged = false

    private var resetFrames = HTTP2RateLimit(maximum: 200, window: .seconds(30))
    private var controlFrames = HTTP2RateLimit(maximum: 200, window: .seconds(30))
    private var streamErrors = HTTP2RateLimit(maximum: 200, window: .seconds(30))
    private var emptyDataFrames = 0
    private static let maximumSequentialEmptyDataFrames = 1
    private static let maximumContinuationFrames = 5

    /// Frame bytes written since the last write to the channel.
    private var out: ByteBuffer
    /// A partial frame left over from the previous read.
    private var inbound: ByteBuffer?
    /// Inside the handling of one inbound frame: stream events raised by writes wait until its own are fired.
    private var handlingInbound = false
    private var deferredEvents: [StreamClosedEvent] = []
    private var deferredWindowEvents: [NIOHTTP2WindowUpdatedEvent] = []
    /// A DATA payload up to this size (one frame at the default frame size) is copied into ``out``; a larger
    /// one is written as its own buffer. Copied, a read batch's responses leave as one buffer, which TLS seals
    /// into full 16 KiB records: a client decrypts one record per response or fewer, not two (a small one for
    /// the HEADERS and DATA frame headers, then the body's).
    private static let copyLimit = 16_384

    init(settings: Settings, delegate: (any NIOHTTP2FrameDelegate)?, allocator: ByteBufferAllocator) {
        self.settings = settings
        self.delegate = delegate
        // Until the client acknowledges Edge's SETTINGS it may use the default table size (4096).
        self.decoder = HPACKDecoder(
            allocator: allocator, maxDynamicTableSize: max(settings.headerTableSize, 4096), maxHeaderListSize: settings.maxHeaderListSize
        )
        self.encoder = HPACKEncoder(allocator: allocator, useHuffmanEncoding: true)
        self.out = allocator.buffer(capacity: 1024)
    }

    // MARK: lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { sendPreface(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        sendPreface(context: context)
        context.fireChannelActive()
    }

    private var prefaceSent = false
    /// The connection's context while the handler is in the pipeline, for ``writeResponse(_:reuseAs:fields:body:)``.
    private var context: ChannelHandlerContext?
    /// The client changed the encoder's table size since the last block the encoder wrote.
    private var tableSizeUpdatePending = false

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        fastPath = nil
    }

    /// Edge's connection preface: its SETTINGS.
    private func sendPreface(context: ChannelHandlerContext) {
        guard !prefaceSent else { return }
        prefaceSent = true
        var entries: [(UInt16, UInt32)] = [
            (HTTP2Wire.Setting.maxConcurrentStreams, UInt32(settings.maxConcurrentStreams)),
            (HTTP2Wire.Setting.maxHeaderListSize, UInt32(settings.maxHeaderListSize)),
            (HTTP2Wire.Setting.headerTableSize, UInt32(settings.headerTableSize)),
        ]
        if settings.enableConnectProtocol { entries.append((HTTP2Wire.Setting.enableConnectProtocol, 1)) }
        out.writeHTTP2FrameHeader(length: entries.count * 6, type: HTTP2Wire.FrameType.settings, flags: 0, streamID: 0)
        for (id, value) in entries { out.writeMultipleIntegers(id, value) }
        flushOut(context: context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        failQueued(streamIDs: Array(queued.keys))
        context.fireChannelInactive()
    }

    // MARK: inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard state != .failed else { return }
        var buffer = unwrapInboundIn(data)
        if var partial = inbound {
            inbound = nil
            partial.writeBuffer(&buffer)
            buffer = partial
        }
        parse(&buffer, context: context)
        if state != .failed, buffer.readableBytes > 0 {
            // Copied, so the read's whole buffer is not kept for a partial frame.
            var rest = context.channel.allocator.buffer(capacity: max(buffer.readableBytes, 256))
            rest.writeBuffer(&buffer)
            inbound = rest
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.fireChannelReadComplete()
        if out.readableBytes > 0 || unflushed { flushOut(context: context) }
    }

    private func parse(_ buffer: inout ByteBuffer, context: ChannelHandlerContext) {
        while state != .failed {
            if state == .awaitingPreface {
                let available = min(buffer.readableBytes, HTTP2Wire.preface.count)
                guard let bytes = buffer.getBytes(at: buffer.readerIndex, length: available),
                    bytes[...] == HTTP2Wire.preface[..<available]
                else {
                    connectionError(.protocolError, context: context)
                    return
                }
                guard available == HTTP2Wire.preface.count else { return }
                buffer.moveReaderIndex(forwardBy: available)
                state = .awaitingSettings
            }
            guard buffer.readableBytes >= HTTP2Wire.frameHeaderBytes else { return }
            let header = HTTP2Wire.FrameHeader(buffer, at: buffer.readerIndex)
            guard header.length <= HTTP2Wire.defaultMaxFrameSize else {
                connectionError(.frameSizeError, context: context)
                return
            }
            guard buffer.readableBytes >= HTTP2Wire.frameHeaderBytes + header.length else { return }
            if state == .awaitingSettings {
                // The client's preface ends with a SETTINGS frame (RFC 9113 §3.4).
                guard header.type == HTTP2Wire.FrameType.settings, !header.has(HTTP2Wire.Flag.ack) else {
                    connectionError(.protocolError, context: context)
                    return
                }
                state = .open
            }
            buffer.moveReaderIndex(forwardBy: HTTP2Wire.frameHeaderBytes)
            let payload = buffer.readSlice(length: header.length)!
            handlingInbound = true
            handle(header, payload, context: context)
            handlingInbound = false
            deliverDeferredEvents(context: context)
        }
    }

    private func handle(_ header: HTTP2Wire.FrameHeader, _ payload: ByteBuffer, context: ChannelHandlerContext) {
        if let block = headerBlock {
            // Nothing may come between a HEADERS frame without END_HEADERS and its CONTINUATION frames (§6.10).
            guard header.type == HTTP2Wire.FrameType.continuation, header.streamID == block.streamID else {
                connectionError(.protocolError, context: context)
                return
            }
            continuation(header, payload, context: context)
            return
        }
        switch header.type {
        case HTTP2Wire.FrameType.data: data(header, payload, context: context)
        case HTTP2Wire.FrameType.headers: headers(header, payload, context: context)
        case HTTP2Wire.FrameType.priority: priority(header, payload, context: context)
        case HTTP2Wire.FrameType.rstStream: rstStream(header, payload, context: context)
        case HTTP2Wire.FrameType.settings: settingsFrame(header, payload, context: context)
        case HTTP2Wire.FrameType.pushPromise: connectionError(.protocolError, context: context)  // clients never push
        case HTTP2Wire.FrameType.ping: ping(header, payload, context: context)
        case HTTP2Wire.FrameType.goAway: goAway(header, payload, context: context)
        case HTTP2Wire.FrameType.windowUpdate: windowUpdate(header, payload, context: context)
        case HTTP2Wire.FrameType.continuation: connectionError(.protocolError, context: context)  // no open block
        default: break  // unknown frame types are ignored (§5.5)
        }
    }

    /// The payload without its padding (`PADDED`), or `nil` when the padding is as long as the payload or longer.
    private static func unpadded(_ header: HTTP2Wire.FrameHeader, _ payload: ByteBuffer) -> ByteBuffer? {
        guard header.has(HTTP2Wire.Flag.padded) else { return payload }
        var payload = payload
        guard let padding = payload.readInteger(as: UInt8.self), Int(padding) <= payload.readableBytes else { return nil }
        return payload.readSlice(length: payload.readableBytes - Int(padding))
    }

    private func data(_ header: HTTP2Wire.FrameHeader, _ payload: ByteBuffer, context: ChannelHandlerContext) {
        let id = header.streamID
        guard id != 0, id <= lastClientStreamID else {
            connectionError(.protocolError, context: context)  // stream 0, or an idle stream (§5.1)
            return
        }
        guard let body = Self.unpadded(header, payload) else {
            connectionError(.protocolError, context: context)
            return
        }
        // The whole payload, padding included, counts against both windows (§6.9.1).
        connectionReceiveWindow -= header.length
        guard connectionReceiveWindow >= 0 else {
            connectionError(.flowControlError, context: context)
            return
        }
        if connectionReceiveWindow <= Self.connectionWindowTarget / 2 {
            let increment = Self.connectionWindowTarget - connectionReceiveWindow
            connectionReceiveWindow = Self.connectionWindowTarget
            out.writeHTTP2FrameHeader(length: 4, type: HTTP2Wire.FrameType.windowUpdate, flags: 0, streamID: 0)
            out.writeInteger(UInt32(increment))
        }
        let endStream = header.has(HTTP2Wire.Flag.endStream)
        if body.readableBytes == 0, !endStream {
            emptyDataFrames += 1
            if emptyDataFrames > Self.maximumSequentialEmptyDataFrames {
                connectionError(.enhanceYourCalm, context: context)
                return
            }
        } else if endStream {
            emptyDataFrames = 0
        }
        guard var stream = streams[id] else {
            if closedOtherwise.contains(id) { connectionError(.streamClosed, context: context) }
            return  // reset by Edge, or closed long ago: ignored
        }
        guard stream.remoteOpen else {
            streamError(id, .streamClosed, context: context)  // half-closed (remote)
            return
        }
        stream.receiveWindow -= header.length
        guard stream.receiveWindow >= 0 else {
            streamError(id, .flowControlError, context: context)
            return
        }
        if stream.bodyBytesExpected >= 0 {
            // A body longer or shorter than its content-length makes the request malformed (RFC 9113 §8.1.1).
            stream.bodyBytesExpected -= body.readableBytes
            guard stream.bodyBytesExpected >= 0, !endStream || stream.bodyBytesExpected == 0 else {
                streamError(id, .protocolError, context: context)
                return
            }
        }
        if endStream { stream.remoteOpen = false }
        streams[id] = stream
        let frame = HTTP2Frame(
            streamID: HTTP2StreamID(Int32(id)), payload: .data(.init(data: .byteBuffer(body), endStream: endStream))
        )
        context.fireChannelRead(wrapInboundOut(frame))
        if endStream {
            closeIfDone(id, context: context)
        } else if let stream = streams[id] {
            context.fireUserInboundEventTriggered(
                NIOHTTP2WindowUpdatedEvent(
                    streamID: HTTP2StreamID(Int32(id)), inboundWindowSize: stream.receiveWindow, outboundWindowSize: stream.sendWindow
                )
            )
        }
    }

    private func headers(_ header: HTTP2Wire.FrameHeader, _ payload: ByteBuffer, context: ChannelHandlerContext) {
        let id = header.streamID
        guard id != 0, id & 1 == 1 else {
            connectionError(.protocolError, context: context)  // stream 0, or a stream only a server may open
            return
        }
        guard var block = Self.unpadded(header, payload) else {
            connectionError(.protocolError, context: context)
            return
        }
        var dependsOnItself = false
        if header.has(HTTP2Wire.Flag.priority) {
            guard let dependency = block.readInteger(as: UInt32.self), block.readInteger(as: UInt8.self) != nil else {
                connectionError(.frameSizeError, context: context)
                return
            }
            dependsOnItself = dependency & 0x7fff_ffff == id
        }
        let endStream = header.has(HTTP2Wire.Flag.endStream)
        if header.has(HTTP2Wire.Flag.endHeaders) {
            headerBlockComplete(id, block, endStream: endStream, dependsOnItself: dependsOnItself, context: context)
            return
        }
        guard block.readableBytes <= settings.maxHeaderListSize else {
            connectionError(.protocolError, context: context)
            return
        }
        var fragments = context.channel.allocator.buffer(capacity: block.readableBytes * 2)
        fragments.writeBuffer(&block)
        headerBlock = OpenHeaderBlock(streamID: id, endStream: endStream, dependsOnItself: dependsOnItself, fragments: fragments, continuations: 0)
    }

    private func continuation(_ header: HTTP2Wire.FrameHeader, _ payload: ByteBuffer, context: ChannelHandlerContext) {
        guard var block = headerBlock else { return }
        block.continuations += 1
        guard block.continuations <= Self.maximumContinuationFrames,
            block.fragments.readableBytes + payload.readableBytes <= settings.maxHeaderListSize
        else {
            headerBlock = nil
            connectionError(block.continuations > Self.maximumContinuationFrames ? .enhanceYourCalm : .protocolError, context: context)
            return
        }
        var payload = payload
        headerBlock = nil  // so that `fragments` is uniquely referenced while it grows
        block.fragments.writeBuffer(&payload)
        if header.has(HTTP2Wire.Flag.endHeaders) {
            headerBlockComplete(
                block.streamID, block.fragments, endStream: block.endStream, dependsOnItself: block.dependsOnItself, context: context
            )
        } else {
            headerBlock = block
        }
    }

    /// A complete header block: decoded first (HPACK's table must follow every block), then judged by the
    /// state of its stream.
    private func headerBlockComplete(
        _ id: UInt32, _ block: ByteBuffer, endStream: Bool, dependsOnItself: Bool, context: ChannelHandlerContext
    ) {
        var block = block
        let fields: HPACKHeaders
        do {
            fields = try decoder.decodeHeaders(from: &block)
        } catch {
            connectionError(.compressionError, context: context)
            return
        }
        let streamID = HTTP2StreamID(Int32(id))
        if id > lastClientStreamID {
            lastClientStreamID = id
            if let last = goAwayLastStreamID, id > last { return }  // after GOAWAY: ignored (§6.8)
            if dependsOnItself {
                streamError(id, .protocolError, context: context)
                return
            }
            if streams.count >= settings.enforcedStreamLimit {
                streamError(id, .refusedStream, context: context, counts: false)
                return
            }
            var stream = Stream(remoteOpen: !endStream, localOpen: true, sendWindow: peerInitialWindow, receiveWindow: localInitialWindow)
            if !endStream, let length = fields.first(name: "content-length"), let expected = Int(length), expected >= 0 {
                stream.bodyBytesExpected = expected
            }
            streams[id] = stream
            emptyDataFrames = 0
            if endStream, let fastPath {
                switch fastPath.answerInline(streamID, headers: fields) {
                case .complete:
                    // Answered and over before anyone saw the stream: its events would tell nobody anything.
                    if let last = deferredEvents.last, last.streamID == streamID {
                        deferredEvents.removeLast()
                    } else {
                        deferredEvents.removeAll { $0.streamID == streamID }
                    }
                    return
                case .pending:
                    context.fireUserInboundEventTriggered(
                        NIOHTTP2StreamCreatedEvent(
                            streamID: streamID, localInitialWindowSize: UInt32(localInitialWindow),
                            remoteInitialWindowSize: UInt32(peerInitialWindow)
                        )
                    )
                    return
                case .notAnswered:
                    break
                }
            }
            let frame = HTTP2Frame(streamID: streamID, payload: .headers(.init(headers: fields, endStream: endStream)))
            context.fireChannelRead(wrapInboundOut(frame))
            context.fireUserInboundEventTriggered(
                NIOHTTP2StreamCreatedEvent(
                    streamID: streamID, localInitialWindowSize: UInt32(localInitialWindow), remoteInitialWindowSize: UInt32(peerInitialWindow)
                )
            )
            return
        }
        guard var stream = streams[id] else {
            if resetByUs.contains(id) { return }
            // A stream that ended (§5.1 "closed"), or one the client skipped over, which is closed too.
            connectionError(closedOtherwise.contains(id) ? .streamClosed : .protocolError, context: context)
            return
        }
        guard stream.remoteOpen else {
            streamError(id, .streamClosed, context: context)  // half-closed (remote): §5.1
            return
        }
        if dependsOnItself {
            streamError(id, .protocolError, context: context)
            return
        }
        guard endStream, stream.bodyBytesExpected <= 0 else {
            // A second header block on a stream is a trailer section and must end it (§8.1), and with it the
            // body its content-length announced.
            streamError(id, .protocolError, context: context)
            return
        }
        stream.remoteOpen = false
        streams[id] = stream
        emptyDataFrames = 0
        context.fireChannelRead(wrapInboundOut(HTTP2Frame(streamID: streamID, payload: .headers(.init(headers: fields, endStream: true)))))
        closeIfDone(id, context: context)
    }

    private func priority(_ header: HTTP2Wire.FrameHeader, _ payload: ByteBuffer, context: ChannelHandlerContext) {
        guard header.streamID != 0 else {
            connectionError(.protocolError, context: context)
            return
        }
        guard header.length == 5 else {
            streamError(header.streamID, .frameSizeError, context: context)
            return
        }
        if controlFrames.record() {
            connectionError(.enhanceYourCalm, context: context)
            return
        }
        // Priorities are not followed (RFC 9113 deprecates them); a stream that depends on itself is an error.
        if payload.getInteger(at: payload.readerIndex, as: UInt32.self)! & 0x7fff_ffff == header.streamID {
            streamError(header.streamID, .protocolError, context: context)
        }
    }

    private func rstStream(_ header: HTTP2Wire.FrameHeader, _ payload: ByteBuffer, context: ChannelHandlerContext) {
        let id = header.streamID
        guard header.length == 4 else {
            connectionError(.frameSizeError, context: context)
            return
        }
        guard id != 0, id <= lastClientStreamID else {
            connectionError(.protocolError, context: context)
            return
        }
        // A stream the client has reset already: its RST_STREAM counted once. python-h2 (httpx) answers every DATA
        // frame still in flight on a stream it reset with another one, hundreds for a dozen cancelled downloads;
        // counted, they closed the connection as a rapid reset (NIOHTTP2 counts them all).
        if streams[id] == nil, resetByClient.contains(id) { return }
        if resetFrames.record() {
            connectionError(.enhanceYourCalm, context: context)
            return
        }
        guard streams.removeValue(forKey: id) != nil else { return }
        let code = HTTP2ErrorCode(networkCode: Int(payload.getInteger(at: payload.readerIndex, as: UInt32.self)!))
        closedOtherwise.insert(id)
        resetByClient.insert(id)
        failQueued(streamIDs: [id])
        let streamID = HTTP2StreamID(Int32(id))
        context.fireChannelRead(wrapInboundOut(HTTP2Frame(streamID: streamID, payload: .rstStream(code))))
        context.fireUserInboundEventTriggered(StreamClosedEvent(streamID: streamID, reason: code))
    }

    private func settingsFrame(_ header: HTTP2Wire.FrameHeader, _ payload: ByteBuffer, context: ChannelHandlerContext) {
        guard header.streamID == 0 else {
            connectionError(.protocolError, context: context)
            return
        }
        if header.has(HTTP2Wire.Flag.ack) {
            guard header.length == 0 else {
                connectionError(.frameSizeError, context: context)
                return
            }
            if !settingsAcknowledged {
                settingsAcknowledged = true
                decoder.maxDynamicTableLength = settings.headerTableSize
            }
            context.fireChannelRead(wrapInboundOut(HTTP2Frame(streamID: .rootStream, payload: .settings(.ack))))
            return
        }
        guard header.length % 6 == 0 else {
            connectionError(.frameSizeError, context: context)
            return
        }
        if controlFrames.record() {
            connectionError(.enhanceYourCalm, context: context)
            return
        }
        var payload = payload
        var windowGrew = false
        while let (id, value) = payload.readMultipleIntegers(as: (UInt16, UInt32).self) {
            switch id {
            case HTTP2Wire.Setting.headerTableSize:
                // Edge's encoder keeps to the default table size at most.
                let size = min(Int(value), 4096)
                if size != encoder.allowedDynamicTableSize {
                    try? encoder.setDynamicTableSize(size)
                    tableSizeUpdatePending = true
                    tableGeneration &+= 1
                }
            case HTTP2Wire.Setting.enablePush, HTTP2Wire.Setting.enableConnectProtocol:
                guard value <= 1 else {
                    connectionError(.protocolError, context: context)
                    return
                }
            case HTTP2Wire.Setting.initialWindowSize:
                guard value <= UInt32(HTTP2Wire.maxWindow) else {
                    connectionError(.flowControlError, context: context)
                    return
                }
                let delta = Int(value) - peerInitialWindow
                peerInitialWindow = Int(value)
                for (id, var stream) in streams {
                    stream.sendWindow += delta
                    guard stream.sendWindow <= HTTP2Wire.maxWindow else {
                        connectionError(.flowControlError, context: context)
                        return
                    }
                    streams[id] = stream
                }
                windowGrew = windowGrew || delta > 0
            case HTTP2Wire.Setting.maxFrameSize:
                guard value >= 16_384, value <= 16_777_215 else {
                    connectionError(.protocolError, context: context)
                    return
                }
                peerMaxFrameSize = Int(value)
            default:
                break  // SETTINGS_MAX_CONCURRENT_STREAMS (Edge opens none), the header list size, unknown ones
            }
        }
        out.writeHTTP2FrameHeader(length: 0, type: HTTP2Wire.FrameType.settings, flags: HTTP2Wire.Flag.ack, streamID: 0)
        if windowGrew { sendQueued(context: context) }
    }

    private func ping(_ header: HTTP2Wire.FrameHeader, _ payload: ByteBuffer, context: ChannelHandlerContext) {
        guard header.length == 8 else {
            connectionError(.frameSizeError, context: context)
            return
        }
        guard header.streamID == 0 else {
            connectionError(.protocolError, context: context)
            return
        }
        let value = payload.getInteger(at: payload.readerIndex, as: UInt64.self)!
        if header.has(HTTP2Wire.Flag.ack) {
            let frame = HTTP2Frame(streamID: .rootStream, payload: .ping(HTTP2PingData(withInteger: value), ack: true))
            context.fireChannelRead(wrapInboundOut(frame))
            return
        }
        if controlFrames.record() {
            connectionError(.enhanceYourCalm, context: context)
            return
        }
        out.writeHTTP2FrameHeader(length: 8, type: HTTP2Wire.FrameType.ping, flags: HTTP2Wire.Flag.ack, streamID: 0)
        out.writeInteger(value)
    }

    private func goAway(_ header: HTTP2Wire.FrameHeader, _ payload: ByteBuffer, context: ChannelHandlerContext) {
        guard header.streamID == 0 else {
            connectionError(.protocolError, context: context)
            return
        }
        guard header.length >= 8 else {
            connectionError(.frameSizeError, context: context)
            return
        }
        let last = payload.getInteger(at: payload.readerIndex, as: UInt32.self)! & 0x7fff_ffff
        let code = HTTP2ErrorCode(networkCode: Int(payload.getInteger(at: payload.readerIndex + 4, as: UInt32.self)!))
        let frame = HTTP2Frame(
            streamID: .rootStream, payload: .goAway(lastStreamID: HTTP2StreamID(Int32(last)), errorCode: code, opaqueData: nil)
        )
        context.fireChannelRead(wrapInboundOut(frame))
    }

    private func windowUpdate(_ header: HTTP2Wire.FrameHeader, _ payload: ByteBuffer, context: ChannelHandlerContext) {
        guard header.length == 4 else {
            connectionError(.frameSizeError, context: context)
            return
        }
        let id = header.streamID
        let increment = Int(payload.getInteger(at: payload.readerIndex, as: UInt32.self)! & 0x7fff_ffff)
        if id == 0 {
            guard increment > 0 else {
                connectionError(.protocolError, context: context)
                return
            }
            connectionSendWindow += increment
            guard connectionSendWindow <= HTTP2Wire.maxWindow else {
                connectionError(.flowControlError, context: context)
                return
            }
            if !blocked.isEmpty { sendQueued(context: context) }
            return
        }
        guard id <= lastClientStreamID else {
            connectionError(.protocolError, context: context)  // an idle stream
            return
        }
        guard var stream = streams[id] else { return }  // closed: allowed, ignored
        guard increment > 0 else {
            streamError(id, .protocolError, context: context)
            return
        }
        stream.sendWindow += increment
        guard stream.sendWindow <= HTTP2Wire.maxWindow else {
            streamError(id, .flowControlError, context: context)
            return
        }
        streams[id] = stream
        if queued[id] != nil { sendQueued(context: context) }
    }

    // MARK: errors

    /// Answers a connection error: GOAWAY with `code`, after which input is dropped and ``HTTP2GoAwayCloser``
    /// closes the connection.
    private func connectionError(_ code: HTTP2ErrorCode, context: ChannelHandlerContext) {
        guard state != .failed else { return }
        state = .failed
        inbound = nil
        headerBlock = nil
        out.writeHTTP2FrameHeader(length: 8, type: HTTP2Wire.FrameType.goAway, flags: 0, streamID: 0)
        out.writeMultipleIntegers(lastClientStreamID, UInt32(code.networkCode))
        failQueued(streamIDs: Array(queued.keys))
        flushOut(context: context)
    }

    /// Answers a stream error: `RST_STREAM` with `code`, and the stream is closed. Too many of them make a
    /// connection error.
    private func streamError(_ id: UInt32, _ code: HTTP2ErrorCode, context: ChannelHandlerContext, counts: Bool = true) {
        if counts, streamErrors.record() {
            connectionError(.enhanceYourCalm, context: context)
            return
        }
        writeReset(id, code, context: context)
    }

    /// Writes `RST_STREAM` with `code`, reports it to the frame delegate, and closes the stream: what is queued
    /// on it fails, frames still arriving on it are ignored, and its close is raised.
    private func writeReset(_ id: UInt32, _ code: HTTP2ErrorCode, context: ChannelHandlerContext) {
        out.writeHTTP2FrameHeader(length: 4, type: HTTP2Wire.FrameType.rstStream, flags: 0, streamID: id)
        out.writeInteger(UInt32(code.networkCode))
        let streamID = HTTP2StreamID(Int32(id))
        delegate?.wroteFrame(HTTP2Frame(streamID: streamID, payload: .rstStream(code)))
        resetByUs.insert(id)
        if streams.removeValue(forKey: id) != nil {
            failQueued(streamIDs: [id])
            raise(StreamClosedEvent(streamID: streamID, reason: code), context: context)
        }
    }

    // MARK: outbound

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let frame = unwrapOutboundIn(data)
        guard state != .failed else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        let id = UInt32(Int32(frame.streamID))
        switch frame.payload {
        case .headers(let headers):
            writeHeaders(id, headers.headers, endStream: headers.endStream, promise: promise, context: context)
        case .data(let data):
            writeData(id, data.data, endStream: data.endStream, promise: promise, context: context)
        case .rstStream(let code):
            writeReset(id, code, context: context)
            completeWithOut(promise, context: context)
        case .windowUpdate(let increment):
            if id != 0 {
                guard var stream = streams[id], stream.remoteOpen else {
                    promise?.succeed(())
                    return
                }
                stream.receiveWindow += increment
                streams[id] = stream
                let event = NIOHTTP2WindowUpdatedEvent(
                    streamID: frame.streamID, inboundWindowSize: stream.receiveWindow, outboundWindowSize: stream.sendWindow
                )
                if handlingInbound {
                    deferredWindowEvents.append(event)
                } else {
                    context.fireUserInboundEventTriggered(event)
                }
            } else {
                connectionReceiveWindow += increment
            }
            out.writeHTTP2FrameHeader(length: 4, type: HTTP2Wire.FrameType.windowUpdate, flags: 0, streamID: id)
            out.writeInteger(UInt32(increment))
            completeWithOut(promise, context: context)
        case .goAway(let lastStreamID, let code, let opaque):
            let last = UInt32(Int32(lastStreamID))
            goAwayLastStreamID = min(goAwayLastStreamID ?? last, last)
            out.writeHTTP2FrameHeader(length: 8 + (opaque?.readableBytes ?? 0), type: HTTP2Wire.FrameType.goAway, flags: 0, streamID: 0)
            out.writeMultipleIntegers(last, UInt32(code.networkCode))
            if var opaque { out.writeBuffer(&opaque) }
            delegate?.wroteFrame(frame)
            if code != .noError {
                // ``HTTP2GoAwayCloser`` closes the connection after this frame; nothing more is read.
                state = .failed
                inbound = nil
            }
            completeWithOut(promise, context: context)
        case .ping(let data, let ack):
            out.writeHTTP2FrameHeader(length: 8, type: HTTP2Wire.FrameType.ping, flags: ack ? HTTP2Wire.Flag.ack : 0, streamID: 0)
            _ = withUnsafeBytes(of: data.bytes) { out.writeBytes($0) }
            completeWithOut(promise, context: context)
        case .settings(.ack):
            out.writeHTTP2FrameHeader(length: 0, type: HTTP2Wire.FrameType.settings, flags: HTTP2Wire.Flag.ack, streamID: 0)
            completeWithOut(promise, context: context)
        default:
            // SETTINGS after the preface, PRIORITY, PUSH_PROMISE, ALTSVC, ORIGIN: Edge sends none of them.
            promise?.fail(ChannelError.operationUnsupported)
        }
        if !handlingInbound { deliverDeferredEvents(context: context) }
    }

    func flush(context: ChannelHandlerContext) {
        flushOut(context: context)
    }

    /// Writes ``out`` to the channel and flushes.
    private func flushOut(context: ChannelHandlerContext) {
        emitOut(promise: nil, context: context)
        unflushed = false
        context.flush()
    }

    /// Whether something was written to the channel since the last flush.
    private var unflushed = false

    /// Passes ``out`` on as one buffer.
    private func emitOut(promise: EventLoopPromise<Void>?, context: ChannelHandlerContext) {
        guard out.readableBytes > 0 else {
            if let promise {
                unflushed = true
                context.write(wrapOutboundOut(.byteBuffer(ByteBuffer())), promise: promise)
            }
            return
        }
        unflushed = true
        let bytes = out
        // The next batch is likely the size of this one: room for it at once, rather than doubling up to it.
        out = context.channel.allocator.buffer(capacity: min(max(1024, bytes.readableBytes), 256 * 1024))
        context.write(wrapOutboundOut(.byteBuffer(bytes)), promise: promise)
    }

    /// Completes a frame's promise: at once if it has none, else by writing ``out`` with it.
    private func completeWithOut(_ promise: EventLoopPromise<Void>?, context: ChannelHandlerContext) {
        if let promise { emitOut(promise: promise, context: context) }
    }

    private func writeHeaders(
        _ id: UInt32, _ fields: HPACKHeaders, endStream: Bool, promise: EventLoopPromise<Void>?, context: ChannelHandlerContext
    ) {
        guard let stream = streams[id], stream.localOpen else {
            promise?.fail(NIOHTTP2Errors.noSuchStream(streamID: HTTP2StreamID(Int32(id))))
            return
        }
        if queued[id] != nil {
            queued[id]!.append(.headers(fields, endStream: endStream, promise: promise))  // a trailer behind DATA
            return
        }
        sendHeaders(id, fields, endStream: endStream, promise: promise, context: context)
    }

    /// Writes a header block on a stream free to send it, reports it to the frame delegate, and ends Edge's side
    /// of the stream with it if asked.
    private func sendHeaders(
        _ id: UInt32, _ fields: HPACKHeaders, endStream: Bool, promise: EventLoopPromise<Void>?, context: ChannelHandlerContext
    ) {
        encodeHeaders(id, fields, endStream: endStream, context: context)
        delegate?.wroteFrame(
            HTTP2Frame(streamID: HTTP2StreamID(Int32(id)), payload: .headers(.init(headers: fields, endStream: endStream)))
        )
        if endStream { localEnded(id, context: context) }
        completeWithOut(promise, context: context)
    }

    /// Writes a header block as HEADERS and as many CONTINUATION frames as the client's frame size needs.
    private func encodeHeaders(_ id: UInt32, _ fields: HPACKHeaders, endStream: Bool, context: ChannelHandlerContext) {
        guard let encoded = encodeBlock(fields, context: context) else { return }
        finishHeaderBlock(at: encoded.start, id, endStream: endStream)
    }

    /// Writes a frame header to fill in later and `fields` encoded with the connection's encoder into ``out``;
    /// counts a block that changed the encoder's dynamic table in ``tableGeneration``. Returns where the frame
    /// starts, the block, and whether it changed the table; `nil` after failing the connection.
    private func encodeBlock(
        _ fields: HPACKHeaders, context: ChannelHandlerContext
    ) -> (start: Int, block: ByteBuffer, changedTable: Bool)? {
        let start = out.writerIndex
        out.writeRepeatingByte(0, count: HTTP2Wire.frameHeaderBytes)
        do {
            try encoder.encode(headers: fields, to: &out)
            tableSizeUpdatePending = false
        } catch {
            out.moveWriterIndex(to: start)
            connectionError(.internalError, context: context)
            return nil
        }
        let blockStart = start + HTTP2Wire.frameHeaderBytes
        let block = out.getSlice(at: blockStart, length: out.writerIndex - blockStart)!
        let changedTable = HPACKBlockScan.changesTable(block)
        if changedTable { tableGeneration &+= 1 }
        return (start, block, changedTable)
    }

    /// Fills in the HEADERS frame header written at `start` for the block after it, or splits the block into
    /// HEADERS and CONTINUATION frames when it is longer than the client's frame size.
    private func finishHeaderBlock(at start: Int, _ id: UInt32, endStream: Bool) {
        let length = out.writerIndex - start - HTTP2Wire.frameHeaderBytes
        let endFlag = endStream ? HTTP2Wire.Flag.endStream : 0
        if length <= peerMaxFrameSize {
            out.setHTTP2FrameHeader(
                at: start, length: length, type: HTTP2Wire.FrameType.headers, flags: HTTP2Wire.Flag.endHeaders | endFlag, streamID: id
            )
            return
        }
        var block = out.getSlice(at: start + HTTP2Wire.frameHeaderBytes, length: length)!
        block = ByteBuffer(buffer: block)  // its own storage: `out` is rewritten below
        out.moveWriterIndex(to: start)
        var type = HTTP2Wire.FrameType.headers
        var flags = endFlag
        while block.readableBytes > 0 {
            var piece = block.readSlice(length: min(block.readableBytes, peerMaxFrameSize))!
            if block.readableBytes == 0 { flags |= HTTP2Wire.Flag.endHeaders }
            out.writeHTTP2FrameHeader(length: piece.readableBytes, type: type, flags: flags, streamID: id)
            out.writeBuffer(&piece)
            type = HTTP2Wire.FrameType.continuation
            flags = 0
        }
    }

    /// What a response's header block is made from, for ``writeResponse(_:reuseAs:fields:body:)``: the object
    /// (a cached entry, a prepared file head) and the per-request values that go into the block.
    struct BlockKey {
        let source: AnyObject
        let age: Int64?
        let date: String
    }

    /// A header block the encoder wrote that changed nothing in its dynamic table (every field was found
    /// there), kept with the table's ``tableGeneration``: while the table is unchanged, the same bytes are the
    /// same block.
    private struct ReusableBlock {
        /// Held weakly: a connection's few kept blocks must not keep evicted cache entries (and their bodies)
        /// alive.
        weak var source: AnyObject?
        let age: Int64?
        let date: String
        let generation: UInt32
        let bytes: ByteBuffer
    }

    private var reusableBlocks: [ReusableBlock] = []
    private static let reusableBlockLimit = 8
    /// Counts the blocks that changed the encoder's dynamic table.
    private var tableGeneration: UInt32 = 0

    /// Writes a complete response to a new stream — its header block and its body, if any, ending the stream —
    /// for ``HTTP2FastPathHandler``, which calls it directly instead of passing `HTTP2Frame`s down the pipeline.
    /// The header block is encoded with the connection's encoder (dynamic table included, so a client decodes
    /// the fields it has seen before from one byte each), or, for a `key` seen since the table last changed,
    /// copied from the last time. The response's HEADERS are not reported to the frame delegate (the fast path
    /// knows), nor the DATA written at once (the result says whether some wait for window).
    func writeResponse(
        _ streamID: HTTP2StreamID, reuseAs key: BlockKey?, fields: () -> HPACKHeaders, body: ByteBuffer?
    ) -> WriteResult {
        let id = UInt32(Int32(streamID))
        guard let context, state != .failed, let stream = streams[id], stream.localOpen, queued[id] == nil else { return .failed }
        let start: Int
        if let key, !tableSizeUpdatePending,
            let reusable = reusableBlocks.first(where: {
                $0.source === key.source && $0.age == key.age && $0.date == key.date
            }),
            reusable.generation == tableGeneration
        {
            start = out.writerIndex
            out.writeRepeatingByte(0, count: HTTP2Wire.frameHeaderBytes)
            out.writeImmutableBuffer(reusable.bytes)
        } else {
            guard let encoded = encodeBlock(fields(), context: context) else { return .failed }
            start = encoded.start
            if let key, !encoded.changedTable {
                // The source's older block goes first, so that only a full list loses its oldest.
                reusableBlocks.removeAll { $0.source === key.source || $0.source == nil }
                if reusableBlocks.count >= Self.reusableBlockLimit { reusableBlocks.removeFirst() }
                reusableBlocks.append(
                    ReusableBlock(
                        source: key.source, age: key.age, date: key.date, generation: tableGeneration,
                        bytes: ByteBuffer(buffer: encoded.block)
                    )
                )
            }
        }
        finishHeaderBlock(at: start, id, endStream: body == nil)
        var result = WriteResult.complete
        if let body {
            // The DATA written now are not reported to the frame delegate: the fast path learns from the result.
            if sendOrQueue(id, .byteBuffer(body), endStream: true, promise: nil, notify: false, context: context) {
                result = .pending
            }
        } else {
            localEnded(id, context: context)
        }
        if !handlingInbound { deliverDeferredEvents(context: context) }
        return result
    }

    /// What became of a response handed to ``writeResponse(_:reuseAs:fields:body:)``.
    enum WriteResult {
        /// All written; the stream is over unless the client's side is still open.
        case complete
        /// Headers and part of the body written; the rest waits for flow-control window.
        case pending
        /// Nothing written: the stream or the connection is gone.
        case failed
    }

    private func writeData(
        _ id: UInt32, _ data: IOData, endStream: Bool, promise: EventLoopPromise<Void>?, context: ChannelHandlerContext
    ) {
        guard let stream = streams[id], stream.localOpen else {
            promise?.fail(NIOHTTP2Errors.noSuchStream(streamID: HTTP2StreamID(Int32(id))))
            return
        }
        if queued[id] != nil {
            queued[id]!.append(.data(data, endStream: endStream, promise: promise))
            return
        }
        sendOrQueue(id, data, endStream: endStream, promise: promise, context: context)
    }

    /// Sends what the windows allow of `data` on a stream with nothing queued, and queues the rest behind the
    /// window; returns whether some was queued.
    @discardableResult
    private func sendOrQueue(
        _ id: UInt32, _ data: IOData, endStream: Bool, promise: EventLoopPromise<Void>?, notify: Bool = true,
        context: ChannelHandlerContext
    ) -> Bool {
        guard let rest = sendData(id, data, endStream: endStream, promise: promise, notify: notify, context: context) else {
            return false
        }
        queued[id] = CircularBuffer([.data(rest, endStream: endStream, promise: promise)])
        blocked.append(id)
        return true
    }

    /// Sends as much of `data` as the windows allow; returns the rest, or `nil` when all of it was sent.
    private func sendData(
        _ id: UInt32, _ data: IOData, endStream: Bool, promise: EventLoopPromise<Void>?, notify: Bool = true,
        context: ChannelHandlerContext
    ) -> IOData? {
        var data = data
        while true {
            let length = data.readableBytes
            let window = min(connectionSendWindow, streams[id]!.sendWindow, peerMaxFrameSize)
            if length > 0, window <= 0 { return data }
            let count = min(length, window)
            let last = count == length
            let flags = last && endStream ? HTTP2Wire.Flag.endStream : 0
            out.writeHTTP2FrameHeader(length: count, type: HTTP2Wire.FrameType.data, flags: flags, streamID: id)
            let chunk: IOData
            switch data {
            case .byteBuffer(var buffer):
                var piece = buffer.readSlice(length: count)!
                data = .byteBuffer(buffer)
                chunk = .byteBuffer(piece)
                if count <= Self.copyLimit {
                    out.writeBuffer(&piece)
                    if last { completeWithOut(promise, context: context) }
                } else {
                    emitOut(promise: nil, context: context)
                    unflushed = true
                    context.write(wrapOutboundOut(chunk), promise: last ? promise : nil)
                }
            case .fileRegion(var region):
                let piece = FileRegion(fileHandle: region.fileHandle, readerIndex: region.readerIndex, endIndex: region.readerIndex + count)
                region.moveReaderIndex(forwardBy: count)
                data = .fileRegion(region)
                chunk = .fileRegion(piece)
                emitOut(promise: nil, context: context)
                unflushed = true
                context.write(wrapOutboundOut(chunk), promise: last ? promise : nil)
            }
            connectionSendWindow -= count
            streams[id]!.sendWindow -= count
            if notify {
                delegate?.wroteFrame(HTTP2Frame(streamID: HTTP2StreamID(Int32(id)), payload: .data(.init(data: chunk, endStream: last && endStream))))
            }
            if last {
                if endStream { localEnded(id, context: context) }
                return nil
            }
        }
    }

    /// Sends what waits for window, stream by stream in the order they were blocked, while window lasts.
    private func sendQueued(context: ChannelHandlerContext) {
        var stillBlocked: [UInt32] = []
        for id in blocked {
            guard var items = queued.removeValue(forKey: id) else { continue }
            while let item = items.popFirst() {
                guard streams[id] != nil else {
                    fail(item)
                    continue
                }
                var stalled = false
                switch item {
                case .data(let data, let endStream, let promise):
                    if let rest = sendData(id, data, endStream: endStream, promise: promise, context: context) {
                        items.prepend(.data(rest, endStream: endStream, promise: promise))
                        stalled = true
                    }
                case .headers(let fields, let endStream, let promise):
                    sendHeaders(id, fields, endStream: endStream, promise: promise, context: context)
                }
                if stalled { break }
            }
            if !items.isEmpty, streams[id] != nil {
                queued[id] = items
                stillBlocked.append(id)
            } else {
                for item in items { fail(item) }
            }
        }
        let unblocked = stillBlocked.count < blocked.count
        blocked = stillBlocked
        if unblocked { fastPath?.queuedFramesSent() }
    }

    /// Whether frames of `streamID` wait for flow-control window.
    func hasQueuedFrames(on streamID: HTTP2StreamID) -> Bool {
        !queued.isEmpty && queued[UInt32(Int32(streamID))] != nil
    }

    private func fail(_ item: Queued) {
        switch item {
        case .data(_, _, let promise), .headers(_, _, let promise):
            promise?.fail(NIOHTTP2Errors.streamClosed(streamID: .rootStream, errorCode: .cancel))
        }
    }

    private func failQueued(streamIDs: [UInt32]) {
        for id in streamIDs {
            guard let items = queued.removeValue(forKey: id) else { continue }
            for item in items { fail(item) }
        }
    }

    // MARK: stream ends

    /// Edge's side of a stream ended.
    private func localEnded(_ id: UInt32, context: ChannelHandlerContext) {
        guard var stream = streams[id] else { return }
        stream.localOpen = false
        streams[id] = stream
        closeIfDone(id, context: context)
    }

    /// Closes a stream both sides have ended.
    private func closeIfDone(_ id: UInt32, context: ChannelHandlerContext) {
        guard let stream = streams[id], !stream.localOpen, !stream.remoteOpen else { return }
        streams.removeValue(forKey: id)
        closedOtherwise.insert(id)
        raise(StreamClosedEvent(streamID: HTTP2StreamID(Int32(id)), reason: nil), context: context)
    }

    /// Fires a stream's close now, or after the inbound frame being handled has had its own events.
    private func raise(_ event: StreamClosedEvent, context: ChannelHandlerContext) {
        deferredEvents.append(event)
        if !handlingInbound { deliverDeferredEvents(context: context) }
    }

    private var delivering = false

    private func deliverDeferredEvents(context: ChannelHandlerContext) {
        guard !delivering, !deferredEvents.isEmpty || !deferredWindowEvents.isEmpty else { return }
        delivering = true
        defer { delivering = false }
        while !deferredWindowEvents.isEmpty || !deferredEvents.isEmpty {
            if !deferredWindowEvents.isEmpty {
                let events = deferredWindowEvents
                deferredWindowEvents.removeAll()
                for event in events { context.fireUserInboundEventTriggered(event) }
            }
            if !deferredEvents.isEmpty {
                let events = deferredEvents
                deferredEvents.removeAll()
                for event in events { context.fireUserInboundEventTriggered(event) }
            }
        }
    }
}

/// The last few stream IDs of one kind, in a ring.
struct RecentStreams {
    /// Allocated at the first insert: most connections never reset a stream.
    private var ids: [UInt32] = []
    private let capacity: Int
    private var next = 0

    init(capacity: Int) {
        self.capacity = capacity
    }

    mutating func insert(_ id: UInt32) {
        if ids.isEmpty { ids = Array(repeating: 0, count: capacity) }
        ids[next] = id
        next = (next + 1) % ids.count
    }

    func contains(_ id: UInt32) -> Bool {
        id != 0 && ids.contains(id)
    }
}

/// Reads an HPACK header block's representations (RFC 7541 §6) to tell whether decoding it changes the dynamic
/// table: a literal with incremental indexing adds an entry, a size update resizes it; indexed fields and
/// literals without indexing leave it as it is.
enum HPACKBlockScan {
    static func changesTable(_ block: ByteBuffer) -> Bool {
        block.withUnsafeReadableBytes { bytes in
            var index = 0
            while index < bytes.count {
                let first = bytes[index]
                if first & 0x80 != 0 {
                    guard skipInteger(bytes, &index, prefixBits: 7) else { return true }
                } else if first & 0xC0 == 0x40 || first & 0xE0 == 0x20 {
                    return true
                } else {
                    // A literal without indexing or never indexed: a 4-bit name index, then the strings.
                    let nameIndexed = first & 0x0F != 0
                    guard skipInteger(bytes, &index, prefixBits: 4) else { return true }
                    if !nameIndexed { guard skipString(bytes, &index) else { return true } }
                    guard skipString(bytes, &index) else { return true }
                }
            }
            return false
        }
    }

    /// Moves past an integer with an N-bit prefix; `false` if the block ends inside it.
    private static func skipInteger(_ bytes: UnsafeRawBufferPointer, _ index: inout Int, prefixBits: Int) -> Bool {
        let mask = UInt8((1 << prefixBits) - 1)
        let prefix = bytes[index] & mask
        index += 1
        if prefix < mask { return true }
        while index < bytes.count {
            let byte = bytes[index]
            index += 1
            if byte & 0x80 == 0 { return true }
        }
        return false
    }

    private static func skipString(_ bytes: UnsafeRawBufferPointer, _ index: inout Int) -> Bool {
        guard index < bytes.count else { return false }
        var length = Int(bytes[index] & 0x7F)
        if length == 0x7F {
            index += 1
            var shift = 0
            while true {
                guard index < bytes.count, shift < 56 else { return false }
                let byte = bytes[index]
                index += 1
                length += Int(byte & 0x7F) << shift
                shift += 7
                if byte & 0x80 == 0 { break }
            }
        } else {
            index += 1
        }
        index += length
        return index <= bytes.count
    }
}
