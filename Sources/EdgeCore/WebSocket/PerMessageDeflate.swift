import CompressNIO
import NIOCore

/// permessage-deflate (RFC 7692): the negotiation of its parameters, and the compression of a connection's
/// messages with zlib's raw deflate (CompressNIO's zlib wrapper).
///
/// Each side keeps its LZ77 window from one message to the next (context takeover) unless the negotiation said
/// otherwise; a client that asks `server_no_context_takeover` gets a compressor reset after each message, and a
/// `server_max_window_bits` of 9 to 15 is honoured. An offer of 8 bits is declined (zlib's raw deflate cannot
/// make a 256-byte window) and the next offer, if any, is taken.
struct PerMessageDeflateOffer: Equatable {
    var serverNoContextTakeover = false
    var clientNoContextTakeover = false
    /// The server's window, in bits.
    var serverMaxWindowBits: Int32 = 15
    /// The client's window: what Edge answers and inflates with.
    var clientMaxWindowBits: Int32 = 15
    /// Whether the client named `client_max_window_bits` (then Edge may, and does, answer it).
    var clientWindowOffered = false
    var serverWindowRequested = false

    /// The accepted offer's answer, for `Sec-WebSocket-Extensions`.
    var responseValue: String {
        var value = "permessage-deflate"
        if serverNoContextTakeover { value += "; server_no_context_takeover" }
        if clientNoContextTakeover { value += "; client_no_context_takeover" }
        if serverWindowRequested { value += "; server_max_window_bits=\(serverMaxWindowBits)" }
        if clientWindowOffered { value += "; client_max_window_bits=\(clientMaxWindowBits)" }
        return value
    }

    /// The first offer of permessage-deflate in `Sec-WebSocket-Extensions` values that Edge can accept.
    static func negotiate(_ values: [String]) -> PerMessageDeflateOffer? {
        for offer in listElements(values) {
            let parts = offer.split(separator: ";").map { $0.trimming() }
            guard let name = parts.first, name.equalsIgnoringASCIICase("permessage-deflate") else { continue }
            if let accepted = accept(parameters: parts.dropFirst()) { return accepted }
        }
        return nil
    }

    private static func accept(parameters: ArraySlice<Substring>) -> PerMessageDeflateOffer? {
        var result = PerMessageDeflateOffer()
        var seen: Set<String> = []
        for parameter in parameters {
            let pair = parameter.split(separator: "=", maxSplits: 1).map { $0.trimming() }
            let key = pair[0].lowercased()
            var value = pair.count > 1 ? pair[1] : nil
            if let quoted = value, quoted.hasPrefix("\""), quoted.hasSuffix("\""), quoted.count >= 2 { value = quoted.dropFirst().dropLast() }
            guard seen.insert(key).inserted else { return nil }  // a parameter twice: the offer is invalid
            switch key {
            case "server_no_context_takeover":
                guard value == nil else { return nil }
                result.serverNoContextTakeover = true
            case "client_no_context_takeover":
                guard value == nil else { return nil }
                result.clientNoContextTakeover = true
            case "server_max_window_bits":
                guard let text = value, let bits = Int32(text), (9...15).contains(bits) else { return nil }
                result.serverMaxWindowBits = bits
                result.serverWindowRequested = true
            case "client_max_window_bits":
                result.clientWindowOffered = true
                if let text = value {
                    guard let bits = Int32(text), (8...15).contains(bits) else { return nil }
                    // A client window of 8 bits is inflated with 9 (zlib's smallest), which reads its output too.
                    result.clientMaxWindowBits = bits
                }
            default:
                return nil  // an unknown parameter: this offer cannot be accepted
            }
        }
        return result
    }
}

/// One connection's compressor and decompressor for permessage-deflate.
final class PerMessageDeflate {
    let settings: PerMessageDeflateOffer
    private var compressor: ZlibCompressor?
    private var decompressor: ZlibDecompressor?
    /// The four bytes a sync flush ends with, which a sender drops and a receiver adds back (RFC 7692 §7.2.1).
    private static let tail: [UInt8] = [0x00, 0x00, 0xFF, 0xFF]

    struct TooLarge: Error {}
    struct Corrupt: Error {}

    init(settings: PerMessageDeflateOffer) {
        self.settings = settings
    }

    /// The compressed payload of a message.
    func compress(_ message: ByteBuffer, allocator: ByteBufferAllocator) throws -> ByteBuffer {
        if compressor == nil {
            compressor = try ZlibCompressor(
                algorithm: .deflate, configuration: ZlibConfiguration(windowSize: settings.serverMaxWindowBits, compressionLevel: 6, memoryLevel: 8)
            )
        }
        let compressor = compressor!
        var input = message
        var output = allocator.buffer(capacity: compressor.maxSize(from: input))
        try compressor.deflate(from: &input, to: &output, flush: .sync)
        if output.readableBytes >= 4, output.readableBytesView.suffix(4).elementsEqual(Self.tail) {
            output.moveWriterIndex(to: output.writerIndex - 4)
        }
        if output.readableBytes == 0 { output.writeInteger(UInt8(0)) }  // an empty message: one empty block
        if settings.serverNoContextTakeover { try compressor.reset() }
        return output
    }

    /// The payload of a compressed message, refused beyond `limit` bytes.
    func decompress(_ payload: ByteBuffer, limit: Int, allocator: ByteBufferAllocator) throws -> ByteBuffer {
        if decompressor == nil {
            decompressor = try ZlibDecompressor(algorithm: .deflate, windowSize: max(9, settings.clientMaxWindowBits))
        }
        let decompressor = decompressor!
        var input = payload
        input.writeBytes(Self.tail)
        var output = allocator.buffer(capacity: min(limit, max(256, payload.readableBytes * 4)))
        while true {
            do {
                try decompressor.inflate(from: &input, to: &output)
                if input.readableBytes == 0 { break }
            } catch let error as CompressNIOError where error == .bufferOverflow {
                guard output.readableBytes < limit else { throw TooLarge() }
                output.reserveCapacity(minimumWritableBytes: min(max(output.readableBytes, 4096), limit + 1 - output.readableBytes))
                continue
            } catch let error as CompressNIOError where error == .inputBufferOverflow {
                break  // all input taken, more output could come only with more input
            } catch {
                throw Corrupt()
            }
        }
        guard output.readableBytes <= limit else { throw TooLarge() }
        if settings.clientNoContextTakeover { try decompressor.reset() }
        return output
    }
}
