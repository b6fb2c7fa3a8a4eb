/// Finds NUL characters in TOML text, which TOMLKit cannot carry: it hands the text to toml++ as a C string,
/// so a NUL byte ends the document there (everything after it would be silently ignored), and it reads string
/// values back as C strings, so a `\u0000` escape would cut a value (a path, a body) short. Edge refuses both.
///
/// A small lexer: it knows comments and the four kinds of strings, so that `\u0000` written in a comment or a
/// literal string (where it is just text) is not taken for an escape.
enum TOMLNULScanner {
    /// One NUL in the text.
    struct Finding: Equatable {
        /// 1-based line.
        var line: Int
        /// `true` for a `\u0000` / `\U00000000` escape in a basic string, `false` for a raw NUL byte.
        var isEscape: Bool
    }

    private enum Context {
        case code, comment, basic, multilineBasic, literal, multilineLiteral
    }

    /// Every NUL byte and every NUL escape in `text`, in order.
    static func scan(_ text: String) -> [Finding] {
        let bytes = Array(text.utf8)
        var findings: [Finding] = []
        var context = Context.code
        var line = 1
        var index = 0
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
            if byte == 0 { findings.append(Finding(line: line, isEscape: false)) }
            if byte == UInt8(ascii: "\n") {
                line += 1
                if context == .comment || context == .basic || context == .literal { context = .code }
                index += 1
                continue
            }
            switch context {
            case .code:
                if byte == UInt8(ascii: "#") {
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
                        findings.append(Finding(line: line, isEscape: true))
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
