@testable import EdgeCore
import NIOCore
import Testing

@Suite("Rate limiter (GCRA)")
struct RateLimiterTests {
    let alice = ClientAddress(high: 0, low: 0xFFFF_7F00_0001)
    let bob = ClientAddress(high: 0, low: 0xFFFF_7F00_0002)

    @Test("a burst is allowed at once, then one request per interval")
    func burstThenRate() {
        let limiter = RateLimiter(perSecond: 10, burst: 3)
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000_000)
        for _ in 0..<3 { #expect(limiter.check(alice, now: start) == .allow) }
        #expect(limiter.check(alice, now: start) == .reject(retryAfterSeconds: 1))
        #expect(limiter.check(alice, now: start + .milliseconds(99)) != .allow)
        #expect(limiter.check(alice, now: start + .milliseconds(100)) == .allow)
        #expect(limiter.check(alice, now: start + .milliseconds(100)) != .allow)
    }

    @Test("clients have separate budgets")
    func perClient() {
        let limiter = RateLimiter(perSecond: 1, burst: 1)
        let now = NIODeadline.uptimeNanoseconds(5_000_000_000)
        #expect(limiter.check(alice, now: now) == .allow)
        #expect(limiter.check(alice, now: now) == .reject(retryAfterSeconds: 1))
        #expect(limiter.check(bob, now: now) == .allow)
    }

    @Test("Retry-After covers the wait for a slow rate")
    func retryAfter() {
        let limiter = RateLimiter(perSecond: 0.1, burst: 1)
        let now = NIODeadline.uptimeNanoseconds(5_000_000_000)
        #expect(limiter.check(alice, now: now) == .allow)
        #expect(limiter.check(alice, now: now) == .reject(retryAfterSeconds: 10))
    }

    @Test("memory stays bounded however many addresses appear")
    func bounded() {
        let limiter = RateLimiter(perSecond: 1, burst: 5, maxClients: 1600)
        let now = NIODeadline.uptimeNanoseconds(5_000_000_000)
        for index in 0..<50_000 {
            _ = limiter.check(ClientAddress(high: 1, low: UInt64(index)), now: now)
        }
        #expect(limiter.trackedClients <= 1600)
    }
}

@Suite("Basic auth header")
struct BasicCredentialsTests {
    @Test("Basic credentials are decoded; anything else is refused", arguments: [
        ("Basic YWxpY2U6d29uZGVybGFuZA==", "alice", "wonderland"),
        ("basic YWxpY2U6YTpi", "alice", "a:b"),
    ])
    func decodes(header: String, user: String, password: String) {
        let credentials = BasicAuthenticator.credentials(header[...])
        #expect(credentials?.user == Array(user.utf8))
        #expect(credentials?.password == Array(password.utf8))
    }

    @Test("malformed headers are refused", arguments: ["Bearer abc", "Basic", "Basic !!!", "Basic YWxpY2U="])
    func refuses(header: String) {
        #expect(BasicAuthenticator.credentials(header[...]) == nil)
    }
}
