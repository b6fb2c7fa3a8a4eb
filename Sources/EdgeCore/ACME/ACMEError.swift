public import Foundation

/// An ACME problem document (RFC 8555 §6.7, RFC 7807): what the CA said was wrong.
public struct ACMEProblem: Sendable, Equatable, Decodable, CustomStringConvertible {
    /// A URN such as `urn:ietf:params:acme:error:rateLimited`.
    public var type: String
    public var detail: String?
    public var status: Int?
    /// Per-identifier problems (e.g. one per name of an order whose validation failed).
    public var subproblems: [ACMEProblem]?
    public var identifier: ACMEIdentifier?

    public init(type: String, detail: String? = nil, status: Int? = nil) {
        self.type = type
        self.detail = detail
        self.status = status
    }

    public static let prefix = "urn:ietf:params:acme:error:"

    /// The last part of an ACME error URN (`badNonce`, `rateLimited`), or the whole type for other URNs.
    public var code: String {
        type.hasPrefix(Self.prefix) ? String(type.dropFirst(Self.prefix.count)) : type
    }

    public var description: String {
        var text = code + (detail.map { ": " + $0 } ?? "")
        if let identifier { text = identifier.value + ": " + text }
        if let subproblems, !subproblems.isEmpty {
            text += " [" + subproblems.map(\.description).joined(separator: "; ") + "]"
        }
        return text
    }
}

/// What went wrong talking to the CA. Every case says why in its description, for the log.
public enum ACMEError: Error, Sendable, CustomStringConvertible {
    /// The CA answered with a problem document (or an error status without one); `retryAfter` when the
    /// answer had a `Retry-After` (a CA in maintenance answers 503 with one).
    case problem(ACMEProblem, httpStatus: Int, retryAfter: Date?)
    /// `urn:ietf:params:acme:error:rateLimited`: try again no earlier than `retryAfter` when the CA said.
    case rateLimited(ACMEProblem, retryAfter: Date?)
    /// A name's challenge ended `invalid`: the CA could not reach the responder, or got the wrong answer.
    case challengeFailed(name: String, problem: ACMEProblem?)
    /// The order ended `invalid` (for instance after a failed challenge, or a refused CSR).
    case orderFailed(ACMEProblem?)
    /// The CA offers none of the challenge types this client can answer for a name.
    case unsupportedChallenge(name: String, offered: [String])
    /// The CA could not be reached: connection refused, TLS failure, timeout.
    case transport(String)
    /// The CA's answer was not what RFC 8555 describes (missing header, undecodable body, wrong certificate).
    case badResponse(String)
    /// An order, authorization or finalization did not settle in time.
    case timedOut(String)

    /// When the CA asked to be left alone until, if it said.
    public var retryAfter: Date? {
        switch self {
        case .rateLimited(_, let date), .problem(_, _, let date): return date
        default: return nil
        }
    }

    /// The problem document behind this error, if the CA sent one.
    public var problem: ACMEProblem? {
        switch self {
        case .problem(let problem, _, _), .rateLimited(let problem, _): return problem
        case .challengeFailed(_, let problem), .orderFailed(let problem): return problem
        default: return nil
        }
    }

    public var description: String {
        switch self {
        case .problem(let problem, let status, _): return "CA answered \(status): \(problem)"
        case .rateLimited(let problem, let date):
            return "rate limited by the CA: \(problem.detail ?? problem.type)" + (date.map { "; retry after \($0)" } ?? "")
        case .challengeFailed(let name, let problem):
            return "challenge for \(name) failed: " + (problem?.description ?? "no reason given")
        case .orderFailed(let problem): return "order failed: " + (problem?.description ?? "no reason given")
        case .unsupportedChallenge(let name, let offered):
            return "no usable challenge for \(name) (offered: \(offered.joined(separator: ", ")))"
        case .transport(let reason): return "cannot reach the CA: \(reason)"
        case .badResponse(let reason): return "unexpected answer from the CA: \(reason)"
        case .timedOut(let what): return "timed out waiting for \(what)"
        }
    }
}

/// The `Retry-After` header (RFC 9110 §10.2.3): delay-seconds or an HTTP-date.
enum RetryAfter {
    static func parse(_ value: String?, now: Date) -> Date? {
        guard let value = value?.trimmingCharacters(in: .whitespaces), !value.isEmpty else { return nil }
        if let seconds = Int(value), seconds >= 0 { return now.addingTimeInterval(TimeInterval(seconds)) }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        return formatter.date(from: value)
    }
}
