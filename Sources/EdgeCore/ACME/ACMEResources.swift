// The JSON objects of RFC 8555 §7.1 that this client reads, with only the members it uses. Decoding is lenient
// about members it does not know (CAs add their own) and strict about the ones it needs: a missing URL is an
// `ACMEError.badResponse` rather than a crash.

/// The directory (§7.1.1): where each resource lives. Never hard-coded: Pebble randomises the paths on purpose.
public struct ACMEDirectory: Sendable, Decodable, Equatable {
    public var newNonce: String
    public var newAccount: String
    public var newOrder: String
    public var revokeCert: String
    public var keyChange: String?
    public var meta: Meta?

    public struct Meta: Sendable, Decodable, Equatable {
        public var termsOfService: String?
        public var externalAccountRequired: Bool?
    }
}

/// An identifier of an order or authorization; this client only asks for `dns` ones.
public struct ACMEIdentifier: Sendable, Codable, Equatable, Hashable {
    public var type: String
    public var value: String

    public init(dns name: String) {
        self.type = "dns"
        self.value = name
    }
}

/// An order (§7.1.3).
public struct ACMEOrder: Sendable, Decodable, Equatable {
    /// `pending`, `ready`, `processing`, `valid` or `invalid`.
    public var status: String
    public var identifiers: [ACMEIdentifier]
    public var authorizations: [String]
    public var finalize: String
    public var certificate: String?
    public var error: ACMEProblem?
}

/// An authorization (§7.1.4): one identifier and the challenges that can prove control of it.
public struct ACMEAuthorization: Sendable, Decodable, Equatable {
    /// `pending`, `valid`, `invalid`, `deactivated`, `expired` or `revoked`.
    public var status: String
    public var identifier: ACMEIdentifier
    public var challenges: [ACMEChallenge]
    public var wildcard: Bool?
}

/// A challenge (§7.1.5, §8).
public struct ACMEChallenge: Sendable, Decodable, Equatable {
    public var type: String
    public var url: String
    /// `pending`, `processing`, `valid` or `invalid`.
    public var status: String
    public var token: String?
    public var error: ACMEProblem?
}
