import Crypto
import Foundation
import NIOHTTP1

/// The server side of the WebSocket opening handshake: RFC 6455 §4.2 over HTTP/1.1, RFC 8441 §5 over HTTP/2.
enum WebSocketHandshake {
    /// What a request to a WebSocket route amounts to.
    enum Outcome: Equatable {
        /// A valid handshake; `key` is `Sec-WebSocket-Key` (HTTP/1.1 only: HTTP/2 has none); `extensions` the
        /// `Sec-WebSocket-Extensions` values offered.
        case accept(key: String?, protocols: [String], extensions: [String])
        /// Not a handshake, or not one Edge can take: the answer's status and text.
        case refuse(HTTPResponseStatus, String, extraHeaders: [(String, String)])

        static func == (a: Outcome, b: Outcome) -> Bool {
            switch (a, b) {
            case (.accept(let k1, let p1, let e1), .accept(let k2, let p2, let e2)): k1 == k2 && p1 == p2 && e1 == e2
            case (.refuse(let s1, let t1, let h1), .refuse(let s2, let t2, let h2)):
                s1 == s2 && t1 == t2 && h1.elementsEqual(h2, by: ==)
            default: false
            }
        }
    }

    /// The one version of the protocol (RFC 6455 §4.1).
    static let version = "13"

    /// Checks a request's method, version and fields.
    /// - `isHTTP2`: the request came as an HTTP/2 extended CONNECT, whose `:protocol` HTTP2HeaderBlockRules has
    ///   already required to be `websocket`.
    static func check(method: HTTPMethod, isHTTP2: Bool, httpVersion: HTTPVersion, values: (String) -> [String]) -> Outcome {
        let upgradeRequired: [(String, String)] = [("upgrade", "websocket"), ("connection", "upgrade")]
        if isHTTP2 {
            guard method == .CONNECT else {
                return .refuse(.badRequest, "WebSocket over HTTP/2 needs extended CONNECT (RFC 8441)\n", extraHeaders: [])
            }
        } else {
            let upgrade = listElements(values("upgrade"))
            guard upgrade.contains(where: { $0.equalsIgnoringASCIICase("websocket") }) else {
                // RFC 9110 §15.5.22: 426 names the protocol to switch to.
                return .refuse(.upgradeRequired, "this is a WebSocket endpoint: connect with a WebSocket client\n", extraHeaders: upgradeRequired)
            }
            guard method == .GET else {
                return .refuse(.methodNotAllowed, "a WebSocket handshake is a GET request\n", extraHeaders: [("allow", "GET")])
            }
            guard httpVersion.major == 1, httpVersion.minor >= 1 else {
                return .refuse(.badRequest, "a WebSocket handshake needs HTTP/1.1\n", extraHeaders: [])
            }
            guard listElements(values("connection")).contains(where: { $0.equalsIgnoringASCIICase("upgrade") }) else {
                return .refuse(.badRequest, "a WebSocket handshake needs Connection: Upgrade\n", extraHeaders: [])
            }
        }
        let versions = values("sec-websocket-version")
        guard versions.count == 1, versions[0].trimming() == version else {
            // RFC 6455 §4.4: the versions the server speaks.
            return .refuse(
                .upgradeRequired, "unsupported or missing Sec-WebSocket-Version: Edge speaks version 13\n",
                extraHeaders: [("sec-websocket-version", version)] + (isHTTP2 ? [] : upgradeRequired)
            )
        }
        var key: String?
        if !isHTTP2 {
            let keys = values("sec-websocket-key")
            guard keys.count == 1, let decoded = Data(base64Encoded: String(keys[0].trimming())), decoded.count == 16 else {
                return .refuse(.badRequest, "Sec-WebSocket-Key must be one base64-encoded 16-byte value\n", extraHeaders: [])
            }
            key = String(keys[0].trimming())
        }
        return .accept(key: key, protocols: listElements(values("sec-websocket-protocol")).map(String.init), extensions: values("sec-websocket-extensions"))
    }

    /// `Sec-WebSocket-Accept` for `key` (RFC 6455 §4.2.2): base64 of the SHA-1 of the key and the protocol's GUID.
    static func acceptValue(for key: String) -> String {
        let digest = Insecure.SHA1.hash(data: Data((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").utf8))
        return Data(digest).base64EncodedString()
    }

}
