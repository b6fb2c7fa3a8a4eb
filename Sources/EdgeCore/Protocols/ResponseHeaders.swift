import NIOCore
import NIOHPACK
import NIOHTTP1

/// The headers every response carries besides its own, in one place for every protocol front end.
enum ResponseHeaders {
    /// Calls `emit` with `X-Cache` and `Age` (for cached replies), `Server` and `Date`.
    @inline(__always)
    static func perRequest(for reply: Reply, now: NIODeadline, server: String, date: String, _ emit: (String, String) -> Void) {
        if case .cached(let entry, let cacheStatus) = reply {
            emit("x-cache", cacheStatus)
            if cacheStatus == "HIT" { emit("age", String(entry.age(at: now))) }
        }
        emit("server", server)
        emit("date", date)
    }

    /// Whether a response with `status` says how long its body is. Not a 1xx or 204 (RFC 9110 §8.6: a server
    /// must not send `Content-Length` with them), nor a 304, whose `Content-Length` could only be that of the
    /// 200 it stands for, which Edge does not know when it writes one.
    @inline(__always)
    static func hasContentLength(_ status: HTTPResponseStatus) -> Bool {
        let code = status.code
        return code >= 200 && code != 204 && code != 304
    }

    /// The HTTP/1.1 status line and stored headers of a response, serialised once when it is cached.
    static func serializeHead(status: HTTPResponseStatus, headers: HTTPHeaders) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(256)
        buffer.writeString("HTTP/1.1 \(status.code) \(status.reasonPhrase)\r\n")
        writeFields(headers, to: &buffer)
        return buffer
    }

    /// Writes `headers` as HTTP/1.1 field lines (`name: value` CRLF each): a head's fields, or a last chunk's
    /// trailers.
    static func writeFields(_ headers: HTTPHeaders, to buffer: inout ByteBuffer) {
        for header in headers { writeField(header.name, header.value, to: &buffer) }
    }

    /// Writes one HTTP/1.1 field line.
    static func writeField(_ name: String, _ value: String, to buffer: inout ByteBuffer) {
        buffer.writeString(name)
        buffer.writeStaticString(": ")
        buffer.writeString(value)
        buffer.writeStaticString("\r\n")
    }

    /// `:status` followed by `headers` in the form HTTP/2 requires (lower-case names, no connection-specific
    /// fields), for a HEADERS frame.
    static func http2Block(status: HTTPResponseStatus, headers: HTTPHeaders) -> HPACKHeaders {
        var block = HPACKHeaders()
        block.reserveCapacity(headers.count + 5)
        block.add(name: ":status", value: String(status.code))
        block.add(contentsOf: HPACKHeaders(httpHeaders: headers, normalizeHTTPHeaders: true))
        return block
    }
}
