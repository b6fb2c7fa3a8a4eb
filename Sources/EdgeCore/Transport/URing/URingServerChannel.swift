import Atomics
import CEdgeLinux
import Glibc
import NIOCore

/// A listening socket on a ``URingEventLoop`` (issue 29). Each loop of a ``URingEventLoopGroup`` has its own,
/// bound with `SO_REUSEPORT` to the same address, so that the kernel spreads connections over the loops and a
/// connection never changes threads. One multishot `accept` entry stays armed while reading is wanted; each
/// accepted connection is a ``URingSocketChannel`` read into this channel's pipeline as a `Channel`, as NIO's server
/// channels do, so that NIO's quiescing helper and Edge's accept handlers work unchanged. The handler
/// ``URingListener`` adds last sets the connection up and registers it.
final class URingServerChannel: URingOperationTarget, Channel, ChannelCore, URingChannelOptions, @unchecked Sendable {
    private enum Operation: UInt8 { case accept = 1 }

    let loop: URingEventLoop
    let descriptor: Int32
    let allocator = ByteBufferAllocator()
    let localAddress: SocketAddress?
    var remoteAddress: SocketAddress? { nil }
    var parent: (any Channel)? { nil }
    private var _pipeline: ChannelPipeline! = nil
    private let closePromise: EventLoopPromise<Void>
    private let active = ManagedAtomic(false)

    private enum State { case fresh, registered, active, closed }
    private var state = State.fresh
    private var autoRead = true
    private var accepting = false
    private var inFlight = 0
    private var closeWhenIdle = false

    init(descriptor: Int32, address: SocketAddress, loop: URingEventLoop) {
        self.descriptor = descriptor
        self.localAddress = address
        self.loop = loop
        self.closePromise = loop.makePromise()
        super.init()
        self._pipeline = ChannelPipeline(channel: self)
    }

    /// A listening socket for `address` (`SO_REUSEADDR`, `SO_REUSEPORT`, non-blocking, close-on-exec); the address
    /// bound, with the port the kernel chose when `address` has port 0.
    static func listen(on address: SocketAddress, backlog: Int32) throws -> (descriptor: Int32, address: SocketAddress) {
        let family: Int32 = address.protocol == .inet6 ? AF_INET6 : AF_INET
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw IOError(errnoCode: errno, reason: "socket") }
        do {
            var one: Int32 = 1
            guard setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, 4) == 0,
                setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, 4) == 0
            else { throw IOError(errnoCode: errno, reason: "setsockopt") }
            let bound = address.withSockAddr { pointer, size in Glibc.bind(fd, pointer, socklen_t(size)) }
            guard bound == 0 else { throw IOError(errnoCode: errno, reason: "bind") }
            guard Glibc.listen(fd, backlog) == 0 else { throw IOError(errnoCode: errno, reason: "listen") }
            return (fd, try URingSocketChannel.socketAddress(fd, peer: false))
        } catch {
            Glibc.close(fd)
            throw error
        }
    }

    // MARK: Channel

    var pipeline: ChannelPipeline { _pipeline }
    var eventLoop: any EventLoop { loop }
    var closeFuture: EventLoopFuture<Void> { closePromise.futureResult }
    var _channelCore: any ChannelCore { self }
    var isActive: Bool { active.load(ordering: .relaxed) }
    var isWritable: Bool { false }

    func setOption0<Option: ChannelOption>(_ option: Option, value: Option.Value) throws {
        loop.preconditionInEventLoop()
        guard option is ChannelOptions.Types.AutoReadOption else { throw ChannelError.operationUnsupported }
        let on = value as! Bool
        guard on != autoRead else { return }
        autoRead = on
        if on {
            read0()
        } else if accepting {
            // Paused (``AcceptFailureHandler`` after EMFILE): the armed accept is withdrawn until reading resumes.
            loop.cancelEntries(of: self, kind: Operation.accept.rawValue)
        }
    }

    func getOption0<Option: ChannelOption>(_ option: Option) throws -> Option.Value {
        guard option is ChannelOptions.Types.AutoReadOption else { throw ChannelError.operationUnsupported }
        return autoRead as! Option.Value
    }

    // MARK: ChannelCore

    func localAddress0() throws -> SocketAddress {
        guard let localAddress else { throw ChannelError.ioOnClosedChannel }
        return localAddress
    }

    func remoteAddress0() throws -> SocketAddress { throw ChannelError.operationUnsupported }

    func register0(promise: EventLoopPromise<Void>?) {
        guard state == .fresh else {
            promise?.fail(ChannelError.inappropriateOperationForState)
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
        state = .active
        active.store(true, ordering: .relaxed)
        promise?.succeed(())
        pipeline.syncOperations.fireChannelActive()
        if autoRead { pipeline.syncOperations.read() }
    }

    func bind0(to address: SocketAddress, promise: EventLoopPromise<Void>?) {
        promise?.fail(ChannelError.operationUnsupported)
    }

    func connect0(to address: SocketAddress, promise: EventLoopPromise<Void>?) {
        promise?.fail(ChannelError.operationUnsupported)
    }

    func write0(_ data: NIOAny, promise: EventLoopPromise<Void>?) {
        promise?.fail(ChannelError.operationUnsupported)
    }

    func flush0() {}

    func read0() {
        guard state == .active, !accepting else { return }
        accepting = true
        inFlight += 1
        let fd = descriptor
        loop.prepareEntry(for: self, kind: Operation.accept.rawValue) { sqe, userData in
            CEdgeURing_prepAcceptMultishot(sqe, fd, userData)
        }
    }

    func close0(error: any Error, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        guard state != .closed else {
            promise?.fail(ChannelError.alreadyClosed)
            return
        }
        guard mode == .all else {
            promise?.fail(ChannelError.operationUnsupported)
            return
        }
        let wasActive = state == .active
        let wasRegistered = state != .fresh
        state = .closed
        active.store(false, ordering: .relaxed)
        if inFlight > 0 {
            closeWhenIdle = true
            loop.cancelEntries(of: self, kind: Operation.accept.rawValue)
        } else {
            Glibc.close(descriptor)
        }
        promise?.succeed(())
        if wasActive { pipeline.syncOperations.fireChannelInactive() }
        loop.execute { [self] in
            if wasRegistered { pipeline.syncOperations.fireChannelUnregistered() }
            removeHandlers(pipeline: pipeline)
            closePromise.succeed(())
        }
    }

    func triggerUserOutboundEvent0(_ event: Any, promise: EventLoopPromise<Void>?) {
        promise?.fail(ChannelError.operationUnsupported)
    }

    func channelRead0(_ data: NIOAny) {
        // A connection no handler took: ``URingListener``'s handler is last, so this is one refused on the way.
        if let channel = unwrapData(data, as: (any Channel).self) as (any Channel)? { channel.close(promise: nil) }
    }

    func errorCaught0(error: any Error) {}

    // MARK: completions

    override func complete(kind: UInt8, result: Int32, flags: UInt32) {
        if kind == Operation.accept.rawValue {
            let more = flags & UInt32(IORING_CQE_F_MORE) != 0
            if !more {
                accepting = false
                inFlight -= 1
            }
            accepted(result, more: more)
        }
        if closeWhenIdle, inFlight == 0 {
            closeWhenIdle = false
            Glibc.close(descriptor)
        }
    }

    private func accepted(_ result: Int32, more: Bool) {
        guard state == .active else {
            if result >= 0 { Glibc.close(result) }
            return
        }
        if result >= 0 {
            let child = URingSocketChannel(descriptor: result, loop: loop, parent: self)
            pipeline.syncOperations.fireChannelRead(NIOAny(child as any Channel))
            pipeline.syncOperations.fireChannelReadComplete()
        } else if result != -ECANCELED {
            pipeline.syncOperations.fireErrorCaught(IOError(errnoCode: -result, reason: "accept"))
        }
        if !more, state == .active, autoRead { read0() }
    }
}
