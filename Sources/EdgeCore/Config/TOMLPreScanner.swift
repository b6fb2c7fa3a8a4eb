/// Finds, before TOMLKit sees the text, what it cannot be given:
///
/// - NUL characters. TOMLKit hands the text to toml++ as a C string, so a NUL byte ends the document there
///   (everything after it would be silently ignored), and it reads string values back as C strings, so a
///   `\u0000` escape would cut a value (a path, a body) short. Edge refuses both.
/// - A table header that does not start with a key (`[=]`, `[ #`, `[` at the end of a line): the toml++ in
///   TOMLKit asserts that it does, and aborts the process instead of reporting a syntax error.
/// - A `}` where an array expects its next element (`[}`, `[1, }`, `[ # comment` then `}`): toml++ checks
///   that place for `]` and `,` only and hands the `}` to its value parser, which asserts it is not given one.
///
/// A small lexer: it knows comments and the four kinds of strings, so that `\u0000` written in a comment or a
/// literal string (where it is just text) is not taken for an escape; and it counts the brackets and braces
/// of values, so that a `[` opening a line inside a multi-line array is not taken for a table header.
enum TOMLPreScanner {
    /// One finding in the text.
    struct Finding: Equatable {
        /// What was found.
        enum Kind: Equatable {
            /// A raw NUL byte.
            case nulByte
            /// A `\u0000` / `\U00000000` escape in a basic string.
            case nulEscape
            /// A table header whose first character is no key's.
            case headerWithoutKey
            /// A `}` where an array's next element or its closing `]` belongs.
            case braceInArray
        }

        /// 1-based line.
        var line: Int
        /// What was found.
        var kind: Kind
    }

    private enum Context {
        case code, comment, basic, multilineBasic, literal, multilineLiteral
    }

    /// Every finding in `text`, in order.
    static func scan(_ text: String) -> [Finding] {
        let bytes = Array(text.utf8)
        var findings: [Finding] = []
        var context = Context.code
        var line = 1
        var index = 0
        // Open brackets and braces of values and headers; a line that starts outside all of them starts a
        // statement (a key-value pair or a table header).
        var open: [UInt8] = []
        var statementStart = true
        // Inside an array, after its `[` or a `,`: the next character outside whitespace and comments is an
        // element or the closing `]`.
        var expectingElement = false
        func isKeyStart(_ byte: UInt8) -> Bool {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "_"), UInt8(ascii: "-"), UInt8(ascii: "\""), UInt8(ascii: "'"), UInt8(ascii: "]"):
                return true  // a bare or quoted key; `]` is an empty header, which toml++ reports itself
            default:
                return false
            }
        }
        func starts(_ marker: String, at position: Int) -> Bool {
            let marker = Array(marker.utf8)
            return position + marker.count <= bytes.count && Array(bytes[position..<position + marker.count]) == marker
        }
        // A multi-line string may end with up to two quotes of its own before the closing three.
        func closingEnd(of quote: UInt8, from position: Int) -> Int {
            var end = position + 3
            while end < bytes.count, end < position + 5, bytes[end] == quote { end += 1 }
            return end
        }
        while index < bytes.count {
            let byte = bytes[index]
            if byte == 0 { findings.append(Finding(line: line, kind: .nulByte)) }
            if byte == UInt8(ascii: "\n") {
                line += 1
                if context == .comment || context == .basic || context == .literal { context = .code }
                if context == .code, open.isEmpty { statementStart = true }
                index += 1
                continue
            }
            switch context {
            case .code:
                let wasStatementStart = statementStart
                let isBlank = byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") || byte == UInt8(ascii: "\r")
                if !isBlank, byte != UInt8(ascii: "#") {
                    statementStart = false
                    if expectingElement, byte == UInt8(ascii: "}") {
                        findings.append(Finding(line: line, kind: .braceInArray))
                    }
                    expectingElement = false
                }
                if byte == UInt8(ascii: "[") {
                    if wasStatementStart {
                        var next = index + 1
                        if next < bytes.count, bytes[next] == UInt8(ascii: "[") { next += 1 }
                        while next < bytes.count, bytes[next] == UInt8(ascii: " ") || bytes[next] == UInt8(ascii: "\t") { next += 1 }
                        if next >= bytes.count || !isKeyStart(bytes[next]) {
                            findings.append(Finding(line: line, kind: .headerWithoutKey))
                        }
                    } else {
                        expectingElement = true  // an array value (a header's `[[` is followed by a key)
                    }
                    open.append(byte)
                } else if byte == UInt8(ascii: "{") {
                    open.append(byte)
                } else if byte == UInt8(ascii: "]") || byte == UInt8(ascii: "}") {
                    _ = open.popLast()
                } else if byte == UInt8(ascii: ","), open.last == UInt8(ascii: "[") {
                    expectingElement = true
                } else if byte == UInt8(ascii: "#") {
                    context = .comment
                } else if starts("\"\"\"", at: index) {
                    context = .multilineBasic
                    index += 2
                } else if byte == UInt8(ascii: "\"") {
                    context = .basic
                } else if starts("'''", at: index) {
                    context = .multilineLiteral
                    index += 2
                } else if byte == UInt8(ascii: "'") {
                    context = .literal
                }
            case .comment:
                break
            case .basic, .multilineBasic:
                if byte == UInt8(ascii: "\\"), index + 1 < bytes.count {
                    let escaped = bytes[index + 1]
                    if (escaped == UInt8(ascii: "u") && starts("0000", at: index + 2))
                        || (escaped == UInt8(ascii: "U") && starts("00000000", at: index + 2))
                    {
                        findings.append(Finding(line: line, kind: .nulEscape))
                    }
                    // A line-ending backslash still ends the line, and a NUL byte after one is still found.
                    if escaped != UInt8(ascii: "\n"), escaped != 0 { index += 1 }
                } else if context == .basic, byte == UInt8(ascii: "\"") {
                    context = .code
                } else if context == .multilineBasic, starts("\"\"\"", at: index) {
                    context = .code
                    index = closingEnd(of: UInt8(ascii: "\""), from: index)
                    continue
                }
            case .literal:
                if byte == UInt8(ascii: "'") { context = .code }
            case .multilineLiteral:
                if starts("'''", at: index) {
                    context = .code
                    index = closingEnd(of: UInt8(ascii: "'"), from: index)
                    continue
                }
            }
            index += 1
        }
        return findings
    }
}
