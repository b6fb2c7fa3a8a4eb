import Foundation

/// The report as a table for a terminal, in the spirit of wrk's.
public enum HumanReport {
    /// Renders `report`.
    public static func render(_ report: BenchReport) -> String {
        var lines: [String] = []
        let depthText = report.protocol == "h2" ? "\(report.depth) streams each" : (report.depth > 1 ? "pipelining \(report.depth)" : "")
        var header = "edge-bench \(report.url)  \(report.protocol), \(report.connections) connections"
        if !depthText.isEmpty { header += " (\(depthText))" }
        header += ", \(report.threads) threads, "
        switch report.mode {
        case "open": header += "open loop at \(grouped(report.targetRate ?? 0)) req/s (latency corrected for coordinated omission)"
        case "idle": header += "idle connections"
        default: header += "closed loop"
        }
        lines.append(header)
        lines.append("")
        lines.append(row("duration", String(format: "%.2f s", report.durationSeconds)))
        lines.append(row("requests", "\(grouped(Double(report.requests)))   \(grouped(report.requestsPerSecond, decimals: 1)) req/s"))
        lines.append(row("transfer", "\(bytes(Double(report.bytes)))   \(bytes(report.bytesPerSecond))/s"))
        let latency = report.latencyMs
        lines.append(row("latency", "p50 \(ms(latency.p50))  p90 \(ms(latency.p90))  p99 \(ms(latency.p99))  p99.9 \(ms(latency.p999))  p99.99 \(ms(latency.p9999))  max \(ms(latency.max))"))
        lines.append(row("", "mean \(ms(latency.mean))  stdev \(ms(latency.stdev))  min \(ms(latency.min))"))
        let statuses = report.statusCodes.sorted { $0.key < $1.key }.map { "\($0.key): \(grouped(Double($0.value)))" }
        lines.append(row("status", statuses.isEmpty ? "none" : statuses.joined(separator: "  ")))
        let errorText = ErrorKind.allCases.map { "\($0) \(report.errors[$0.description] ?? 0)" }.joined(separator: "  ")
        lines.append(row("errors", "\(report.errorsTotal) (\(errorText))"))
        for kind in ErrorKind.allCases {
            if let message = report.errorMessages[kind.description] { lines.append(row("", "first \(kind): \(message)")) }
        }
        if report.unfinished > 0 { lines.append(row("unfinished", "\(report.unfinished) in flight when the run ended (not counted)")) }
        lines.append(row("connections", "\(report.connectionsOpened) opened, \(report.connectionsOpenAtEnd) open at the end"))
        return lines.joined(separator: "\n")
    }

    private static func row(_ label: String, _ value: String) -> String {
        "  " + label.padding(toLength: 12, withPad: " ", startingAt: 0) + value
    }

    private static func ms(_ value: Double) -> String {
        value >= 100 ? String(format: "%.0fms", value) : (value >= 10 ? String(format: "%.1fms", value) : String(format: "%.3fms", value))
    }

    /// `1234567.8` → `1,234,568` (or with `decimals` digits after the point).
    static func grouped(_ value: Double, decimals: Int = 0) -> String {
        let text = String(format: "%.\(decimals)f", value)
        let parts = text.split(separator: ".", maxSplits: 1)
        var integer = String(parts[0])
        let negative = integer.hasPrefix("-")
        if negative { integer.removeFirst() }
        var groupedDigits = ""
        for (offset, character) in integer.reversed().enumerated() {
            if offset > 0 && offset % 3 == 0 { groupedDigits.append(",") }
            groupedDigits.append(character)
        }
        let result = (negative ? "-" : "") + String(groupedDigits.reversed())
        return parts.count > 1 ? result + "." + parts[1] : result
    }

    private static func bytes(_ value: Double) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var scaled = value
        var unit = 0
        while scaled >= 1024 && unit < units.count - 1 {
            scaled /= 1024
            unit += 1
        }
        return unit == 0 ? String(format: "%.0f B", scaled) : String(format: "%.2f ", scaled) + units[unit]
    }
}
