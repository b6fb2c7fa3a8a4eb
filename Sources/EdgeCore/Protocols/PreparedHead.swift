import NIOCore
import NIOHTTP1

/// A status line and stored headers serialised for HTTP/1.1 once, ahead of time (no per-request fields, no
/// blank line). A class, so that the complete responses built from it can be found again.
final class PreparedHead: Sendable {
    /// The serialised head.
    let bytes: ByteBuffer

    /// Serialises `status` and `headers`.
    init(status: HTTPResponseStatus, headers: HTTPHeaders) {
        self.bytes = ResponseHeaders.serializeHead(status: status, headers: headers)
    }
}
