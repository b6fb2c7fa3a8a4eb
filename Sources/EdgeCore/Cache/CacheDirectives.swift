/// The directives of a `Cache-Control` field (RFC 9111 §5.2), or of a targeted field with the same syntax
/// (`CDN-Cache-Control`, RFC 9213): parsed once from the field's lines, names in any case, values as tokens or
/// quoted strings.
///
/// A directive given twice keeps its first value (RFC 9111 §4.2.1), except `max-age` and `s-maxage`, which keep
/// the larger. Whitespace around `=` makes a directive unreadable. A delta-seconds value that is not a
/// non-negative integer marks the directive invalid (``invalidMaxAge``: the response is stale, §4.2.1); one larger
/// than a cache can hold is 2^31 (§1.2.2).
struct CacheDirectives: Equatable, Sendable {
    var maxAge: Int?
    var sMaxAge: Int?
    /// `max-age` or `s-maxage` was present with a value that is not delta-seconds.
    var invalidMaxAge = false
    var noStore = false
    /// `no-cache` without field names: every use needs revalidation. With names (``noCacheFields``), only those
    /// fields do, and the cache stores the response without them.
    var noCache = false
    var noCacheFields: [String] = []
    var isPrivate = false
    var isPublic = false
    var mustRevalidate = false
    var proxyRevalidate = false
    var immutable = false
    var mustUnderstand = false
    var staleWhileRevalidate: Int?
    var staleIfError: Int?
    // Request directives.
    /// `max-stale` without a value accepts any staleness (`Int.max`).
    var maxStale: Int?
    var minFresh: Int?
    var onlyIfCached = false
    /// Whether any directive was read at all (an empty or absent field has none).
    var isEmpty = true

    /// The greatest delta-seconds a cache needs to represent (RFC 9111 §1.2.2).
    static let deltaSecondsCap = 2_147_483_648

    init() {}

    /// Parses every line of the field (`values`, in order): `a, b=1, c="x, y"`.
    init(_ values: [String]) {
        var seen = Set<String>()
        for value in values {
            Self.forEachDirective(value) { name, argument in
                guard !name.isEmpty else { return }
                isEmpty = false
                let first = seen.insert(name).inserted
                switch name {
                case "max-age":
                    // Given twice, the larger value wins (RFC 9111 §4.2.1 allows the first or stale; the suite's
                    // checks agree on neither, and the larger is what most caches do).
                    if let seconds = Self.deltaSeconds(argument) { maxAge = max(maxAge ?? 0, seconds) } else if first { invalidMaxAge = true }
                case "s-maxage":
                    if let seconds = Self.deltaSeconds(argument) { sMaxAge = max(sMaxAge ?? 0, seconds) } else if first { invalidMaxAge = true }
                case "no-store": noStore = true
                case "no-cache":
                    // With field names, only those fields need revalidation: they are not stored.
                    if let argument { noCacheFields += Self.fieldNames(argument) } else { noCache = true }
                case "private": isPrivate = true
                case "public": isPublic = true
                case "must-revalidate": mustRevalidate = true
                case "proxy-revalidate": proxyRevalidate = true
                case "immutable": immutable = true
                case "must-understand": mustUnderstand = true
                case "stale-while-revalidate":
                    if first { staleWhileRevalidate = Self.deltaSeconds(argument) }
                case "stale-if-error":
                    if first { staleIfError = Self.deltaSeconds(argument) }
                case "max-stale":
                    guard first else { return }
                    maxStale = argument == nil ? Int.max : Self.deltaSeconds(argument)
                case "min-fresh":
                    if first { minFresh = Self.deltaSeconds(argument) }
                case "only-if-cached": onlyIfCached = true
                default: break
                }
            }
        }
    }

    /// A delta-seconds argument (RFC 9111 §1.2.2): digits only; larger than the cap is the cap.
    static func deltaSeconds(_ argument: String?) -> Int? {
        guard let argument, !argument.isEmpty, argument.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else {
            return nil
        }
        guard argument.utf8.count <= 10, let value = Int(argument) else { return deltaSecondsCap }
        return min(value, deltaSecondsCap)
    }

    /// The field names of a `no-cache="a, b"` or `private="a"` argument, lower-cased.
    static func fieldNames(_ argument: String) -> [String] {
        argument.split(separator: ",").map { $0.trimming().lowercased() }.filter { !$0.isEmpty }
    }

    /// Calls `body` with each directive's lower-cased name and its argument (unquoted), if any. Commas inside a
    /// quoted string do not split; a directive that does not parse (an unterminated quote) ends the field.
    static func forEachDirective(_ field: String, _ body: (_ name: String, _ argument: String?) -> Void) {
        let bytes = Array(field.utf8)
        var index = 0
        func skipSpace() {
            while index < bytes.count, bytes[index] == UInt8(ascii: " ") || bytes[index] == UInt8(ascii: "\t") { index += 1 }
        }
        while index < bytes.count {
            skipSpace()
            let nameStart = index
            while index < bytes.count, bytes[index] != UInt8(ascii: ","), bytes[index] != UInt8(ascii: "="),
                bytes[index] != UInt8(ascii: " "), bytes[index] != UInt8(ascii: "\t")
            {
                index += 1
            }
            let name = String(decoding: bytes[nameStart..<index], as: UTF8.self).lowercased()
            var argument: String?
            if index < bytes.count, bytes[index] == UInt8(ascii: "=") {
                index += 1
                if index < bytes.count, bytes[index] == UInt8(ascii: "\"") {
                    index += 1
                    var value: [UInt8] = []
                    var closed = false
                    while index < bytes.count {
                        let byte = bytes[index]
                        index += 1
                        if byte == UInt8(ascii: "\\"), index < bytes.count {
                            value.append(bytes[index])
                            index += 1
                        } else if byte == UInt8(ascii: "\"") {
                            closed = true
                            break
                        } else {
                            value.append(byte)
                        }
                    }
                    guard closed else { return }
                    argument = String(decoding: value, as: UTF8.self)
                } else {
                    let start = index
                    while index < bytes.count, bytes[index] != UInt8(ascii: ","), bytes[index] != UInt8(ascii: " "),
                        bytes[index] != UInt8(ascii: "\t")
                    {
                        index += 1
                    }
                    argument = String(decoding: bytes[start..<index], as: UTF8.self)
                }
                skipSpace()
            }
            // Anything else before the next comma makes the directive unreadable: skip to the comma.
            var clean = true
            while index < bytes.count, bytes[index] != UInt8(ascii: ",") {
                clean = false
                index += 1
            }
            body(name, clean ? argument : nil)
            index += 1
        }
    }
}

extension CacheDirectives {
    /// The directives of a targeted field (`CDN-Cache-Control`, RFC 9213), which is a Structured Field Dictionary
    /// (RFC 8941): `nil` when the field does not parse as one or `max-age` is not an Integer, and the field is then
    /// ignored as a whole (RFC 9213 §2.1).
    init?(structuredField values: [String]) {
        guard let members = Self.dictionary(values.joined(separator: ", ")) else { return nil }
        self.init()
        for (key, value) in members {
            isEmpty = false
            switch key {
            case "max-age", "s-maxage", "stale-while-revalidate", "stale-if-error":
                guard case .integer(let seconds) = value, seconds >= 0 else { return nil }
                let capped = min(seconds, Self.deltaSecondsCap)
                switch key {
                case "max-age": maxAge = capped
                case "s-maxage": sMaxAge = capped
                case "stale-while-revalidate": staleWhileRevalidate = capped
                default: staleIfError = capped
                }
            case "no-store": noStore = value != .false
            case "no-cache": noCache = value != .false
            case "private": isPrivate = value != .false
            case "public": isPublic = value != .false
            case "must-revalidate": mustRevalidate = value != .false
            case "proxy-revalidate": proxyRevalidate = value != .false
            default: break
            }
        }
    }

    enum StructuredValue: Equatable {
        case integer(Int), `true`, `false`, other
    }

    /// An RFC 8941 Dictionary's members (keys and their bare items' kind; parameters and inner lists are checked
    /// and dropped); `nil` when the text is not one.
    static func dictionary(_ text: String) -> [(String, StructuredValue)]? {
        let bytes = Array(text.utf8)
        var index = 0
        func at(_ byte: Character) -> Bool { index < bytes.count && bytes[index] == byte.asciiValue! }
        func skip(_ set: (UInt8) -> Bool) { while index < bytes.count, set(bytes[index]) { index += 1 } }
        let isSP: (UInt8) -> Bool = { $0 == 0x20 }
        let isOWS: (UInt8) -> Bool = { $0 == 0x20 || $0 == 0x09 }
        func isLCAlpha(_ b: UInt8) -> Bool { b >= 0x61 && b <= 0x7A }
        func isDigit(_ b: UInt8) -> Bool { b >= 0x30 && b <= 0x39 }
        func key() -> String? {
            guard index < bytes.count, isLCAlpha(bytes[index]) || bytes[index] == UInt8(ascii: "*") else { return nil }
            let start = index
            skip { isLCAlpha($0) || isDigit($0) || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "*") }
            return String(decoding: bytes[start..<index], as: UTF8.self)
        }
        func bareItem() -> StructuredValue? {
            guard index < bytes.count else { return nil }
            let first = bytes[index]
            if first == UInt8(ascii: "-") || isDigit(first) {
                let negative = first == UInt8(ascii: "-")
                if negative { index += 1 }
                let start = index
                skip(isDigit)
                let integerDigits = index - start
                guard integerDigits > 0 else { return nil }
                if at(".") {
                    index += 1
                    let fraction = index
                    skip(isDigit)
                    guard integerDigits <= 12, (1...3).contains(index - fraction) else { return nil }
                    return .other
                }
                guard integerDigits <= 15, let value = Int(String(decoding: bytes[start..<index], as: UTF8.self)) else { return nil }
                return .integer(negative ? -value : value)
            }
            if first == UInt8(ascii: "\"") {
                index += 1
                while index < bytes.count {
                    let byte = bytes[index]
                    index += 1
                    if byte == UInt8(ascii: "\\") {
                        guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") || bytes[index] == UInt8(ascii: "\\") else { return nil }
                        index += 1
                    } else if byte == UInt8(ascii: "\"") {
                        return .other
                    } else if byte < 0x20 || byte > 0x7E {
                        return nil
                    }
                }
                return nil
            }
            if first == UInt8(ascii: "?") {
                index += 1
                guard index < bytes.count else { return nil }
                defer { index += 1 }
                switch bytes[index] {
                case UInt8(ascii: "1"): return .true
                case UInt8(ascii: "0"): return .false
                default: return nil
                }
            }
            if first == UInt8(ascii: ":") {
                index += 1
                skip { $0 != UInt8(ascii: ":") }
                guard at(":") else { return nil }
                index += 1
                return .other
            }
            if isLCAlpha(first) || (first >= 0x41 && first <= 0x5A) || first == UInt8(ascii: "*") {
                // A token: tchar, ":" and "/".
                skip { RequestTargetRules.isTokenByte($0) || $0 == UInt8(ascii: ":") || $0 == UInt8(ascii: "/") }
                return .other
            }
            return nil
        }
        func parameters() -> Bool {
            while at(";") {
                index += 1
                skip(isSP)
                guard key() != nil else { return false }
                if at("=") {
                    index += 1
                    guard bareItem() != nil else { return false }
                }
            }
            return true
        }
        skip(isSP)
        var members: [(String, StructuredValue)] = []
        while index < bytes.count {
            guard let name = key() else { return nil }
            var value = StructuredValue.true
            if at("=") {
                index += 1
                if at("(") {
                    index += 1
                    while true {
                        skip(isSP)
                        if at(")") { index += 1; break }
                        guard bareItem() != nil, parameters() else { return nil }
                        guard index < bytes.count, bytes[index] == 0x20 || bytes[index] == UInt8(ascii: ")") else { return nil }
                    }
                    value = .other
                } else {
                    guard let item = bareItem() else { return nil }
                    value = item
                }
            }
            guard parameters() else { return nil }
            members.removeAll { $0.0 == name }
            members.append((name, value))
            skip(isOWS)
            if index == bytes.count { break }
            guard at(",") else { return nil }
            index += 1
            skip(isOWS)
            guard index < bytes.count else { return nil }  // a trailing comma
        }
        return members
    }
}
