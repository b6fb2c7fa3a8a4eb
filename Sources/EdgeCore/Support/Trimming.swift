extension StringProtocol {
    /// The text without leading and trailing characters from `characters` (by default spaces and tabs, the
    /// optional whitespace of HTTP fields).
    func trimming(_ characters: String = " \t") -> SubSequence {
        var start = startIndex, end = endIndex
        while start < end, characters.contains(self[start]) { start = index(after: start) }
        while end > start, characters.contains(self[index(before: end)]) { end = index(before: end) }
        return self[start..<end]
    }
}
