/// Finds the line on which a key was written in a TOML document.
///
/// TOMLKit reports lines for syntax errors only; its parsed values carry no positions. This scanner follows
/// table headers (`[limits]`, `[[route]]`) and `key =` lines so that semantic errors can name a line too.
/// Keys inside inline tables resolve to the line of the inline table.
struct TOMLKeyLocator {
    private var lines: [String: Int] = [:]
    /// The first key (or table) written on each line, for ``key(before:)``.
    private var keys: [Int: String] = [:]

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
                record(prefix, at: lineNumber)
            } else if line.hasPrefix("[") {
                prefix = Self.headerName(line.dropFirst())
                record(prefix, at: lineNumber)
            } else if let equals = line.firstIndex(of: "="), !line.hasPrefix("#") {
                let key = String(line[..<equals].trimming(" \t\"'"))
                guard !key.isEmpty else { continue }
                let path = prefix.isEmpty ? key : "\(prefix).\(key)"
                if lines[path] == nil { record(path, at: lineNumber) }
            }
        }
    }

    private mutating func record(_ path: String, at line: Int) {
        lines[path] = line
        if keys[line] == nil { keys[line] = path }
    }

    /// The key written on `line`, or else on the nearest line above it that has one (a line inside a
    /// multi-line string belongs to the key that starts it).
    func key(before line: Int) -> String? {
        for candidate in stride(from: line, through: 1, by: -1) {
            if let key = keys[candidate] { return key }
        }
        return nil
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
