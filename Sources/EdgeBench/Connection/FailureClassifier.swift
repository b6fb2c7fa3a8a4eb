import NIOCore
import NIOSSL

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Sorts the errors a connection can see into the ``ErrorKind`` buckets of the report.
enum FailureClassifier {
    /// The kind and message for `error`, seen while connecting (`beforeReady`) or on an established connection.
    static func classify(_ error: any Error, beforeReady: Bool) -> TransportFailure {
        switch error {
        case is NIOSSLError, is BoringSSLError, is NIOSSLExtraError:
            return TransportFailure(kind: .tls, message: "TLS: \(error)")
        case let error as BenchProtocolError:
            return TransportFailure(kind: .protocol, message: error.description)
        case let error as IOError:
            return TransportFailure(kind: beforeReady ? .connect : .reset, message: describe(error))
        case let error as ChannelError:
            if case .connectTimeout = error { return TransportFailure(kind: .connect, message: "connect timed out") }
            return TransportFailure(kind: beforeReady ? .connect : .reset, message: "\(error)")
        default:
            let typeName = String(reflecting: type(of: error))
            if typeName.contains("NIOHTTP2") || typeName.contains("HPACK") {
                return TransportFailure(kind: .protocol, message: "HTTP/2: \(error)")
            }
            return TransportFailure(kind: beforeReady ? .connect : .reset, message: "\(error)")
        }
    }

    private static func describe(_ error: IOError) -> String {
        guard let text = strerror(error.errnoCode) else { return "\(error)" }
        return String(cString: text)
    }
}

/// The server sent bytes that are not a valid HTTP response.
struct BenchProtocolError: Error, CustomStringConvertible {
    /// What was wrong.
    var description: String
}
