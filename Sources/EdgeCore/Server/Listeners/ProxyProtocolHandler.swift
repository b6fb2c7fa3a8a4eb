import NIOCore

/// The PROXY protocol header (HAProxy's, versions 1 and 2) that an L4 load balancer sends first on each connection,
/// naming the client it accepted: what Edge then uses as the client's address for logs, rate limits, per-address
/// limits and `X-Forwarded-For`.
enum ProxyProtocolHeader {
    /// What a complete header says.
    enum Parsed: Equatable {
        /// The client's address (`PROXY TCP4|TCP6`, v2 `PROXY` over TCP).
        case client(SocketAddress)
        /// The balancer's own connection (`PROXY UNKNOWN`, v2 `LOCAL`, another family): the peer address stands.
        case local
    }

    enum Outcome: Equatable {
        /// The header and its length.
        case header(Parsed, length: Int)
        /// More bytes are needed.
        case incomplete
        /// Not a valid header.
        case invalid(String)
    }

    /// `\r\n\r\n\0\r\nQUIT\n`, the v2 signature.
    static let signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]

    static func parse(_ bytes: ByteBuffer) -> Outcome {
        let view = bytes.readableBytesView
        guard let first = view.first else { return .incomplete }
        if first == UInt8(ascii: "P") { return parseV1(view) }
        if first == 0x0D { return parseV2(view) }
        return .invalid("no PROXY protocol header")
    }

    /// `PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n`, at most 107 bytes.
    private static func parseV1(_ view: ByteBufferView) -> Outcome {
        let prefix = Array("PROXY ".utf8)
        guard view.starts(with: prefix.prefix(min(view.count, prefix.count))) else { return .invalid("no PROXY protocol header") }
        guard let lf = view.firstIndex(of: 0x0A) else {
            return view.count >= 107 ? .invalid("PROXY v1 line longer than 107 bytes") : .incomplete
        }
        let length = view.distance(from: view.startIndex, to: lf) + 1
        guard length <= 107, length >= 8, view[view.index(before: lf)] == 0x0D,
            let line = String(validating: view[view.startIndex..<view.index(before: lf)], as: UTF8.self)
        else { return .invalid("malformed PROXY v1 line") }
        let fields = line.split(separator: " ", omittingEmptySubsequences: false)
        guard fields.count >= 2, fields[0] == "PROXY" else { return .invalid("malformed PROXY v1 line") }
        if fields[1] == "UNKNOWN" { return .header(.local, length: length) }
        guard fields.count == 6, fields[1] == "TCP4" || fields[1] == "TCP6", let port = Int(fields[4]), (0...65_535).contains(port),
            let destinationPort = Int(fields[5]), (0...65_535).contains(destinationPort),
            let address = try? SocketAddress(ipAddress: String(fields[2]), port: port)
        else { return .invalid("malformed PROXY v1 line") }
        switch (fields[1], address) {
        case ("TCP4", .v4), ("TCP6", .v6): return .header(.client(address), length: length)
        default: return .invalid("PROXY v1 address does not match its family")
        }
    }

    private static func parseV2(_ view: ByteBufferView) -> Outcome {
        guard view.count >= 16 else {
            let known = min(view.count, signature.count)
            return view.prefix(known).elementsEqual(signature.prefix(known)) ? .incomplete : .invalid("no PROXY protocol header")
        }
        let bytes = Array(view.prefix(16))
        guard bytes[..<12].elementsEqual(signature) else { return .invalid("no PROXY protocol header") }
        let versionCommand = bytes[12], family = bytes[13]
        let length = 16 + (Int(bytes[14]) << 8 | Int(bytes[15]))
        guard versionCommand >> 4 == 2 else { return .invalid("PROXY v2 header with version \(versionCommand >> 4)") }
        guard view.count >= length else { return .incomplete }
        switch versionCommand & 0x0F {
        case 0x0:
            return .header(.local, length: length)
        case 0x1:
            break
        default:
            return .invalid("PROXY v2 command \(versionCommand & 0x0F)")
        }
        let body = Array(view.dropFirst(16).prefix(length - 16))
        func port(_ at: Int) -> Int { Int(body[at]) << 8 | Int(body[at + 1]) }
        switch family {
        case 0x11:  // TCP over IPv4
            guard body.count >= 12 else { return .invalid("short PROXY v2 IPv4 addresses") }
            let text = body[0..<4].map(String.init).joined(separator: ".")
            guard let address = try? SocketAddress(ipAddress: text, port: port(8)) else { return .invalid("bad PROXY v2 address") }
            return .header(.client(address), length: length)
        case 0x21:  // TCP over IPv6
            guard body.count >= 36 else { return .invalid("short PROXY v2 IPv6 addresses") }
            let text = stride(from: 0, to: 16, by: 2).map { String(Int(body[$0]) << 8 | Int(body[$0 + 1]), radix: 16) }.joined(separator: ":")
            guard let address = try? SocketAddress(ipAddress: text, port: port(32)) else { return .invalid("bad PROXY v2 address") }
            return .header(.client(address), length: length)
        default:
            return .header(.local, length: length)  // UDP, Unix sockets, unspecified: not a TCP client address
        }
    }
}

/// First handler of a connection on a listener with `proxy_protocol = true`: reads the PROXY header (v1 or v2)
/// within the handshake deadline, only from the balancers named in `proxy_protocol_from`, and then installs the
/// connection's real pipeline with the client address the header names, passes on what followed the header and
/// leaves. A peer outside those ranges, a malformed header or none in time closes the connection: the bytes
/// cannot be read as anything else.
final class ProxyProtocolHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let trusted: [AddressRange]
    private let timeout: TimeAmount
    private let configure: (any Channel, ClientAddress) throws -> Void
    private var buffered: ByteBuffer?
    private var timer: Scheduled<Void>?
    private var done = false

    init(trusted: [AddressRange], timeout: TimeAmount, configure: @escaping (any Channel, ClientAddress) throws -> Void) {
        self.trusted = trusted
        self.timeout = timeout
        self.configure = configure
    }

    func channelActive(context: ChannelHandlerContext) {
        // Held back: the real pipeline sees the connection become active once it is installed.
        let peer = ClientAddress(context.channel.remoteAddress)
        guard trusted.contains(where: { $0.contains(peer) }) else {
            context.close(promise: nil)
            return
        }
        timer = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { context.close(promise: nil) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !done else {
            context.fireChannelRead(data)
            return
        }
        var bytes = unwrapInboundIn(data)
        if var earlier = buffered {
            earlier.writeBuffer(&bytes)
            bytes = earlier
        }
        switch ProxyProtocolHeader.parse(bytes) {
        case .incomplete:
            buffered = bytes
            if bytes.readableBytes > 16 + 65_535 { context.close(promise: nil) }
        case .invalid:
            context.close(promise: nil)
        case .header(let parsed, let length):
            done = true
            timer?.cancel()
            timer = nil
            buffered = nil
            bytes.moveReaderIndex(forwardBy: length)
            let client: ClientAddress
            switch parsed {
            case .client(let address): client = ClientAddress(address)
            case .local: client = ClientAddress(context.channel.remoteAddress)
            }
            do {
                try configure(context.channel, client)
            } catch {
                context.close(promise: nil)
                return
            }
            context.fireChannelActive()
            if bytes.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(bytes)) }
            context.fireChannelReadComplete()
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
    }
}
