public import NIOCore
public import NIOHTTP1

/// A complete response produced by a responder, before the per-request headers (`Date`, `Server`, …) are added.
public struct EdgeResponse: Sendable {
    /// Status code.
    public var status: HTTPResponseStatus
    /// Headers specific to this response (e.g. `Content-Type`).
    public var headers: HTTPHeaders
    /// Body bytes.
    public var body: ByteBuffer

    /// Creates a response.
    public init(status: HTTPResponseStatus, headers: HTTPHeaders = [:], body: ByteBuffer = ByteBuffer()) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    /// A short plain-text response made by Edge itself (errors, health, fixed responses); it carries
    /// `X-Content-Type-Options: nosniff` so browsers never reinterpret it.
    public static func text(_ status: HTTPResponseStatus, _ text: String) -> EdgeResponse {
        EdgeResponse(
            status: status,
            headers: ["content-type": "text/plain; charset=utf-8", "x-content-type-options": "nosniff"],
            body: ByteBuffer(string: text)
        )
    }
}
