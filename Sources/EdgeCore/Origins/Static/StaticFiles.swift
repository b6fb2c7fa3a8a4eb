#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import NIOHPACK
import NIOHTTP1
import NIOPosix
import Synchronization

/// The request headers a static route looks at.
struct StaticRequestHeaders {
    var range: String?
    var ifRange: String?
    var ifNoneMatch: String?
    var ifModifiedSince: String?
    var acceptEncoding: String?
    /// `Cache-Control` and `Pragma`, for the HTTP cache's answers on the fast paths.
    var cacheControl: String?
    var pragma: String?

    /// Takes the field `name: value` if it is one of these (name in any case): the first `Range`, `If-Range`
    /// and `If-Modified-Since`; every `If-None-Match` and `Accept-Encoding`, joined as one list. Returns
    /// whether it was.
    mutating func record(name: String, value: String) -> Bool {
        switch name.utf8.count {
        case 5 where name.equalsIgnoringASCIICase("range"):
            range = range ?? value
        case 8 where name.equalsIgnoringASCIICase("if-range"):
            ifRange = ifRange ?? value
        case 13 where name.equalsIgnoringASCIICase("if-none-match"):
            ifNoneMatch = ifNoneMatch.map { $0 + ", " + value } ?? value
        case 13 where name.equalsIgnoringASCIICase("cache-control"):
            cacheControl = cacheControl.map { $0 + ", " + value } ?? value
        case 6 where name.equalsIgnoringASCIICase("pragma"):
            pragma = pragma.map { $0 + ", " + value } ?? value
        case 15 where name.equalsIgnoringASCIICase("accept-encoding"):
            acceptEncoding = acceptEncoding.map { $0 + ", " + value } ?? value
        case 17 where name.equalsIgnoringASCIICase("if-modified-since"):
            ifModifiedSince = ifModifiedSince ?? value
        default:
            return false
        }
        return true
    }
}

/// A file (or a part of it) to send: the front end writes the head, then the bytes of `range` from `handle`
/// (sendfile on plain HTTP/1.1, chunks with backpressure elsewhere), then closes the handle.
struct FileReply {
    /// 200 or 206.
    var status: HTTPResponseStatus
    /// Complete headers, `Content-Length` included (a 304 has none).
    var headers: HTTPHeaders
    /// The open file; `nil` when no body is sent (HEAD) or the bytes are in ``body``.
    var handle: NIOFileHandle?
    /// Byte range of the file to send.
    var range: Range<Int>
    /// The whole file, when it is small enough to be served from memory.
    var body: ByteBuffer? = nil
    /// The status line and ``headers`` already serialised for HTTP/1.1, when they were prepared in advance.
    var http1Head: PreparedHead? = nil
    /// `:status` and ``headers`` as an HTTP/2 header block, when prepared in advance.
    var http2Block: HPACKHeaders? = nil
}

/// Serves a directory, as nginx's `root` and Caddy's `file_server`: strict path decoding (no traversal,
/// no hidden files unless enabled, no symlinks leaving the root unless enabled), `index.html`, `/dir` → `/dir/`
/// redirects, optional HTML-escaped listings, `ETag`/`Last-Modified`, conditional requests, single ranges.
///
/// All blocking file-system calls (`realpath`, `stat`, `open`, directory reads) run on NIO's thread pool;
/// the event loop only assembles the response.
public final class StaticFiles: Sendable {
    let configuration: StaticConfiguration
    /// `realpath` of the root.
    let root: String
    /// Distinguishes this route's entries in the loops' small-file caches.
    private let cacheKeyPrefix: String
    private static let routeCount = Atomic<Int>(0)

    /// Checks that the root is a readable directory.
    init(configuration: StaticConfiguration) throws(RouteSetupError) {
        guard let real = Self.realPath(configuration.root) else {
            throw RouteSetupError(description: "static root \(configuration.root): \(String(cString: strerror(errno)))")
        }
        var info = stat()
        guard stat(real, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR else {
            throw RouteSetupError(description: "static root \(configuration.root) is not a directory")
        }
        self.configuration = configuration
        self.root = real
        self.cacheKeyPrefix = "\(Self.routeCount.add(1, ordering: .relaxed).newValue)\u{0}"
    }

    /// The response for `method` on `relative` (the request path after the route prefix).
    /// - Parameters:
    ///   - requestPath: The full request path, for redirects.
    /// - Parameters:
    ///   - cache: The event loop's small-file cache; a hit is answered at once, with no file-system call.
    func serve(
        method: HTTPMethod, relative: Substring, requestPath: Substring, query: Substring?,
        headers: StaticRequestHeaders, cache: StaticFileCache, on eventLoop: any EventLoop
    ) -> Dispatch {
        guard method == .GET || method == .HEAD else {
            var notAllowed = EdgeResponse.text(.methodNotAllowed, "method not allowed\n")
            notAllowed.headers.add(name: "allow", value: "GET, HEAD")
            return .ready(.response(notAllowed))
        }
        let accepted = AcceptedEncodings(header: headers.acceptEncoding)
        let key = cacheKey(relative, accepted)
        if let entry = cache.get(key, now: .now()) {
            return .ready(Self.honouringIdentity(reply(for: entry, method: method, headers: headers), accepted))
        }
        guard let resolved = StaticPath.resolve(relative) else {
            return .ready(.response(.text(.badRequest, "invalid path\n")))
        }
        if resolved.hasHiddenSegment && !configuration.hidden {
            return .ready(.response(.text(.notFound, "not found\n")))
        }
        let lookup = NIOThreadPool.singleton.runIfActive(eventLoop: eventLoop) { [self] in
            self.lookUp(resolved, accepted: accepted)
        }
        let requestPath = String(requestPath), query = query.map(String.init)
        return .pending(
            lookup.assumeIsolated().map { found in
                if case .memory(let entry) = found {
                    var entry = entry
                    entry.validUntil = .now() + cache.validity
                    cache.put(key, entry)
                    return Self.honouringIdentity(self.reply(for: entry, method: method, headers: headers), accepted)
                }
                return Self.honouringIdentity(
                    self.reply(for: found, method: method, requestPath: requestPath, query: query, headers: headers), accepted
                )
            }.nonisolated().recover { _ in .response(.text(.internalServerError, "file lookup failed\n")) }
        )
    }

    /// The reply to a `GET` or `HEAD` for a file in the loop's small-file cache, or `nil` when it is not there
    /// (or is due for revalidation): the part of ``serve(method:relative:requestPath:query:headers:cache:on:)``
    /// that needs no file-system call. Nothing is started for a `nil`, so the caller can take the full path.
    func cachedReply(method: HTTPMethod, relative: Substring, headers: StaticRequestHeaders, cache: StaticFileCache) -> Reply? {
        let accepted = AcceptedEncodings(header: headers.acceptEncoding)
        let key = cacheKey(relative, accepted)
        return cache.get(key, now: .now()).map { Self.honouringIdentity(reply(for: $0, method: method, headers: headers), accepted) }
    }

    /// `reply`, or 406 when it would send a file's bytes without a content coding to a client that refused
    /// `identity` (`identity;q=0`, or `*;q=0` without `identity`) and accepts none that Edge has for the file
    /// (RFC 9110 §12.5.3, §15.5.7).
    static func honouringIdentity(_ reply: Reply, _ accepted: AcceptedEncodings) -> Reply {
        guard !accepted.identity, case .file(let file) = reply, file.status == .ok || file.status == .partialContent,
            !file.headers.contains(name: "content-encoding")
        else { return reply }
        try? file.handle?.close()
        var refused = EdgeResponse.text(.notAcceptable, "no acceptable content coding: identity refused by Accept-Encoding\n")
        refused.headers.add(name: "vary", value: "Accept-Encoding")
        return .response(refused)
    }

    /// The small-file cache key: this route (its options decide what may be served), the path as requested and
    /// the codings accepted. A hit skips decoding and the hidden-file check, which ran (and passed) for this
    /// route when the entry was made.
    private func cacheKey(_ relative: Substring, _ accepted: AcceptedEncodings) -> String {
        var key = cacheKeyPrefix + relative + "\u{0}"
        if accepted.acceptsAny {
            accepted.forEachRanked(ContentCoding.staticPreference) { key += $0.sidecarSuffix }
        }
        return key
    }

    // MARK: file-system work (thread pool)

    enum Found {
        /// `name` is the file asked for (it gives the media type); `encoding` is set when a precompressed
        /// sidecar (`name.br`, `name.gz`) is sent instead; `hasVariants` when such sidecars exist at all.
        case file(descriptor: CInt, size: Int, modified: timespec, inode: UInt64, name: String, encoding: String?, hasVariants: Bool)
        /// A small file read whole, to be kept in the loop's cache.
        case memory(StaticFileCache.Entry)
        /// A large file's compressed copy from the shared ``CompressedFileCache`` (not copied into the loop's cache).
        case compressed(StaticFileCache.Entry)
        case redirectToDirectory
        case listing(String)
        case notFound
        case forbidden
    }

    private func lookUp(_ resolved: StaticPath.Resolved, accepted: AcceptedEncodings) -> Found {
        let found = locate(resolved, accepted: accepted)
        guard case .file(let descriptor, let size, let modified, let inode, let name, let encoding, let hasVariants) = found else { return found }
        guard size <= StaticFileCache.maxFileBytes else {
            return largeFile(descriptor: descriptor, size: size, modified: modified, inode: inode, name: name, encoding: encoding, hasVariants: hasVariants, accepted: accepted)
        }
        defer { close(descriptor) }
        guard var body = Self.readWhole(descriptor, size: size) else { return .notFound }
        var chosenEncoding = encoding
        // On-the-fly compression (done here, on the thread pool, once: the result lives in the loop's cache), in the
        // coding the client prefers, brotli first where it accepts several equally.
        let compressible = encoding == nil && size >= Self.minimumCompressedSize
            && MediaTypes.isCompressible(MediaTypes.contentType(forPath: name[...]))
        if compressible, let coding = accepted.preferred(among: ContentCoding.staticPreference),
            let compressed = BodyEncoder.encode(body, coding: coding, settings: .smallFile), compressed.readableBytes < size
        {
            body = compressed
            chosenEncoding = coding.token
        }
        let (headers, etag, lastModified) = Self.fileHeaders(
            size: body.readableBytes, modified: modified, inode: inode, name: name, encoding: chosenEncoding,
            hasVariants: hasVariants || compressible
        )
        return .memory(StaticFileCache.Entry(headers: headers, etag: etag, lastModified: lastModified, body: body, validUntil: .now()))
    }

    /// Files smaller than this are not worth compressing.
    static let minimumCompressedSize = 1024

    /// Compressed copies of large compressible files, shared by every static route and event loop.
    static let compressedFiles = CompressedFileCache()

    /// A file too large for the loop's cache: its compressed copy from the shared cache when the client accepts a
    /// coding and the type compresses (up to ``CompressedFileCache/maxSourceBytes``), else the file itself
    /// (sendfile/streaming).
    private func largeFile(
        descriptor: CInt, size: Int, modified: timespec, inode: UInt64, name: String, encoding: String?, hasVariants: Bool,
        accepted: AcceptedEncodings
    ) -> Found {
        let compressible = encoding == nil && size <= CompressedFileCache.maxSourceBytes
            && MediaTypes.isCompressible(MediaTypes.contentType(forPath: name[...]))
        let asIs = Found.file(
            descriptor: descriptor, size: size, modified: modified, inode: inode, name: name, encoding: encoding,
            hasVariants: hasVariants || compressible
        )
        guard compressible, let coding = accepted.preferred(among: ContentCoding.staticPreference) else { return asIs }
        let nanoseconds = Int(modified.tv_sec) * 1_000_000_000 + Int(modified.tv_nsec)
        let key = CompressedFileCache.Key(path: name, inode: inode, size: size, modifiedNanoseconds: nanoseconds, coding: coding)
        let compressed = Self.compressedFiles.compressed(key) { Self.readWhole(descriptor, size: size) }
        guard let compressed else { return asIs }
        close(descriptor)
        let (headers, etag, lastModified) = Self.fileHeaders(
            size: compressed.readableBytes, modified: modified, inode: inode, name: name, encoding: coding.token, hasVariants: true
        )
        return .compressed(StaticFileCache.Entry(headers: headers, etag: etag, lastModified: lastModified, body: compressed, validUntil: .now()))
    }

    /// The first `size` bytes of the open file, or `nil` when fewer can be read (it shrank).
    private static func readWhole(_ descriptor: CInt, size: Int) -> ByteBuffer? {
        var bytes = [UInt8](repeating: 0, count: size)
        let read = bytes.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress, size, 0) }
        return read == size ? ByteBuffer(bytes: bytes) : nil
    }

    /// Where `path` really is, when it may be served: with `follow_symlinks = false` only inside the root. Every
    /// file that is opened (the one asked for, a directory's index, a `.br` / `.gz` sidecar) passes this first
    /// and is then opened by the path returned, so no symbolic link can lead a response out of the root.
    private enum Access {
        /// Open this path.
        case allowed(String)
        /// Answer this instead: 404 when nothing is there, 403 when it is unreadable or outside the root.
        case refused(Found)
    }

    private func access(_ path: String) -> Access {
        guard let real = Self.realPath(path) else { return .refused(errno == EACCES ? .forbidden : .notFound) }
        if !configuration.followSymlinks, !isInsideRoot(real) { return .refused(.forbidden) }
        return .allowed(real)
    }

    private func locate(_ resolved: StaticPath.Resolved, accepted: AcceptedEncodings) -> Found {
        let candidate = resolved.segments.isEmpty ? root : root + "/" + resolved.relativePath
        let real: String
        switch access(candidate) {
        case .allowed(let path): real = path
        case .refused(let answer): return answer
        }
        var info = stat()
        guard stat(real, &info) == 0 else { return errno == EACCES ? .forbidden : .notFound }
        switch info.st_mode & S_IFMT {
        case S_IFDIR:
            guard resolved.trailingSlash else { return .redirectToDirectory }
            for index in configuration.index {
                switch access(real + "/" + index) {
                case .allowed(let indexPath):
                    let found = openWithVariants(indexPath, accepted: accepted)
                    if case .file = found { return found }
                case .refused(.notFound):
                    continue
                case .refused(let answer):
                    return answer  // an index that leads out of the root is refused as it would be if asked for
                }
            }
            return configuration.listing ? listing(of: real, relative: resolved) : .forbidden
        case S_IFREG:
            return resolved.trailingSlash && !resolved.segments.isEmpty ? .notFound : openWithVariants(real, accepted: accepted)
        default:
            return .notFound
        }
    }

    /// Opens `path` (already checked by ``access(_:)``), or its `.br` / `.zst` / `.gz` sidecar when the client
    /// accepts that coding: of the sidecars present, the one with the client's highest q-value, brotli, then zstd,
    /// then gzip breaking ties. A sidecar that may not be served (a link out of the root) counts as absent.
    private func openWithVariants(_ path: String, accepted: AcceptedEncodings) -> Found {
        var present: [ContentCoding: String] = [:]
        for coding in ContentCoding.staticPreference {
            if case .allowed(let sidecar) = access(path + coding.sidecarSuffix), Self.isRegularFile(sidecar) {
                present[coding] = sidecar
            }
        }
        for coding in accepted.ranked(ContentCoding.staticPreference) {
            guard let sidecar = present[coding] else { continue }
            if case .file(let descriptor, let size, let modified, let inode, _, _, _) = open(sidecar) {
                return .file(descriptor: descriptor, size: size, modified: modified, inode: inode, name: path, encoding: coding.token, hasVariants: true)
            }
        }
        let opened = open(path)
        guard case .file(let descriptor, let size, let modified, let inode, _, _, _) = opened else { return opened }
        return .file(descriptor: descriptor, size: size, modified: modified, inode: inode, name: path, encoding: nil, hasVariants: !present.isEmpty)
    }

    private static func isRegularFile(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG
    }

    private func open(_ path: String) -> Found {
        let descriptor = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return errno == EACCES ? .forbidden : .notFound }
        guard opensInsideRoot(descriptor) else {
            close(descriptor)
            return .forbidden
        }
        var info = stat()
        guard fstat(descriptor, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
            close(descriptor)
            return .notFound
        }
        return .file(
            descriptor: descriptor, size: Int(info.st_size), modified: info.st_mtim, inode: UInt64(info.st_ino), name: path,
            encoding: nil, hasVariants: false
        )
    }

    /// Whether the open `descriptor` is inside the root, as the kernel reports the file it opened
    /// (`/proc/self/fd`). ``access(_:)`` resolves a path before it is opened; a symbolic link swapped into that
    /// path in between would otherwise lead the open out of the root. Always `true` when links may be followed,
    /// and when the kernel cannot say (no `/proc`), where the check by ``access(_:)`` is all there is.
    private func opensInsideRoot(_ descriptor: CInt) -> Bool {
        guard !configuration.followSymlinks else { return true }
        var buffer = [UInt8](repeating: 0, count: Int(PATH_MAX) + 1)
        let length = buffer.withUnsafeMutableBufferPointer { bytes in
            bytes.withMemoryRebound(to: CChar.self) { readlink("/proc/self/fd/\(descriptor)", $0.baseAddress!, $0.count - 1) }
        }
        guard length > 0 else { return true }
        return isInsideRoot(String(decoding: buffer[..<length], as: UTF8.self))
    }

    /// Whether the resolved `path` is the root or below it.
    private func isInsideRoot(_ path: String) -> Bool {
        // Bytes, not `Character`s: as Strings, a root spelled in one Unicode normal form would "contain" a sibling
        // directory spelled in the other.
        let rootBytes = root.utf8
        guard path.utf8.starts(with: rootBytes) else { return false }
        if path.utf8.count == rootBytes.count || rootBytes.last == UInt8(ascii: "/") { return true }
        return path.utf8.dropFirst(rootBytes.count).first == UInt8(ascii: "/")
    }

    private func listing(of directory: String, relative: StaticPath.Resolved) -> Found {
        let descriptor = Glibc.open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else { return .forbidden }
        guard opensInsideRoot(descriptor), let handle = fdopendir(descriptor) else {
            close(descriptor)
            return .forbidden
        }
        defer { closedir(handle) }
        var names: [String] = []
        while let entry = readdir(handle) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name == "." || name == ".." || (name.hasPrefix(".") && !configuration.hidden) { continue }
            var info = stat()
            let isDirectory = stat(directory + "/" + name, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
            names.append(isDirectory ? name + "/" : name)
        }
        let title = HTML.escape("/" + relative.relativePath + (relative.segments.isEmpty ? "" : "/"))
        var html = "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Index of \(title)</title></head>\n"
        html += "<body><h1>Index of \(title)</h1>\n<ul>\n"
        if !relative.segments.isEmpty { html += "<li><a href=\"../\">../</a></li>\n" }
        for name in names.sorted() {
            html += "<li><a href=\"\(HTML.escape(URLPath.encodeSegment(name)))\">\(HTML.escape(name))</a></li>\n"
        }
        return .listing(html + "</ul></body></html>\n")
    }

    private static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    // MARK: response (event loop)

    private func reply(for found: Found, method: HTTPMethod, requestPath: String, query: String?, headers request: StaticRequestHeaders) -> Reply {
        switch found {
        case .notFound:
            return .response(.text(.notFound, "not found\n"))
        case .forbidden:
            return .response(.text(.forbidden, "forbidden\n"))
        case .redirectToDirectory:
            var redirect = EdgeResponse.text(.movedPermanently, "moved to \(requestPath)/\n")
            redirect.headers.add(name: "location", value: requestPath + "/" + (query.map { "?" + $0 } ?? ""))
            return .response(redirect)
        case .listing(let html):
            var response = EdgeResponse.text(.ok, html)
            response.headers.replaceOrAdd(name: "content-type", value: "text/html; charset=utf-8")
            return .response(response)
        case .memory(let entry), .compressed(let entry):
            return reply(for: entry, method: method, headers: request)
        case .file(let descriptor, let size, let modified, let inode, let name, let encoding, let hasVariants):
            let handle = NIOFileHandle(_deprecatedTakingOwnershipOfDescriptor: descriptor)
            let (headers, etag, lastModified) = Self.fileHeaders(
                size: size, modified: modified, inode: inode, name: name, encoding: encoding, hasVariants: hasVariants
            )
            switch Self.select(headers: headers, etag: etag, lastModified: lastModified, size: size, request: request) {
            case .answer(let reply):
                try? handle.close()
                return reply
            case .send(let status, let headers, let range):
                guard method != .HEAD, !range.isEmpty else {
                    try? handle.close()
                    return .file(FileReply(status: status, headers: headers, handle: nil, range: range))
                }
                return .file(FileReply(status: status, headers: headers, handle: handle, range: range))
            }
        }
    }
}

extension StaticFiles {
    /// The headers every response for a file carries, with its strong ETag and modification time.
    static func fileHeaders(
        size: Int, modified: timespec, inode: UInt64, name: String, encoding: String?, hasVariants: Bool
    ) -> (HTTPHeaders, etag: String, lastModified: Int) {
        let nanoseconds = Int(modified.tv_sec) * 1_000_000_000 + Int(modified.tv_nsec)
        let coding = encoding.map { "-" + $0 } ?? ""
        let etag = "\"\(String(inode, radix: 16))-\(String(size, radix: 16))-\(String(nanoseconds, radix: 16))\(coding)\""
        let lastModified = Int(modified.tv_sec)
        var headers: HTTPHeaders = [
            "content-type": MediaTypes.contentType(forPath: name[...]),
            "last-modified": HTTPDateHeader.format(time_t(lastModified)),
            "etag": etag,
            "accept-ranges": "bytes",
            "x-content-type-options": "nosniff",
        ]
        if let encoding { headers.add(name: "content-encoding", value: encoding) }
        if hasVariants { headers.add(name: "vary", value: "Accept-Encoding") }
        return (headers, etag, lastModified)
    }

    /// The response for a file held in memory: 304, 206 or 416 as for a file on disk.
    func reply(for entry: StaticFileCache.Entry, method: HTTPMethod, headers request: StaticRequestHeaders) -> Reply {
        let size = entry.body.readableBytes
        if request.ifNoneMatch == nil && request.ifModifiedSince == nil && request.range == nil {
            // The common case: the whole file, with the head prepared when the entry was made.
            return .file(FileReply(
                status: .ok, headers: entry.wholeHeaders, handle: nil, range: 0..<size,
                body: method == .HEAD ? nil : entry.body, http1Head: entry.wholeHTTP1Head,
                http2Block: entry.wholeHTTP2Block
            ))
        }
        switch Self.select(headers: entry.headers, etag: entry.etag, lastModified: entry.lastModified, size: size, request: request) {
        case .answer(let reply):
            return reply
        case .send(let status, let headers, let range):
            let body = method == .HEAD ? nil : entry.body.getSlice(at: entry.body.readerIndex + range.lowerBound, length: range.count)
            return .file(FileReply(status: status, headers: headers, handle: nil, range: range, body: body))
        }
    }

    /// What validators and `Range` make of a request for a file of `size` bytes.
    enum Selection {
        /// A complete answer without the file's bytes: 304 Not Modified or 416.
        case answer(Reply)
        /// Send `range` of the file with `status` (200 or 206) and `headers` (`Content-Length` included).
        case send(status: HTTPResponseStatus, headers: HTTPHeaders, range: Range<Int>)
    }

    /// Applies `If-None-Match` / `If-Modified-Since` (304), then `If-Range` and `Range` (206 or 416).
    static func select(headers: HTTPHeaders, etag: String, lastModified: Int, size: Int, request: StaticRequestHeaders) -> Selection {
        var headers = headers
        if ConditionalRequest.notModified(
            ifNoneMatch: request.ifNoneMatch, ifModifiedSince: request.ifModifiedSince, etag: etag, lastModified: lastModified
        ) {
            // No Content-Length: a 304's could only be the 200's (RFC 9110 §8.6), and 0 is not that.
            headers.remove(name: "content-type")
            return .answer(.file(FileReply(status: .notModified, headers: headers, handle: nil, range: 0..<0)))
        }
        var status = HTTPResponseStatus.ok
        var range = 0..<size
        if ConditionalRequest.rangeApplies(ifRange: request.ifRange, etag: etag, lastModified: lastModified) {
            switch ByteRangeRequest.parse(request.range, size: size) {
            case .whole, .multiple:
                break
            case .single(let part):
                status = .partialContent
                range = part
                headers.add(name: "content-range", value: "bytes \(part.lowerBound)-\(part.upperBound - 1)/\(size)")
            case .unsatisfiable:
                var refused = EdgeResponse.text(.rangeNotSatisfiable, "range not satisfiable\n")
                refused.headers.add(name: "content-range", value: "bytes */\(size)")
                // The size is that of the variant chosen by Accept-Encoding: say so, as the 200 and 206 do.
                for vary in headers[canonicalForm: "vary"] { refused.headers.add(name: "vary", value: String(vary)) }
                return .answer(.response(refused))
            }
        }
        headers.add(name: "content-length", value: String(range.count))
        return .send(status: status, headers: headers, range: range)
    }
}

/// HTML escaping for listings.
enum HTML {
    static func escape(_ text: String) -> String {
        var escaped = ""
        escaped.reserveCapacity(text.utf8.count)
        for character in text {
            switch character {
            case "&": escaped += "&amp;"
            case "<": escaped += "&lt;"
            case ">": escaped += "&gt;"
            case "\"": escaped += "&quot;"
            case "'": escaped += "&#39;"
            default: escaped.append(character)
            }
        }
        return escaped
    }
}

/// Percent-encoding of one path segment for links.
enum URLPath {
    static func encodeSegment(_ segment: String) -> String {
        var encoded = ""
        for byte in segment.utf8 {
            if PercentEncoding.isUnreserved(byte) || byte == UInt8(ascii: "/") {
                encoded.append(Character(Unicode.Scalar(byte)))
            } else {
                encoded += PercentEncoding.escape(byte)
            }
        }
        return encoded
    }
}

extension StaticFiles: Origin {
    /// Every method but `GET` and `HEAD` is answered 405 with `Allow: GET, HEAD`, `TRACE` included.
    var answersTrace: Bool { true }

    func immediateReply(to request: OriginRequest, loop: LoopState) -> Reply? {
        cachedReply(method: request.method, relative: request.relativePath, headers: request.headers.conditional, cache: loop.staticFiles)
    }

    func serve(_ request: OriginRequest, context: OriginContext) -> Dispatch {
        serve(
            method: request.method, relative: request.relativePath, requestPath: request.path, query: request.query,
            headers: request.headers.conditional, cache: context.loop.staticFiles, on: context.eventLoop
        )
    }
}
