import NIOCore

/// What NIO's `Channel` asks of options from any thread, for the io_uring channels, whose options live on their
/// loop (``URingSocketChannel``, ``URingServerChannel``): each says how to set and read one there.
protocol URingChannelOptions: Channel {
    var loop: URingEventLoop { get }
    func setOption0<Option: ChannelOption>(_ option: Option, value: Option.Value) throws
    func getOption0<Option: ChannelOption>(_ option: Option) throws -> Option.Value
}

extension URingChannelOptions {
    func setOption<Option: ChannelOption>(_ option: Option, value: Option.Value) -> EventLoopFuture<Void> {
        if loop.inEventLoop {
            return loop.makeCompletedFuture { try setOption0(option, value: value) }
        }
        let sendable = UnsafeSendableBox((option, value))
        return loop.submit { try self.setOption0(sendable.value.0, value: sendable.value.1) }
    }

    func getOption<Option: ChannelOption>(_ option: Option) -> EventLoopFuture<Option.Value> {
        if loop.inEventLoop {
            return loop.makeCompletedFuture { try getOption0(option) }
        }
        let result = loop.makePromise(of: UnsafeSendableBox<Option.Value>.self)
        loop.execute {
            do { result.succeed(UnsafeSendableBox(try self.getOption0(option))) } catch { result.fail(error) }
        }
        return result.futureResult.map { $0.value }
    }

    var syncOptions: (any NIOSynchronousChannelOptions)? { URingSyncOptions(channel: self) }
}

/// `syncOptions` of an io_uring channel: its options, set and read on its loop.
struct URingSyncOptions<Target: URingChannelOptions>: NIOSynchronousChannelOptions {
    let channel: Target

    func setOption<Option: ChannelOption>(_ option: Option, value: Option.Value) throws {
        try channel.setOption0(option, value: value)
    }

    func getOption<Option: ChannelOption>(_ option: Option) throws -> Option.Value {
        try channel.getOption0(option)
    }
}
