import NIOCore
import NIOHPACK

/// The one request a run sends over and over, prepared once: wire bytes for HTTP/1.1, header block for HTTP/2.
struct RequestTemplate: Sendable {
    /// The whole HTTP/1.1 request, head and body.
    let http1Bytes: ByteBuffer
    /// The HTTP/2 header fields, pseudo-headers first.
    let http2Headers: HPACKHeaders
    /// The body, if any (HTTP/2 sends it as one DATA frame).
    let body: ByteBuffer?
    /// Whether the method is HEAD (responses have no body whatever their framing says).
    let isHEAD: Bool

    /// Prepares the request `configuration` describes.
    init(configuration: BenchConfiguration) {
        let target = configuration.target
        let method = configuration.method
        let userHost = configuration.headers.first { $0.name.lowercased() == "host" }?.value
        let hasUserAgent = configuration.headers.contains { $0.name.lowercased() == "user-agent" }
        let bodyBytes = configuration.body

        var head = "\(method) \(target.pathAndQuery) HTTP/1.1\r\nHost: \(userHost ?? target.authority)\r\n"
        if !hasUserAgent { head += "User-Agent: edge-bench\r\n" }
        for field in configuration.headers where field.name.lowercased() != "host" && field.name.lowercased() != "content-length" {
            head += "\(field.name): \(field.value)\r\n"
        }
        if let bodyBytes { head += "Content-Length: \(bodyBytes.count)\r\n" }
        head += "\r\n"
        var wire = ByteBuffer(string: head)
        if let bodyBytes { wire.writeBytes(bodyBytes) }
        http1Bytes = wire

        var fields: [(String, String)] = [
            (":method", method), (":scheme", target.isTLS ? "https" : "http"),
            (":authority", userHost ?? target.authority), (":path", target.pathAndQuery),
        ]
        if !hasUserAgent { fields.append(("user-agent", "edge-bench")) }
        let connectionSpecific: Set<String> = ["host", "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "content-length"]
        for field in configuration.headers where !connectionSpecific.contains(field.name.lowercased()) {
            fields.append((field.name.lowercased(), field.value))
        }
        if let bodyBytes { fields.append(("content-length", String(bodyBytes.count))) }
        http2Headers = HPACKHeaders(fields)
        body = bodyBytes.map { ByteBuffer(bytes: $0) }
        isHEAD = method == "HEAD"
    }
}
