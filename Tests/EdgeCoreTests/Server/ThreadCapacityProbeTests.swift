@testable import EdgeCore
import Foundation
import Testing

@Suite("Thread capacity probe")
struct ThreadCapacityProbeTests {
    private func count(_ directory: String) throws -> Int {
        try FileManager.default.contentsOfDirectory(atPath: directory).count
    }

    /// Other suites run alongside and open descriptors and threads of their own, so the bounds leave them
    /// room; a probe that kept its pipe or its threads would leave 50 descriptors or 800 threads behind.
    @Test("threads the system allows start and all end, leaving no descriptor or thread behind")
    func allowedThreadsPass() throws {
        let descriptors = try count("/proc/self/fd")
        let threads = try count("/proc/self/task")
        for _ in 0..<50 {
            #expect(ThreadCapacityProbe.check(threads: 16) == nil)
        }
        #expect(try count("/proc/self/fd") < descriptors + 25)
        #expect(try count("/proc/self/task") < threads + 100)
    }
}
