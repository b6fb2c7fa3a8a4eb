/// Checks UTF-8 as it arrives in pieces (RFC 3629): a text message's fragments are checked one by one, so a
/// message with an invalid byte is refused at the fragment that holds it (RFC 6455 §8.1), without waiting for
/// the rest. Rejects overlong forms, surrogates (U+D800–U+DFFF) and code points above U+10FFFF.
struct UTF8Validator {
    /// Continuation bytes still expected for the code point in progress.
    private var remaining = 0
    /// The range the next continuation byte must fall in (narrower right after E0, ED, F0 and F4).
    private var lower: UInt8 = 0x80
    private var upper: UInt8 = 0xBF

    /// Whether everything so far ended on a code point boundary.
    var isComplete: Bool { remaining == 0 }

    /// Takes the next bytes; `false` as soon as they cannot be UTF-8 whatever follows.
    mutating func consume(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var index = 0
        let count = bytes.count
        while index < count {
            let byte = bytes[index]
            index &+= 1
            if remaining == 0 {
                if byte < 0x80 { continue }
                switch byte {
                case 0xC2...0xDF: (remaining, lower, upper) = (1, 0x80, 0xBF)
                case 0xE0: (remaining, lower, upper) = (2, 0xA0, 0xBF)
                case 0xE1...0xEC, 0xEE...0xEF: (remaining, lower, upper) = (2, 0x80, 0xBF)
                case 0xED: (remaining, lower, upper) = (2, 0x80, 0x9F)
                case 0xF0: (remaining, lower, upper) = (3, 0x90, 0xBF)
                case 0xF1...0xF3: (remaining, lower, upper) = (3, 0x80, 0xBF)
                case 0xF4: (remaining, lower, upper) = (3, 0x80, 0x8F)
                default: return false
                }
            } else {
                guard byte >= lower, byte <= upper else { return false }
                (lower, upper) = (0x80, 0xBF)
                remaining &-= 1
            }
        }
        return true
    }

    /// Whether `bytes` are complete, valid UTF-8.
    static func isValid(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var validator = UTF8Validator()
        return validator.consume(bytes) && validator.isComplete
    }
}
