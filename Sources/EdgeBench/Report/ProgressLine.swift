import Foundation

/// The live status line on a terminal: rewritten in place about once a second, nothing when stderr is not a TTY.
public enum ProgressLine {
    /// Whether standard error is a terminal.
    public static var isTerminal: Bool { isatty(STDERR_FILENO) == 1 }

    /// The line for `sample`.
    public static func text(_ sample: ProgressSample) -> String {
        String(format: "  %6.1fs  ", sample.elapsedSeconds)
            + "\(HumanReport.grouped(Double(sample.responses))) responses  \(HumanReport.grouped(sample.currentRate)) req/s  "
            + "\(HumanReport.grouped(Double(sample.errors))) errors"
    }

    /// Draws `sample` over the previous line.
    public static func draw(_ sample: ProgressSample) {
        FileHandle.standardError.write(Data(("\r\u{1B}[K" + text(sample)).utf8))
    }

    /// Clears the line.
    public static func clear() {
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
    }
}
