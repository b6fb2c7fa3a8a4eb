import NIOPosix

/// Shared settings for streaming files where sendfile cannot be used (TLS, HTTP/2).
enum FileStreaming {
    /// Non-blocking file reads on NIO's shared thread pool.
    static let io = NonBlockingFileIO(threadPool: .singleton)
    /// Bytes read and written per step; one chunk per connection is in flight at a time.
    static let chunkSize = 128 * 1024
}
