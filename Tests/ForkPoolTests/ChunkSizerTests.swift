@testable import ForkPool
import Testing

@Suite("Chunk sizing")
struct ChunkSizerTests {
    @Test("one item until a chunk has been timed, then chunks of about the target duration")
    func adapts() {
        var sizer = ChunkSizer(fixedSize: nil, parallelism: 2)
        #expect(sizer.nextSize(remaining: nil) == 1)
        // 1 us per item: a 4 ms chunk holds about 4,000.
        sizer.record(items: 100, duration: .microseconds(100))
        #expect((3_000...4_096).contains(sizer.nextSize(remaining: nil)))
        // 10 ms per item: one at a time.
        var slow = ChunkSizer(fixedSize: nil, parallelism: 2)
        slow.record(items: 1, duration: .milliseconds(10))
        #expect(slow.nextSize(remaining: 1_000) == 1)
        // Never above the largest chunk, however fast the items.
        sizer.record(items: 1_000_000, duration: .microseconds(1))
        #expect(sizer.nextSize(remaining: nil) == ChunkSizer.largestChunk)
    }

    @Test("near the end chunks shrink, so that no worker is left far behind")
    func tail() {
        var sizer = ChunkSizer(fixedSize: nil, parallelism: 2)
        sizer.record(items: 1_000, duration: .microseconds(100))
        #expect(sizer.nextSize(remaining: 1_000_000) == ChunkSizer.largestChunk)
        #expect(sizer.nextSize(remaining: 400) == 100)
        #expect(sizer.nextSize(remaining: 3) == 1)
    }

    @Test("a fixed size is kept")
    func fixed() {
        var sizer = ChunkSizer(fixedSize: 64, parallelism: 2)
        sizer.record(items: 1, duration: .seconds(1))
        #expect(sizer.nextSize(remaining: 2) == 64)
        #expect(ChunkSizer(fixedSize: 0, parallelism: 2).nextSize(remaining: nil) == 1)
    }
}
