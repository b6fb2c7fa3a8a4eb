/// Parses HTTP dates (RFC 9110 §5.6.7): IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), and the obsolete
/// RFC 850 (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime (`Sun Nov  6 08:49:37 1994`) forms.
enum HTTPDate {
    private static let months = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]

    /// Seconds since 1970 for `text`, or `nil` when it is no HTTP date.
    static func parse(_ text: String) -> Int? {
        let tokens = text.split(separator: " ", omittingEmptySubsequences: true)
        let day: Int?, month: Int?, year: Int?, time: Substring
        switch tokens.count {
        case 6 where tokens[5] == "GMT" && tokens[0].hasSuffix(","):  // IMF-fixdate
            (day, month, year, time) = (Int(tokens[1]), monthNumber(tokens[2]), Int(tokens[3]), tokens[4])
        case 4 where tokens[3] == "GMT" && tokens[0].hasSuffix(","):  // RFC 850
            let date = tokens[1].split(separator: "-")
            guard date.count == 3, let shortYear = Int(date[2]), (0...99).contains(shortYear) else { return nil }
            (day, month, year, time) = (Int(date[0]), monthNumber(date[1]), shortYear < 70 ? 2000 + shortYear : 1900 + shortYear, tokens[2])
        case 5:  // asctime
            (day, month, year, time) = (Int(tokens[2]), monthNumber(tokens[1]), Int(tokens[4]), tokens[3])
        default:
            return nil
        }
        let clock = time.split(separator: ":").compactMap { Int($0) }
        // The grammar's year is four digits; a longer one would overflow the day arithmetic below.
        guard let day, let month, let year, (0...9999).contains(year), clock.count == 3, (1...31).contains(day), (0...23).contains(clock[0]),
            (0...59).contains(clock[1]), (0...60).contains(clock[2])
        else { return nil }
        return daysSinceEpoch(year: year, month: month, day: day) * 86_400 + clock[0] * 3600 + clock[1] * 60 + clock[2]
    }

    private static func monthNumber(_ text: Substring) -> Int? {
        months.firstIndex(of: text.lowercased()).map { $0 + 1 }
    }

    /// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
    static func daysSinceEpoch(year: Int, month: Int, day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }
}
