/// `Content-Type` by file extension, with `charset=utf-8` for text types (the common subset of nginx's
/// `mime.types` and the IANA registry that web servers meet in practice).
enum MediaTypes {
    /// The type for `path`'s extension; `application/octet-stream` when unknown.
    static func contentType(forPath path: Substring) -> String {
        // The bytes after the last `.` of the last segment; bytes, so no combining mark can hide a `.` or `/`.
        let bytes = path.utf8
        guard let dot = bytes.lastIndex(of: UInt8(ascii: ".")), !bytes[dot...].contains(UInt8(ascii: "/")) else { return fallback }
        let ext = bytes[bytes.index(after: dot)...]
        guard ext.count <= 16, ext.allSatisfy({ $0 < 0x80 }) else { return fallback }
        return table[String(decoding: ext.map(\.asciiLowercased), as: UTF8.self)] ?? fallback
    }

    /// Whether responses of this type are worth compressing.
    static func isCompressible(_ contentType: String) -> Bool {
        contentType.hasPrefix("text/") || contentType.contains("json") || contentType.contains("javascript")
            || contentType.contains("xml") || contentType.hasPrefix("image/svg") || contentType == "application/wasm"
    }

    static let fallback = "application/octet-stream"

    private static let utf8 = "; charset=utf-8"
    private static let table: [String: String] = [
        "html": "text/html" + utf8, "htm": "text/html" + utf8, "shtml": "text/html" + utf8,
        "css": "text/css" + utf8, "js": "text/javascript" + utf8, "mjs": "text/javascript" + utf8,
        "txt": "text/plain" + utf8, "text": "text/plain" + utf8, "log": "text/plain" + utf8, "md": "text/markdown" + utf8,
        "csv": "text/csv" + utf8, "tsv": "text/tab-separated-values" + utf8, "xml": "text/xml" + utf8,
        "ics": "text/calendar" + utf8, "vtt": "text/vtt" + utf8, "appcache": "text/cache-manifest" + utf8,
        "json": "application/json", "map": "application/json", "jsonld": "application/ld+json",
        "webmanifest": "application/manifest+json", "rss": "application/rss+xml", "atom": "application/atom+xml",
        "xhtml": "application/xhtml+xml", "wasm": "application/wasm", "pdf": "application/pdf",
        "zip": "application/zip", "gz": "application/gzip", "tgz": "application/gzip", "tar": "application/x-tar",
        "bz2": "application/x-bzip2", "xz": "application/x-xz", "7z": "application/x-7z-compressed",
        "rar": "application/vnd.rar", "br": "application/octet-stream", "zst": "application/zstd",
        "bin": "application/octet-stream", "exe": "application/octet-stream", "dll": "application/octet-stream",
        "iso": "application/octet-stream", "dmg": "application/octet-stream", "deb": "application/vnd.debian.binary-package",
        "rpm": "application/x-rpm", "jar": "application/java-archive", "apk": "application/vnd.android.package-archive",
        "doc": "application/msword", "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xls": "application/vnd.ms-excel", "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "ppt": "application/vnd.ms-powerpoint", "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "odt": "application/vnd.oasis.opendocument.text", "ods": "application/vnd.oasis.opendocument.spreadsheet",
        "odp": "application/vnd.oasis.opendocument.presentation", "rtf": "application/rtf", "epub": "application/epub+zip",
        "ps": "application/postscript", "eps": "application/postscript", "ai": "application/postscript",
        "swf": "application/x-shockwave-flash", "woff": "font/woff", "woff2": "font/woff2", "ttf": "font/ttf",
        "otf": "font/otf", "eot": "application/vnd.ms-fontobject",
        "png": "image/png", "apng": "image/apng", "jpg": "image/jpeg", "jpeg": "image/jpeg", "gif": "image/gif",
        "webp": "image/webp", "avif": "image/avif", "svg": "image/svg+xml", "svgz": "image/svg+xml", "ico": "image/x-icon",
        "bmp": "image/bmp", "tif": "image/tiff", "tiff": "image/tiff", "heic": "image/heic", "jxl": "image/jxl",
        "mp3": "audio/mpeg", "ogg": "audio/ogg", "oga": "audio/ogg", "opus": "audio/ogg", "wav": "audio/wav",
        "flac": "audio/flac", "aac": "audio/aac", "m4a": "audio/mp4", "mid": "audio/midi", "midi": "audio/midi",
        "weba": "audio/webm",
        "mp4": "video/mp4", "m4v": "video/mp4", "webm": "video/webm", "ogv": "video/ogg", "mov": "video/quicktime",
        "avi": "video/x-msvideo", "mkv": "video/x-matroska", "mpeg": "video/mpeg", "mpg": "video/mpeg",
        "ts": "video/mp2t", "m3u8": "application/vnd.apple.mpegurl", "mpd": "application/dash+xml", "3gp": "video/3gpp",
        "flv": "video/x-flv", "wmv": "video/x-ms-wmv",
        "crt": "application/x-x509-ca-cert", "pem": "application/x-pem-file", "der": "application/x-x509-ca-cert",
        "p12": "application/x-pkcs12", "asc": "application/pgp-signature", "sig": "application/pgp-signature",
        "yaml": "application/yaml", "yml": "application/yaml", "toml": "application/toml",
        "sh": "application/x-sh", "py": "text/x-python" + utf8, "swift": "text/x-swift" + utf8,
        "c": "text/x-c" + utf8, "h": "text/x-c" + utf8, "go": "text/x-go" + utf8, "rs": "text/x-rust" + utf8,
    ]
}
