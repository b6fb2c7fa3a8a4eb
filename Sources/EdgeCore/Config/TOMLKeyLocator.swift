/// Finds the line on which a key was written in a TOML document.
///
/// TOMLKit reports lines for syntax errors only; its parsed values carry no positions. This scanner follows
/// table headers (`[limits]`, `[[route]]`) and `key =` lines so that semantic errors can name a line too.
/// Keys inside inline tables resolve to the line of the inline table.
struct TOMLKeyLocator {
    private var lines: [String: Int] = [:]

    init(text: String) {
        var arrayCounts: [String: Int] = [:]
        var prefix = ""
        var lineNumber = 0
        for rawLine in text.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            let line = rawLine.drop { $0 == " " || $0 == "\t" }
            if line.hasPrefix("[[") {
                let name = Self.headerName(line.dropFirst(2))
                let index = arrayCounts[name, default: 0]
                arrayCounts[name] = index + 1
                prefix = "\(name)[\(index)]"
                lines[prefix] = lineNumber
            } else if line.hasPrefix("[") {
                prefix = Self.headerName(line.dropFirst())
                lines[prefix] = lineNumber
            } else if let equals = line.firstIndex(of: "="), !line.hasPrefix("#") {
                let key = String(line[..<equals].trimming(" \t\"'"))
                guard !key.isEmpty else { continue }
                let path = prefix.isEmpty ? key : "\(prefix).\(key)"
                if lines[path] == nil { lines[path] = lineNumber }
            }
        }
    }

    /// The line of `path`, or of its nearest enclosing key that has one.
    func line(of path: String) -> Int? {
        var current = Substring(path)
        while true {
            if let line = lines[String(current)] { return line }
            guard let cut = current.lastIndex(where: { $0 == "." || $0 == "[" }) else { return nil }
            current = current[..<cut]
            if current.hasSuffix("]"), let line = lines[String(current)] { return line }
        }
    }

    private static func headerName(_ text: Substring) -> String {
        let end = text.firstIndex(of: "]") ?? text.endIndex
        return String(text[..<end].trimming())
    }
}
