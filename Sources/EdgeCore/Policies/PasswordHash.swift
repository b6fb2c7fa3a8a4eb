import Crypto
import Foundation
import HummingbirdBcrypt

/// A password hash from an htpasswd file, in the formats nginx's `auth_basic_user_file` accepts from Apache's
/// tools: bcrypt (`$2a$`, `$2b$`, `$2y$`; `htpasswd -B`), Apache MD5-crypt (`$apr1$`; `htpasswd -m`, the tool's
/// old default), `{SHA}` (`htpasswd -s`) and `{SSHA}` (salted SHA-1, from LDAP tools).
///
/// Passwords are checked as the bytes the client sent. Every comparison of digests is constant-time.
enum PasswordHash: Sendable, Equatable {
    /// bcrypt, with its prefix normalised to `$2b$` (`$2y$` is PHP's name for the same algorithm, which the
    /// bcrypt code does not know by that name).
    case bcrypt(hash: String, cost: Int)
    /// Apache MD5-crypt: up to 8 salt characters and the 22-character encoded digest.
    case apr1(salt: [UInt8], digest: [UInt8])
    /// Unsalted SHA-1 (`{SHA}` + base64 of the 20-byte digest).
    case sha1(digest: [UInt8])
    /// Salted SHA-1 (`{SSHA}` + base64 of the digest followed by the salt).
    case ssha1(digest: [UInt8], salt: [UInt8])

    /// Why a hash was not accepted.
    enum Problem: Error, Equatable, CustomStringConvertible {
        case unknownFormat
        case malformed(String)

        var description: String {
            switch self {
            case .unknownFormat:
                return "not a password hash Edge can verify (bcrypt $2a$/$2b$/$2y$, $apr1$, {SHA} or {SSHA}; "
                    + "create one with htpasswd -B)"
            case .malformed(let why): return why
            }
        }
    }

    /// Parses the hash part of an htpasswd line.
    static func parse(_ text: Substring) -> Result<PasswordHash, Problem> {
        let bytes = Array(text.utf8)
        if bytes.starts(with: "$2a$".utf8) || bytes.starts(with: "$2b$".utf8) || bytes.starts(with: "$2y$".utf8) {
            guard bytes.count == 60 else { return .failure(.malformed("a bcrypt hash has 60 characters, this one \(bytes.count)")) }
            // `$2b$NN$`: the cost (log2 of the rounds) bcrypt allows is 04 to 31.
            guard bytes[6] == UInt8(ascii: "$"), let high = bytes[4].decimalDigit, let low = bytes[5].decimalDigit,
                (4...31).contains(Int(high) * 10 + Int(low))
            else { return .failure(.malformed("the bcrypt cost (the number after $2b$) must be 04 to 31")) }
            guard bytes[7...].allSatisfy({ Self.bcryptAlphabet.contains($0) }) else {
                return .failure(.malformed("a bcrypt hash has a character outside its alphabet"))
            }
            var normal = bytes
            normal[2] = UInt8(ascii: "b")
            return .success(.bcrypt(hash: String(decoding: normal, as: UTF8.self), cost: Int(high) * 10 + Int(low)))
        }
        if bytes.starts(with: "$apr1$".utf8) {
            let rest = bytes.dropFirst(6)
            guard let dollar = rest.firstIndex(of: UInt8(ascii: "$")) else {
                return .failure(.malformed("an $apr1$ hash is $apr1$salt$digest"))
            }
            let salt = Array(rest[..<dollar]), digest = Array(rest[(dollar + 1)...])
            guard (1...8).contains(salt.count), digest.count == 22,
                salt.allSatisfy({ Self.cryptAlphabet.contains($0) }), digest.allSatisfy({ Self.cryptAlphabet.contains($0) })
            else { return .failure(.malformed("an $apr1$ hash has a salt of 1 to 8 and a digest of 22 characters from ./0-9A-Za-z")) }
            return .success(.apr1(salt: salt, digest: digest))
        }
        if bytes.starts(with: "{SHA}".utf8) {
            guard let decoded = Data(base64Encoded: Data(bytes.dropFirst(5))), decoded.count == 20 else {
                return .failure(.malformed("a {SHA} hash is the base64 of a 20-byte SHA-1 digest"))
            }
            return .success(.sha1(digest: Array(decoded)))
        }
        if bytes.starts(with: "{SSHA}".utf8) {
            guard let decoded = Data(base64Encoded: Data(bytes.dropFirst(6))), decoded.count > 20 else {
                return .failure(.malformed("an {SSHA} hash is the base64 of a 20-byte SHA-1 digest and a salt"))
            }
            return .success(.ssha1(digest: Array(decoded.prefix(20)), salt: Array(decoded.dropFirst(20))))
        }
        return .failure(.unknownFormat)
    }

    /// The format's name, for messages.
    var formatName: String {
        switch self {
        case .bcrypt: return "bcrypt"
        case .apr1: return "$apr1$ (MD5-crypt)"
        case .sha1: return "{SHA} (unsalted SHA-1)"
        case .ssha1: return "{SSHA} (salted SHA-1)"
        }
    }

    /// Whether the format is too fast to resist guessing from a stolen file (everything but bcrypt).
    var isWeak: Bool {
        if case .bcrypt = self { return false }
        return true
    }

    /// The kind of hash — its format, and for bcrypt its cost — whose checks all cost the same.
    var kind: String {
        switch self {
        case .bcrypt(_, let cost): return "bcrypt-\(cost)"
        case .apr1: return "apr1"
        case .sha1: return "sha1"
        case .ssha1: return "ssha1"
        }
    }

    /// Whether `password` (the bytes the client sent) matches.
    func verify(_ password: [UInt8]) -> Bool {
        switch self {
        case .bcrypt(let hash, _):
            // The bcrypt code takes a C string: a NUL would end the password early, so none is accepted; a
            // password that is not UTF-8 cannot be what `htpasswd` was given as a Swift String either.
            guard !password.contains(0), let text = String(validating: password, as: UTF8.self) else {
                _ = Bcrypt.verify("", hash: hash)  // the same cost either way
                return false
            }
            return Bcrypt.verify(text, hash: hash)
        case .apr1(let salt, let digest):
            return Self.constantTimeEqual(Self.apr1Digest(password: password, salt: salt), digest)
        case .sha1(let digest):
            return Self.constantTimeEqual(Array(Insecure.SHA1.hash(data: password)), digest)
        case .ssha1(let digest, let salt):
            return Self.constantTimeEqual(Array(Insecure.SHA1.hash(data: password + salt)), digest)
        }
    }

    /// A hash of a random password in the same format and at the same cost as `self`, for checking unknown users
    /// at the same price as known ones.
    func dummy() -> PasswordHash {
        let random = Array(UUID().uuidString.utf8)
        switch self {
        case .bcrypt(_, let cost):
            return .bcrypt(hash: Bcrypt.hash(String(decoding: random, as: UTF8.self), cost: UInt8(cost)), cost: cost)
        case .apr1:
            let salt = Array(random.prefix(8).map { Self.cryptAlphabet[Int($0) % Self.cryptAlphabet.count] })
            return .apr1(salt: salt, digest: Self.apr1Digest(password: random, salt: salt))
        case .sha1:
            return .sha1(digest: Array(Insecure.SHA1.hash(data: random)))
        case .ssha1(_, let salt):
            let newSalt = Array(random.suffix(salt.count))
            return .ssha1(digest: Array(Insecure.SHA1.hash(data: random + newSalt)), salt: newSalt)
        }
    }

    // MARK: Apache MD5-crypt

    /// `./0-9A-Za-z`, the alphabet of crypt(3) encodings.
    static let cryptAlphabet: [UInt8] = Array("./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".utf8)
    /// bcrypt's base64 alphabet (the same characters in another order).
    private static let bcryptAlphabet = Set(cryptAlphabet)

    /// The 22-character encoded MD5-crypt digest of `password` with `salt` and the `$apr1$` magic (Apache's
    /// `apr_md5_encode`, after Poul-Henning Kamp's FreeBSD `crypt-md5`).
    static func apr1Digest(password: [UInt8], salt: [UInt8]) -> [UInt8] {
        let magic = Array("$apr1$".utf8)
        var context = Insecure.MD5()
        context.update(data: password + magic + salt)
        let alternate = Array(Insecure.MD5.hash(data: password + salt + password))
        var remaining = password.count
        while remaining > 0 {
            context.update(data: alternate.prefix(min(16, remaining)))
            remaining -= 16
        }
        var bits = password.count
        while bits > 0 {
            context.update(data: (bits & 1) != 0 ? [0] : [password.first ?? 0])
            bits >>= 1
        }
        var final = Array(context.finalize())
        for round in 0..<1000 {
            var step = Insecure.MD5()
            step.update(data: (round & 1) != 0 ? password : final)
            if round % 3 != 0 { step.update(data: salt) }
            if round % 7 != 0 { step.update(data: password) }
            step.update(data: (round & 1) != 0 ? final : password)
            final = Array(step.finalize())
        }
        var encoded: [UInt8] = []
        encoded.reserveCapacity(22)
        func put(_ value: Int, _ count: Int) {
            var value = value
            for _ in 0..<count {
                encoded.append(cryptAlphabet[value & 0x3F])
                value >>= 6
            }
        }
        for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
            put(Int(final[a]) << 16 | Int(final[b]) << 8 | Int(final[c]), 4)
        }
        put(Int(final[11]), 2)
        return encoded
    }

    /// Whether `a` and `b` are equal, in a time that depends only on their lengths.
    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for index in a.indices { difference |= a[index] ^ b[index] }
        return difference == 0
    }
}

extension UInt8 {
    /// The value of an ASCII decimal digit, or `nil`.
    fileprivate var decimalDigit: UInt8? {
        self >= UInt8(ascii: "0") && self <= UInt8(ascii: "9") ? self - UInt8(ascii: "0") : nil
    }
}
