import CEdgeCompression

/// A content coding Edge can apply to a response body (RFC 9110 §8.4.1): brotli (RFC 7932), zstd (RFC 8878) and
/// gzip (RFC 1952).
enum ContentCoding: String, CaseIterable, Sendable {
    case brotli = "br"
    case zstd
    case gzip

    /// The token in `Content-Encoding` and `Accept-Encoding`.
    var token: String { rawValue }

    /// The precompressed file a static route sends instead of `name`: `name.br`, `name.zst`, `name.gz`.
    var sidecarSuffix: String {
        switch self {
        case .brotli: ".br"
        case .zstd: ".zst"
        case .gzip: ".gz"
        }
    }

    /// The coding a configuration names (`"br"`, `"zstd"`, `"gzip"`; `"brotli"` too), or `nil`.
    init?(configurationName name: String) {
        switch name.lowercased() {
        case "br", "brotli": self = .brotli
        case "zstd": self = .zstd
        case "gzip": self = .gzip
        default: return nil
        }
    }

    /// Whether Edge can produce this coding here: gzip always (zlib, through compress-nio); brotli and zstd when
    /// their shared libraries load (``CEdgeCompression``).
    var isAvailable: Bool {
        switch self {
        case .brotli: Self.brotliAvailable
        case .zstd: Self.zstdAvailable
        case .gzip: true
        }
    }

    private static let brotliAvailable = CEdgeCompression_brotliAvailable() != 0
    private static let zstdAvailable = CEdgeCompression_zstdAvailable() != 0

    /// The order a static route prefers among codings the client accepts equally: brotli compresses text best,
    /// and a file is compressed once.
    static let staticPreference: [ContentCoding] = [.brotli, .zstd, .gzip]
}

/// The content codings a client accepts, from `Accept-Encoding` (RFC 9110 §12.5.3): each coding's q-value, in
/// thousandths (0: not acceptable), and whether `identity` is acceptable.
///
/// A coding's q-value is its own, or else that of `*`; `q=0` refuses a coding even where `*` would allow it
/// (`gzip;q=0, *` accepts brotli and zstd, not gzip). `identity` is acceptable unless refused by `identity;q=0` or
/// by `*;q=0` without `identity` listed. An item with a malformed q-value is ignored; the first mention of a
/// coding counts. Parsed as bytes: names and `q` case-insensitively.
struct AcceptedEncodings: Equatable {
    var brotli = 0
    var zstd = 0
    var gzip = 0
    var identity = true

    init(brotli: Int = 0, zstd: Int = 0, gzip: Int = 0, identity: Bool = true) {
        self.brotli = brotli
        self.zstd = zstd
        self.gzip = gzip
        self.identity = identity
    }

    init(header: String?) {
        guard let header else { return }
        var brotliQ: Int?, zstdQ: Int?, gzipQ: Int?, identityQ: Int?, starQ: Int?
        for item in Array(header.utf8).split(separator: UInt8(ascii: ","), omittingEmptySubsequences: true) {
            var parts = item.split(separator: UInt8(ascii: ";"), omittingEmptySubsequences: false).makeIterator()
            guard let name = parts.next().map({ $0.trimming() }), !name.isEmpty else { continue }
            var quality = 1000
            var valid = true
            while let parameter = parts.next().map({ $0.trimming() }) {
                guard parameter.count >= 2, parameter.first?.asciiLowercased == UInt8(ascii: "q"),
                    parameter[parameter.index(after: parameter.startIndex)] == UInt8(ascii: "=")
                else { continue }  // another parameter: not defined for Accept-Encoding, ignored
                guard let q = Self.qvalue(parameter.dropFirst(2)) else {
                    valid = false
                    break
                }
                quality = q
            }
            guard valid else { continue }
            func named(_ literal: StaticString) -> Bool {
                name.count == literal.utf8CodeUnitCount
                    && zip(name, UnsafeBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount)).allSatisfy { $0.asciiLowercased == $1 }
            }
            if named("br") { brotliQ = brotliQ ?? quality }
            else if named("zstd") { zstdQ = zstdQ ?? quality }
            else if named("gzip") || named("x-gzip") { gzipQ = gzipQ ?? quality }
            else if named("identity") { identityQ = identityQ ?? quality }
            else if named("*") { starQ = starQ ?? quality }
        }
        brotli = brotliQ ?? starQ ?? 0
        zstd = zstdQ ?? starQ ?? 0
        gzip = gzipQ ?? starQ ?? 0
        identity = (identityQ ?? starQ ?? 1) > 0
    }

    /// The q-value of `coding`, in thousandths.
    func quality(_ coding: ContentCoding) -> Int {
        switch coding {
        case .brotli: brotli
        case .zstd: zstd
        case .gzip: gzip
        }
    }

    func accepts(_ coding: ContentCoding) -> Bool { quality(coding) > 0 }

    /// Whether any coding is acceptable.
    var acceptsAny: Bool { brotli > 0 || zstd > 0 || gzip > 0 }

    /// The coding to use among `offered` (in the server's order of preference): the acceptable one with the
    /// highest q-value, the server's order breaking ties; `nil` when none is acceptable.
    func preferred(among offered: [ContentCoding], where usable: (ContentCoding) -> Bool = { $0.isAvailable }) -> ContentCoding? {
        var best: ContentCoding?
        var bestQuality = 0
        for coding in offered where quality(coding) > bestQuality && usable(coding) {
            best = coding
            bestQuality = quality(coding)
        }
        return best
    }

    /// The acceptable codings of `offered`, best first (as ``preferred(among:where:)`` ranks them).
    func ranked(_ offered: [ContentCoding]) -> [ContentCoding] {
        var result: [ContentCoding] = []
        forEachRanked(offered) { result.append($0) }
        return result
    }

    /// Calls `body` with each acceptable coding of `offered` (at most 3), best first, without allocating: the
    /// static small-file cache builds its key with this on every request.
    func forEachRanked(_ offered: [ContentCoding], _ body: (ContentCoding) -> Void) {
        var used = 0  // bit i: offered[i] handed over
        while true {
            var best = -1
            var bestQuality = 0
            for (index, coding) in offered.enumerated() where used & (1 << index) == 0 && quality(coding) > bestQuality {
                best = index
                bestQuality = quality(coding)
            }
            guard best >= 0 else { return }
            used |= 1 << best
            body(offered[best])
        }
    }

    /// RFC 9110 §12.4.2 `qvalue` in thousandths: `0`, `0.5`, `1`, `1.000`; `nil` when malformed.
    static func qvalue(_ bytes: ArraySlice<UInt8>) -> Int? {
        guard let first = bytes.first, first == UInt8(ascii: "0") || first == UInt8(ascii: "1") else { return nil }
        let rest = bytes.dropFirst()
        var value = Int(first - UInt8(ascii: "0")) * 1000
        guard let dot = rest.first else { return value }
        guard dot == UInt8(ascii: "."), rest.count <= 4 else { return nil }
        var scale = 100
        for digit in rest.dropFirst() {
            guard digit >= UInt8(ascii: "0"), digit <= UInt8(ascii: "9") else { return nil }
            value += Int(digit - UInt8(ascii: "0")) * scale
            scale /= 10
        }
        return value <= 1000 ? value : nil
    }
}
