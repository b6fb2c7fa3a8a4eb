import NIOCore

/// HTTP/2 frame types, flags and settings as they are on the wire (RFC 9113 §6, §11.2).
enum HTTP2Wire {
    static let preface: [UInt8] = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
    static let frameHeaderBytes = 9
    /// SETTINGS_MAX_FRAME_SIZE's initial value, which Edge keeps for the frames it receives.
    static let defaultMaxFrameSize = 16_384
    static let defaultInitialWindow = 65_535
    static let maxWindow = Int(Int32.max)

    enum FrameType {
        static let data: UInt8 = 0x0
        static let headers: UInt8 = 0x1
        static let priority: UInt8 = 0x2
        static let rstStream: UInt8 = 0x3
        static let settings: UInt8 = 0x4
        static let pushPromise: UInt8 = 0x5
        static let ping: UInt8 = 0x6
        static let goAway: UInt8 = 0x7
        static let windowUpdate: UInt8 = 0x8
        static let continuation: UInt8 = 0x9
    }

    enum Flag {
        static let endStream: UInt8 = 0x1
        static let ack: UInt8 = 0x1
        static let endHeaders: UInt8 = 0x4
        static let padded: UInt8 = 0x8
        static let priority: UInt8 = 0x20
    }

    enum Setting {
        static let headerTableSize: UInt16 = 0x1
        static let enablePush: UInt16 = 0x2
        static let maxConcurrentStreams: UInt16 = 0x3
        static let initialWindowSize: UInt16 = 0x4
        static let maxFrameSize: UInt16 = 0x5
        static let maxHeaderListSize: UInt16 = 0x6
        static let enableConnectProtocol: UInt16 = 0x8
    }

    /// The nine bytes before every frame's payload.
    struct FrameHeader {
        var length: Int
        var type: UInt8
        var flags: UInt8
        var streamID: UInt32

        /// Reads a frame header at `index` of `buffer`, which holds at least nine bytes there.
        init(_ buffer: ByteBuffer, at index: Int) {
            let lengthAndType = buffer.getInteger(at: index, as: UInt32.self)!
            length = Int(lengthAndType >> 8)
            type = UInt8(truncatingIfNeeded: lengthAndType)
            flags = buffer.getInteger(at: index + 4, as: UInt8.self)!
            streamID = buffer.getInteger(at: index + 5, as: UInt32.self)! & 0x7fff_ffff
        }

        func has(_ flag: UInt8) -> Bool { flags & flag != 0 }
    }
}

extension ByteBuffer {
    /// Writes an HTTP/2 frame header.
    @inline(__always)
    mutating func writeHTTP2FrameHeader(length: Int, type: UInt8, flags: UInt8, streamID: UInt32) {
        writeMultipleIntegers(UInt32(length) << 8 | UInt32(type), flags, streamID & 0x7fff_ffff)
    }

    /// Rewrites the frame header written at `index`.
    mutating func setHTTP2FrameHeader(at index: Int, length: Int, type: UInt8, flags: UInt8, streamID: UInt32) {
        setInteger(UInt32(length) << 8 | UInt32(type), at: index)
        setInteger(flags, at: index + 4)
        setInteger(streamID & 0x7fff_ffff, at: index + 5)
    }
}

/// Counts events within a sliding window and says when there are too many: NIOHTTP2's rate limits on
/// RST_STREAM, stream errors and control frames (200 in 30 s each), kept by Edge's connection.
struct HTTP2RateLimit {
    let maximum: Int
    let window: TimeAmount
    private var times: [NIODeadline] = []
    private var next = 0

    init(maximum: Int, window: TimeAmount) {
        self.maximum = maximum
        self.window = window
    }

    /// Records one event now; returns whether more than `maximum` happened within `window`.
    mutating func record(now: NIODeadline = .now()) -> Bool {
        if times.count < maximum {
            times.append(now)
            return false
        }
        // `times` is a ring of the last `maximum` events; the oldest is at `next`.
        let oldest = times[next]
        times[next] = now
        next = (next + 1) % maximum
        return now - oldest < window
    }
}
