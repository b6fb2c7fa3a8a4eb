import NIOCore
import NIOPosix

/// Streams files where sendfile cannot be used (TLS, HTTP/2): chunks of 128 KiB, each written before the next
/// is read, so a slow client holds one chunk, not the file.
///
/// A chunk the page cache holds is read right on the event loop (`preadv2` with `RWF_NOWAIT`, which never waits
/// for the disk), as nginx reads; one that is not, or every ninth chunk in a row while the socket takes all
/// writes at once, is read on NIO's thread pool, so a cold file never blocks the loop and one download cannot
/// hold it. The pool round trip is two context switches per chunk — a tenth of the CPU of a cached 50 MB HTTPS
/// download before this.
///
/// One buffer per transfer is read into again and again: once a chunk's write has completed, the layers below
/// (TLS, HTTP/2) have let go of it and the next `pread` fills the same memory. A fresh 128 KiB buffer per chunk
/// (what `NonBlockingFileIO.readChunked` allocates) costs far more than the copy: glibc hands such blocks back to
/// the kernel when they are freed, and the next read then page-faults on every 4 KiB — a quarter of the CPU of
/// a 50 MB HTTPS download went to those faults.
enum FileStreaming {
    /// The thread pool that runs the reads that may wait for the disk.
    static let threadPool = NIOThreadPool.singleton
    /// Bytes read and written per step; one chunk per response is in flight at a time.
    static let chunkSize = 128 * 1024

    /// Sends `range` of `handle` through `write` (called on `eventLoop`; its future is the backpressure).
    /// The future is `true` when every byte was sent, `false` when the file ended early (it shrank).
    ///
    /// A chunk not written within `stallTimeout` calls `stalled`, which either ends the stream (and so fails the
    /// write) and returns `true`, or returns `false` when bytes are still moving (a slow reader, not a stalled
    /// one: ``SendProgress``), and the chunk gets another `stallTimeout`.
    static func stream(
        _ handle: NIOFileHandle, range: Range<Int>, allocator: ByteBufferAllocator, on eventLoop: any EventLoop,
        stallTimeout: TimeAmount, stalled: @escaping () -> Bool, write: @escaping (ByteBuffer) -> EventLoopFuture<Void>
    ) -> EventLoopFuture<Bool> {
        Transfer(
            handle, range: range, allocator: allocator, on: eventLoop, stallTimeout: stallTimeout, stalled: stalled,
            write: write
        ).start()
    }

    /// Runs `stalled` after `timeout`, and again after each further `timeout` while it answers `false`.
    private final class StallTimer {
        private var scheduled: Scheduled<Void>?

        init(eventLoop: any EventLoop, timeout: TimeAmount, stalled: @escaping () -> Bool) {
            arm(eventLoop: eventLoop, timeout: timeout, stalled: stalled)
        }

        private func arm(eventLoop: any EventLoop, timeout: TimeAmount, stalled: @escaping () -> Bool) {
            scheduled = eventLoop.assumeIsolated().scheduleTask(in: timeout) { [self] in
                if !stalled() { arm(eventLoop: eventLoop, timeout: timeout, stalled: stalled) }
            }
        }

        func cancel() {
            scheduled?.cancel()
            scheduled = nil
        }
    }

    /// One file sent in chunks: read the next chunk (from the page cache, or on the pool), write it, wait for the
    /// write, repeat. Lives on its event loop; only a pool read crosses threads, carrying the buffer in a
    /// ``ReadSlot``.
    final class Transfer {
        private let handle: NIOFileHandle
        private let eventLoop: any EventLoop
        private let allocator: ByteBufferAllocator
        private let stallTimeout: TimeAmount
        private let stalled: () -> Bool
        private let write: (ByteBuffer) -> EventLoopFuture<Void>
        private let promise: EventLoopPromise<Bool>
        /// The next file offset to read, and where the range ends.
        private var offset: Int
        private let end: Int
        /// The buffer between reads. After a chunk's write completes it is normally the only reference, and the
        /// next read reuses its memory; if something below still holds the chunk, clearing it allocates anew
        /// and the held bytes stay as they were.
        private var spare: ByteBuffer?
        /// Buffers this transfer allocated: one when every written chunk was released before the next read.
        private(set) var buffersAllocated = 0
        /// Chunks read on the event loop from the page cache (the rest were read on the pool).
        private(set) var cachedChunks = 0
        /// Whether reads from the page cache on the event loop are tried (off once the system refuses them).
        var cachedReads = FileStreaming.cachedReadsSupported
        /// Chunks that may still be read and written on the event loop before the next one goes through the
        /// pool. A socket that takes every write at once would otherwise let one download hold the loop.
        private var inlineBudget = inlineChunks
        /// Set while a write is being started: its future completing then means the socket took it at once.
        private var sending = false
        /// Chunks (1 MiB) one transfer reads and writes in a row on the event loop, like nginx's
        /// `sendfile_max_chunk`, before it yields through a read on the pool.
        static let inlineChunks = 8

        /// Prepares a transfer; nothing happens before ``start()``.
        init(
            _ handle: NIOFileHandle, range: Range<Int>, allocator: ByteBufferAllocator, on eventLoop: any EventLoop,
            stallTimeout: TimeAmount, stalled: @escaping () -> Bool,
            write: @escaping (ByteBuffer) -> EventLoopFuture<Void>
        ) {
            self.handle = handle
            self.eventLoop = eventLoop
            self.allocator = allocator
            self.stallTimeout = stallTimeout
            self.stalled = stalled
            self.write = write
            self.promise = eventLoop.makePromise(of: Bool.self)
            self.offset = range.lowerBound
            self.end = range.upperBound
        }

        /// Starts reading; call on the event loop. The future is `true` when the whole range was written.
        func start() -> EventLoopFuture<Bool> {
            eventLoop.preconditionInEventLoop()
            readNext()
            return promise.futureResult
        }

        private func readNext() {
            guard offset < end else {
                spare = nil
                promise.succeed(true)
                return
            }
            let count = min(FileStreaming.chunkSize, end - offset)
            if spare == nil {
                spare = allocator.buffer(capacity: count)
                buffersAllocated += 1
            }
            if cachedReads, inlineBudget > 0, readCached(count: count) {
                return
            }
            inlineBudget = Self.inlineChunks
            readOnPool(count: count)
        }

        /// Reads the next chunk on the event loop if the page cache holds it (and sends it); `false` when it
        /// must come from the pool: not cached, or this system or file system cannot tell.
        private func readCached(count: Int) -> Bool {
            guard var buffer = spare.take() else { return false }
            let outcome = Result { try FileStreaming.fill(&buffer, from: handle, at: offset, count: count, cachedOnly: true) }
            guard case .success(let fill) = outcome else {
                spare = buffer
                cachedReads = false  // ENOSYS, EOPNOTSUPP…: the pool's plain pread reports real errors
                return false
            }
            if fill.reallocated { buffersAllocated += 1 }
            guard let bytes = fill.bytes else {  // not in the page cache
                spare = buffer
                return false
            }
            cachedChunks += 1
            inlineBudget -= 1
            if bytes > 0, bytes < count {
                inlineBudget = 0  // partly cached: the pool reads the rest (and waits for the disk)
            }
            send(buffer)
            return true
        }

        private func readOnPool(count: Int) {
            // The buffer moves into the slot (no second reference), so the pool thread can write into it in place.
            let slot = ReadSlot(spare.take())
            let handle = self.handle
            let offset = self.offset
            let read = FileStreaming.threadPool.runIfActive(eventLoop: eventLoop) {
                try slot.read(from: handle, at: offset, count: count)
            }
            let transfer = NIOLoopBound(self, eventLoop: eventLoop)
            read.whenComplete { result in
                let transfer = transfer.value
                switch result {
                case .success(let reallocated):
                    if reallocated { transfer.buffersAllocated += 1 }
                    transfer.send(slot.take())
                case .failure(let error):
                    transfer.promise.fail(error)
                }
            }
        }

        private func send(_ chunk: ByteBuffer) {
            guard chunk.readableBytes > 0 else {
                spare = nil
                promise.succeed(false)  // the file ended before the range did: it shrank
                return
            }
            offset += chunk.readableBytes
            spare = chunk
            let written = write(chunk)
            let stalled = NIOLoopBound(self.stalled, eventLoop: eventLoop)
            let timer = NIOLoopBound(StallTimer(eventLoop: eventLoop, timeout: stallTimeout) { stalled.value() }, eventLoop: eventLoop)
            let transfer = NIOLoopBound(self, eventLoop: eventLoop)
            sending = true
            defer { sending = false }
            written.whenComplete { result in
                timer.value.cancel()
                let transfer = transfer.value
                if !transfer.sending {
                    // The write waited for the socket: the loop served others meanwhile.
                    transfer.inlineBudget = Self.inlineChunks
                }
                switch result {
                case .success:
                    transfer.readNext()
                case .failure(let error):
                    transfer.spare = nil
                    transfer.promise.fail(error)
                }
            }
        }
    }
}
