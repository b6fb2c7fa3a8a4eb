#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import NIOPosix
import Synchronization

/// The access log's settings (`[access_log]`).
public struct AccessLogConfiguration: Sendable, Equatable {
    public enum Format: String, Sendable, Equatable { case json, combined }

    /// `stdout`, or a file (appended to, created with mode 0640).
    public var path: String = "stdout"
    public var format: Format = .json
    /// Query parameters whose values are written as `REDACTED` (names compared without regard to ASCII case).
    public var redactQuery: [String] = AccessLogConfiguration.defaultRedactedQuery
    /// Lines waiting for the disk, at most (bytes): beyond it lines are dropped and counted, never waited for.
    public var maxQueuedBytes: Int = 8 << 20

    public static let defaultRedactedQuery = [
        "access_token", "api_key", "apikey", "auth", "key", "password", "secret", "sig", "signature", "token",
    ]

    public init() {}
}

/// Writes access-log lines on a thread of its own, off the event loops.
///
/// Each loop gathers its lines in a buffer (``AccessLogBuffer``) and hands the buffer over every 32 KiB or 100 ms;
/// the hand-over queues a write on the writer's one thread. When more than `max_queued_bytes` wait (the disk
/// falls behind), a buffer is dropped whole and its lines counted (`edge_access_log_dropped_lines_total`): a loop
/// never waits for the disk. `reopen()` (SIGUSR1) closes and reopens the file, for logrotate.
final class AccessLogWriter: Sendable {
    let configuration: AccessLogConfiguration
    private let thread: NIOThreadPool
    private let descriptor: Mutex<Int32>
    private let queuedBytes = Atomic<Int>(0)
    private let writtenLines = Atomic<Int>(0)
    private let droppedLines = Atomic<Int>(0)

    /// Opens the log; throws a message naming the file when it cannot be opened.
    init(configuration: AccessLogConfiguration) throws(AccessLogOpenError) {
        self.configuration = configuration
        descriptor = Mutex(try Self.openLog(configuration.path))
        thread = NIOThreadPool(numberOfThreads: 1)
        thread.start()
    }

    /// Lines written, and lines dropped because the disk fell behind or a write failed.
    var written: Int { writtenLines.load(ordering: .relaxed) }
    var dropped: Int { droppedLines.load(ordering: .relaxed) }

    /// Queues `bytes` (`lines` complete lines) for writing, or drops them when too much already waits.
    func submit(_ bytes: ByteBuffer, lines: Int) {
        let size = bytes.readableBytes
        if queuedBytes.add(size, ordering: .relaxed).newValue > configuration.maxQueuedBytes {
            queuedBytes.subtract(size, ordering: .relaxed)
            droppedLines.add(lines, ordering: .relaxed)
            return
        }
        thread.submit { [self] state in
            defer { queuedBytes.subtract(size, ordering: .relaxed) }
            guard case .active = state else { return }
            let ok = descriptor.withLock { fd in Self.writeAll(fd, bytes) }
            if ok { writtenLines.add(lines, ordering: .relaxed) } else { droppedLines.add(lines, ordering: .relaxed) }
        }
    }

    /// Closes and reopens the file (after logrotate moved it), in turn with the queued writes.
    func reopen() {
        let path = configuration.path
        guard path != "stdout" else { return }
        thread.submit { [self] _ in
            guard let fresh = try? Self.openLog(path) else { return }
            descriptor.withLock { fd in
                close(fd)
                fd = fresh
            }
        }
    }

    /// Writes what is queued and stops the thread.
    func shutdown() async {
        try? await thread.shutdownGracefully()
        descriptor.withLock { fd in
            if fd != STDOUT_FILENO { close(fd) }
        }
    }

    private static func openLog(_ path: String) throws(AccessLogOpenError) -> Int32 {
        if path == "stdout" { return STDOUT_FILENO }
        let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o640)
        guard fd >= 0 else { throw AccessLogOpenError(path: path, reason: String(cString: strerror(errno))) }
        return fd
    }

    private static func writeAll(_ fd: Int32, _ bytes: ByteBuffer) -> Bool {
        bytes.withUnsafeReadableBytes { raw in
            var offset = 0
            while offset < raw.count {
                let count = write(fd, raw.baseAddress! + offset, raw.count - offset)
                if count < 0 {
                    if errno == EINTR { continue }
                    return false
                }
                offset += count
            }
            return true
        }
    }
}

public struct AccessLogOpenError: Error, CustomStringConvertible {
    var path: String
    var reason: String
    public var description: String { "access_log.path: cannot open \"\(path)\": \(reason)" }
}

/// One event loop's access-log lines on their way to the ``AccessLogWriter``: formatted here, on the loop, into one
/// buffer handed over whole.
final class AccessLogBuffer {
    private static let handOverBytes = 32 * 1024
    private static let handOverDelay = TimeAmount.milliseconds(100)

    let writer: AccessLogWriter
    private let eventLoop: any EventLoop
    private let clock = LogClock()
    private let redacted: [[UInt8]]
    private var buffer: ByteBuffer
    private var lines = 0
    private var timer: Scheduled<Void>?
    var random = LoopRandom()

    init(writer: AccessLogWriter, eventLoop: any EventLoop) {
        self.writer = writer
        self.eventLoop = eventLoop
        self.redacted = writer.configuration.redactQuery.map { Array($0.lowercased().utf8) }
        self.buffer = ByteBufferAllocator().buffer(capacity: Self.handOverBytes + 1024)
    }

    /// Adds the line of a finished request.
    func log(_ record: RequestRecord, routeLabel: String, now: NIODeadline, client: ClientAddress) {
        switch writer.configuration.format {
        case .json: writeJSON(record, routeLabel: routeLabel, now: now, client: client)
        case .combined: writeCombined(record, client: client)
        }
        lines += 1
        if buffer.readableBytes >= Self.handOverBytes {
            handOver()
        } else if timer == nil {
            timer = eventLoop.assumeIsolatedUnsafeUnchecked().scheduleTask(in: Self.handOverDelay) { [self] in
                timer = nil
                handOver()
            }
        }
    }

    /// Hands what is gathered to the writer (also at shutdown).
    func handOver() {
        guard lines > 0 else { return }
        writer.submit(buffer, lines: lines)
        buffer = ByteBufferAllocator().buffer(capacity: Self.handOverBytes + 1024)
        lines = 0
    }

    private func writeJSON(_ record: RequestRecord, routeLabel: String, now: NIODeadline, client: ClientAddress) {
        buffer.writeStaticString("{\"time\":\"")
        clock.writeISO8601(to: &buffer)
        buffer.writeStaticString("\",\"request_id\":\"")
        if let id = record.details?.requestID {
            Self.writeEscaped(id.utf8, to: &buffer, json: true)
        } else {
            Self.writeHex(random.next(), to: &buffer)
            Self.writeHex(random.next(), to: &buffer)
        }
        buffer.writeStaticString("\",\"client\":\"")
        buffer.writeString(client.description)
        buffer.writeStaticString("\",\"method\":\"")
        Self.writeEscaped(record.method.rawValue.utf8, to: &buffer, json: true)
        buffer.writeStaticString("\",\"target\":\"")
        writeTarget(record.target, json: true)
        buffer.writeStaticString("\",\"protocol\":\"")
        buffer.writeString(record.wire.label)
        buffer.writeStaticString("\",\"tls\":\"")
        buffer.writeString(record.tls.label)
        buffer.writeStaticString("\",\"status\":")
        buffer.writeString(String(record.status == 0 ? 499 : record.status))
        buffer.writeStaticString(",\"bytes_in\":")
        buffer.writeString(String(record.bodyBytesIn))
        buffer.writeStaticString(",\"bytes\":")
        buffer.writeString(String(record.bodyBytesOut))
        buffer.writeStaticString(",\"duration_ms\":")
        Self.writeMilliseconds(now - record.start, to: &buffer)
        buffer.writeStaticString(",\"route\":\"")
        Self.writeEscaped(routeLabel.utf8, to: &buffer, json: true)
        buffer.writeStaticString("\",\"cache\":\"")
        buffer.writeString(record.cache.label)
        buffer.writeStaticString("\"")
        if let upstream = record.details?.upstream {
            buffer.writeStaticString(",\"upstream\":\"")
            Self.writeEscaped(upstream.server.utf8, to: &buffer, json: true)
            buffer.writeStaticString("\",\"upstream_ms\":")
            Self.writeMilliseconds(upstream.headerTime, to: &buffer)
        }
        if let agent = record.details?.userAgent {
            buffer.writeStaticString(",\"user_agent\":\"")
            Self.writeEscaped(agent.utf8, to: &buffer, json: true)
            buffer.writeStaticString("\"")
        }
        if let referer = record.details?.referer {
            buffer.writeStaticString(",\"referer\":\"")
            Self.writeEscaped(referer.utf8, to: &buffer, json: true)
            buffer.writeStaticString("\"")
        }
        buffer.writeStaticString("}\n")
    }

    /// nginx's `combined`: `$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent
    /// "$http_referer" "$http_user_agent"`. The user is always `-`: Edge logs no part of a credential.
    private func writeCombined(_ record: RequestRecord, client: ClientAddress) {
        buffer.writeString(client.description)
        buffer.writeStaticString(" - - [")
        clock.writeCommonLog(to: &buffer)
        buffer.writeStaticString("] \"")
        Self.writeEscaped(record.method.rawValue.utf8, to: &buffer, json: false)
        buffer.writeStaticString(" ")
        writeTarget(record.target, json: false)
        buffer.writeStaticString(" ")
        buffer.writeString(record.wire.label)
        buffer.writeStaticString("\" ")
        buffer.writeString(String(record.status == 0 ? 499 : record.status))
        buffer.writeStaticString(" ")
        buffer.writeString(String(record.bodyBytesOut))
        buffer.writeStaticString(" \"")
        Self.writeEscaped((record.details?.referer ?? "-").utf8, to: &buffer, json: false)
        buffer.writeStaticString("\" \"")
        Self.writeEscaped((record.details?.userAgent ?? "-").utf8, to: &buffer, json: false)
        buffer.writeStaticString("\"\n")
    }

    /// The target with the values of redacted query parameters replaced.
    private func writeTarget(_ target: Substring, json: Bool) {
        let utf8 = target.utf8
        guard let mark = utf8.firstIndex(of: UInt8(ascii: "?")), !redacted.isEmpty else {
            Self.writeEscaped(utf8, to: &buffer, json: json)
            return
        }
        Self.writeEscaped(utf8[...mark], to: &buffer, json: json)
        var first = true
        for parameter in utf8[utf8.index(after: mark)...].split(separator: UInt8(ascii: "&"), omittingEmptySubsequences: false) {
            if !first { buffer.writeStaticString("&") }
            first = false
            let equals = parameter.firstIndex(of: UInt8(ascii: "="))
            let name = equals.map { parameter[..<$0] } ?? parameter[...]
            if let equals, redacted.contains(where: { $0.elementsEqual(name.lazy.map(Self.lowercased)) }) {
                Self.writeEscaped(parameter[...equals], to: &buffer, json: json)
                buffer.writeStaticString("REDACTED")
            } else {
                Self.writeEscaped(parameter, to: &buffer, json: json)
            }
        }
    }

    private static func lowercased(_ byte: UInt8) -> UInt8 {
        byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)

    /// Writes `bytes` with `"` and `\` escaped by a backslash, control bytes as `\u00XX` in JSON and `\xXX` as
    /// nginx writes its text logs, and any byte that is not part of valid UTF-8 escaped the same way, so that a line is always valid
    /// UTF-8 and one line.
    static func writeEscaped<Bytes: Collection<UInt8>>(_ bytes: Bytes, to buffer: inout ByteBuffer, json: Bool) {
        let valid = bytes.allSatisfy { $0 < 0x80 } || Array(bytes).withUnsafeBytes { UTF8Validator.isValid($0) }
        for byte in bytes {
            if byte >= 0x20, byte != 0x7F, byte != UInt8(ascii: "\""), byte != UInt8(ascii: "\\"), byte < 0x80 || valid {
                buffer.writeInteger(byte)
            } else if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") {
                buffer.writeInteger(UInt8(ascii: "\\"))
                buffer.writeInteger(byte)
            } else if json {
                buffer.writeStaticString("\\u00")
                buffer.writeInteger(hexDigits[Int(byte >> 4)])
                buffer.writeInteger(hexDigits[Int(byte & 0xF)])
            } else {
                buffer.writeStaticString("\\x")
                buffer.writeInteger(hexDigits[Int(byte >> 4)])
                buffer.writeInteger(hexDigits[Int(byte & 0xF)])
            }
        }
    }

    private static func writeHex(_ value: UInt64, to buffer: inout ByteBuffer) {
        for shift in stride(from: 60, through: 0, by: -4) {
            buffer.writeInteger(hexDigits[Int((value >> UInt64(shift)) & 0xF)])
        }
    }

    /// Milliseconds with three decimals (microseconds), e.g. `0.125`.
    static func writeMilliseconds(_ amount: TimeAmount, to buffer: inout ByteBuffer) {
        let micros = max(amount.nanoseconds / 1000, 0)
        buffer.writeString(String(micros / 1000))
        buffer.writeStaticString(".")
        let fraction = micros % 1000
        if fraction < 100 { buffer.writeStaticString(fraction < 10 ? "00" : "0") }
        buffer.writeString(String(fraction))
    }
}

/// Wall-clock time for log lines, the date and time part formatted once a second.
final class LogClock {
    private var second: time_t = -1
    private var iso = ""
    private var common = ""
    private var millis = 0

    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    private func update() {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        millis = Int(now.tv_nsec / 1_000_000)
        guard now.tv_sec != second else { return }
        second = now.tv_sec
        var seconds = now.tv_sec
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        let year = parts.tm_year + 1900
        iso = "\(year)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec))"
        common = "\(two(parts.tm_mday))/\(Self.months[Int(parts.tm_mon)])/\(year):\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) +0000"
    }

    /// `2026-12-06T23:59:59.123Z` (UTC).
    func writeISO8601(to buffer: inout ByteBuffer) {
        update()
        buffer.writeString(iso)
        buffer.writeStaticString(".")
        if millis < 100 { buffer.writeStaticString(millis < 10 ? "00" : "0") }
        buffer.writeString(String(millis))
        buffer.writeStaticString("Z")
    }

    /// `06/Dec/2026:23:59:59 +0000`, as nginx's `$time_local` in UTC.
    func writeCommonLog(to buffer: inout ByteBuffer) {
        update()
        buffer.writeString(common)
    }
}
