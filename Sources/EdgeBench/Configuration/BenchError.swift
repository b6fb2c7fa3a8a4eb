/// Why a run could not start or finish. Every case carries a message meant for a person.
public enum BenchError: Error, Sendable, CustomStringConvertible {
    /// A flag or a combination of flags is invalid.
    case invalidOption(String)
    /// The URL cannot be used.
    case invalidURL(String)
    /// The host name does not resolve.
    case resolve(String)
    /// The first connection (connect, TLS handshake, first request) failed; the run did not start.
    case preflight(String)
    /// Not enough file descriptors for the connections asked for.
    case fileDescriptors(String)
    /// The TLS configuration was refused by the TLS library.
    case tlsSetup(String)

    /// The message to print.
    public var description: String {
        switch self {
        case .invalidOption(let message), .invalidURL(let message), .resolve(let message),
             .preflight(let message), .fileDescriptors(let message), .tlsSetup(let message):
            return message
        }
    }
}
