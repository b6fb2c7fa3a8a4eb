#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import NIOSSL

/// The checks of a configuration that look at the file system: every file and folder it names is read (or
/// looked at) the way the server will use it at start, so that a file `edge check-config` accepts does not
/// then fail to start for a missing certificate, an unreadable htpasswd file or a static root that is a file.
///
/// Run by ``ConfigurationLoader`` on the references ``FileReference`` it recorded while reading a file (for
/// `edge check-config` and for start-up alike), and by ``Overrides`` for a `state_dir` given by flag or
/// environment. Relative paths are resolved against the current directory, as the server resolves them.
enum ConfigurationFileChecks {
    /// Something a configuration names on disk, with the key that names it.
    enum FileReference: Sendable, Equatable {
        /// A TLS certificate chain and its private key (PEM files), checked as a pair so that a key that does
        /// not belong to the certificate is found too.
        case tlsPair(certificate: String, certificateKey: String, privateKey: String, privateKeyKey: String)
        /// The root folder of a static route.
        case staticRoot(String, key: String)
        /// The htpasswd file of a route's `basic_auth`.
        case htpasswd(String, key: String)
        /// The folder for generated state; `storesCertificate` when a TLS listener has no certificate of its
        /// own, so that the self-signed one is kept there.
        case stateDirectory(String, key: String, storesCertificate: Bool)
    }

    /// Every problem with the files `references` name, in their order; the issues carry keys but no lines.
    static func issues(for references: [FileReference]) -> [ConfigurationIssue] {
        var issues: [ConfigurationIssue] = []
        for reference in references {
            switch reference {
            case .tlsPair(let certificate, let certificateKey, let privateKey, let privateKeyKey):
                issues += tlsPairIssues(
                    certificate: certificate, certificateKey: certificateKey, privateKey: privateKey, privateKeyKey: privateKeyKey
                )
            case .staticRoot(let path, let key):
                if let problem = staticRootProblem(path) { issues.append(.init(key: key, message: problem)) }
            case .htpasswd(let path, let key):
                if let problem = BasicAuthenticator.fileProblem(path) { issues.append(.init(key: key, message: problem)) }
            case .stateDirectory(let path, let key, let storesCertificate):
                if let problem = stateDirectoryProblem(path, storesCertificate: storesCertificate) {
                    issues.append(.init(key: key, message: problem))
                }
            }
        }
        return issues
    }

    /// What is wrong with `path` as a `state_dir`, or `nil`. A folder that does not exist yet is fine: it is
    /// created when the self-signed certificate is first generated.
    ///
    /// When `storesCertificate` and the folder holds no certificate to reuse, the server will write one
    /// there: the folder, or the nearest existing folder above it, must then take a new file. That is tried
    /// (a temporary file is created and removed), since permission bits alone say nothing for root or for a
    /// file system such as `/proc`.
    static func stateDirectoryProblem(_ path: String, storesCertificate: Bool = false) -> String? {
        var info = stat()
        guard stat(path, &info) == 0 else {
            guard errno == ENOENT else { return "cannot use \(path) as the state folder: \(systemErrorText(errno))" }
            guard storesCertificate, let parent = nearestExistingFolder(above: path) else { return nil }
            return writeProblem(parent).map { "cannot create \(path) for the self-signed certificate: \(parent): \($0)" }
        }
        guard (info.st_mode & S_IFMT) == S_IFDIR else { return "\(path) exists and is not a folder" }
        guard storesCertificate else { return nil }
        let reusable = ["self-signed-cert.pem", "self-signed-key.pem"].allSatisfy { access(path + "/" + $0, R_OK) == 0 }
        if reusable { return nil }
        return writeProblem(path).map { "cannot store the self-signed certificate in \(path): \($0)" }
    }

    /// The closest folder above `path` that exists (`.` for a relative path with none), or `nil` when
    /// something above it exists but is not a folder (the ENOTDIR that creating it would meet).
    private static func nearestExistingFolder(above path: String) -> String? {
        var current = Substring(path)
        while true {
            while current.count > 1, current.hasSuffix("/") { current = current.dropLast() }
            guard let slash = current.lastIndex(of: "/") else { current = "."; break }
            current = slash == current.startIndex ? "/" : current[..<slash]
            var info = stat()
            if stat(String(current), &info) == 0 { break }
            if current == "/" { break }
        }
        var info = stat()
        guard stat(String(current), &info) == 0 else { return nil }
        return (info.st_mode & S_IFMT) == S_IFDIR ? String(current) : nil
    }

    /// Why a new file cannot be made in `folder`, or `nil` when one can.
    private static func writeProblem(_ folder: String) -> String? {
        var template = Array((folder + "/.edge-write-check-XXXXXX").utf8CString)
        let descriptor = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard descriptor >= 0 else { return systemErrorText(errno) }
        close(descriptor)
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        return nil
    }

    /// What is wrong with `path` as the root of a static route, or `nil`.
    static func staticRootProblem(_ path: String) -> String? {
        var info = stat()
        guard stat(path, &info) == 0 else { return "cannot serve \(path): \(systemErrorText(errno))" }
        return (info.st_mode & S_IFMT) == S_IFDIR ? nil : "\(path) is not a folder"
    }

    private static func tlsPairIssues(
        certificate: String, certificateKey: String, privateKey: String, privateKeyKey: String
    ) -> [ConfigurationIssue] {
        var issues: [ConfigurationIssue] = []
        if let problem = readProblem(certificate) {
            issues.append(.init(key: certificateKey, message: problem))
        } else if (try? NIOSSLCertificate.fromPEMFile(certificate))?.isEmpty ?? true {
            issues.append(.init(key: certificateKey, message: "\(certificate) is not a PEM certificate"))
        }
        if let problem = readProblem(privateKey) {
            issues.append(.init(key: privateKeyKey, message: problem))
        } else if (try? NIOSSLPrivateKey(file: privateKey, format: .pem)) == nil {
            issues.append(.init(key: privateKeyKey, message: "\(privateKey) is not an unencrypted PEM private key"))
        }
        if issues.isEmpty, (try? TLSContextFactory.makeContext(certificatePath: certificate, privateKeyPath: privateKey)) == nil {
            issues.append(.init(key: privateKeyKey, message: "\(privateKey) is not the private key of the certificate \(certificate)"))
        }
        return issues
    }

    /// Why `path` cannot be read as a file, or `nil` when it can.
    private static func readProblem(_ path: String) -> String? {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return "cannot read \(path): \(systemErrorText(errno))" }
        defer { close(descriptor) }
        var info = stat()
        guard fstat(descriptor, &info) == 0 else { return "cannot read \(path): \(systemErrorText(errno))" }
        return (info.st_mode & S_IFMT) == S_IFREG ? nil : "\(path) is not a regular file"
    }
}
