import Atomics
import CEdgeLinux
import Glibc
import NIOConcurrencyHelpers
import NIOCore

/// A TCP connection on a ``URingEventLoop`` (issue 29): the `Channel` that Edge's pipelines (NIOSSL, the HTTP/1.1 and
/// HTTP/2 handlers, the proxy) run on when `io = "io_uring"`.
///
/// - Receives: one `recv` entry in flight while reading is wanted, into a buffer from the channel's
///   `RecvByteBufferAllocator`; the buffer is used again when the pipeline kept no reference to it.
/// - Sends: `write` queues, `flush` marks what is queued, and one `send` (one buffer) or `sendmsg` (up to
///   ``maxGather`` buffers) is in flight at a time. It is submitted with the loop's next wait, so a loop iteration
///   that answers many connections makes one system call for all of them.
/// - File regions go out by `sendfile` on the loop (the page cache makes it cheap); when the socket is full, a poll
///   entry waits for room.
/// - Closing cancels what is in flight and closes the descriptor once the kernel has let go of it.
///
/// Everything but the `Channel` properties documented as thread-safe runs on the loop's thread.
final class URingSocketChannel: URingOperationTarget, Channel, ChannelCore, URingChannelOptions, SocketOptionProvider, @unchecked Sendable {
    private enum Operation: UInt8 {
        case receive = 1, send = 2, pollWritable = 3, connect = 4, hangUp = 5
    }

    /// The most buffers one `sendmsg` gathers.
    static let maxGather = 64

    let loop: URingEventLoop
    private(set) var descriptor: Int32
    let parent: (any Channel)?
    let allocator = ByteBufferAllocator()
    private var _pipeline: ChannelPipeline! = nil
    private let closePromise: EventLoopPromise<Void>
    private let addresses: NIOLockedValueBox<(local: SocketAddress?, remote: SocketAddress?)>
    private let active = ManagedAtomic(false)
    private let writable = ManagedAtomic(true)

    // Options.
    private var autoRead = true
    private var allowRemoteHalfClosure = false
    private var recvAllocator: any RecvByteBufferAllocator = AdaptiveRecvByteBufferAllocator()
    private var waterMark = ChannelOptions.Types.WriteBufferWaterMark(low: 32 * 1024, high: 64 * 1024)
    var connectTimeout: TimeAmount = .seconds(10)

    // The loop's.
    private enum State { case fresh, registered, active, closed }
    private var state = State.fresh
    private var inputShut = false
    private var outputShut = false
    private var readWanted = false
    /// The buffer the `recv` in flight fills.
    private var receiveBuffer: ByteBuffer?
    /// The last buffer handed to the pipeline, used for the next receive if the pipeline let go of it.
    private var spareBuffer: ByteBuffer?
    private var receiving = false
    /// A poll for the peer's end or reset is armed while no receive is (``watchForHangUp()``).
    private var watchingHangUp = false
    /// The peer ended or reset the connection: its input is read to the end whether reads are wanted or not.
    private var hangUpSeen = false
    private var sending = false
    private var polling = false
    private var connecting: (promise: EventLoopPromise<Void>?, timeout: Scheduled<Void>?)?
    private var connectAddress: UnsafeMutableRawPointer?
    private var inFlight = 0
    private var closeWhenIdle = false
    /// Between this channel's `channelRead` and the end of its `channelReadComplete`: what the pipeline flushes
    /// then (an answer to what was read) goes out with the loop's next submission, together with every other
    /// connection's.
    private var readingOwnInput = false
    /// Inside ``writeNow()``: a flush from a write's promise joins the loop there instead of recursing.
    private var writingNow = false
    private var lingerTimer: Scheduled<Void>?

    private struct PendingWrite {
        var data: IOData
        var promise: EventLoopPromise<Void>?
    }
    private var pending = CircularBuffer<PendingWrite>(initialCapacity: 8)
    /// How many entries at the front of `pending` are flushed.
    private var flushedCount = 0
    private var pendingBytes = 0
    private var shutOutputAfterWrites: EventLoopPromise<Void>??

    // The `sendmsg` arguments, made at the first gathered send.
    private var vectors: UnsafeMutablePointer<iovec>?
    private var message: UnsafeMutablePointer<msghdr>?

    /// An accepted (or, for ``URingConnector``, created) socket, non-blocking, on `loop`.
    init(descriptor: Int32, loop: URingEventLoop, parent: (any Channel)?, remote: SocketAddress? = nil) {
        self.descriptor = descriptor
        self.loop = loop
        self.parent = parent
        self.closePromise = loop.makePromise()
        self.addresses = NIOLockedValueBox((nil, remote))
        super.init()
        self._pipeline = ChannelPipeline(channel: self)
    }

    deinit {
        vectors?.deallocate()
        message?.deallocate()
        connectAddress?.deallocate()
    }

    // MARK: Channel

    var pipeline: ChannelPipeline { _pipeline }
    var eventLoop: any EventLoop { loop }
    var closeFuture: EventLoopFuture<Void> { closePromise.futureResult }
    var _channelCore: any ChannelCore { self }
    var isActive: Bool { active.load(ordering: .relaxed) }
    var isWritable: Bool { writable.load(ordering: .relaxed) }

    var localAddress: SocketAddress? {
        if let address = addresses.withLockedValue({ $0.local }) { return address }
        let address = try? Self.socketAddress(descriptor, peer: false)
        addresses.withLockedValue { $0.local = address }
        return address
    }

    var remoteAddress: SocketAddress? {
        if let address = addresses.withLockedValue({ $0.remote }) { return address }
        let address = try? Self.socketAddress(descriptor, peer: true)
        addresses.withLockedValue { $0.remote = address }
        return address
    }

    func setOption0<Option: ChannelOption>(_ option: Option, value: Option.Value) throws {
        loop.preconditionInEventLoop()
        switch option {
        case let option as ChannelOptions.Types.SocketOption:
            var raw = value as! SocketOptionValue
            guard setsockopt(descriptor, option.optionLevel.rawValue, option.optionName.rawValue, &raw, socklen_t(MemoryLayout<SocketOptionValue>.size)) == 0 else {
                throw IOError(errnoCode: errno, reason: "setsockopt")
            }
        case is ChannelOptions.Types.AutoReadOption:
            let on = value as! Bool
            let was = autoRead
            autoRead = on
            if on, !was, state == .active { read0() }
        case is ChannelOptions.Types.AllowRemoteHalfClosureOption:
            allowRemoteHalfClosure = value as! Bool
        case is ChannelOptions.Types.RecvAllocatorOption:
            recvAllocator = value as! any RecvByteBufferAllocator
        case is ChannelOptions.Types.WriteBufferWaterMarkOption:
            waterMark = value as! ChannelOptions.Types.WriteBufferWaterMark
        case is ChannelOptions.Types.ConnectTimeoutOption:
            connectTimeout = (value as! TimeAmount?) ?? .seconds(10)
        case is ChannelOptions.Types.MaxMessagesPerReadOption, is ChannelOptions.Types.WriteSpinOption:
            break  // one receive per completion; sends are never spun
        default:
            throw ChannelError.operationUnsupported
        }
    }

    func getOption0<Option: ChannelOption>(_ option: Option) throws -> Option.Value {
        loop.preconditionInEventLoop()
        switch option {
        case let option as ChannelOptions.Types.SocketOption:
            var raw = SocketOptionValue(0)
            var length = socklen_t(MemoryLayout<SocketOptionValue>.size)
            guard getsockopt(descriptor, option.optionLevel.rawValue, option.optionName.rawValue, &raw, &length) == 0 else {
                throw IOError(errnoCode: errno, reason: "getsockopt")
            }
            return raw as! Option.Value
        case is ChannelOptions.Types.AutoReadOption: return autoRead as! Option.Value
        case is ChannelOptions.Types.AllowRemoteHalfClosureOption: return allowRemoteHalfClosure as! Option.Value
        case is ChannelOptions.Types.RecvAllocatorOption: return recvAllocator as! Option.Value
        case is ChannelOptions.Types.WriteBufferWaterMarkOption: return waterMark as! Option.Value
        case is ChannelOptions.Types.ConnectTimeoutOption: return Optional(connectTimeout) as! Option.Value
        case is ChannelOptions.Types.MaxMessagesPerReadOption: return UInt(1) as! Option.Value
        default: throw ChannelError.operationUnsupported
        }
    }

    // MARK: SocketOptionProvider

    func unsafeSetSocketOption<Value: Sendable>(level: SocketOptionLevel, name: SocketOptionName, value: Value) -> EventLoopFuture<Void> {
        unsafeSetSocketOption(level: NIOBSDSocket.OptionLevel(rawValue: CInt(level)), name: NIOBSDSocket.Option(rawValue: name), value: value)
    }

    func unsafeGetSocketOption<Value: Sendable>(level: SocketOptionLevel, name: SocketOptionName) -> EventLoopFuture<Value> {
        unsafeGetSocketOption(level: NIOBSDSocket.OptionLevel(rawValue: CInt(level)), name: NIOBSDSocket.Option(rawValue: name))
    }

    func unsafeSetSocketOption<Value: Sendable>(level: NIOBSDSocket.OptionLevel, name: NIOBSDSocket.Option, value: Value) -> EventLoopFuture<Void> {
        loop.submit {
            let result = withUnsafeBytes(of: value) { bytes in
                setsockopt(self.descriptor, level.rawValue, name.rawValue, bytes.baseAddress, socklen_t(bytes.count))
            }
            guard result == 0 else {
                throw IOError(errnoCode: errno, reason: "setsockopt")
            }
        }
    }

    func unsafeGetSocketOption<Value: Sendable>(level: NIOBSDSocket.OptionLevel, name: NIOBSDSocket.Option) -> EventLoopFuture<Value> {
        loop.makeCompletedFuture {
            let storage = UnsafeMutableRawPointer.allocate(byteCount: MemoryLayout<Value>.size, alignment: MemoryLayout<Value>.alignment)
            defer { storage.deallocate() }
            storage.initializeMemory(as: UInt8.self, repeating: 0, count: MemoryLayout<Value>.size)
            var length = socklen_t(MemoryLayout<Value>.size)
            guard getsockopt(descriptor, level.rawValue, name.rawValue, storage, &length) == 0 else {
                throw IOError(errnoCode: errno, reason: "getsockopt")
            }
            return storage.load(as: Value.self)
        }
    }

    // MARK: ChannelCore

    func localAddress0() throws -> SocketAddress {
        guard let address = localAddress else { throw ChannelError.ioOnClosedChannel }
        return address
    }

    func remoteAddress0() throws -> SocketAddress {
        guard let address = remoteAddress else { throw ChannelError.ioOnClosedChannel }
        return address
    }

    func register0(promise: EventLoopPromise<Void>?) {
        guard state == .fresh else {
            promise?.fail(state == .closed ? ChannelError.ioOnClosedChannel : ChannelError.inappropriateOperationForState)
            return
        }
        state = .registered
        promise?.succeed(())
        pipeline.syncOperations.fireChannelRegistered()
    }

    func registerAlreadyConfigured0(promise: EventLoopPromise<Void>?) {
        register0(promise: nil)
        guard state == .registered else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        becomeActive()
        promise?.succeed(())
    }

    /// Registered and connected: `channelActive`, and the first read when `autoRead` is on.
    /// As NIO does, the channel is active before `promise` (a connect's) succeeds, and `channelActive` follows it.
    func becomeActive(promise: EventLoopPromise<Void>? = nil) {
        guard state == .registered else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        state = .active
        active.store(true, ordering: .relaxed)
        promise?.succeed(())
        pipeline.syncOperations.fireChannelActive()
        // Writes flushed before the connection was up go out now.
        if flushedCount > 0, state == .active, !sending, !polling { sendFlushed() }
        if autoRead, state == .active { pipeline.syncOperations.read() }
        if !receiving { watchForHangUp() }
    }

    func bind0(to address: SocketAddress, promise: EventLoopPromise<Void>?) {
        promise?.fail(ChannelError.operationUnsupported)
    }

    func connect0(to address: SocketAddress, promise: EventLoopPromise<Void>?) {
        guard state == .registered, connecting == nil else {
            promise?.fail(state == .closed ? ChannelError.ioOnClosedChannel : ChannelError.inappropriateOperationForState)
            return
        }
        let length = address.withSockAddr { _, size in size }
        let storage = UnsafeMutableRawPointer.allocate(byteCount: max(length, MemoryLayout<sockaddr_storage>.size), alignment: 8)
        address.withSockAddr { pointer, size in storage.copyMemory(from: pointer, byteCount: size) }
        connectAddress = storage
        addresses.withLockedValue { $0.remote = address }
        let timeout = loop.scheduleTask(in: connectTimeout) { [self] in
            guard connecting != nil else { return }
            close0(error: ChannelError.connectTimeout(connectTimeout), mode: .all, promise: nil)
        }
        connecting = (promise, timeout)
        inFlight += 1
        let fd = descriptor
        loop.prepareEntry(for: self, kind: Operation.connect.rawValue) { sqe, userData in
            CEdgeURing_prepConnect(sqe, fd, storage.assumingMemoryBound(to: sockaddr.self), UInt32(length), userData)
        }
    }

    func write0(_ data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard state != .closed else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        guard !outputShut, shutOutputAfterWrites == nil else {
            promise?.fail(ChannelError.outputClosed)
            return
        }
        let data = unwrapData(data, as: IOData.self)
        pendingBytes += data.readableBytes
        pending.append(PendingWrite(data: data, promise: promise))
        if pendingBytes > waterMark.high, writable.load(ordering: .relaxed) {
            writable.store(false, ordering: .relaxed)
            pipeline.syncOperations.fireChannelWritabilityChanged()
        }
    }

    func flush0() {
        guard state == .active || state == .registered else { return }
        flushedCount = pending.count
        guard state == .active else { return }
        if writingNow || sending || polling { return }
        if readingOwnInput { sendFlushed() } else { writeNow() }
    }

    func read0() {
        guard state == .active || state == .registered, !inputShut else { return }
        readWanted = true
        if state == .active, !receiving { receive() }
    }

    func close0(error: any Error, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        guard state != .closed else {
            promise?.fail(ChannelError.alreadyClosed)
            return
        }
        switch mode {
        case .input:
            promise?.fail(ChannelError.operationUnsupported)
        case .output:
            guard !outputShut, shutOutputAfterWrites == nil else {
                promise?.fail(ChannelError.outputClosed)
                return
            }
            if flushedCount > 0 || sending || polling {
                // What was written and flushed goes out first; what was not flushed never will.
                failUnflushed(ChannelError.outputClosed)
                shutOutputAfterWrites = .some(promise)
            } else {
                failUnflushed(ChannelError.outputClosed)
                shutOutput(promise: promise)
            }
        case .all:
            closeNow(error: error, promise: promise)
        }
    }

    func triggerUserOutboundEvent0(_ event: Any, promise: EventLoopPromise<Void>?) {
        promise?.fail(ChannelError.operationUnsupported)
    }

    func channelRead0(_ data: NIOAny) {}

    func errorCaught0(error: any Error) {}

    // MARK: receiving

    private func receive() {
        var buffer: ByteBuffer
        let wanted = recvAllocator.nextBufferSize() ?? 2048
        if var kept = spareBuffer.take(), kept.capacity >= wanted, kept.modifyIfUniquelyOwned({ $0.clear() }) != nil {
            buffer = kept
        } else {
            buffer = recvAllocator.buffer(allocator: allocator)
        }
        let capacity = buffer.capacity
        let base = buffer.withUnsafeMutableWritableBytes { $0.baseAddress! }
        receiveBuffer = buffer
        receiving = true
        inFlight += 1
        let fd = descriptor
        loop.prepareEntry(for: self, kind: Operation.receive.rawValue) { sqe, userData in
            CEdgeURing_prepRecv(sqe, fd, base, UInt32(min(capacity, Int(Int32.max))), userData)
        }
    }

    private func received(_ result: Int32) {
        receiving = false
        guard state == .active else { return }
        if result > 0 {
            readWanted = false
            var buffer = receiveBuffer.take()!
            buffer.moveWriterIndex(forwardBy: Int(result))
            _ = recvAllocator.record(actualReadBytes: Int(result))
            readingOwnInput = true
            pipeline.syncOperations.fireChannelRead(NIOAny(buffer))
            // Kept for the next receive; used again only if the pipeline holds no reference to it by then.
            spareBuffer = buffer
            guard state == .active else {
                readingOwnInput = false
                return
            }
            pipeline.syncOperations.fireChannelReadComplete()
            readingOwnInput = false
            guard state == .active else { return }
            if autoRead { pipeline.syncOperations.read() }
            guard state == .active, !receiving else { return }
            if readWanted || hangUpSeen { receive() } else { watchForHangUp() }
        } else if result == 0 {
            inputShut = true
            if allowRemoteHalfClosure {
                pipeline.syncOperations.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
                watchForHangUp()
            } else {
                closeNow(error: ChannelError.eof, promise: nil)
            }
        } else if result == -EAGAIN || result == -EINTR {
            if readWanted { receive() }
        } else if result != -ECANCELED {
            let error = IOError(errnoCode: -result, reason: "recv")
            pipeline.syncOperations.fireErrorCaught(error)
            closeNow(error: error, promise: nil)
        }
    }

    /// While the pipeline reads nothing (backpressure, or a handler waiting for its own writes), the peer's end
    /// or reset would go unnoticed with no receive armed. NIO's epoll channels always ask for `EPOLLRDHUP` and
    /// hang-ups and then read the input to its end; this poll does the same here.
    private func watchForHangUp() {
        guard !watchingHangUp, state == .active else { return }
        // Once the input has ended, only a reset (or both sides shut) is left to notice; before, the peer's end too.
        var events = UInt32(POLLHUP) | UInt32(POLLERR)
        if !inputShut {
            guard !hangUpSeen else { return }
            events |= 0x2000  // POLLRDHUP
        }
        watchingHangUp = true
        inFlight += 1
        let fd = descriptor
        loop.prepareEntry(for: self, kind: Operation.hangUp.rawValue) { sqe, userData in
            CEdgeURing_prepPollAdd(sqe, fd, events, userData)
        }
    }

    private func hungUp(_ result: Int32) {
        watchingHangUp = false
        guard state == .active, result > 0 else { return }
        if inputShut {
            // A poll armed before the input ended reports that end (POLLRDHUP), known by now: watch for a reset.
            guard UInt32(result) & (UInt32(POLLERR) | UInt32(POLLHUP)) != 0 else {
                watchForHangUp()
                return
            }
            // Reset after the end of input (NIO's `reset()`): the connection is gone.
            var code: Int32 = 0
            var length = socklen_t(4)
            _ = getsockopt(descriptor, SOL_SOCKET, SO_ERROR, &code, &length)
            let error = IOError(errnoCode: code == 0 ? ECONNRESET : code, reason: "connection reset")
            pipeline.syncOperations.fireErrorCaught(error)
            closeNow(error: error, promise: nil)
            return
        }
        hangUpSeen = true
        if !receiving { receive() }
    }

    // MARK: sending

    /// A flush from outside this channel's reads — a proxied body's next chunk, written when the last one's
    /// promise completed; an upstream's answer relayed to its client — is written at once with `sendmsg`, as NIO's
    /// sockets do. Handlers count on that: a write that completes within the flush lets them go on in the same
    /// turn (NIOHTTP2 sends a stream's WINDOW_UPDATE in the read batch that consumed its data). What the socket
    /// does not take goes through the ring.
    private func writeNow() {
        writingNow = true
        defer { writingNow = false }
        var spins = 0
        while flushedCount > 0, state == .active, spins < 16 {
            spins += 1
            if case .fileRegion = pending.first!.data {
                writingNow = false
                sendFile()
                return
            }
            let total = gatherFlushed().bytes
            let written = Glibc.sendmsg(descriptor, message, Int32(MSG_NOSIGNAL))
            if written < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN { break }
                failWritesAndClose(IOError(errnoCode: errno, reason: "sendmsg"))
                return
            }
            consume(written)
            if written < total { break }  // the socket is full
        }
        writingNow = false
        if flushedCount > 0, state == .active, !sending, !polling { sendFlushed() }
        if flushedCount == 0, state == .active, let promise = shutOutputAfterWrites, !sending, !polling {
            shutOutputAfterWrites = nil
            shutOutput(promise: promise)
        }
    }

    /// Points ``message`` at the flushed buffers at the front of the queue (up to ``maxGather``, up to the first
    /// file region); returns how many and their bytes. The buffers stay in the queue, alive, until written.
    private func gatherFlushed() -> (count: Int, bytes: Int) {
        if vectors == nil {
            vectors = .allocate(capacity: Self.maxGather)
            message = .allocate(capacity: 1)
        }
        var count = 0
        var bytes = 0
        for index in pending.indices {
            guard count < flushedCount, count < Self.maxGather, case .byteBuffer(let buffer) = pending[index].data else { break }
            buffer.withUnsafeReadableBytes { raw in
                vectors![count] = iovec(iov_base: UnsafeMutableRawPointer(mutating: raw.baseAddress), iov_len: raw.count)
            }
            bytes += buffer.readableBytes
            count += 1
        }
        message!.initialize(to: msghdr())
        message!.pointee.msg_iov = vectors
        message!.pointee.msg_iovlen = count
        return (count, bytes)
    }

    private func sendFlushed() {
        guard flushedCount > 0, state == .active || state == .closed else { return }
        if case .fileRegion = pending.first!.data {
            guard state == .active else { return dropLingering() }
            sendFile()
            return
        }
        let fd = descriptor
        sending = true
        inFlight += 1
        let gathered = gatherFlushed()
        if gathered.count == 1 {
            // One buffer: a plain `send`, which the kernel handles with less work than a message.
            let base = UnsafeRawPointer(vectors![0].iov_base)
            let length = gathered.bytes
            loop.prepareEntry(for: self, kind: Operation.send.rawValue) { sqe, userData in
                CEdgeURing_prepSend(sqe, fd, base, UInt32(length), userData)
            }
            return
        }
        let header = message!
        loop.prepareEntry(for: self, kind: Operation.send.rawValue) { sqe, userData in
            CEdgeURing_prepSendmsg(sqe, fd, header, userData)
        }
    }

    private func sent(_ result: Int32) {
        sending = false
        if state == .closed {
            // Lingering: the bytes flushed before the close go out, then the descriptor closes.
            if result > 0 { consume(Int(result)) }
            if result < 0 || flushedCount == 0 { return dropLingering() }
            sendFlushed()
            return
        }
        guard state == .active else { return }
        if result < 0 {
            if result == -EAGAIN || result == -EINTR {
                sendFlushed()
                return
            }
            if result == -ECANCELED { return }
            failWritesAndClose(IOError(errnoCode: -result, reason: "send"))
            return
        }
        consume(Int(result))
        continueSending()
    }

    /// Takes `count` written bytes off the front of the queue and completes the writes that are done.
    private func consume(_ count: Int) {
        var left = count
        var done: [EventLoopPromise<Void>] = []
        while left > 0 || (flushedCount > 0 && pending.first!.data.readableBytes == 0) {
            guard flushedCount > 0 else { break }
            let readable = pending.first!.data.readableBytes
            if readable <= left {
                left -= readable
                pendingBytes -= readable
                flushedCount -= 1
                if let promise = pending.removeFirst().promise { done.append(promise) }
            } else {
                pending[pending.startIndex].data.moveReaderIndex(forwardBy: left)
                pendingBytes -= left
                left = 0
            }
        }
        if state == .active, !writable.load(ordering: .relaxed), pendingBytes < waterMark.low {
            writable.store(true, ordering: .relaxed)
            pipeline.syncOperations.fireChannelWritabilityChanged()
        }
        for promise in done { promise.succeed(()) }
    }

    private func continueSending() {
        guard state == .active else { return }
        if flushedCount > 0 {
            if !sending, !polling { sendFlushed() }
        } else if let promise = shutOutputAfterWrites {
            shutOutputAfterWrites = nil
            shutOutput(promise: promise)
        }
    }

    /// A closed channel's writes that will not go out after all.
    private func dropLingering() {
        pending.removeAll()
        flushedCount = 0
        pendingBytes = 0
        lingerTimer?.cancel()
        lingerTimer = nil
    }

    /// The file region at the front of the queue, by `sendfile` until it is written or the socket is full.
    private func sendFile() {
        guard case .fileRegion(let region) = pending.first!.data else { return }
        let result: Result<Int, IOError> = (try? region.fileHandle.withUnsafeFileDescriptor { file in
            var offset = off_t(region.readerIndex)
            var written = 0
            while written < region.readableBytes {
                let n = Glibc.sendfile(descriptor, file, &offset, min(region.readableBytes - written, 1 << 30))
                if n > 0 {
                    written += n
                } else if n == 0 {
                    break
                } else if errno == EINTR {
                    continue
                } else if errno == EAGAIN {
                    break
                } else {
                    return .failure(IOError(errnoCode: errno, reason: "sendfile"))
                }
            }
            return .success(written)
        }) ?? .failure(IOError(errnoCode: EBADF, reason: "sendfile"))
        switch result {
        case .failure(let error):
            failWritesAndClose(error)
        case .success(let written):
            let finished = written == pending.first!.data.readableBytes
            consume(written)
            guard state == .active else { return }
            if finished {
                continueSending()
            } else {
                // The socket is full: wait for room.
                polling = true
                inFlight += 1
                let fd = descriptor
                loop.prepareEntry(for: self, kind: Operation.pollWritable.rawValue) { sqe, userData in
                    CEdgeURing_prepPollAdd(sqe, fd, UInt32(POLLOUT), userData)
                }
            }
        }
    }

    private func polled(_ result: Int32) {
        polling = false
        guard state == .active else { return }
        if result < 0, result != -EINTR, result != -EAGAIN {
            if result == -ECANCELED { return }
            failWritesAndClose(IOError(errnoCode: -result, reason: "poll"))
            return
        }
        continueSending()
    }

    // MARK: connecting

    private func connected(_ result: Int32) {
        guard let (promise, timeout) = connecting else { return }
        connecting = nil
        timeout?.cancel()
        connectAddress?.deallocate()
        connectAddress = nil
        guard state == .registered else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        if result < 0 {
            let error = IOError(errnoCode: -result, reason: "connect")
            promise?.fail(error)
            closeNow(error: error, promise: nil)
            return
        }
        addresses.withLockedValue { $0.local = nil }
        becomeActive(promise: promise)
    }

    // MARK: closing

    private func shutOutput(promise: EventLoopPromise<Void>?) {
        outputShut = true
        if Glibc.shutdown(descriptor, Int32(SHUT_WR)) != 0, errno != ENOTCONN {
            promise?.fail(IOError(errnoCode: errno, reason: "shutdown"))
        } else {
            promise?.succeed(())
        }
        pipeline.syncOperations.fireUserInboundEventTriggered(ChannelEvent.outputClosed)
        if inputShut { closeNow(error: ChannelError.eof, promise: nil) }
    }

    private func failUnflushed(_ error: any Error) {
        var failed: [EventLoopPromise<Void>] = []
        while pending.count > flushedCount {
            let write = pending.removeLast()
            pendingBytes -= write.data.readableBytes
            if let promise = write.promise { failed.append(promise) }
        }
        for promise in failed.reversed() { promise.fail(error) }
    }

    private func failWritesAndClose(_ error: any Error) {
        pipeline.syncOperations.fireErrorCaught(error)
        closeNow(error: error, promise: nil)
    }

    private func closeNow(error: any Error, promise: EventLoopPromise<Void>?) {
        guard state != .closed else {
            promise?.fail(ChannelError.alreadyClosed)
            return
        }
        let wasActive = state == .active
        let wasRegistered = state != .fresh
        state = .closed
        active.store(false, ordering: .relaxed)
        if let (connectPromise, timeout) = connecting {
            connecting = nil
            timeout?.cancel()
            loop.cancelEntries(of: self, kind: Operation.connect.rawValue)
            connectPromise?.fail(error)
        }
        // Every write's promise fails, as on NIO's sockets. But bytes a `send` in flight has been given are, for
        // the peer, as good as in the kernel's socket buffer, where NIO's synchronous writes would have put them:
        // a handler that writes, flushes and closes (an error answer, the last of pipelined responses) must not
        // lose them. So the send finishes, the writes flushed behind it follow, and the descriptor closes after
        // them, or after ``lingerLimit`` if the peer takes nothing.
        var failed: [EventLoopPromise<Void>] = []
        for index in pending.indices {
            if let writePromise = pending[index].promise { failed.append(writePromise) }
            pending[index].promise = nil
        }
        while pending.count > flushedCount { pendingBytes -= pending.removeLast().data.readableBytes }
        if sending {
            lingerTimer = loop.scheduleTask(in: Self.lingerLimit) { [self] in
                lingerTimer = nil
                if sending { loop.cancelEntries(of: self, kind: Operation.send.rawValue) }
            }
        } else {
            pending.removeAll()
            flushedCount = 0
            pendingBytes = 0
        }
        // What else the kernel holds of this channel is cancelled. The descriptor closes when the last entry has
        // completed, so that its number cannot go to a new connection while an entry still names it.
        if receiving { loop.cancelEntries(of: self, kind: Operation.receive.rawValue) }
        if polling { loop.cancelEntries(of: self, kind: Operation.pollWritable.rawValue) }
        if watchingHangUp { loop.cancelEntries(of: self, kind: Operation.hangUp.rawValue) }
        if inFlight > 0 {
            closeWhenIdle = true
        } else {
            Glibc.close(descriptor)
        }
        let outputPromise = shutOutputAfterWrites
        shutOutputAfterWrites = nil
        promise?.succeed(())
        for writePromise in failed { writePromise.fail(error) }
        outputPromise??.fail(error)
        if wasActive { pipeline.syncOperations.fireChannelInactive() }
        loop.execute { [self] in
            if wasRegistered { pipeline.syncOperations.fireChannelUnregistered() }
            removeHandlers(pipeline: pipeline)
            closePromise.succeed(())
        }
    }

    /// How long a closed channel's last send may wait for a peer that takes nothing.
    static let lingerLimit = TimeAmount.seconds(10)

    // MARK: completions

    override func complete(kind: UInt8, result: Int32, flags: UInt32) {
        let operation = Operation(rawValue: kind)!
        inFlight -= 1
        switch operation {
        case .receive: received(result)
        case .send: sent(result)
        case .pollWritable: polled(result)
        case .connect: connected(result)
        case .hangUp: hungUp(result)
        }
        if closeWhenIdle, inFlight == 0 {
            closeWhenIdle = false
            dropLingering()
            Glibc.close(descriptor)
            receiveBuffer = nil
            spareBuffer = nil
        }
    }

    // MARK: addresses

    static func socketAddress(_ descriptor: Int32, peer: Bool) throws -> SocketAddress {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let result = withUnsafeMutablePointer(to: &storage) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { address in
                peer ? getpeername(descriptor, address, &length) : getsockname(descriptor, address, &length)
            }
        }
        guard result == 0 else { throw IOError(errnoCode: errno, reason: peer ? "getpeername" : "getsockname") }
        return try SocketAddress(storage: storage)
    }
}

extension SocketAddress {
    /// An IPv4 or IPv6 address as the kernel gives it, with its text as the host (as NIO's own sockets have it).
    init(storage: sockaddr_storage) throws {
        var storage = storage
        switch Int32(storage.ss_family) {
        case AF_INET:
            let address = withUnsafeBytes(of: &storage) { $0.load(as: sockaddr_in.self) }
            var text = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
            var raw = address.sin_addr
            inet_ntop(AF_INET, &raw, &text, socklen_t(text.count))
            self.init(address, host: String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        case AF_INET6:
            let address = withUnsafeBytes(of: &storage) { $0.load(as: sockaddr_in6.self) }
            var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
            var raw = address.sin6_addr
            inet_ntop(AF_INET6, &raw, &text, socklen_t(text.count))
            self.init(address, host: String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        case AF_UNIX:
            self.init(withUnsafeBytes(of: &storage) { $0.load(as: sockaddr_un.self) })
        default:
            throw ChannelError.operationUnsupported
        }
    }
}


/// A value moved to the loop's thread, which alone uses it.
struct UnsafeSendableBox<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}
