import CEdgeCompression
import CompressNIO
import NIOCore

/// How hard an encoder works: one setting per coding.
///
/// Each setting bounds an encoder's memory as well as its time, which matters for a proxied response: one encoder
/// lives as long as its response streams. The streaming settings (256 KiB windows, zstd's tables at 2^16 and 2^15
/// entries) keep an encoder near 1.4 MiB with zstd and brotli (measured) and at 256 KiB with gzip, where the
/// libraries' defaults for unknown sizes take 2–9 MiB; on HTML they compress within 1 % of those defaults.
/// ``CompressionBudget`` bounds how many run at once.
struct CompressionSettings: Sendable {
    var brotliQuality: Int32
    /// log2 of brotli's window; `nil`: from the input's size when known, else 22.
    var brotliWindow: Int32?
    var zstdLevel: Int32
    /// log2 of zstd's window, hash table and chain table; `nil`: zstd's choice for the level and input size.
    var zstdWindowLog: Int32?
    var zstdHashLog: Int32? = nil
    var zstdChainLog: Int32? = nil
    var gzipLevel: Int32

    /// Proxied responses, compressed as they stream, on the event loop: fast settings (nginx's gzip and Caddy's
    /// encoders run there too).
    static let streaming = CompressionSettings(
        brotliQuality: 4, brotliWindow: 18, zstdLevel: 3, zstdWindowLog: 18, zstdHashLog: 16, zstdChainLog: 15, gzipLevel: 5
    )
    /// A static file of up to 64 KiB, compressed once per file version on NIO's thread pool.
    static let smallFile = CompressionSettings(brotliQuality: 9, brotliWindow: nil, zstdLevel: 15, zstdWindowLog: nil, gzipLevel: 6)
    /// A larger static file (up to ``CompressedFileCache/maxSourceBytes``), compressed once on the thread pool.
    static let largeFile = CompressionSettings(brotliQuality: 6, brotliWindow: nil, zstdLevel: 9, zstdWindowLog: nil, gzipLevel: 6)
}

/// Why an encoder failed.
struct CompressionError: Error, CustomStringConvertible {
    var description: String
}

/// One body's encoder for one content coding: bytes in, encoded bytes out, as the body arrives.
///
/// ``encode(_:flush:)`` takes the next input; with `flush` everything given so far comes out decodable at once
/// (a streamed response's chunk boundary: a client sees each part as the upstream sent it, not when a buffer
/// fills). ``finish()`` ends the stream. brotli and zstd run through ``CEdgeCompression``; gzip through compress-nio.
/// Not thread-safe: one body, one thread at a time.
final class BodyEncoder {
    let coding: ContentCoding
    private let state: State
    /// Input taken since the last flush (zlib refuses a flush with nothing new).
    private var unflushed = false
    private var finished = false

    private enum State {
        case brotli(UnsafeMutableRawPointer)
        case zstd(UnsafeMutableRawPointer)
        case gzip(any NIOCompressor)
    }

    /// An encoder, or an error when the coding's library is not available. `sourceSize`, when the whole input's
    /// size is known, lets brotli and zstd size their windows and tables to it.
    init(coding: ContentCoding, settings: CompressionSettings, sourceSize: Int? = nil) throws {
        self.coding = coding
        switch coding {
        case .brotli:
            let window = settings.brotliWindow ?? sourceSize.map { size in
                var log: Int32 = 10
                while log < 24 && (1 << log) - 16 < size { log += 1 }
                return log
            } ?? 22
            guard let encoder = CEdgeCompression_brotliCreate(settings.brotliQuality, window, 1) else {
                throw CompressionError(description: "brotli is not available (libbrotlienc.so.1)")
            }
            state = .brotli(encoder)
        case .zstd:
            guard
                let context = CEdgeCompression_zstdCreate(
                    settings.zstdLevel, settings.zstdWindowLog ?? 0, settings.zstdHashLog ?? 0, settings.zstdChainLog ?? 0
                )
            else {
                throw CompressionError(description: "zstd is not available (libzstd.so.1)")
            }
            if let sourceSize { CEdgeCompression_zstdSetSourceSize(context, UInt64(sourceSize)) }
            state = .zstd(context)
        case .gzip:
            let compressor = CompressionAlgorithm.gzip(configuration: ZlibConfiguration(windowSize: 15, compressionLevel: settings.gzipLevel)).compressor
            try compressor.startStream()
            state = .gzip(compressor)
        }
    }

    deinit {
        switch state {
        case .brotli(let encoder): CEdgeCompression_brotliDestroy(encoder)
        case .zstd(let context): CEdgeCompression_zstdFree(context)
        case .gzip(let compressor): try? compressor.finishStream()
        }
    }

    /// Encodes `input`; with `flush`, also flushes. Returns what the encoder gives out (possibly nothing).
    func encode(_ input: ByteBuffer, flush: Bool, allocator: ByteBufferAllocator = ByteBufferAllocator()) throws -> ByteBuffer {
        precondition(!finished, "encode after finish")
        var output = allocator.buffer(capacity: input.readableBytes / 2 + 64)
        if input.readableBytes > 0 { unflushed = true }
        switch state {
        case .brotli(let encoder):
            try Self.brotli(encoder, operation: flush ? 1 : 0, input: input, into: &output)
        case .zstd(let context):
            try Self.zstd(context, endOp: flush ? 1 : 0, input: input, into: &output)
        case .gzip(let compressor):
            guard input.readableBytes > 0 || (flush && unflushed) else { return output }
            var input = input
            // zlib stops taking input when the output is full (output of earlier input may be pending beyond the
            // bound for this input), so go on until the input is taken and, for a flush, the output not full.
            while true {
                output.reserveCapacity(minimumWritableBytes: compressor.maxSize(from: input) + 8 * 1024)
                do {
                    try compressor.streamDeflate(from: &input, to: &output, flush: flush ? .sync : .no)
                } catch let error as CompressNIOError where error == .bufferOverflow {
                    // Z_BUF_ERROR: no progress was possible, so nothing is pending.
                    if input.readableBytes == 0 { break }
                    throw error
                }
                if input.readableBytes == 0 && (!flush || output.writableBytes > 0) { break }
            }
        }
        if flush { unflushed = false }
        return output
    }

    /// Ends the stream: what is left, and the coding's trailer.
    func finish(allocator: ByteBufferAllocator = ByteBufferAllocator()) throws -> ByteBuffer {
        precondition(!finished, "finish twice")
        finished = true
        var output = allocator.buffer(capacity: 256)
        switch state {
        case .brotli(let encoder):
            try Self.brotli(encoder, operation: 2, input: ByteBuffer(), into: &output)
        case .zstd(let context):
            try Self.zstd(context, endOp: 2, input: ByteBuffer(), into: &output)
        case .gzip(let compressor):
            while true {
                output.reserveCapacity(minimumWritableBytes: 64 * 1024)
                do {
                    try compressor.finishDeflate(to: &output)
                    break
                } catch let error as CompressNIOError where error == .bufferOverflow {
                    continue  // what was written stays; more room for the rest
                }
            }
        }
        return output
    }

    /// `whole` encoded in one go, or `nil` when the coding is not available or encoding fails.
    static func encode(_ whole: ByteBuffer, coding: ContentCoding, settings: CompressionSettings) -> ByteBuffer? {
        guard let encoder = try? BodyEncoder(coding: coding, settings: settings, sourceSize: whole.readableBytes),
            var output = try? encoder.encode(whole, flush: false), var rest = try? encoder.finish()
        else { return nil }
        output.writeBuffer(&rest)
        return output
    }

    private static let chunk = 16 * 1024

    /// BrotliEncoderCompressStream until the input is taken and, for a flush or finish, all output is out.
    private static func brotli(_ encoder: UnsafeMutableRawPointer, operation: Int32, input: ByteBuffer, into output: inout ByteBuffer) throws {
        try input.withUnsafeReadableBytes { source in
            var availableIn = source.count
            var nextIn: UnsafePointer<UInt8>? = source.baseAddress?.assumingMemoryBound(to: UInt8.self)
            while true {
                var succeeded: Int32 = 1
                output.writeWithUnsafeMutableBytes(minimumWritableBytes: chunk) { target in
                    var availableOut = target.count
                    var nextOut: UnsafeMutablePointer<UInt8>? = target.baseAddress!.assumingMemoryBound(to: UInt8.self)
                    succeeded = CEdgeCompression_brotliCompressStream(encoder, operation, &availableIn, &nextIn, &availableOut, &nextOut)
                    return target.count - availableOut
                }
                guard succeeded != 0 else { throw CompressionError(description: "brotli failed") }
                let more = CEdgeCompression_brotliHasMoreOutput(encoder) != 0
                if availableIn > 0 || more { continue }
                if operation == 2 && CEdgeCompression_brotliIsFinished(encoder) == 0 { continue }
                return
            }
        }
    }

    /// ZSTD_compressStream2 until the input is taken and, for a flush or end, all output is out.
    private static func zstd(_ context: UnsafeMutableRawPointer, endOp: Int32, input: ByteBuffer, into output: inout ByteBuffer) throws {
        try input.withUnsafeReadableBytes { source in
            var inputPosition = 0
            let base = source.baseAddress?.assumingMemoryBound(to: UInt8.self)
            while true {
                var remaining = 0
                output.writeWithUnsafeMutableBytes(minimumWritableBytes: chunk) { target in
                    var outputPosition = 0
                    remaining = CEdgeCompression_zstdCompressStream(
                        context, target.baseAddress!.assumingMemoryBound(to: UInt8.self), target.count, &outputPosition,
                        base, source.count, &inputPosition, endOp
                    )
                    return outputPosition
                }
                guard CEdgeCompression_zstdIsError(remaining) == 0 else { throw CompressionError(description: "zstd failed") }
                if inputPosition < source.count { continue }
                if endOp == 0 || remaining == 0 { return }
            }
        }
    }
}
