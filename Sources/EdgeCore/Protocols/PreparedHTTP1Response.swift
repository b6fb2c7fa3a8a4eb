import NIOCore
import NIOHTTP1

/// A small file's plain `200` in HTTP/1.1 form, prepared in advance for the loop whose cache holds the file:
/// the status line and headers, and the complete response — head, `Server`, `Date` and body in one buffer —
/// rebuilt only when the `Date` second changes. A keep-alive `GET` of a hot small file is then one write of a
/// shared buffer, with no allocation and no copy of the body.
final class PreparedHTTP1Response: Sendable {
    /// The complete response for one `Server` and `Date` value.
    private struct Complete {
        var server = ""
        var date = ""
        var bytes = ByteBuffer()
    }

    /// The status line and stored headers (no per-request fields, no blank line).
    let head: ByteBuffer
    private let body: ByteBuffer
    private let complete: NIOLoopBoundBox<Complete>

    /// Prepares `status` with `headers` (which include `Content-Length`) for `body`. Must be called on
    /// `eventLoop`, the only loop that may then ask for the complete response.
    init(status: HTTPResponseStatus, headers: HTTPHeaders, body: ByteBuffer, eventLoop: any EventLoop) {
        self.head = ResponseHeaders.serializeHead(status: status, headers: headers)
        self.body = body
        self.complete = NIOLoopBoundBox(Complete(), eventLoop: eventLoop)
    }

    /// The complete keep-alive response to a `GET` for `server` at `date`.
    func response(server: String, date: String) -> ByteBuffer {
        let current = complete.value
        if current.date == date && current.server == server { return current.bytes }
        var bytes = ByteBuffer()
        bytes.reserveCapacity(head.readableBytes + server.utf8.count + date.utf8.count + 20 + body.readableBytes)
        bytes.writeImmutableBuffer(head)
        bytes.writeStaticString("server: ")
        bytes.writeString(server)
        bytes.writeStaticString("\r\ndate: ")
        bytes.writeString(date)
        bytes.writeStaticString("\r\n\r\n")
        bytes.writeImmutableBuffer(body)
        complete.value = Complete(server: server, date: date, bytes: bytes)
        return bytes
    }

    /// Bytes held besides the file's own body (the complete response, once built).
    var extraBytes: Int { head.readableBytes + body.readableBytes + 128 }
}
