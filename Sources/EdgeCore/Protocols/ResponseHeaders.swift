import NIOCore
import NIOHPACK
import NIOHTTP1

/// The headers every response carries besides its own, in one place for every protocol front end.
enum ResponseHeaders {
    /// Calls `emit` with `X-Cache` and `Age` (for cached replies), `Server` and `Date`. A stored HTTP response
    /// keeps its own `Date` (RFC 9110 §6.6.1) and always says its `Age` and `Cache-Status` (RFC 9211).
    @inline(__always)
    static func perRequest(
        for reply: Reply, now: NIODeadline, server: String, date: String, site: Site? = nil, tls: Bool = false,
        _ emit: (String, String) -> Void
    ) {
        var keepsDate = false
        if case .cached(let entry, let cacheStatus) = reply {
            emit("x-cache", cacheStatus)
            if let status = entry.cacheStatus(cacheStatus, at: now) {
                emit("age", String(entry.age(at: now)))
                emit("cache-status", status)
                keepsDate = true
            } else if cacheStatus == "HIT" {
                emit("age", String(entry.age(at: now)))
            }
        }
        emit("server", server)
        if !keepsDate { emit("date", date) }
        if let site {
            for field in site.headers { emit(field.name, field.value) }
            if tls { for field in site.tlsHeaders { emit(field.name, field.value) } }
        }
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
        writeStatusLine(status, to: &buffer)
        writeFields(headers, to: &buffer)
        return buffer
    }

    /// Writes an HTTP/1.1 status line, without a `String` for the code.
    static func writeStatusLine(_ status: HTTPResponseStatus, to buffer: inout ByteBuffer) {
        let code = status.code
        buffer.writeStaticString("HTTP/1.1 ")
        buffer.writeInteger(UInt8(ascii: "0") + UInt8(code / 100 % 10))
        buffer.writeInteger(UInt8(ascii: "0") + UInt8(code / 10 % 10))
        buffer.writeInteger(UInt8(ascii: "0") + UInt8(code % 10))
        buffer.writeStaticString(" ")
        buffer.writeString(status.reasonPhrase)
        buffer.writeStaticString("\r\n")
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

    /// The largest HTTP/2 frame payload every peer takes (SETTINGS_MAX_FRAME_SIZE's initial value, RFC 9113
    /// §4.2). NIOHTTP2 sends a header block in one HEADERS frame, never split into CONTINUATION frames, and fails
    /// the connection's encoding (its HPACK state included) when a block is larger.
    static let http2FramePayloadLimit = 16_384

    /// Whether `:status` and `headers` (or trailers, with `status` `nil`) fit one HTTP/2 HEADERS frame once
    /// HPACK-encoded. Heads under 4 KiB always do (Huffman codes are at most 30 bits a byte); larger ones are
    /// encoded once with a fresh encoder, whose dynamic table can only make the real encoding smaller.
    static func fitsOneHTTP2Frame(status: HTTPResponseStatus?, headers: HTTPHeaders) -> Bool {
        var raw = 8
        for (name, value) in headers { raw += name.utf8.count + value.utf8.count + 2 }
        guard raw > 4096 else { return true }
        let block = status.map { http2Block(status: $0, headers: headers) }
            ?? HPACKHeaders(httpHeaders: headers, normalizeHTTPHeaders: true)
        var encoder = HPACKEncoder(allocator: ByteBufferAllocator())
        var buffer = ByteBuffer()
        guard (try? encoder.encode(headers: block, to: &buffer)) != nil else { return false }
        // Room for the fields NIOHTTP2 and the per-request headers may still add.
        return buffer.readableBytes <= http2FramePayloadLimit - 512
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

    /// `:status` followed by the field lines of `fields` in the form HTTP/2 requires, read straight from the lines
    /// (names lower-cased as they are copied; `Keep-Alive`, `Proxy-Connection`, `Transfer-Encoding` and `Upgrade`
    /// dropped) rather than through `HTTPHeaders`; a block with `Connection`, which names more fields to drop,
    /// goes through ``http2Block(status:headers:)``. For a proxied response's head on HTTP/2.
    static func http2Block(status: HTTPResponseStatus, fields: FieldBlock) -> HPACKHeaders {
        guard !fields.contains(name: "connection") else { return http2Block(status: status, headers: fields.headers) }
        var block = HPACKHeaders()
        block.reserveCapacity(16)
        block.add(name: ":status", value: String(status.code))
        fields.forEachLine { name, value, _ in
            switch name.count {
            case 7 where FieldBlock.equalsLowercased(name, "upgrade"): return
            case 10 where FieldBlock.equalsLowercased(name, "keep-alive"): return
            case 16 where FieldBlock.equalsLowercased(name, "proxy-connection"): return
            case 17 where FieldBlock.equalsLowercased(name, "transfer-encoding"): return
            default: break
            }
            let lowered = String(unsafeUninitializedCapacity: name.count) { out in
                for index in 0..<name.count { out[index] = name[index].asciiLowercased }
                return name.count
            }
            block.add(name: lowered, value: String(decoding: value, as: UTF8.self))
        }
        return block
    }

    /// Adds `value` under `name` in lower case, as an HTTP/2 header block requires (the per-request fields of a
    /// site may be configured in any case).
    static func addLowercased(_ name: String, _ value: String, to block: inout HPACKHeaders) {
        if name.utf8.contains(where: { $0.asciiLowercased != $0 }) {
            block.add(name: name.lowercased(), value: value)
        } else {
            block.add(name: name, value: value)
        }
    }
}
