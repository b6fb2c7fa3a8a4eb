#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Streams files where sendfile cannot be used (TLS, HTTP/2): chunks read on NIO's thread pool, each written
/// before the next is read, so a slow client holds one chunk, not the file.
///
/// One buffer per transfer is read into again and again: once a chunk's write has completed, the layers below
/// (TLS, HTTP/2) have let go of it and the next `pread` fills the same memory. A fresh 128 KiB buffer per chunk
/// (what `NonBlockingFileIO.readChunked` allocates) costs far more than the copy: glibc hands such blocks back to
/// the kernel when they are freed, and the next read then page-faults on every 4 KiB — a quarter of the CPU of
/// a 50 MB HTTPS download went to those faults.
enum FileStreaming {
    /// The thread pool that runs the blocking reads.
    static let threadPool = NIOThreadPool.singleton
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
        Transfer(
            handle, range: range, allocator: allocator, on: eventLoop, stallTimeout: stallTimeout, stalled: stalled,
            write: write
        ).start()
    }

    /// One file sent in chunks: read the next chunk on the pool, write it, wait for the write, repeat. Lives on
    /// its event loop; only the read crosses to the pool, carrying the buffer in a ``ReadSlot``.
    final class Transfer {
        private let handle: NIOFileHandle
        private let eventLoop: any EventLoop
        private let allocator: ByteBufferAllocator
        private let stallTimeout: TimeAmount
        private let stalled: () -> Void
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

        /// Prepares a transfer; nothing happens before ``start()``.
        init(
            _ handle: NIOFileHandle, range: Range<Int>, allocator: ByteBufferAllocator, on eventLoop: any EventLoop,
            stallTimeout: TimeAmount, stalled: @escaping () -> Void,
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
            let timer = eventLoop.assumeIsolated().scheduleTask(in: stallTimeout) { stalled.value() }
            let transfer = NIOLoopBound(self, eventLoop: eventLoop)
            written.whenComplete { result in
                timer.cancel()
                let transfer = transfer.value
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

    /// Carries one buffer to the pool thread and back. Exactly one side touches it at a time (the pool while
    /// reading, the event loop before and after), the lock only makes that hand-over visible to the compiler.
    final class ReadSlot: Sendable {
        private let buffer: NIOLockedValueBox<ByteBuffer?>

        init(_ buffer: ByteBuffer?) {
            self.buffer = NIOLockedValueBox(buffer)
        }

        /// Takes the buffer out (leaving the slot empty).
        func take() -> ByteBuffer {
            buffer.withLockedValue { $0.take() } ?? ByteBuffer()
        }

        /// Empties the buffer and fills it with up to `count` bytes of `handle` from `offset` (fewer at end of
        /// file). Returns whether clearing needed new memory (something still held the old chunk).
        func read(from handle: NIOFileHandle, at offset: Int, count: Int) throws -> Bool {
            try buffer.withLockedValue { slot in
                guard var buffer = slot.take() else { return false }
                defer { slot = buffer }
                let before = buffer.withVeryUnsafeBytes { UInt(bitPattern: $0.baseAddress) }
                buffer.clear(minimumCapacity: count)
                let after = buffer.withVeryUnsafeBytes { UInt(bitPattern: $0.baseAddress) }
                var total = 0
                while total < count {
                    let got = try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count - total) { memory in
                        try handle.withUnsafeFileDescriptor { descriptor in
                            try Self.pread(descriptor, into: memory, count: count - total, at: offset + total)
                        }
                    }
                    if got == 0 { break }  // end of file
                    total += got
                }
                return before != after
            }
        }

        /// One `pread`, retried on `EINTR`.
        private static func pread(_ descriptor: CInt, into memory: UnsafeMutableRawBufferPointer, count: Int, at offset: Int) throws -> Int {
            while true {
                #if canImport(Darwin)
                let result = Darwin.pread(descriptor, memory.baseAddress, count, off_t(offset))
                #elseif canImport(Musl)
                let result = Musl.pread(descriptor, memory.baseAddress, count, off_t(offset))
                #else
                let result = Glibc.pread(descriptor, memory.baseAddress, count, off_t(offset))
                #endif
                if result >= 0 { return result }
                if errno == EINTR { continue }
                throw IOError(errnoCode: errno, reason: "pread")
            }
        }
    }
}
