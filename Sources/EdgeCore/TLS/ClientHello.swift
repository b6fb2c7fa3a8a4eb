import NIOCore

/// What Edge reads of a TLS ClientHello before the handshake starts, to choose the certificate: the server name
/// (SNI, RFC 6066 §3), the ALPN protocols (RFC 7301) and whether the client can verify an ECDSA signature.
///
/// BoringSSL, as NIOSSL exposes it, chooses among one certificate per context; NIOSSL's context callback sees the
/// server name only. Reading the ClientHello first (as NIOTLS's `SNIHandler` does, with more fields) lets Edge
/// pick the site's certificate and, where a site has both, the ECDSA or the RSA one the client supports.
struct ClientHello: Equatable {
    /// The `host_name` of the `server_name` extension, in lower case, without a trailing dot.
    var serverName: String?
    /// The protocols the client offers by ALPN, in its order.
    var applicationProtocols: [String] = []
    /// Whether the client accepts an ECDSA certificate: it lists an ECDSA signature scheme (or sends no
    /// `signature_algorithms`, as TLS 1.2 allows), and either speaks TLS 1.3 or offers an ECDHE-ECDSA suite.
    var acceptsECDSA = false

    /// The outcome of reading the bytes a connection has sent so far.
    enum Parse: Equatable {
        /// The ClientHello is not complete yet.
        case needMore
        /// The whole ClientHello.
        case hello(ClientHello)
        /// Not a TLS ClientHello (plain HTTP on the TLS port, or garbage): the TLS layer answers it as it would.
        case notClientHello
    }

    /// The largest ClientHello waited for: beyond it, the TLS layer gets the bytes with the default certificate.
    static let maximumBytes = 64 * 1024

    /// Reads the TLS records at the start of `buffer` (not consumed) for one whole ClientHello.
    static func parse(_ buffer: ByteBuffer) -> Parse {
        var records = buffer
        var handshake: [UInt8] = []
        while true {
            guard let type = records.readInteger(as: UInt8.self) else { return .needMore }
            guard type == 22 else { return .notClientHello }  // handshake
            guard let major = records.readInteger(as: UInt8.self) else { return .needMore }
            guard major == 3 else { return .notClientHello }
            guard records.readInteger(as: UInt8.self) != nil, let length = records.readInteger(as: UInt16.self) else { return .needMore }
            guard length > 0, length <= 16_384 + 2048 else { return .notClientHello }
            guard let fragment = records.readBytes(length: Int(length)) else { return .needMore }
            handshake += fragment
            guard handshake.count >= 4 else { continue }
            guard handshake[0] == 1 else { return .notClientHello }  // client_hello
            let bodyLength = Int(handshake[1]) << 16 | Int(handshake[2]) << 8 | Int(handshake[3])
            guard bodyLength <= maximumBytes else { return .notClientHello }
            if handshake.count >= 4 + bodyLength {
                return parseBody(handshake[4..<(4 + bodyLength)]).map(Parse.hello) ?? .notClientHello
            }
        }
    }

    /// Parses a ClientHello message body (RFC 8446 §4.1.2).
    private static func parseBody(_ body: ArraySlice<UInt8>) -> ClientHello? {
        var reader = ByteReader(body)
        guard reader.skip(2 + 32),  // legacy_version, random
            let sessionLength = reader.u8(), reader.skip(Int(sessionLength)),
            let suitesLength = reader.u16(), let suites = reader.bytes(Int(suitesLength)),
            let compressionLength = reader.u8(), reader.skip(Int(compressionLength))
        else { return nil }
        var hello = ClientHello()
        var signatureSchemes: [UInt16]?
        var speaksTLS13 = false
        if reader.remaining > 0 {
            guard let extensionsLength = reader.u16(), var extensions = reader.reader(Int(extensionsLength)) else { return nil }
            while extensions.remaining > 0 {
                guard let type = extensions.u16(), let length = extensions.u16(), var data = extensions.reader(Int(length)) else { return nil }
                switch type {
                case 0:  // server_name
                    guard let listLength = data.u16(), var list = data.reader(Int(listLength)) else { return nil }
                    while list.remaining > 0 {
                        guard let nameType = list.u8(), let nameLength = list.u16(), let name = list.bytes(Int(nameLength)) else { return nil }
                        if nameType == 0, hello.serverName == nil { hello.serverName = normalizedName(name) }
                    }
                case 13:  // signature_algorithms
                    guard let listLength = data.u16(), var list = data.reader(Int(listLength)) else { return nil }
                    var schemes: [UInt16] = []
                    while let scheme = list.u16() { schemes.append(scheme) }
                    signatureSchemes = schemes
                case 16:  // application_layer_protocol_negotiation
                    guard let listLength = data.u16(), var list = data.reader(Int(listLength)) else { return nil }
                    while list.remaining > 0 {
                        guard let protocolLength = list.u8(), let name = list.bytes(Int(protocolLength)) else { return nil }
                        hello.applicationProtocols.append(String(decoding: name, as: UTF8.self))
                    }
                case 43:  // supported_versions
                    guard let listLength = data.u8(), var list = data.reader(Int(listLength)) else { return nil }
                    while let version = list.u16() { if version == 0x0304 { speaksTLS13 = true } }
                default:
                    break
                }
            }
        }
        // ecdsa_secp256r1_sha256, ecdsa_secp384r1_sha384, ecdsa_secp521r1_sha512, ecdsa_sha1 (TLS 1.2).
        let ecdsaSchemes: Set<UInt16> = [0x0403, 0x0503, 0x0603, 0x0203]
        let signsECDSA = signatureSchemes.map { $0.contains(where: ecdsaSchemes.contains) } ?? true
        var offersECDSASuite = false
        var suiteReader = ByteReader(suites[...])
        while let suite = suiteReader.u16() {
            // The ECDHE-ECDSA suites: 0xC0 0x06…0x0A, 0x23, 0x24, 0x2B, 0x2C, 0xAC…0xAF; 0xCC 0xA9 (ChaCha20).
            if (suite >= 0xC006 && suite <= 0xC00A) || [0xC023, 0xC024, 0xC02B, 0xC02C, 0xCCA9].contains(suite)
                || (suite >= 0xC0AC && suite <= 0xC0AF)
            {
                offersECDSASuite = true
            }
        }
        hello.acceptsECDSA = signsECDSA && (speaksTLS13 || offersECDSASuite)
        return hello
    }

    /// A server name as certificates are looked up by: ASCII lower case, without one trailing dot; `nil` when it
    /// holds a byte no host name has.
    static func normalizedName(_ bytes: [UInt8]) -> String? {
        var name = bytes
        if name.last == UInt8(ascii: ".") { name.removeLast() }
        guard !name.isEmpty, name.count <= 255,
            name.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "/") })
        else { return nil }
        return String(decoding: name.map(PerfectHashTable<Int>.fold), as: UTF8.self)
    }
}

/// Reads big-endian integers and byte runs from a slice, never past its end.
private struct ByteReader {
    private var bytes: ArraySlice<UInt8>

    init(_ bytes: ArraySlice<UInt8>) { self.bytes = bytes }

    var remaining: Int { bytes.count }

    mutating func u8() -> UInt8? {
        guard let first = bytes.first else { return nil }
        bytes = bytes.dropFirst()
        return first
    }

    mutating func u16() -> UInt16? {
        guard bytes.count >= 2 else { return nil }
        let value = UInt16(bytes[bytes.startIndex]) << 8 | UInt16(bytes[bytes.startIndex + 1])
        bytes = bytes.dropFirst(2)
        return value
    }

    mutating func skip(_ count: Int) -> Bool {
        guard bytes.count >= count else { return false }
        bytes = bytes.dropFirst(count)
        return true
    }

    mutating func bytes(_ count: Int) -> [UInt8]? {
        guard bytes.count >= count else { return nil }
        defer { bytes = bytes.dropFirst(count) }
        return Array(bytes.prefix(count))
    }

    mutating func reader(_ count: Int) -> ByteReader? {
        guard bytes.count >= count else { return nil }
        defer { bytes = bytes.dropFirst(count) }
        return ByteReader(bytes.prefix(count))
    }
}
