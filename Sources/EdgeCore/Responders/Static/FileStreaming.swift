import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Streams files where sendfile cannot be used (TLS, HTTP/2): chunks read on NIO's thread pool, each written
/// before the next is read, so a slow client holds one chunk, not the file.
enum FileStreaming {
    /// Non-blocking file reads on NIO's shared thread pool.
    static let io = NonBlockingFileIO(threadPool: .singleton)
    /// Bytes read and written per step; one chunk per response is in flight at a time.
    static let chunkSize = 128 * 1024

    /// Sends `range` of `handle` through `write` (called on `eventLoop`; its future is the backpressure).
    /// The future is `true` when every byte was sent, `false` when the file ended early (it shrank).
    ///
    /// A chunk not written within `stallTimeout` calls `stalled`, which must end the stream (and so fail the
    /// write): the socket may stay writable while HTTP/2 flow control holds the chunk — a client that grants
    /// no window — and nothing else would ever release the descriptor.
    static func stream(
        _ handle: NIOFileHandle, range: Range<Int>, allocator: ByteBufferAllocator, on eventLoop: any EventLoop,
        stallTimeout: TimeAmount, stalled: @escaping () -> Void, write: @escaping (ByteBuffer) -> EventLoopFuture<Void>
    ) -> EventLoopFuture<Bool> {
        let boundWrite = NIOLoopBound(write, eventLoop: eventLoop)
        let boundStalled = NIOLoopBound(stalled, eventLoop: eventLoop)
        let sent = NIOLockedValueBox(0)
        return io.readChunked(
            fileHandle: handle, fromOffset: Int64(range.lowerBound), byteCount: range.count,
            chunkSize: chunkSize, allocator: allocator, eventLoop: eventLoop
        ) { chunk in
            sent.withLockedValue { $0 += chunk.readableBytes }
            let written = boundWrite.value(chunk)
            let timer = eventLoop.assumeIsolated().scheduleTask(in: stallTimeout) { boundStalled.value() }
            written.whenComplete { _ in timer.cancel() }
            return written
        }.map { sent.withLockedValue { $0 } == range.count }
    }
}
