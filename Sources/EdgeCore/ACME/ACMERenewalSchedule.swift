public import Foundation

/// When to renew a certificate and when to try again after a failure: plain arithmetic, kept apart from
/// ``ACMEManager`` so that it can be tested without a CA.
public struct ACMERenewalSchedule: Sendable, Equatable {
    /// Renew this long before `notAfter` (the configuration's `renew_before_days`)...
    public var renewBefore: TimeInterval
    /// ...or, when that margin is longer than the rest of the lifetime after this fraction of it, at this
    /// fraction: a 6-day certificate (Let's Encrypt's short-lived profile) renewed 30 days before expiry would
    /// be renewed at once and forever, so it is renewed after 4 days instead.
    public var lifetimeFraction: Double = 2.0 / 3.0
    /// Spread renewals over up to this share of the lifetime before the computed time...
    public var jitterFraction: Double = 0.05
    /// ...but never more than this, so that a long-lived certificate is not renewed days early.
    public var maximumJitter: TimeInterval = 86_400
    /// The first retry after a failure, doubled after each further failure...
    public var backoffInitial: TimeInterval = 60
    /// ...up to this.
    public var backoffMaximum: TimeInterval = 86_400
    /// A CA's `Retry-After` is honoured up to this far ahead (a week: a longer one is likely a mistake, and a
    /// certificate left to expire is worse than one more refused attempt).
    public var retryAfterMaximum: TimeInterval = 7 * 86_400

    public init(renewBeforeDays: Int) {
        self.renewBefore = TimeInterval(renewBeforeDays) * 86_400
    }

    /// The time a certificate valid from `notBefore` to `notAfter` becomes due, before jitter:
    /// `notAfter - min(renewBefore, (1 - lifetimeFraction) × lifetime)`. With the defaults, a 90-day
    /// certificate renews 30 days before expiry (a `renew_before_days` of 10 gives 10 days, one of 50 still
    /// gives 30: the margin is at most a third of the lifetime) and a 6-day one after 4 days.
    public func dueDate(notBefore: Date, notAfter: Date) -> Date {
        let lifetime = max(0, notAfter.timeIntervalSince(notBefore))
        let margin = min(renewBefore, lifetime * (1 - lifetimeFraction))
        return notAfter.addingTimeInterval(-margin)
    }

    /// The time to renew, moved earlier by `random` (in 0..<1) times the jitter window, so that many sites (or
    /// many servers sharing a CA) do not all renew in the same second.
    public func renewalDate(notBefore: Date, notAfter: Date, random: Double) -> Date {
        let lifetime = max(0, notAfter.timeIntervalSince(notBefore))
        let window = min(lifetime * jitterFraction, maximumJitter)
        let jitter = window * min(max(random, 0), 1)
        return max(notBefore, dueDate(notBefore: notBefore, notAfter: notAfter).addingTimeInterval(-jitter))
    }

    /// The wait after the `failures`-th consecutive failure (1 for the first): doubling from
    /// ``backoffInitial`` up to ``backoffMaximum``, with up to 10% added by `random` so that retries of several
    /// servers spread out, and never less than the CA's `retryAfter` (bounded by ``retryAfterMaximum``).
    public func retryDelay(failures: Int, random: Double, now: Date, retryAfter: Date?) -> TimeInterval {
        let exponent = Double(min(max(failures, 1) - 1, 40))
        var delay = min(backoffInitial * pow(2, exponent), backoffMaximum)
        delay += delay * 0.1 * min(max(random, 0), 1)
        if let retryAfter {
            delay = max(delay, min(retryAfter.timeIntervalSince(now), retryAfterMaximum))
        }
        return delay
    }
}
