import NIOCore

/// Whether a connection's sending makes progress: the bytes its peer has acknowledged, as the kernel counts them
/// (`tcp_info.tcpi_bytes_acked`, Linux 4.1 and later).
///
/// `send_seconds` means what nginx's `send_timeout` means: the client took no byte for that long. Timing a
/// write instead would cut off a client that reads steadily but slowly — a 20 MB sendfile region or a 128 KiB
/// TLS chunk still unwritten after `send_seconds` says nothing about whether bytes are moving. So a timer that
/// runs out asks this first, and is armed again when the peer acknowledged anything since.
final class SendProgress {
    private let channel: any Channel
    private var lastAcked: UInt64?

    /// Starts watching `channel` (a socket channel: a connection, not an HTTP/2 stream) from now.
    init(channel: any Channel) {
        self.channel = channel
        self.lastAcked = Self.bytesAcked(channel)
    }

    /// Whether the peer acknowledged bytes since the previous call (or since the watch began). `false` when the
    /// kernel cannot say, which leaves the timer's verdict as it was.
    func advanced() -> Bool {
        guard let acked = Self.bytesAcked(channel) else { return false }
        defer { lastAcked = acked }
        return lastAcked.map { acked != $0 } ?? false
    }

    /// A `stalled` callback for ``FileStreaming``: `false` (wait another `send_seconds`) while the peer keeps taking
    /// bytes, else closes the connection and answers `true`. The watch starts when the callback is made.
    static func closingWhenStalled(_ context: ChannelHandlerContext, metrics: LoopMetrics? = nil) -> () -> Bool {
        let progress = SendProgress(channel: context.channel)
        return {
            if progress.advanced() { return false }
            metrics?.timedOut(.send)
            context.close(promise: nil)
            return true
        }
    }

    /// The kernel's `struct tcp_info` as far as `tcpi_bytes_acked` (glibc's copy of the struct stops before it).
    private struct KernelTCPInfo {
        var words: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64,
                    UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64)
            = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    }

    /// `tcpi_bytes_acked` of the socket under `channel`, read on its event loop (synchronously there), or `nil`.
    static func bytesAcked(_ channel: any Channel) -> UInt64? {
        guard let provider = channel as? any SocketOptionProvider, channel.eventLoop.inEventLoop else { return nil }
        var acked: UInt64?
        let info: EventLoopFuture<KernelTCPInfo> = provider.unsafeGetSocketOption(level: .tcp, name: .tcp_info)
        info.assumeIsolated().whenSuccess { info in
            // 8 one-byte fields, 24 four-byte fields, then pacing_rate, max_pacing_rate, bytes_acked (offset 120).
            let value = withUnsafeBytes(of: info.words) { $0.load(fromByteOffset: 120, as: UInt64.self) }
            acked = value == 0 ? nil : value  // 0: a kernel too old to count, or nothing sent at all
        }
        return acked
    }
}
