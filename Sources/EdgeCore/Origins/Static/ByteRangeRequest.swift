/// A `Range: bytes=…` header interpreted against a representation of `size` bytes (RFC 9110 §14).
enum ByteRangeRequest: Equatable {
    /// No usable range (absent, another unit, or malformed): send the whole representation with 200.
    case whole
    /// One satisfiable range: send it with 206 and `Content-Range`.
    case single(Range<Int>)
    /// Several satisfiable ranges: Edge sends the whole representation with 200 (allowed by RFC 9110).
    case multiple
    /// No range is satisfiable: 416 with `Content-Range: bytes */size`.
    case unsatisfiable

    /// Interprets `header` (the `Range` value) for a representation of `size` bytes.
    static func parse(_ header: String?, size: Int) -> ByteRangeRequest {
        guard let header else { return .whole }
        let trimmed = header.drop { $0 == " " }
        guard trimmed.lowercased().hasPrefix("bytes=") else { return .whole }
        var satisfiable: [Range<Int>] = []
        var sawAny = false
        for spec in trimmed.dropFirst(6).split(separator: ",", omittingEmptySubsequences: false) {
            let spec = spec.trimming()
            guard let dash = spec.firstIndex(of: "-") else { return .whole }
            let first = spec[..<dash], last = spec[spec.index(after: dash)...]
            sawAny = true
            if first.isEmpty {
                // Suffix range: the LAST n bytes.
                guard let count = Int(last), count >= 0, last.allSatisfy(\.isASCIIDigit) else { return .whole }
                if count > 0 && size > 0 { satisfiable.append(max(0, size - count)..<size) }
            } else {
                guard let start = Int(first), first.allSatisfy(\.isASCIIDigit) else { return .whole }
                var end = size - 1
                if !last.isEmpty {
                    guard let value = Int(last), last.allSatisfy(\.isASCIIDigit), value >= start else { return .whole }
                    end = min(value, size - 1)
                }
                if start < size { satisfiable.append(start..<(end + 1)) }
            }
        }
        guard sawAny else { return .whole }
        switch satisfiable.count {
        case 0: return .unsatisfiable
        case 1: return .single(satisfiable[0])
        default: return .multiple
        }
    }
}

extension Character {
    fileprivate var isASCIIDigit: Bool { ("0"..."9").contains(self) }
}
