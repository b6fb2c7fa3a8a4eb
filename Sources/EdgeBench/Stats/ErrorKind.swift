/// What went wrong with a request that got no usable answer, or a response that was not 2xx.
///
/// Every request the generator sends ends in exactly one place: an answered response (counted in
/// `requests`; non-2xx ones also under ``status``), one of the failure kinds here, or `unfinished`
/// when the run ended while it was in flight.
public enum ErrorKind: Int, Sendable, CaseIterable, CustomStringConvertible {
    /// The TCP connection could not be made (refused, unreachable, timed out).
    case connect
    /// The TLS handshake failed (bad certificate, no common version or cipher, ALPN refused).
    case tls
    /// No answer within `--timeout`; the connection was closed and replaced.
    case timeout
    /// The connection closed or was reset while the request was in flight (or the HTTP/2 stream was reset).
    case reset
    /// The server's bytes could not be parsed as HTTP.
    case `protocol`
    /// The server answered with a status outside 200–299 (also counted in `requests`).
    case status

    /// The name used in reports and JSON.
    public var description: String {
        switch self {
        case .connect: "connect"
        case .tls: "tls"
        case .timeout: "timeout"
        case .reset: "reset"
        case .protocol: "protocol"
        case .status: "status"
        }
    }
}

/// A classified failure of a connection, with the first error's message for the report.
struct TransportFailure: Sendable {
    /// The kind it is counted as.
    var kind: ErrorKind
    /// What happened, for a person.
    var message: String
}
