#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import CEdgeLinux
import NIOConcurrencyHelpers
import NIOCore

/// How ``FileStreaming`` reads a chunk: into a buffer it already owns, either from the page cache only (on the
/// event loop) or with a plain `pread` that may wait for the disk (on the thread pool).
extension FileStreaming {
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
                return try FileStreaming.fill(&buffer, from: handle, at: offset, count: count, cachedOnly: false).reallocated
            }
        }
    }

    /// What ``fill(_:from:at:count:cachedOnly:)`` did.
    struct Fill {
        /// Bytes read (0 at end of file); `nil` when `cachedOnly` and the bytes are not in the page cache.
        var bytes: Int?
        /// Whether clearing the buffer took new memory (the old was still referenced elsewhere).
        var reallocated: Bool
    }

    /// Empties `buffer` and reads up to `count` bytes of `handle` at `offset` into it: all of them (fewer only at
    /// end of file), or with `cachedOnly` just what the page cache holds, without waiting for the disk.
    static func fill(_ buffer: inout ByteBuffer, from handle: NIOFileHandle, at offset: Int, count: Int, cachedOnly: Bool) throws -> Fill {
        let before = buffer.withVeryUnsafeBytes { UInt(bitPattern: $0.baseAddress) }
        buffer.clear(minimumCapacity: count)
        let after = buffer.withVeryUnsafeBytes { UInt(bitPattern: $0.baseAddress) }
        var fill = Fill(bytes: 0, reallocated: before != after)
        if cachedOnly {
            var cached: Int?
            _ = try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { memory in
                cached = try handle.withUnsafeFileDescriptor { descriptor in
                    try FileStreaming.preadCached(descriptor, into: memory, count: count, at: offset)
                }
                return cached ?? 0
            }
            fill.bytes = cached
            return fill
        }
        var total = 0
        while total < count {
            let got = try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count - total) { memory in
                try handle.withUnsafeFileDescriptor { descriptor in
                    try FileStreaming.preadRetrying(descriptor, into: memory, count: count - total, at: offset + total)
                }
            }
            if got == 0 { break }  // end of file
            total += got
        }
        fill.bytes = total
        return fill
    }

    /// Whether this system has `preadv2(…, RWF_NOWAIT)` (Linux); a file system without it answers `EOPNOTSUPP`,
    /// and that transfer then reads only on the pool.
    static let cachedReadsSupported: Bool = {
        #if os(Linux)
        return true
        #else
        return false
        #endif
    }()

    /// One `pread`, retried on `EINTR`.
    static func preadRetrying(_ descriptor: CInt, into memory: UnsafeMutableRawBufferPointer, count: Int, at offset: Int) throws -> Int {
        while true {
            let result = pread(descriptor, memory.baseAddress, count, off_t(offset))
            if result >= 0 { return result }
            if errno == EINTR { continue }
            throw IOError(errnoCode: errno, reason: "pread")
        }
    }

    /// One read of what the page cache holds: the bytes read (0 at end of file), or `nil` when they would have
    /// to come from the disk. Throws where the system or file system cannot read this way.
    static func preadCached(_ descriptor: CInt, into memory: UnsafeMutableRawBufferPointer, count: Int, at offset: Int) throws -> Int? {
        while true {
            let result = CEdgeLinux_preadCached(descriptor, memory.baseAddress, count, off_t(offset))
            if result >= 0 { return result }
            switch errno {
            case EINTR: continue
            case EAGAIN: return nil
            default: throw IOError(errnoCode: errno, reason: "preadv2(RWF_NOWAIT)")
            }
        }
    }
}
