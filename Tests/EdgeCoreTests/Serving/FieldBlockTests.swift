@testable import EdgeCore
import NIOCore
import NIOHTTP1
import Testing

@Suite("FieldBlock: removing the fields a list names")
struct FieldBlockTests {
    private func names(_ block: FieldBlock) -> [String] {
        block.headers.map { $0.name }
    }

    @Test("a few names and many are removed alike, in any case, keeping the order of the rest")
    func removesByName() {
        var block = FieldBlock()
        for name in ["Keep-A", "x-hop", "X-HOP", "keep-b", "Other-Hop", "keep-c"] { block.add(name: name, value: "v") }
        var few = block
        few.remove(names: [Array("x-hop".utf8), Array("other-hop".utf8)])
        #expect(names(few) == ["Keep-A", "keep-b", "keep-c"])
        // Past the count compared in turn: the same answer through a set.
        var many = block
        let filler = (0..<(FieldBlock.namesComparedInTurn * 2)).map { Array("unused-\($0)".utf8) }
        many.remove(names: filler + [Array("x-hop".utf8), Array("other-hop".utf8)])
        #expect(names(many) == ["Keep-A", "keep-b", "keep-c"])
    }

    @Test("thousands of names over thousands of fields take linear time (the pairwise comparison took 19 s)")
    func linear() {
        // What an upstream can send within the 80 KiB head limit: `Connection: a,a,…` and 10,000 short fields.
        var block = FieldBlock(capacity: 64 * 1024)
        for index in 0..<10_000 { block.add(name: index == 5_000 ? "A" : "b", value: "") }
        let clock = ContinuousClock()
        let took = clock.measure {
            block.remove(names: Array(repeating: Array("a".utf8), count: 19_000))
        }
        #expect(names(block).count == 9_999 && !names(block).contains("A"))
        // A bound on the complexity, not a benchmark: linear work here is milliseconds even in a debug build.
        #expect(took < .seconds(3))
    }
}
