import EdgeCore

// bench/cache-sim: the shared cache alone. Usage: edge-cache-sim [objects-for-the-purge]
let arguments = CommandLine.arguments
let objects = arguments.count > 1 ? Int(arguments[1]) ?? 1_000_000 : 1_000_000

let onlyPurge = arguments.count > 2 && arguments[2] == "purge"
if !onlyPurge {
print("admission on a Zipf trace with one-off URLs mixed in (hit ratio, same trace for both):")
print("capacity  keys     requests  one-off  zipf-s  lru     tinylfu")
for (capacity, oneOff, exponent) in [(1000, 0.0, 0.9), (1000, 0.3, 0.9), (1000, 0.5, 0.9), (5000, 0.3, 0.8), (5000, 0.5, 1.0)] {
    let keys = 100_000, requests = 1_000_000
    let lru = CacheSimulation.hitRatio(admission: false, capacity: capacity, keys: keys, requests: requests, oneOff: oneOff, exponent: exponent)
    let tinyLFU = CacheSimulation.hitRatio(admission: true, capacity: capacity, keys: keys, requests: requests, oneOff: oneOff, exponent: exponent)
    func percent(_ value: Double) -> String { String(format: "%.1f %%", value * 100) }
    print("\(capacity)      \(keys)   \(requests)   \(oneOff)      \(exponent)     \(percent(lru))  \(percent(tinyLFU))")
}

}

print("\npurge by tag among \(objects) entries (each tag on 1 % of them):")
for _ in 0..<3 {
    let result = CacheSimulation.purgeByTag(objects: objects, tags: 100)
    print(String(format: "  filled %d, purged %d by tag in %.2f ms; a purge by prefix (a scan of every key) took %.2f ms",
                 result.filled, result.purged, result.seconds * 1000, result.scanSeconds * 1000))
}
