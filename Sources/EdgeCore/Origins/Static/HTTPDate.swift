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

extension HTTPDate {
    private static let dayNames = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    private static let longDayNames = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]

    /// Seconds since 1970 for an HTTP date in exactly one of the three forms of RFC 9110 §5.6.7 — IMF-fixdate
    /// (`Sun, 06 Nov 1994 08:49:37 GMT`), RFC 850 (`Sunday, 06-Nov-94 08:49:37 GMT`) or asctime
    /// (`Sun Nov  6 08:49:37 1994`) — names in any case; `nil` for anything else (another zone, a missing comma,
    /// extra spaces, a one-digit hour). The HTTP cache reads `Expires` and `Date` this way: an invalid `Expires`
    /// means already expired (RFC 9111 §5.3).
    static func parseStrict(_ text: String) -> Int? {
        let bytes = Array(text.utf8)
        func digits(_ range: Range<Int>) -> Int? {
            guard range.upperBound <= bytes.count else { return nil }
            var value = 0
            for index in range {
                let byte = bytes[index]
                guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
                value = value * 10 + Int(byte - UInt8(ascii: "0"))
            }
            return value
        }
        func word(_ range: Range<Int>) -> String? {
            guard range.upperBound <= bytes.count else { return nil }
            return String(decoding: bytes[range], as: UTF8.self).lowercased()
        }
        func byte(_ index: Int, _ expected: Character) -> Bool {
            index < bytes.count && bytes[index] == expected.asciiValue!
        }
        /// `HH:MM:SS` at `start`.
        func clock(_ start: Int) -> (Int, Int, Int)? {
            guard let hour = digits(start..<start + 2), byte(start + 2, ":"), let minute = digits(start + 3..<start + 5),
                byte(start + 5, ":"), let second = digits(start + 6..<start + 8), hour < 24, minute < 60, second <= 60
            else { return nil }
            return (hour, minute, second)
        }
        func seconds(year: Int, month: Int, day: Int, _ time: (Int, Int, Int)) -> Int? {
            guard (1...31).contains(day) else { return nil }
            return daysSinceEpoch(year: year, month: month, day: day) * 86_400 + time.0 * 3600 + time.1 * 60 + time.2
        }
        func monthNumber(_ range: Range<Int>) -> Int? {
            word(range).flatMap { months.firstIndex(of: $0) }.map { $0 + 1 }
        }
        // IMF-fixdate: 29 bytes.
        if bytes.count == 29, let day = word(0..<3), dayNames.contains(day), byte(3, ","), byte(4, " "), let date = digits(5..<7),
            byte(7, " "), let month = monthNumber(8..<11), byte(11, " "), let year = digits(12..<16), byte(16, " "),
            let time = clock(17), byte(25, " "), word(26..<29) == "gmt"
        {
            return seconds(year: year, month: month, day: date, time)
        }
        // asctime: 24 bytes, the day of the month padded with a space.
        if bytes.count == 24, let day = word(0..<3), dayNames.contains(day), byte(3, " "), let month = monthNumber(4..<7), byte(7, " "),
            let date = byte(8, " ") ? digits(9..<10) : digits(8..<10), byte(10, " "), let time = clock(11), byte(19, " "),
            let year = digits(20..<24)
        {
            return seconds(year: year, month: month, day: date, time)
        }
        // RFC 850: a long day name, then `, DD-Mon-YY HH:MM:SS GMT` (24 bytes).
        if let comma = bytes.firstIndex(of: UInt8(ascii: ",")), let day = word(0..<comma), longDayNames.contains(day),
            bytes.count == comma + 24
        {
            let start = comma + 1
            guard byte(start, " "), let date = digits(start + 1..<start + 3), byte(start + 3, "-"),
                let month = monthNumber(start + 4..<start + 7), byte(start + 7, "-"), let shortYear = digits(start + 8..<start + 10),
                byte(start + 10, " "), let time = clock(start + 11), byte(start + 19, " "), word(start + 20..<start + 23) == "gmt"
            else { return nil }
            return seconds(year: shortYear < 70 ? 2000 + shortYear : 1900 + shortYear, month: month, day: date, time)
        }
        return nil
    }
}
