@testable import EdgeCore
import NIOCore
import NIOEmbedded
import Testing

@Suite("Demo backend")
struct DemoBackendTests {
    let backend = DemoBackend(configuration: .init(delay: .milliseconds(2), maxDelay: .seconds(10)))

    @Test("delay_ms overrides the delay, capped at max_delay_ms", arguments: [
        (nil, TimeAmount.milliseconds(2)), ("delay_ms=50", .milliseconds(50)), ("a=1&delay_ms=0", .zero),
        ("delay_ms=999999", .seconds(10)), ("delay_ms=-5", .milliseconds(2)), ("delay_ms=abc", .milliseconds(2)),
    ])
    func delay(query: String?, expected: TimeAmount) {
        #expect(backend.delay(for: query?[...]) == expected)
    }

    @Test("answers only after the delay, on the event loop, numbering each fetch")
    func answersAfterDelay() throws {
        let loop = EmbeddedEventLoop()
        let first = backend.fetch(method: "GET", target: "/x?delay_ms=100", query: "delay_ms=100", bodyBytes: 0, on: loop)
        loop.advanceTime(by: .milliseconds(99))
        var done = false
        first.assumeIsolated().whenComplete { _ in done = true }
        #expect(!done)
        loop.advanceTime(by: .milliseconds(1))
        let response = try first.wait()
        #expect(response.status == .ok)
        #expect(String(buffer: response.body) == "Hello from the Edge demo backend\nGET /x?delay_ms=100\n")
        let second = backend.fetch(method: "POST", target: "/y", query: nil, bodyBytes: 3, on: loop)
        loop.advanceTime(by: .milliseconds(2))
        let next = try second.wait()
        #expect(Int(next.headers.first(name: "x-demo-fetch") ?? "") == Int(response.headers.first(name: "x-demo-fetch") ?? "")! + 1)
        #expect(String(buffer: next.body).hasSuffix("request body: 3 bytes\n"))
    }
}
