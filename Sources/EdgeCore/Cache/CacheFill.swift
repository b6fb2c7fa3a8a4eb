import NIOCore

/// A response body on its way from the upstream to the first client and into the cache at once: the chunks are
/// passed on as they come (the client does not wait for the whole body) and copied aside until the body ends,
/// when ``completion`` gets the whole body — or an error, when it broke off, the client left, or it grew past the
/// cache's limit for one entry (it still streams to the client then).
///
/// The upstream is read no faster than the client takes the body. Every call is made on the pipes' event loop.
final class CacheFill: BodyPipeForwarder {
    private let source: BodyPipe
    private let client: BodyPipe
    private let limit: Int
    private var stored: ByteBuffer?
    private var paused = false
    private var completion: ((Result<ByteBuffer, any Error>) -> Void)?

    /// Starts copying `source`; returns the pipe the client's front end reads.
    static func start(
        source: BodyPipe, limit: Int, eventLoop: any EventLoop, completion: @escaping (Result<ByteBuffer, any Error>) -> Void
    ) -> BodyPipe {
        let client = BodyPipe(eventLoop: eventLoop)
        let fill = CacheFill(source: source, client: client, limit: limit, completion: completion)
        client.onDemand = { [fill] in
            fill.paused = false
            fill.source.pump(into: fill)
        }
        client.onCancel = { [fill] error in
            fill.complete(.failure(error))
            fill.source.cancel(error)
        }
        source.onBatchEnd = { [weak client] in client?.batchEnded() }
        fill.source.pump(into: fill)
        return client
    }

    private init(source: BodyPipe, client: BodyPipe, limit: Int, completion: @escaping (Result<ByteBuffer, any Error>) -> Void) {
        self.source = source
        self.client = client
        self.limit = limit
        self.stored = ByteBuffer()
        self.completion = completion
    }

    /// The client is full, or the body has been dealt with.
    var holdsOff: Bool { paused || completion == nil }

    func take(_ part: Result<BodyPipe.Part, any Error>) {
        guard completion != nil else { return }
        switch part {
        case .success(.chunk(let chunk)):
            if stored != nil {
                if stored!.readableBytes + chunk.readableBytes > limit {
                    stored = nil  // too large to keep: it only streams on
                } else {
                    stored!.writeImmutableBuffer(chunk)
                }
            }
            if !client.write(chunk) { paused = true }
        case .success(.end(let trailers)):
            // Stored before the client has its last byte, so that a PURGE it sends next finds the entry.
            let client = self.client
            if let stored {
                complete(.success(stored))
            } else {
                complete(.failure(HTTPCache.Uncacheable(reason: "larger than max_entry_bytes")))
            }
            client.finish(trailers: trailers)
        case .failure(let error):
            client.fail(error)
            complete(.failure(error))
        }
    }

    private func complete(_ result: Result<ByteBuffer, any Error>) {
        let completion = self.completion
        self.completion = nil
        stored = nil
        completion?(result)
    }

    /// Reads `body` to its end and drops it: for a response nobody writes (a background refresh), so that the fill
    /// behind it completes.
    static func drain(_ body: BodyPipe) {
        body.forEachPart { _ in true }
    }
}
