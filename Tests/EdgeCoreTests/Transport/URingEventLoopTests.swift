import CEdgeLinux
import Dispatch
@testable import EdgeCore
import Glibc
import NIOConcurrencyHelpers
import NIOCore
import Testing

/// Whether this kernel lets a process set up a ring (a container's seccomp filter or
/// `kernel.io_uring_disabled` may refuse it; the loop's own start reports that as an error).
private let ioURingAvailable = (try? URing(entries: 2)) != nil

@Suite(
    "io_uring event loop: NIO's EventLoop contract on a ring",
    .enabled(if: ioURingAvailable, "this kernel or its seccomp filter refuses io_uring_setup")
)
struct URingEventLoopTests {
    private func withLoop(_ body: (URingEventLoop) throws -> Void) throws {
        let loop = try URingEventLoop.start(name: "test-uring")
        defer { try? loop.syncShutdownGracefully() }
        try body(loop)
    }

    @Test func tasksFromOtherThreadsRunOnTheLoopInOrder() throws {
        try withLoop { loop in
            let seen = NIOLockedValueBox<[Int]>([])
            let allOnLoop = NIOLockedValueBox(true)
            for i in 0..<1000 {
                loop.execute {
                    if !loop.inEventLoop { allOnLoop.withLockedValue { $0 = false } }
                    seen.withLockedValue { $0.append(i) }
                }
            }
            try loop.submit {}.wait()
            #expect(seen.withLockedValue { $0 } == Array(0..<1000))
            #expect(allOnLoop.withLockedValue { $0 })
            #expect(!loop.inEventLoop)
        }
    }

    @Test func manyThreadsAtOnceLoseNoTask() throws {
        try withLoop { loop in
            let count = NIOLockedValueBox(0)
            DispatchQueue.concurrentPerform(iterations: 4) { _ in
                for _ in 0..<5000 { loop.execute { count.withLockedValue { $0 += 1 } } }
            }
            try loop.submit {}.wait()
            #expect(count.withLockedValue { $0 } == 20_000)
        }
    }

    @Test func futuresAndPromisesComplete() throws {
        try withLoop { loop in
            let value = try loop.submit { 20 }.flatMap { n in loop.submit { n + 22 } }.map { $0 * 1 }.wait()
            #expect(value == 42)
            let promise = loop.makePromise(of: String.self)
            loop.execute { promise.succeed("done") }
            #expect(try promise.futureResult.wait() == "done")
        }
    }

    @Test func timersFireInDeadlineOrderAndNotEarly() throws {
        try withLoop { loop in
            let order = NIOLockedValueBox<[Int]>([])
            let start = NIODeadline.now()
            let late = loop.scheduleTask(in: .milliseconds(60)) { order.withLockedValue { $0.append(2) }; return NIODeadline.now() }
            let early = loop.scheduleTask(in: .milliseconds(20)) { order.withLockedValue { $0.append(1) }; return NIODeadline.now() }
            let firedLate = try late.futureResult.wait()
            let firedEarly = try early.futureResult.wait()
            #expect(order.withLockedValue { $0 } == [1, 2])
            #expect(firedEarly - start >= .milliseconds(20))
            #expect(firedLate - start >= .milliseconds(60))
        }
    }

    @Test func aCancelledTimerNeverRunsAndFailsItsFuture() throws {
        try withLoop { loop in
            let ran = NIOLockedValueBox(false)
            // Far enough out that the cancellation, queued from this thread, lands first on a busy machine.
            let scheduled = loop.scheduleTask(in: .milliseconds(400)) { ran.withLockedValue { $0 = true } }
            scheduled.cancel()
            #expect(throws: EventLoopError.cancelled) { try scheduled.futureResult.wait() }
            // A later timer firing shows the loop went past the cancelled one's deadline.
            try loop.scheduleTask(in: .milliseconds(450)) {}.futureResult.wait()
            #expect(!ran.withLockedValue { $0 })
            // Cancelled from the loop itself, as handlers do.
            let inner = try loop.submit { () -> Bool in
                let timer = loop.scheduleTask(in: .milliseconds(10)) { ran.withLockedValue { $0 = true } }
                timer.cancel()
                return true
            }.wait()
            #expect(inner)
            try loop.scheduleTask(in: .milliseconds(40)) {}.futureResult.wait()
            #expect(!ran.withLockedValue { $0 })
        }
    }

    @Test func aTimerScheduledFromTheLoopWakesAnIdleLoop() throws {
        try withLoop { loop in
            let fired = try loop.submit { loop.scheduleTask(in: .milliseconds(15)) { 7 } }.wait()
            #expect(try fired.futureResult.wait() == 7)
        }
    }

    @Test func entriesOnTheRingComplete() throws {
        try withLoop { loop in
            var fds: [Int32] = [0, 0]
            #expect(pipe(&fds) == 0)
            defer { close(fds[0]); close(fds[1]) }
            let buffer = UnsafeMutablePointer<UInt8>.allocate(capacity: 16)
            defer { buffer.deallocate() }
            let address = UInt(bitPattern: buffer)  // the pointer, into the loop's task
            let read = loop.makePromise(of: Int32.self)
            let readFD = fds[0]
            loop.execute {
                loop.prepareEntry({ sqe, userData in
                    CEdgeURing_prepRead(sqe, readFD, UnsafeMutableRawPointer(bitPattern: address), 16, UInt64.max, userData)
                }) { result, _ in
                    read.succeed(result)
                }
            }
            // The read waits in the ring until the bytes arrive.
            #expect(write(fds[1], "hello", 5) == 5)
            let got = try read.futureResult.wait()
            #expect(got == 5)
            #expect(String(decoding: UnsafeBufferPointer(start: buffer, count: 5), as: UTF8.self) == "hello")
            let nop = loop.makePromise(of: Int32.self)
            loop.execute {
                loop.prepareEntry({ sqe, userData in CEdgeURing_prepNop(sqe, userData) }) { result, _ in nop.succeed(result) }
            }
            let nopResult = try nop.futureResult.wait()
            #expect(nopResult == 0)
        }
    }

    @Test func shutdownFailsPendingTimersAndThenRefusesWork() throws {
        let loop = try URingEventLoop.start(name: "test-uring")
        let pending = loop.scheduleTask(in: .hours(1)) {}
        // Observed before the shutdown: a closed loop runs nothing more, as NIO's own loops do.
        let outcome = NIOLockedValueBox<Result<Void, any Error>?>(nil)
        pending.futureResult.whenComplete { result in outcome.withLockedValue { $0 = result } }
        try loop.syncShutdownGracefully()
        let failure = outcome.withLockedValue { result -> (any Error)? in
            if case .failure(let error) = result { return error }
            return nil
        }
        #expect(failure as? EventLoopError == .shutdown)
        let again = NIOLockedValueBox<(any Error)?>(nil)
        let done = DispatchSemaphore(value: 0)
        loop.shutdownGracefully(queue: .global()) { error in
            again.withLockedValue { $0 = error }
            done.signal()
        }
        done.wait()
        #expect(again.withLockedValue { $0 } == nil)
    }
}
