/// How often keys were asked for lately, approximately: a count-min sketch of 4-bit counters that halves every
/// counter after a sample of lookups (TinyLFU's aging), so that popularity fades. The cache's admission policy
/// uses it: a new response displaces the next one to be evicted only if its key is asked for at least as often, so
/// that a flood of one-off URLs cannot flush the hot set (Einziger, Friedman & Manes, "TinyLFU", 2017).
///
/// Not thread-safe: it lives inside ``SharedResponseCache``'s mutex.
struct FrequencySketch {
    private var counters: [UInt8]
    private let mask: Int
    private let sampleSize: Int
    private var additions = 0

    /// A sketch for a cache of about `capacity` entries.
    init(capacity: Int) {
        var width = 1024
        while width < capacity * 4, width < 1 << 22 { width <<= 1 }
        counters = Array(repeating: 0, count: width)
        mask = width - 1
        sampleSize = max(width, capacity * 10)
    }

    /// The four counter slots of a key.
    private func slots(_ hash: Int) -> (Int, Int, Int, Int) {
        let h = UInt64(bitPattern: Int64(hash))
        let a = h &* 0x9E37_79B9_7F4A_7C15
        let b = (h ^ (h >> 29)) &* 0xBF58_476D_1CE4_E5B9
        return (Int(truncatingIfNeeded: a >> 40) & mask, Int(truncatingIfNeeded: a >> 16) & mask,
                Int(truncatingIfNeeded: b >> 40) & mask, Int(truncatingIfNeeded: b >> 16) & mask)
    }

    /// Counts one lookup of the key with this hash.
    mutating func increment(_ hash: Int) {
        let (s0, s1, s2, s3) = slots(hash)
        for slot in [s0, s1, s2, s3] where counters[slot] < 15 { counters[slot] += 1 }
        additions += 1
        if additions >= sampleSize {
            additions = 0
            for index in counters.indices { counters[index] >>= 1 }
        }
    }

    /// How often the key with this hash was looked up lately (an overestimate, never an underestimate).
    func estimate(_ hash: Int) -> Int {
        let (s0, s1, s2, s3) = slots(hash)
        return Int(min(counters[s0], counters[s1], counters[s2], counters[s3]))
    }
}
