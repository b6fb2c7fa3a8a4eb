/// A read-only map from byte strings to values, looked up in constant time by a minimal perfect hash built once,
/// when the configuration is loaded ("hash and displace", as CHD: Belazzougui, Botelho and Dietzfelbinger, 2009).
///
/// Each key is hashed once; the high half of the hash picks a bucket, the bucket's stored displacement is mixed
/// with the whole hash to pick a slot, and the slot's key is compared byte for byte. A look-up therefore costs one
/// pass over the key for the hash, one pass for the comparison and two array reads, whatever the number of keys:
/// no probing, no chains, no collisions to walk. The table has exactly as many slots as keys.
///
/// Keys are bytes, never `Character`s. With `foldsCase`, ASCII letters are compared without case (host names);
/// keys are stored folded.
struct PerfectHashTable<Value>: @unchecked Sendable {
    private var displacements: [UInt32] = []
    private var keys: [[UInt8]] = []
    private var values: [Value] = []
    private var seed: UInt64 = 0
    let foldsCase: Bool

    /// The number of keys.
    var count: Int { keys.count }

    /// Builds the table. Later duplicates of a key are dropped (the first one wins), so callers check for
    /// duplicates themselves where they are an error.
    init(_ entries: [(key: [UInt8], value: Value)], foldsCase: Bool = false) {
        self.foldsCase = foldsCase
        var seen = Set<[UInt8]>()
        var unique: [(key: [UInt8], value: Value)] = []
        unique.reserveCapacity(entries.count)
        for entry in entries {
            let key = foldsCase ? entry.key.map(Self.fold) : entry.key
            if seen.insert(key).inserted { unique.append((key, entry.value)) }
        }
        guard !unique.isEmpty else { return }
        // A global seed makes a rare failure (two keys with the same 64-bit hash in one bucket) retryable.
        var globalSeed: UInt64 = 0x243F_6A88_85A3_08D3
        while true {
            if let built = Self.place(unique.map(\.key), seed: globalSeed) {
                displacements = built.displacements
                keys = Array(repeating: [], count: unique.count)
                var slotted: [Value?] = Array(repeating: nil, count: unique.count)
                for (index, slot) in built.slots.enumerated() {
                    keys[slot] = unique[index].key
                    slotted[slot] = unique[index].value
                }
                values = slotted.map { $0! }
                seed = globalSeed
                return
            }
            globalSeed = Self.mix(globalSeed &+ 0x9E37_79B9_7F4A_7C15)
        }
    }

    /// The value of `key`, if the table has it.
    @inline(__always)
    func value<Bytes: Collection<UInt8>>(for key: Bytes) -> Value? {
        guard !keys.isEmpty else { return nil }
        let slot: Int
        if let found = key.withContiguousStorageIfAvailable({ slotOf(hash: Self.hash($0, seed: seed, folding: foldsCase)) }) {
            slot = found
        } else {
            slot = slotOf(hash: Self.hash(key, seed: seed, folding: foldsCase))
        }
        let stored = keys[slot]
        guard stored.count == key.count else { return nil }
        if foldsCase {
            guard zip(stored, key).allSatisfy({ $0 == Self.fold($1) }) else { return nil }
        } else {
            guard stored.elementsEqual(key) else { return nil }
        }
        return values[slot]
    }

    /// Every key and value, in slot order.
    var entries: [(key: [UInt8], value: Value)] { Array(zip(keys, values)).map { ($0.0, $0.1) } }

    @inline(__always)
    private func slotOf(hash: UInt64) -> Int {
        let bucket = Int((hash >> 32) % UInt64(displacements.count))
        return Self.slot(hash: hash, displacement: displacements[bucket], count: keys.count)
    }

    @inline(__always)
    private static func slot(hash: UInt64, displacement: UInt32, count: Int) -> Int {
        Int(mix(hash ^ (UInt64(displacement) &* 0x9E37_79B9_7F4A_7C15)) % UInt64(count))
    }

    /// Places every key: buckets from the largest down each get the first displacement that sends all their keys
    /// to free slots. With one bucket per key, most buckets hold zero, one or two keys, and the search for the
    /// last single keys is the one cost that grows (about n·ln n hash mixes in all, a few milliseconds for 100,000).
    private static func place(_ keys: [[UInt8]], seed: UInt64) -> (displacements: [UInt32], slots: [Int])? {
        let count = keys.count
        let hashes = keys.map { key in key.withUnsafeBufferPointer { hash($0, seed: seed, folding: false) } }
        var buckets: [[Int]] = Array(repeating: [], count: count)
        for (index, hash) in hashes.enumerated() { buckets[Int((hash >> 32) % UInt64(count))].append(index) }
        let order = buckets.indices.sorted { buckets[$0].count > buckets[$1].count }
        var taken = [Bool](repeating: false, count: count)
        var displacements = [UInt32](repeating: 0, count: count)
        var slots = [Int](repeating: 0, count: count)
        var trial: [Int] = []
        for bucket in order {
            let members = buckets[bucket]
            if members.isEmpty { break }
            var displacement: UInt32 = 0
            search: while true {
                trial.removeAll(keepingCapacity: true)
                for member in members {
                    let slot = slot(hash: hashes[member], displacement: displacement, count: count)
                    if taken[slot] || trial.contains(slot) {
                        if displacement == UInt32.max { return nil }
                        displacement += 1
                        // Keys with equal hashes can never be told apart by a displacement: start again.
                        if displacement > 64 * UInt32(min(count, 1 << 20)) + 1024 { return nil }
                        continue search
                    }
                    trial.append(slot)
                }
                break
            }
            displacements[bucket] = displacement
            for (member, slot) in zip(members, trial) {
                taken[slot] = true
                slots[member] = slot
            }
        }
        return (displacements, slots)
    }

    /// FNV-1a over the bytes (ASCII letters folded when asked), finished with a 64-bit mix so that both halves of
    /// the result are well spread.
    @inline(__always)
    private static func hash<Bytes: Sequence<UInt8>>(_ bytes: Bytes, seed: UInt64, folding: Bool) -> UInt64 {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325 ^ seed
        if folding {
            for byte in bytes { hash = (hash ^ UInt64(fold(byte))) &* 0x0000_0100_0000_01B3 }
        } else {
            for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
        }
        return mix(hash)
    }

    /// MurmurHash3's 64-bit finaliser.
    @inline(__always)
    private static func mix(_ value: UInt64) -> UInt64 {
        var x = value
        x ^= x >> 33
        x = x &* 0xFF51_AFD7_ED55_8CCD
        x ^= x >> 33
        x = x &* 0xC4CE_B9FE_1A85_EC53
        x ^= x >> 33
        return x
    }

    @inline(__always)
    static func fold(_ byte: UInt8) -> UInt8 {
        byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte
    }
}
