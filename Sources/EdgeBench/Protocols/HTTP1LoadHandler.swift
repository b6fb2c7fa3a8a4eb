import NIOCore

/// Drives one HTTP/1.1 connection: writes the prepared request up to the pipelining depth, matches
/// responses to requests in order, and reports each to the connection's ``TransportDelegate``.
final class HTTP1LoadHandler: ChannelInboundHandler, LoadTransport {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let delegate: any TransportDelegate
    private let request: ByteBuffer
    private let depth: Int
    private let processor: NIOSingleStepByteToMessageProcessor<HTTP1ResponseDecoder>
    private var outstanding: CircularBuffer<RequestStamp>
    private var context: ChannelHandlerContext?
    private var ready = false
    private var closing = false
    private var reportedClose = false
    private var failure: TransportFailure?

    /// A handler sending `template` with up to `depth` requests in flight.
    init(template: RequestTemplate, depth: Int, delegate: any TransportDelegate) {
        self.delegate = delegate
        self.request = template.http1Bytes
        self.depth = depth
        self.processor = NIOSingleStepByteToMessageProcessor(HTTP1ResponseDecoder(requestIsHEAD: template.isHEAD))
        self.outstanding = CircularBuffer(initialCapacity: max(depth, 2))
    }

    // MARK: LoadTransport

    var canSend: Bool { ready && !closing && outstanding.count < depth }
    var inFlight: Int { outstanding.count }
    var oldestSentAt: UInt64? { outstanding.first?.sent }

    func send(_ stamp: RequestStamp) {
        guard let context else { return }
        outstanding.append(stamp)
        context.write(wrapOutboundOut(request), promise: nil)
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
        let count = outstanding.count
        outstanding.removeAll()
        reportedClose = true
        closing = true
        context?.close(promise: nil)
        return count
    }

    // MARK: ChannelHandler

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { becomeReady() }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        becomeReady()
        context.fireChannelActive()
    }

    private func becomeReady() {
        guard !ready else { return }
        ready = true
        delegate.transportReady(self, protocol: "http/1.1")
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data)
        delegate.transportReceived(bytes: bytes.readableBytes)
        guard !reportedClose else { return }
        do {
            try processor.process(buffer: bytes) { response in
                try deliver(response)
            }
        } catch {
            fail(FailureClassifier.classify(error, beforeReady: false))
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if !closing { delegate.transportReadComplete() }
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !reportedClose {
            try? processor.finishProcessing(seenEOF: true) { response in try deliver(response) }
        }
        reportClosed()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(FailureClassifier.classify(error, beforeReady: !ready))
    }

    private func deliver(_ response: HTTP1ResponseSummary) throws {
        guard let stamp = outstanding.popFirst() else {
            throw BenchProtocolError(description: "response without a request (status \(response.status))")
        }
        delegate.transportCompleted(status: response.status, stamp: stamp)
        if !response.keepAlive { close() }
    }

    private func fail(_ newFailure: TransportFailure) {
        if failure == nil { failure = newFailure }
        close()
    }

    private func reportClosed() {
        guard !reportedClose else { return }
        reportedClose = true
        closing = true
        let count = outstanding.count
        outstanding.removeAll()
        delegate.transportClosed(outstanding: count, failure: failure)
    }
}
