import NIOHPACK

/// The well-formedness rules of RFC 9113 §8.2 and §8.3 for the header blocks a client sends: request heads and
/// trailers. A block that breaks one makes the request malformed, which is a stream error of type
/// `PROTOCOL_ERROR`.
///
/// NIOHTTP2 checks the same rules (`headerBlockValidation`), but with one switch for both directions, so it
/// also re-validated every response block Edge sends — blocks built from fixed names and values that the
/// configuration already vets — and its checks go through `Substring` comparisons. Together that was 14 % of
/// the throughput of cached HTTP/2 responses. Edge turns NIOHTTP2's check off and applies these rules to every
/// inbound block instead (``HTTP2FastPathHandler``), in one pass over the bytes that also collects what the
/// fast path needs. They are NIOHTTP2's rules, rule for rule:
///
/// - field names are non-empty lower-case tokens; pseudo-header fields come first, each at most once, and only
///   `:method`, `:scheme`, `:path` and `:authority`, and `:protocol` where Edge offers extended CONNECT (RFC 8441,
///   when a WebSocket route exists): there only with `CONNECT` and only `websocket`, with `:scheme`, `:path` and
///   `:authority`; `:method`, `:scheme` and a non-empty `:path` are required — for any other `CONNECT`,
///   `:method` and `:authority` only;
/// - pseudo-header values contain no control byte, space or DEL; other values contain no NUL, CR or LF;
/// - the connection-specific fields `connection`, `keep-alive`, `proxy-connection`, `transfer-encoding` and
///   `upgrade` are forbidden, and `te` may only be `trailers`;
/// - trailers carry no pseudo-header fields at all.
///
/// And two of RFC 9113 §8.3.1 that NIOHTTP2 leaves out, because its HTTP/1 codec would otherwise take the host
/// from `host` where `:authority` is the one that counts (and fail a request that has only `host`):
/// - a `host` field naming another host than `:authority` (or than an earlier `host`) makes the request malformed
///   (compared ignoring ASCII case);
/// - a request must carry `:authority` or `host` (RFC 9113 requires one for `http` and `https`, the only schemes
///   Edge serves; without either, NIOHTTP2's codec could not make a request of it).
enum HTTP2HeaderBlockRules {
    /// What a well-formed request block holds that routing and the fast path need.
    struct RequestFields {
        /// `:method`.
        var method = ""
        /// `:path`; empty for `CONNECT`.
        var path = ""
        /// `:authority`, if present.
        var authority: String?
        /// The first `host` field, if any.
        var host: String?
        /// Whether a `content-length` field is present.
        var hasContentLength = false
        /// Whether an `expect` field is present.
        var hasExpect = false
        /// The number of regular (non-pseudo) fields.
        var regularFields = 0
        /// The size of the head as HTTP/1.1 would carry it: names, values and separators.
        var headBytes = 0
        /// `range`, `if-range`, `if-none-match`, `if-modified-since` and `accept-encoding`, for static files
        /// (``StaticRequestHeaders/record(name:value:)``, as ``EdgeRequestHandler/headerValues(_:)`` reads them).
        var conditional = StaticRequestHeaders()
    }

    /// The pseudo-header fields of a request, as bits.
    private struct Pseudo: OptionSet {
        var rawValue: UInt8
        static let method = Pseudo(rawValue: 1 << 0)
        static let scheme = Pseudo(rawValue: 1 << 1)
        static let path = Pseudo(rawValue: 1 << 2)
        static let authority = Pseudo(rawValue: 1 << 3)
        static let `protocol` = Pseudo(rawValue: 1 << 4)
    }

    /// The fields of `block` if it is a well-formed request head, or `nil` if it is malformed.
    /// `extendedConnect`: whether Edge advertised `SETTINGS_ENABLE_CONNECT_PROTOCOL` (RFC 8441 §3), without which
    /// a `:protocol` field is malformed.
    static func requestFields(_ block: HPACKHeaders, extendedConnect: Bool = false) -> RequestFields? {
        var fields = RequestFields()
        var seen: Pseudo = []
        var inPseudoSection = true
        for (name, value, _) in block {
            let nameBytes = name.utf8
            fields.headBytes &+= nameBytes.count &+ value.utf8.count &+ 4
            if nameBytes.first == UInt8(ascii: ":") {
                guard inPseudoSection, let pseudo = pseudoField(name), !seen.contains(pseudo),
                    isValidPseudoValue(value)
                else { return nil }
                // Only WebSocket is tunnelled (RFC 8441); another protocol is a request Edge cannot serve.
                if pseudo == .protocol, !extendedConnect || !value.equalsIgnoringASCIICase("websocket") { return nil }
                seen.insert(pseudo)
                switch pseudo {
                case .method: fields.method = value
                case .path:
                    guard !value.isEmpty else { return nil }
                    fields.path = value
                case .authority: fields.authority = value
                default: break
                }
            } else {
                inPseudoSection = false
                guard isValidRegularField(name: name, value: value) else { return nil }
                fields.regularFields &+= 1
                switch nameBytes.count {
                case 2 where name == "te":
                    guard value == "trailers" else { return nil }
                case 4 where name == "host":
                    if let first = fields.host {
                        guard first.matchesIgnoringASCIICase(value) else { return nil }
                    } else {
                        fields.host = value
                    }
                case 6 where name == "expect":
                    fields.hasExpect = true
                case 14 where name == "content-length":
                    fields.hasContentLength = true
                default:
                    _ = fields.conditional.record(name: name, value: value)
                }
            }
        }
        if fields.method == "CONNECT", !seen.contains(.protocol) {
            guard seen == [.method, .authority] else { return nil }
        } else {
            if seen.contains(.protocol) {
                // `:protocol` belongs to CONNECT alone, which then names a target like any request (RFC 8441 §4).
                guard fields.method == "CONNECT", seen == [.method, .scheme, .path, .authority, .protocol] else { return nil }
            }
            guard seen.isSuperset(of: [.method, .scheme, .path]) else { return nil }
            if let host = fields.host {
                if let authority = fields.authority, !authority.matchesIgnoringASCIICase(host) { return nil }
            } else if fields.authority == nil {
                return nil
            }
        }
        return fields
    }

    /// Whether `block` is a well-formed trailer block: regular fields only, under the same rules as a head.
    static func isValidTrailerBlock(_ block: HPACKHeaders) -> Bool {
        for (name, value, _) in block {
            guard name.utf8.first != UInt8(ascii: ":"), isValidRegularField(name: name, value: value) else {
                return false
            }
        }
        return true
    }

    /// The request pseudo-header `name` names, or `nil` for any other (`:status`, unknown ones).
    private static func pseudoField(_ name: String) -> Pseudo? {
        switch name {
        case ":method": .method
        case ":scheme": .scheme
        case ":path": .path
        case ":authority": .authority
        case ":protocol": .protocol
        default: nil
        }
    }

    /// A pseudo-header value is a token, scheme, host or request target: no control bytes, space or DEL.
    private static func isValidPseudoValue(_ value: String) -> Bool {
        for byte in value.utf8 where byte <= 0x20 || byte == 0x7F {
            return false
        }
        return true
    }

    /// A regular field: a lower-case token name that is not connection-specific, and a value without NUL, CR
    /// or LF. (`te` is checked on request heads only, as its rule is about requests.)
    private static func isValidRegularField(name: String, value: String) -> Bool {
        guard isLowercaseToken(name.utf8) else { return false }
        switch name.utf8.count {
        case 7 where name == "upgrade",
            10 where name == "connection" || name == "keep-alive",
            16 where name == "proxy-connection",
            17 where name == "transfer-encoding":
            return false
        default:
            break
        }
        for byte in value.utf8 where byte == 0x00 || byte == 0x0A || byte == 0x0D {
            return false
        }
        return true
    }

    /// `token` (RFC 9110 §5.6.2) without upper-case letters, which HTTP/2 forbids in field names.
    private static func isLowercaseToken(_ bytes: String.UTF8View) -> Bool {
        if bytes.isEmpty { return false }
        for byte in bytes
        where !RequestTargetRules.isTokenByte(byte) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte) {
            return false
        }
        return true
    }
}
