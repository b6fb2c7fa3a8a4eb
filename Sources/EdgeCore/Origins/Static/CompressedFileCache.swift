import NIOCore
import Synchronization

/// Compressed copies (brotli, zstd, gzip) of large compressible files (over the per-loop small-file cache's
/// 64 KiB), shared by all event loops so that a hot file is compressed once per coding, not once per request or
/// per loop.
///
/// It is used only from NIO's thread pool (compressing a megabyte takes milliseconds), never from an event
/// loop, so a lock is the right tool. Concurrent requests for a file being compressed wait for that one
/// compression. Entries are keyed by path, inode, size, modification time and coding, so a changed file is
/// compressed afresh and its old copies dropped; the total is bounded in bytes (oldest dropped first).
final class CompressedFileCache: Sendable {
    /// Identifies one version of one file, in one coding.
    struct Key: Hashable, Sendable {
        var path: String
        var inode: UInt64
        var size: Int
        var modifiedNanoseconds: Int
        var coding: ContentCoding

        /// The file and coding, whatever the version.
        var file: FileInCoding { FileInCoding(path: path, coding: coding) }
    }

    /// One file in one coding, whatever its version: the newest version's key is kept under it.
    struct FileInCoding: Hashable, Sendable {
        var path: String
        var coding: ContentCoding
    }

    /// Largest file compressed on the fly; larger ones are sent as they are (or from a `.gz` sidecar).
    static let maxSourceBytes = 8 * 1024 * 1024

    private enum Outcome: Sendable {
        case compressed(ByteBuffer)
        /// Compression did not make it smaller (already-compressed content with a text extension): send it as it is.
        case notSmaller
    }

    private final class Slot: Sendable {
        let outcome = Mutex<Outcome?>(nil)
    }

    private struct State {
        /// Each file version's slot, and the size of its compressed body once it is counted in ``totalBytes``.
        var entries: [Key: (slot: Slot, bytes: Int?)] = [:]
        var latestByFile: [FileInCoding: Key] = [:]
        /// Keys, oldest first.
        var order: [Key] = []
        var totalBytes = 0

        mutating func slot(for key: Key) -> Slot {
            if let entry = entries[key] { return entry.slot }
            if let stale = latestByFile[key.file], stale != key { remove(stale) }
            let slot = Slot()
            entries[key] = (slot, nil)
            latestByFile[key.file] = key
            order.append(key)
            return slot
        }

        /// Counts `bytes` for `key` (once), then drops the oldest counted bodies until the total fits `limit`.
        mutating func account(_ key: Key, bytes: Int, limit: Int) {
            guard let entry = entries[key], entry.bytes == nil else { return }
            entries[key] = (entry.slot, bytes)
            totalBytes += bytes
            while totalBytes > limit, let oldest = order.first(where: { entries[$0]?.bytes != nil }), oldest != key {
                remove(oldest)
            }
        }

        mutating func remove(_ key: Key) {
            totalBytes -= entries.removeValue(forKey: key)?.bytes ?? 0
            if latestByFile[key.file] == key { latestByFile[key.file] = nil }
            order.removeAll { $0 == key }
        }
    }

    private let state = Mutex(State())
    private let maxTotalBytes: Int

    /// A cache holding at most `maxTotalBytes` of compressed bodies.
    init(maxTotalBytes: Int = 64 * 1024 * 1024) {
        self.maxTotalBytes = maxTotalBytes
    }

    /// The body of the file version `key` in its coding, compressing `load()` on the first call; `nil` when the
    /// coding does not make the file smaller, is not available, or the file cannot be read.
    func compressed(_ key: Key, load: () -> ByteBuffer?) -> ByteBuffer? {
        let slot = state.withLock { $0.slot(for: key) }
        let outcome: Outcome? = slot.outcome.withLock { outcome in
            if let outcome { return outcome }
            guard let source = load() else { return nil }  // not remembered: the next request tries again
            guard let compressed = BodyEncoder.encode(source, coding: key.coding, settings: .largeFile) else { return nil }
            let result: Outcome = compressed.readableBytes < source.readableBytes ? .compressed(compressed) : .notSmaller
            outcome = result
            return result
        }
        guard case .compressed(let body) = outcome else { return nil }
        state.withLock { $0.account(key, bytes: body.readableBytes, limit: maxTotalBytes) }
        return body
    }

    /// Compressed bytes held, for tests.
    var totalBytes: Int { state.withLock { $0.totalBytes } }
}
