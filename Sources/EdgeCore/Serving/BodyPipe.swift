import NIOCore
import NIOHTTP1

/// A message body passed from a producer to a consumer on one event loop, with backpressure both ways: the
/// streaming seam between front ends and origins.
///
/// - A request body: the front end writes what it reads from the client; the proxy takes the chunks and
///   writes them upstream. When ``highWatermark`` bytes wait, ``write(_:)`` returns `false` and the front end
///   stops reading the client until ``onDemand`` tells it to go on, so a client is read no faster than the
///   upstream takes it.
/// - A response body: the proxy writes what it reads from the upstream and stops reading it when ``write(_:)``
///   returns `false`; the front end takes chunks as fast as its client takes its writes.
///
/// Either side may give up: ``fail(_:)`` (the producer: the upstream died, the client left) ends the consumer's
/// body as broken, and ``cancel(_:)`` (the consumer) tells the producer through ``onCancel`` to stop.
/// Not thread-safe: every call is made on ``eventLoop`` (checked in debug builds), which is what makes the
/// `@unchecked Sendable` sound: a pipe crosses no thread, only futures of its loop.
final class BodyPipe: @unchecked Sendable {
    /// What the consumer gets next.
    enum Part {
        case chunk(ByteBuffer)
        /// The body is complete; trailers if the producer had any.
        case end(HTTPHeaders?)
    }

    /// Why a body ended early.
    struct Broken: Error, CustomStringConvertible {
        var description: String
    }

    let eventLoop: any EventLoop
    /// Bytes buffered at which the producer is asked to pause.
    let highWatermark: Int
    /// The producer: called when the consumer has drained the buffer after a ``write(_:)`` returned `false`.
    var onDemand: (() -> Void)?
    /// The producer: called once when the consumer gives up.
    var onCancel: ((any Error) -> Void)?
    /// The consumer: called when the producer has passed on all it had at hand (the end of a socket read
    /// batch), so that a consumer that writes without flushing can flush once per batch rather than per chunk.
    var onBatchEnd: (() -> Void)?

    /// Chunks written and not yet taken; made at the first that must wait (most bodies a consumer waits for never
    /// need it, and an empty `CircularBuffer` costs an allocation).
    private var buffered: CircularBuffer<ByteBuffer>?
    private var bufferedBytes = 0
    private var ending: Result<HTTPHeaders?, any Error>?
    /// The consumer waiting for the next part (``whenNext(_:)``, ``next()``).
    private var waiting: ((Result<Part, any Error>) -> Void)?
    private var producerPaused = false
    private var cancelled = false
    /// Bytes the producer has written in all.
    private(set) var totalBytes = 0

    init(eventLoop: any EventLoop, highWatermark: Int = 256 * 1024) {
        self.eventLoop = eventLoop
        self.highWatermark = highWatermark
    }

    // MARK: producer

    /// Adds a chunk; returns whether the producer may go on (`false`: wait for ``onDemand``).
    @discardableResult
    func write(_ chunk: ByteBuffer) -> Bool {
        assert(eventLoop.inEventLoop)
        guard ending == nil, !cancelled else { return false }
        totalBytes += chunk.readableBytes
        if let waiting {
            self.waiting = nil
            waiting(.success(.chunk(chunk)))
            return true
        }
        if buffered == nil { buffered = CircularBuffer(initialCapacity: 4) }
        buffered!.append(chunk)
        bufferedBytes += chunk.readableBytes
        if bufferedBytes >= highWatermark {
            producerPaused = true
            return false
        }
        return true
    }

    /// Tells the consumer that nothing more is at hand for now (``onBatchEnd``).
    func batchEnded() {
        assert(eventLoop.inEventLoop)
        onBatchEnd?()
    }

    /// Ends the body (with trailers, if any).
    func finish(trailers: HTTPHeaders? = nil) {
        assert(eventLoop.inEventLoop)
        guard ending == nil, !cancelled else { return }
        ending = .success(trailers)
        releaseProducer()
        if buffered?.isEmpty ?? true, let waiting {
            self.waiting = nil
            waiting(.success(.end(trailers)))
        }
    }

    /// Ends the body as broken: the consumer gets `error` after what is buffered.
    func fail(_ error: any Error) {
        assert(eventLoop.inEventLoop)
        guard ending == nil, !cancelled else { return }
        ending = .failure(error)
        releaseProducer()
        if buffered?.isEmpty ?? true, let waiting {
            self.waiting = nil
            waiting(.failure(error))
        }
    }

    /// The producer has ended the body: it needs no more demand or cancellation, and the closures (which usually
    /// capture the producer, which holds this pipe) are let go, so no reference cycle outlives the exchange.
    private func releaseProducer() {
        onDemand = nil
        onCancel = nil
    }

    /// Whether the body has ended, well or not, on the producer's side.
    var isFinished: Bool { ending != nil }

    // MARK: consumer

    /// The next part when one is at hand (buffered, or the end), taken without making a future; `nil` when the
    /// consumer must wait for it with ``next()``. A consumer takes what is at hand in a loop, not by recursion:
    /// a buffer of many small chunks would otherwise deepen the stack by one call per chunk.
    func nextIfReady() -> Result<Part, any Error>? {
        assert(eventLoop.inEventLoop)
        if let chunk = buffered?.popFirst() {
            bufferedBytes -= chunk.readableBytes
            resumeProducerIfDrained()
            return .success(.chunk(chunk))
        }
        switch ending {
        case .success(let trailers)?:
            return .success(.end(trailers))
        case .failure(let error)?:
            return .failure(error)
        case nil:
            return cancelled ? .failure(Broken(description: "cancelled")) : nil
        }
    }

    /// The whole body, taken at once, when the producer has already ended it well, without trailers, and it is at
    /// most `maxBytes` (a small answer that came whole in one read), so that the consumer can write it with its
    /// head; `nil` otherwise, and nothing is taken.
    func takeWhole(maxBytes: Int) -> ByteBuffer? {
        assert(eventLoop.inEventLoop)
        guard case .success(nil)? = ending, !cancelled, bufferedBytes <= maxBytes else { return nil }
        guard var chunks = buffered, chunks.count > 0 else { return ByteBuffer() }
        buffered = nil
        bufferedBytes = 0
        var whole = chunks.removeFirst()
        while let next = chunks.popFirst() { whole.writeImmutableBuffer(next) }
        return whole
    }

    /// Calls `consumer` with the next part: at once when one is at hand, else when it comes. At most one consumer
    /// may be waiting. A callback, not a future: the response body's consumer waits once per exchange or more,
    /// and a future would cost an allocation and a callback list each time.
    func whenNext(_ consumer: @escaping (Result<Part, any Error>) -> Void) {
        if let ready = nextIfReady() {
            consumer(ready)
            return
        }
        resumeProducerIfDrained()
        waiting = consumer
    }

    /// Hands `handle` each part as it comes — what is at hand in a loop, then each later one — until `handle`
    /// returns `false` or the body has ended (its end or failure is handed over too). For a consumer that reads
    /// the whole body without writing it anywhere.
    func forEachPart(_ handle: @escaping (Result<Part, any Error>) -> Bool) {
        while let part = nextIfReady() {
            guard handle(part), case .success(.chunk) = part else { return }
        }
        whenNext { part in
            guard handle(part), case .success(.chunk) = part else { return }
            self.forEachPart(handle)
        }
    }

    /// The next part, as a future; at most one call may be waiting.
    func next() -> EventLoopFuture<Part> {
        if let ready = nextIfReady() { return eventLoop.makeCompletedFuture(ready) }
        let promise = eventLoop.makePromise(of: Part.self)
        whenNext { promise.completeWith($0) }
        return promise.futureResult
    }

    /// The consumer stops taking the body: what is buffered is dropped and the producer told.
    func cancel(_ error: any Error) {
        assert(eventLoop.inEventLoop)
        guard !cancelled else { return }
        cancelled = true
        buffered = nil
        bufferedBytes = 0
        let waiting = self.waiting
        self.waiting = nil
        waiting?(.failure(error))
        onBatchEnd = nil
        if ending == nil {
            let onCancel = self.onCancel
            self.onCancel = nil
            self.onDemand = nil
            onCancel?(error)
        }
    }

    private func resumeProducerIfDrained() {
        guard producerPaused, bufferedBytes < highWatermark / 2 else { return }
        producerPaused = false
        onDemand?()
    }
}

/// A consumer that passes a pipe's body on somewhere (into the cache and to the client, through an encoder), as
/// fast as its own destination takes it: ``BodyPipe/pump(into:)`` hands it the parts. Every call is made on the
/// pipe's event loop.
protocol BodyPipeForwarder: AnyObject {
    /// Whether to take no more parts: for now (the destination is full; call ``BodyPipe/pump(into:)`` again when it
    /// drains) or for good (the forwarder has finished).
    var holdsOff: Bool { get }
    /// The next part of the body.
    func take(_ part: Result<BodyPipe.Part, any Error>)
    /// Nothing more is at hand: the pump waits for the producer next.
    func sourceRanDry()
}

extension BodyPipeForwarder {
    func sourceRanDry() {}
}

extension BodyPipe {
    /// Hands `forwarder` what is at hand, in a loop (not by recursion), until it holds off or the producer must be
    /// waited for; then goes on when the next part comes.
    func pump(into forwarder: some BodyPipeForwarder) {
        while !forwarder.holdsOff {
            guard let part = nextIfReady() else {
                forwarder.sourceRanDry()
                guard !forwarder.holdsOff else { return }
                whenNext { [self] part in
                    forwarder.take(part)
                    pump(into: forwarder)
                }
                return
            }
            forwarder.take(part)
        }
    }
}

/// A response whose body arrives over time (a proxied response): the head now, the body from ``body``.
struct StreamedResponse {
    var status: HTTPResponseStatus
    /// Complete headers, without hop-by-hop fields; `Content-Length` when the origin gave one.
    var headers: FieldBlock
    /// The body; `nil` when there is none (HEAD, 204, 304).
    var body: BodyPipe?
    /// The origin's `Date`, kept apart from ``headers`` (the front ends write their own), for the HTTP cache.
    var date: String? = nil
    /// The upstream server that answered and how long its head took, for the access log (proxied responses).
    var upstream: UpstreamOutcome? = nil
}
