@testable import EdgeCore
import Foundation
import NIOCore
import NIOPosix
import Testing

@Suite("File streaming: chunks read on the pool into one reused buffer")
struct FileStreamingTests {
    /// What one transfer produced, gathered on its event loop.
    struct Outcome: Sendable {
        var complete: Bool
        var bytes: [UInt8]
        var buffersAllocated: Int
        var chunks: Int
        /// Chunks read on the event loop from the page cache.
        var cachedChunks: Int
    }

    /// How the test's writer treats each chunk.
    enum Writer: Sendable {
        /// Copies the bytes out and lets the chunk go, as the TLS and HTTP/2 layers do once it is written.
        case releasing
        /// Keeps every chunk alive until the end, as a layer still holding the data would.
        case retaining
        /// Fails the write of this chunk (0-based).
        case failing(at: Int)
        /// Copies the bytes out and completes the write at once, as a socket with room does.
        case immediate
    }

    struct WriteFailed: Error {}

    /// A file of `size` bytes whose every byte differs from its neighbours' (so a shifted or reused chunk shows).
    static func makeFile(size: Int) throws -> (path: String, bytes: [UInt8]) {
        let bytes = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 / 251) }
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("edge-stream-\(UUID().uuidString)").path
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return (path, bytes)
    }

    /// Opens `path` for reading (a synchronous call, kept out of the async test body).
    static func open(_ path: String) throws -> NIOFileHandle {
        try NIOFileHandle(_deprecatedPath: path)
    }

    static func run(path: String, range: Range<Int>, writer: Writer, cachedReads: Bool = true) async throws -> Outcome {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let handle = try Self.open(path)
        defer { try? handle.close() }
        return try await loop.flatSubmit { () -> EventLoopFuture<Outcome> in
            var received: [UInt8] = []
            var retained: [ByteBuffer] = []
            var chunks = 0
            let transfer = FileStreaming.Transfer(
                handle, range: range, allocator: ByteBufferAllocator(), on: loop, stallTimeout: .seconds(30),
                stalled: { true }
            ) { chunk in
                defer { chunks += 1 }
                switch writer {
                case .releasing:
                    received += chunk.readableBytesView
                case .retaining:
                    retained.append(chunk)
                case .failing(let index):
                    if chunks == index { return loop.makeFailedFuture(WriteFailed()) }
                    received += chunk.readableBytesView
                case .immediate:
                    received += chunk.readableBytesView
                    return loop.makeSucceededFuture(())
                }
                // Complete the write on a later tick, as a socket write would.
                return loop.scheduleTask(in: .milliseconds(1)) {}.futureResult
            }
            transfer.cachedReads = transfer.cachedReads && cachedReads
            return transfer.start().assumeIsolated().map { complete in
                let bytes = retained.isEmpty ? received : retained.flatMap { Array($0.readableBytesView) }
                return Outcome(
                    complete: complete, bytes: bytes, buffersAllocated: transfer.buffersAllocated, chunks: chunks,
                    cachedChunks: transfer.cachedChunks
                )
            }.nonisolated()
        }.get()
    }

    /// Writes a file of `size` bytes (so it is in the page cache), streams `range` of it (all of it by default)
    /// and removes it; returns the outcome and the file's bytes.
    static func streamFile(
        size: Int, range: Range<Int>? = nil, writer: Writer, cachedReads: Bool = true
    ) async throws -> (outcome: Outcome, file: [UInt8]) {
        let file = try makeFile(size: size)
        defer { try? FileManager.default.removeItem(atPath: file.path) }
        let outcome = try await run(path: file.path, range: range ?? 0..<size, writer: writer, cachedReads: cachedReads)
        return (outcome, file.bytes)
    }

    @Test("a file of several chunks arrives whole, read into a single buffer")
    func reusesOneBuffer() async throws {
        let size = FileStreaming.chunkSize * 3 + 12_345
        let (outcome, file) = try await Self.streamFile(size: size, writer: .releasing)
        #expect(outcome.complete)
        #expect(outcome.chunks == 4)
        #expect(outcome.bytes == file)
        #expect(outcome.buffersAllocated == 1)
    }

    @Test("chunks still held by the writer keep their bytes; the next read gets new memory")
    func heldChunksAreNotOverwritten() async throws {
        let size = FileStreaming.chunkSize * 2 + 99
        let (outcome, file) = try await Self.streamFile(size: size, writer: .retaining)
        #expect(outcome.complete)
        #expect(outcome.bytes == file)
        #expect(outcome.buffersAllocated == 3)
    }

    @Test("a range in the middle of the file, across a chunk boundary")
    func middleRange() async throws {
        let size = FileStreaming.chunkSize * 2
        let range = 1_001..<(FileStreaming.chunkSize + 77_777)
        let (outcome, file) = try await Self.streamFile(size: size, range: range, writer: .releasing)
        #expect(outcome.complete)
        #expect(outcome.bytes == Array(file[range]))
    }

    @Test("a file shorter than the range (it shrank) ends with false after the bytes it had")
    func shrunkFile() async throws {
        let (outcome, file) = try await Self.streamFile(
            size: 50_000, range: 0..<FileStreaming.chunkSize * 2, writer: .releasing
        )
        #expect(!outcome.complete)
        #expect(outcome.bytes == file)
    }

    @Test("a failed write fails the transfer")
    func failedWrite() async throws {
        let size = FileStreaming.chunkSize * 3
        await #expect(throws: WriteFailed.self) {
            _ = try await Self.streamFile(size: size, writer: .failing(at: 1))
        }
    }

    @Test("only the thread pool reads when page-cache reads are off")
    func poolOnly() async throws {
        let size = FileStreaming.chunkSize * 3 + 1
        let (outcome, file) = try await Self.streamFile(size: size, writer: .releasing, cachedReads: false)
        #expect(outcome.complete)
        #expect(outcome.bytes == file)
        #expect(outcome.cachedChunks == 0)
        #expect(outcome.buffersAllocated == 1)
    }

    /// Whether the temporary folder's file system answers preadv2(RWF_NOWAIT) (ext4, xfs, btrfs, tmpfs do; where
    /// it does not, Edge reads on the pool only, which the other tests cover).
    static let temporaryFolderReadsCached: Bool = {
        guard let file = try? makeFile(size: 4096), let handle = try? open(file.path) else { return false }
        defer {
            try? handle.close()
            try? FileManager.default.removeItem(atPath: file.path)
        }
        var buffer = ByteBuffer()
        return (try? FileStreaming.fill(&buffer, from: handle, at: 0, count: 4096, cachedOnly: true)) != nil
    }()

    #if os(Linux)
    @Test(
        "a file in the page cache is read on the event loop, without the pool, while the writes wait for the socket",
        .enabled(if: temporaryFolderReadsCached, "the temporary folder's file system refuses RWF_NOWAIT")
    )
    func cachedReads() async throws {
        let size = FileStreaming.chunkSize * 9 + 10
        let (outcome, file) = try await Self.streamFile(size: size, writer: .releasing)  // just written: in the page cache
        #expect(outcome.complete)
        #expect(outcome.bytes == file)
        #expect(outcome.chunks == 10)
        #expect(outcome.cachedChunks == 10)  // more than 8: a write that waited gives the next 8
        #expect(outcome.buffersAllocated == 1)
    }

    @Test(
        "a socket that takes every write at once gets at most 8 chunks in a row, then the pool read yields the loop",
        .enabled(if: temporaryFolderReadsCached, "the temporary folder's file system refuses RWF_NOWAIT")
    )
    func inlineBudget() async throws {
        let size = FileStreaming.chunkSize * 20
        let (outcome, file) = try await Self.streamFile(size: size, writer: .immediate)
        #expect(outcome.complete)
        #expect(outcome.bytes == file)
        #expect(outcome.chunks == 20)
        // 8 from the cache, 1 from the pool, 8 from the cache, 1 from the pool, 2 from the cache.
        #expect(outcome.cachedChunks == 18)
    }
    #endif
}
