import NIOCore

/// A user inbound event sent to every connection accepted under an older configuration once a reload has put a
/// new one in place (SIGHUP). The connection finishes what it is doing under the configuration it started
/// with, then closes, so that its client reconnects to the new one — as nginx's old workers do:
///
/// - HTTP/1.1: an idle keep-alive connection closes at once; otherwise the next response carries
///   `Connection: close`;
/// - HTTP/2: the graceful GOAWAY sequence of a shutdown;
/// - still negotiating TLS: the event is kept until the protocol is chosen, then delivered.
struct RetireConnectionEvent {}

/// A connection in its event loop's registry, with the configuration generation it was accepted under.
struct OpenConnection {
    /// The connection.
    var channel: any Channel
    /// ``EdgeServices/generation`` of the services that configured it.
    var generation: Int
}
