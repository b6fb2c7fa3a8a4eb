import NIOCore
import NIOHPACK
import NIOHTTP1
import NIOHTTP2

/// A body-less `GET` or `HEAD` on HTTP/2 that a streaming route (a proxy) answers, served by
/// ``HTTP2FastPathHandler`` on Edge's own connection layer without a stream channel: the request goes to the
/// dispatcher at its head, and the origin's answer is written as frames — the head held until the first body
/// part or the end of the origin's first batch (so that an answer that ends with its head leaves as one HEADERS
/// frame with END_STREAM), DATA as the body arrives, trailers as a last HEADERS frame.
///
/// Before, such a stream went to NIOHTTP2's multiplexer: a child channel, NIO's HTTP/1-style codec and
/// ``EdgeRequestHandler`` per request, which cost more than the proxying itself.
///
/// Backpressure: the next body part is taken only while nothing of the stream waits for flow-control window
/// and the socket is writable; the connection tells the fast path when queued frames leave
/// (``HTTP2FastPathHandler/queuedFramesSent()``), and the writability change does the rest. A body that
/// breaks off resets the stream (`RST_STREAM(INTERNAL_ERROR)`), so the client sees a broken response, never a
/// short complete one. A client that resets the stream, or a connection that closes, cancels the origin's work.
final class HTTP2StreamedAnswer {
    let streamID: HTTP2StreamID
    private unowned let owner: HTTP2FastPathHandler
    private unowned let connection: HTTP2ServerConnection
    private let context: ChannelHandlerContext
    private let isHEAD: Bool
    private let cancellation: RequestCancellation
    private var record: RequestRecord?
    private var body: BodyPipe?
    /// The response's header block, until the first body part or the end of the origin's first batch.
    private var heldHead: HPACKHeaders?
    /// Waiting for window or a writable socket before the next body part is taken.
    private(set) var paused = false
    /// The stream is gone (reset, or the connection closed): nothing more is written.
    private var closed = false

    init(
        streamID: HTTP2StreamID, owner: HTTP2FastPathHandler, connection: HTTP2ServerConnection, context: ChannelHandlerContext,
        isHEAD: Bool, cancellation: RequestCancellation, record: RequestRecord
    ) {
        self.streamID = streamID
        self.owner = owner
        self.connection = connection
        self.context = context
        self.isHEAD = isHEAD
        self.cancellation = cancellation
        self.record = record
    }

    /// The fields of a request's header block as the HTTP/1.1 head an origin reads: `Host` from `:authority`
    /// unless the block has one (as NIO's stream codec does), then every regular field.
    static func requestFields(_ headers: HPACKHeaders, authority: String?) -> FieldBlock {
        var fields = FieldBlock(capacity: 48 * max(1, headers.count))
        if let authority, !headers.contains(name: "host") { fields.add(name: "host", value: authority) }
        for (name, value, _) in headers where name.utf8.first != UInt8(ascii: ":") {
            fields.add(name: name, value: value)
        }
        return fields
    }

    // MARK: the reply

    /// The dispatcher's reply: written now if it is complete, else streamed. Returns what became of the stream.
    func reply(_ reply: Reply) -> HTTP2FastPathHandler.InlineAnswer {
        record?.answered(with: reply, isHEAD: isHEAD)
        if case .stream(let streamed) = reply {
            start(streamed)
            return .pending
        }
        defer { owner.loop.observer.finish(&record) }
        guard let parts = HTTP2FastPathHandler.frameParts(of: reply) else {
            // A file read from disk or a protocol switch: no streaming route answers a body-less GET so.
            write(.rstStream(.internalError))
            return .complete
        }
        return owner.write(reply, parts, isHEAD: isHEAD, on: streamID, now: .now(), site: record?.site, context: context)
    }

    /// The reply of a dispatch that waited (the upstream's head arrived, or the exchange failed).
    func replied(_ result: Result<Reply, any Error>) {
        guard !closed else {
            if case .success(.stream(let streamed)) = result {
                streamed.body?.cancel(BodyPipe.Broken(description: "the client went away"))
            }
            return
        }
        _ = reply((try? result.get()) ?? .response(.text(.badGateway, "backend failed\n")))
        context.flush()
    }

    private func start(_ streamed: StreamedResponse) {
        var block = ResponseHeaders.http2Block(status: streamed.status, fields: streamed.headers)
        ResponseHeaders.perRequest(
            for: .stream(streamed), now: .now(), server: owner.serverName, date: owner.loop.date.current, site: record?.site,
            tls: true
        ) { name, value in
            ResponseHeaders.addLowercased(name, value, to: &block)
        }
        guard let body = streamed.body, !isHEAD else {
            streamed.body?.cancel(BodyPipe.Broken(description: "no body is sent"))
            write(.headers(.init(headers: block, endStream: true)))
            owner.loop.observer.finish(&record)
            return
        }
        // A small body that is all at hand (it came whole with its head): HEADERS and one DATA frame that ends the
        // stream, with nothing left to wait for.
        if let whole = body.takeWhole(maxBytes: Self.wholeBodyBytes) {
            record?.bodyBytesOut += whole.readableBytes
            write(.headers(.init(headers: block, endStream: whole.readableBytes == 0)))
            if whole.readableBytes > 0 { write(.data(.init(data: .byteBuffer(whole), endStream: true))) }
            owner.loop.observer.finish(&record)
            return
        }
        heldHead = block
        self.body = body
        body.onBatchEnd = { [weak self] in
            guard let self, writeHeldHead() else { return }
            context.flush()
        }
        pump()
    }

    // MARK: the body

    /// A body at most this long that is all at hand when the head is written goes out with it at once (one DATA
    /// frame of the default maximum size).
    static let wholeBodyBytes = 16 * 1024

    private func pump() {
        guard let body else { return }
        // What the origin has at hand is written at once, without a future per part; then the next part is awaited.
        while let ready = body.nextIfReady() {
            guard take(ready) else { return }
        }
        context.flush()
        body.whenNext { [self] result in
            if take(result) { pump() }
        }
    }

    /// Writes one part of the body; returns whether the next may be taken at once.
    private func take(_ result: Result<BodyPipe.Part, any Error>) -> Bool {
        guard !closed, body != nil else { return false }
        switch result {
        case .success(.chunk(let chunk)):
            guard chunk.readableBytes > 0 else { return true }
            writeHeldHead()
            record?.bodyBytesOut += chunk.readableBytes
            write(.data(.init(data: .byteBuffer(chunk), endStream: false)))
            guard connection.hasQueuedFrames(on: streamID) || !context.channel.isWritable else { return true }
            // The client is not keeping up: the next part is taken once what is written has left.
            paused = true
            context.flush()
            return false
        case .success(.end(let trailers)):
            body?.onBatchEnd = nil
            body = nil
            if let trailers {
                writeHeldHead()
                write(.headers(.init(headers: HPACKHeaders(httpHeaders: trailers, normalizeHTTPHeaders: true), endStream: true)))
            } else if let held = heldHead {
                heldHead = nil
                write(.headers(.init(headers: held, endStream: true)))
            } else {
                write(.data(.init(data: .byteBuffer(ByteBuffer()), endStream: true)))
            }
            context.flush()
            owner.loop.observer.finish(&record)
            return false
        case .failure:
            body?.onBatchEnd = nil
            body = nil
            heldHead = nil
            write(.rstStream(.internalError))
            context.flush()
            owner.loop.observer.finish(&record)
            return false
        }
    }

    /// Takes the next part again once the stream's queued frames have left and the socket is writable.
    func resume() {
        guard paused, !closed, !connection.hasQueuedFrames(on: streamID), context.channel.isWritable else { return }
        paused = false
        pump()
    }

    /// The stream closed before the answer ended (the client reset it, or the connection went): the origin stops.
    func streamClosed() {
        guard !closed else { return }
        closed = true
        heldHead = nil
        cancellation.cancel()
        body?.cancel(BodyPipe.Broken(description: "the client went away"))
        body = nil
        owner.loop.observer.finish(&record)
    }

    // MARK: writing

    @discardableResult
    private func writeHeldHead() -> Bool {
        guard let held = heldHead else { return false }
        heldHead = nil
        write(.headers(.init(headers: held, endStream: false)))
        return true
    }

    private func write(_ payload: HTTP2Frame.FramePayload) {
        context.write(NIOAny(HTTP2Frame(streamID: streamID, payload: payload)), promise: nil)
    }
}

extension HTTP2FastPathHandler {
    /// Dispatches a body-less `GET` or `HEAD` to a streaming route at its head, and answers it through an
    /// ``HTTP2StreamedAnswer``.
    func answerStreamed(
        _ streamID: HTTP2StreamID, _ request: SimpleRequest, _ fields: HTTP2HeaderBlockRules.RequestFields, _ headers: HPACKHeaders,
        connection: HTTP2ServerConnection, context: ChannelHandlerContext
    ) -> InlineAnswer {
        var record = newRecord(request, headers, start: .now())
        var streamed = StreamedRequest(
            headers: HTTP2StreamedAnswer.requestFields(headers, authority: fields.authority),
            version: HTTPVersion(major: 2, minor: 0), isTLS: true, body: nil, bodyLength: nil
        )
        streamed.trace = record.span?.context
        let forwardedFor = headers[canonicalForm: "x-forwarded-for"].joined(separator: ",")
        let values = RequestHeaderValues(
            host: request.host, authorization: headers.first(name: "authorization")?[...],
            forwardedFor: forwardedFor.isEmpty ? nil : forwardedFor[...], conditional: fields.conditional
        )
        let dispatch = dispatcher.dispatch(
            method: request.method, target: request.target, headers: values, bodyBytes: 0, client: client, streamed: streamed,
            on: context.eventLoop
        )
        record.note(loop.observer.takeDispatch())
        let answer = HTTP2StreamedAnswer(
            streamID: streamID, owner: self, connection: connection, context: context, isHEAD: request.method == .HEAD,
            cancellation: streamed.cancellation, record: record
        )
        switch dispatch {
        case .ready(let reply):
            // Kept before it is written: a body at hand may end the stream within the call.
            if case .stream = reply { streamedAnswers[streamID] = answer }
            return answer.reply(reply)
        case .pending(let future):
            streamedAnswers[streamID] = answer
            future.assumeIsolated().whenComplete { result in answer.replied(result) }
            return .pending
        }
    }

    /// Frames queued for window left: streamed answers that waited for them go on, after the inbound frame that
    /// opened the window has been handled.
    func queuedFramesSent() {
        guard let context, streamedAnswers.values.contains(where: \.paused) else { return }
        context.eventLoop.assumeIsolated().execute { [self] in resumeStreamedAnswers() }
    }

    func resumeStreamedAnswers() {
        for answer in streamedAnswers.values where answer.paused { answer.resume() }
    }
}
