import CEdgeLinux
import Dispatch
import Glibc
import NIOConcurrencyHelpers
import NIOCore

/// An event loop on io_uring (issue 29, step 2; not yet used by the server): one thread and one ring. Work from
/// other threads is queued under a lock and wakes the loop through an eventfd whose read waits in the ring;
/// timers are the ring's wait timeout; completions of the entries the loop's users prepare are dispatched by
/// their `user_data`. Each loop iteration submits everything prepared since the last with the one
/// `io_uring_enter` that also waits.
///
/// The channels that will run on it (accepted and connected sockets, listeners) come next; see the README,
/// "io_uring: the spike".
final class URingEventLoop: EventLoop, @unchecked Sendable {
    // Written on the loop's thread before `start` returns, read-only afterwards.
    private var thread = pthread_t()
    private var ring: URing?

    private let wakeFD: Int32
    private let wakeBuffer = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
    /// `user_data` of the wake-up read. Entries registered with a closure have multiples of 16 too; an entry of a
    /// ``URingOperationTarget`` carries the object's address with its operation kind (1–15) in the low bits.
    private static let wakeUserData: UInt64 = 16
    /// `user_data` of entries whose completion nobody waits for (cancellations).
    private static let ignoredUserData: UInt64 = 0

    /// The tasks being run, on the loop's thread only (``runQueued()``).
    private var running: [() -> Void] = []

    // Shared with other threads, under `lock`.
    private let lock = NIOLock()
    private var queued: [() -> Void] = []
    private var sleeping = false
    private var wakePending = false
    private var phase = Phase.running
    private var shutdownCallbacks: [(DispatchQueue, @Sendable ((any Error)?) -> Void)] = []
    private var nextTimerID: UInt64 = 0

    // The loop thread's own.
    private var timers = TimerHeap()
    private var completions: [UInt64: (Int32, UInt32) -> Void] = [:]
    private var nextUserData: UInt64 = 32

    private enum Phase { case running, closing, closed }

    private init(wakeFD: Int32) {
        self.wakeFD = wakeFD
    }

    /// Starts a loop on a thread of its own named `name`. Throws ``URing/Unavailable`` when the kernel refuses
    /// io_uring, so that the caller can fall back to epoll.
    static func start(name: String) throws -> URingEventLoop {
        let fd = CEdgeURing_eventfd()
        guard fd >= 0 else { throw URing.Unavailable(errno: -fd) }
        let loop = URingEventLoop(wakeFD: fd)
        let started = DispatchSemaphore(value: 0)
        let failure = NIOLockedValueBox<URing.Unavailable?>(nil)
        let body = ThreadBody {
            CEdgeURing_nameThread(name)
            loop.thread = pthread_self()
            do throws(URing.Unavailable) {
                loop.ring = try URing(entries: 4096)
            } catch {
                failure.withLockedValue { $0 = error }
                started.signal()
                return
            }
            started.signal()
            loop.run()
        }
        var thread = pthread_t()
        let context = Unmanaged.passRetained(body).toOpaque()
        let created = pthread_create(&thread, nil, { raw in
            Unmanaged<ThreadBody>.fromOpaque(raw!).takeRetainedValue().run()
            return nil
        }, context)
        guard created == 0 else {
            Unmanaged<ThreadBody>.fromOpaque(context).release()
            Glibc.close(fd)
            throw URing.Unavailable(errno: created)
        }
        pthread_detach(thread)
        started.wait()
        if let error = failure.withLockedValue({ $0 }) {
            Glibc.close(fd)
            throw error
        }
        return loop
    }

    deinit {
        wakeBuffer.deallocate()
    }

    // MARK: EventLoop

    var inEventLoop: Bool { pthread_equal(pthread_self(), thread) != 0 }

    func execute(_ task: @escaping @Sendable () -> Void) {
        enqueue(task)
    }

    func _executeIsolatedUnsafeUnchecked(_ task: @escaping () -> Void) {
        enqueue(task)
    }

    func scheduleTask<T>(deadline: NIODeadline, _ task: @escaping @Sendable () throws -> T) -> Scheduled<T> {
        let promise = makePromise(of: T.self)
        let id = lock.withLock {
            nextTimerID += 1
            return nextTimerID
        }
        // The timer runs on the loop's thread, where the promise may be completed with a non-Sendable value.
        let timer = LoopTimer(id: id, deadline: deadline, run: {
            do { promise.assumeIsolatedUnsafeUnchecked().succeed(try task()) } catch { promise.fail(error) }
        }, fail: { promise.fail($0) })
        if inEventLoop {
            timers.insert(timer)
        } else {
            let sendable = UnsafeTransfer(timer)
            enqueue { self.timers.insert(sendable.value) }
        }
        return Scheduled(promise: promise, cancellationTask: {
            if self.inEventLoop {
                self.cancelTimer(id)
            } else {
                self.enqueue { self.cancelTimer(id) }
            }
        })
    }

    func scheduleTask<T>(in delay: TimeAmount, _ task: @escaping @Sendable () throws -> T) -> Scheduled<T> {
        scheduleTask(deadline: .now() + delay, task)
    }

    func shutdownGracefully(queue: DispatchQueue, _ callback: @escaping @Sendable ((any Error)?) -> Void) {
        let (closed, wake) = lock.withLock { () -> (Bool, Bool) in
            if phase == .closed { return (true, false) }
            shutdownCallbacks.append((queue, callback))
            guard phase == .running else { return (false, false) }
            phase = .closing
            return (false, wakeNeededLocked())
        }
        if closed {
            queue.async { callback(nil) }
        } else if wake {
            wakeUp()
        }
    }

    // MARK: the ring, for what runs on this loop

    /// Prepares one entry with `prepare` (given its `user_data`), submitted with the next wait; `completion`
    /// gets its result and flags, and stays registered while the entry is multishot and reports more.
    /// Loop thread only.
    func prepareEntry(
        _ prepare: (UnsafeMutablePointer<io_uring_sqe>, UInt64) -> Void,
        completion: @escaping (Int32, UInt32) -> Void
    ) {
        let userData = nextUserData
        nextUserData += 16
        completions[userData] = completion
        ring!.prepare { prepare($0, userData) }
    }

    /// Cancels `target`'s entries of `kind` still in flight; each completes with `-ECANCELED` (or its result, if
    /// it finished first). Loop thread only.
    func cancelEntries(of target: URingOperationTarget, kind: UInt8) {
        let key = UInt64(UInt(bitPattern: Unmanaged.passUnretained(target).toOpaque())) | UInt64(kind)
        ring!.prepare { CEdgeURing_prepCancelUserData($0, key, Self.ignoredUserData) }
    }

    /// Prepares one entry of `target`'s, whose completion calls `target.complete(kind:result:flags:)` with no
    /// allocation or look-up: the entry's `user_data` is the object's address and `kind` (1–15). The loop keeps
    /// `target` alive while the entry is in flight. Loop thread only.
    func prepareEntry(
        for target: URingOperationTarget, kind: UInt8, _ prepare: (UnsafeMutablePointer<io_uring_sqe>, UInt64) -> Void
    ) {
        precondition(kind > 0 && kind < 16)
        let address = UInt64(UInt(bitPattern: Unmanaged.passRetained(target).toOpaque()))
        let userData = address | UInt64(kind)
        ring!.prepare { prepare($0, userData) }
    }

    // MARK: the loop

    private func enqueue(_ task: @escaping () -> Void) {
        let wake = lock.withLock { () -> Bool in
            guard phase != .closed else { return false }
            queued.append(task)
            return wakeNeededLocked()
        }
        if wake { wakeUp() }
    }

    /// Whether a task just queued must wake the loop: it is waiting in the ring and no wake-up is on its way.
    private func wakeNeededLocked() -> Bool {
        guard sleeping, !wakePending else { return false }
        wakePending = true
        return true
    }

    private func wakeUp() {
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)
    }

    private func armWakeUp() {
        ring!.prepare { CEdgeURing_prepRead($0, wakeFD, wakeBuffer, 8, 0, Self.wakeUserData) }
    }

    private func run() {
        let ring = self.ring!
        let completed = UnsafeMutableBufferPointer<io_uring_cqe>.allocate(capacity: 256)
        defer { completed.deallocate() }
        armWakeUp()
        while true {
            runQueued()
            runDueTimers()
            let (closing, mayWait) = lock.withLock { () -> (Bool, Bool) in
                if phase == .closing { return (true, false) }
                if queued.isEmpty {
                    sleeping = true
                    return (false, true)
                }
                return (false, false)
            }
            if closing { break }
            let timeout: Int64?
            if !mayWait {
                timeout = 0
            } else if let deadline = timers.first?.deadline {
                timeout = max(0, (deadline - .now()).nanoseconds)
            } else {
                timeout = nil
            }
            _ = ring.submitAndWait(timeout: timeout)
            lock.withLock { sleeping = false }
            while true {
                let count = ring.reap(into: completed)
                for index in 0..<count { dispatch(completed[index]) }
                if count < completed.count { break }
            }
        }
        finish()
    }

    private func dispatch(_ cqe: io_uring_cqe) {
        if cqe.user_data == Self.ignoredUserData { return }
        if cqe.user_data == Self.wakeUserData {
            lock.withLock { wakePending = false }
            armWakeUp()
            return
        }
        let more = cqe.flags & UInt32(IORING_CQE_F_MORE) != 0
        let kind = UInt8(truncatingIfNeeded: cqe.user_data & 15)
        if kind != 0 {
            let pointer = UnsafeRawPointer(bitPattern: UInt(cqe.user_data & ~15))!
            let target = Unmanaged<URingOperationTarget>.fromOpaque(pointer)
            if more {
                target.takeUnretainedValue().complete(kind: kind, result: cqe.res, flags: cqe.flags)
            } else {
                target.takeRetainedValue().complete(kind: kind, result: cqe.res, flags: cqe.flags)
            }
            return
        }
        let completion = more ? completions[cqe.user_data] : completions.removeValue(forKey: cqe.user_data)
        completion?(cqe.res, cqe.flags)
    }

    private func runQueued() {
        // Tasks queued by these tasks run in the next iteration, after the ring has been looked at. The two arrays
        // trade places, so that neither is copied nor allocated again at every turn.
        lock.withLock { swap(&queued, &running) }
        for task in running { task() }
        running.removeAll(keepingCapacity: true)
    }

    private func runDueTimers() {
        guard !timers.isEmpty else { return }
        let now = NIODeadline.now()
        while let first = timers.first, first.deadline <= now {
            timers.removeFirst().run()
        }
    }

    /// `Scheduled.cancel()` has failed the timer's promise already.
    private func cancelTimer(_ id: UInt64) {
        _ = timers.remove(id: id)
    }

    /// After the last iteration: timers fail, queued tasks run (they may complete promises), and the ring and
    /// the eventfd close once nothing more can be queued.
    private func finish() {
        while !timers.isEmpty { timers.removeFirst().fail(EventLoopError.shutdown) }
        runQueued()
        let callbacks = lock.withLock { () -> [(DispatchQueue, @Sendable ((any Error)?) -> Void)] in
            phase = .closed
            defer { shutdownCallbacks = [] }
            return shutdownCallbacks
        }
        runQueued()
        completions = [:]
        ring = nil
        Glibc.close(wakeFD)
        for (queue, callback) in callbacks { queue.async { callback(nil) } }
    }
}

/// An object whose ring entries complete into ``complete(kind:result:flags:)`` (a channel: its receive, its send,
/// its accept …), prepared with ``URingEventLoop/prepareEntry(for:kind:_:)``.
class URingOperationTarget {
    /// One completion of an entry of `kind`; `flags` has `IORING_CQE_F_MORE` while a multishot entry goes on.
    func complete(kind: UInt8, result: Int32, flags: UInt32) {}
}

/// The body of a loop's thread, passed through `pthread_create`.
private final class ThreadBody {
    let run: () -> Void
    init(_ run: @escaping () -> Void) { self.run = run }
}

/// A value handed to the loop's thread, which alone uses it from then on.
private struct UnsafeTransfer<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}

/// A scheduled task on the loop.
private struct LoopTimer {
    let id: UInt64
    let deadline: NIODeadline
    let run: () -> Void
    let fail: (any Error) -> Void
}

/// Timers by deadline (ties by the order they were made), with removal by id for cancellation.
private struct TimerHeap {
    private var items: [LoopTimer] = []
    private var positions: [UInt64: Int] = [:]

    var isEmpty: Bool { items.isEmpty }
    var first: LoopTimer? { items.first }

    mutating func insert(_ timer: LoopTimer) {
        items.append(timer)
        positions[timer.id] = items.count - 1
        up(items.count - 1)
    }

    mutating func removeFirst() -> LoopTimer {
        remove(at: 0)
    }

    mutating func remove(id: UInt64) -> LoopTimer? {
        guard let index = positions[id] else { return nil }
        return remove(at: index)
    }

    private func less(_ a: Int, _ b: Int) -> Bool {
        items[a].deadline < items[b].deadline || (items[a].deadline == items[b].deadline && items[a].id < items[b].id)
    }

    private mutating func swapAt(_ a: Int, _ b: Int) {
        items.swapAt(a, b)
        positions[items[a].id] = a
        positions[items[b].id] = b
    }

    private mutating func remove(at index: Int) -> LoopTimer {
        let last = items.count - 1
        if index != last { swapAt(index, last) }
        let timer = items.removeLast()
        positions[timer.id] = nil
        if index < items.count {
            up(index)
            down(index)
        }
        return timer
    }

    private mutating func up(_ index: Int) {
        var child = index
        while child > 0 {
            let parent = (child - 1) / 2
            guard less(child, parent) else { return }
            swapAt(child, parent)
            child = parent
        }
    }

    private mutating func down(_ index: Int) {
        var parent = index
        while true {
            let left = 2 * parent + 1, right = left + 1
            var smallest = parent
            if left < items.count, less(left, smallest) { smallest = left }
            if right < items.count, less(right, smallest) { smallest = right }
            guard smallest != parent else { return }
            swapAt(parent, smallest)
            parent = smallest
        }
    }
}
