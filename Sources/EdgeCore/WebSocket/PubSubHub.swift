import NIOCore
import Synchronization

/// A message published to a hub channel. Its bytes are one buffer shared by every subscriber (a WebSocket frame
/// carries them as its payload; an event stream the ``eventStreamBytes`` made once), never a copy each.
struct HubMessage: Sendable {
    /// The channel's sequence number: the event ID clients reconnect with.
    let id: UInt64
    let isText: Bool
    let data: ByteBuffer
    /// The message as one Server-Sent Event (`id:` and a `data:` line per line of the message).
    let eventStreamBytes: ByteBuffer
    /// The message as one WebSocket frame (a server's frames are unmasked, so every subscriber gets the same bytes),
    /// written below the frame encoder: one buffer for all subscribers, no frame header per subscriber.
    let frameBytes: ByteBuffer

    static func frame(_ data: ByteBuffer, isText: Bool) -> ByteBuffer {
        var frame = ByteBuffer()
        let length = data.readableBytes
        frame.reserveCapacity(length + 10)
        frame.writeInteger(UInt8(isText ? 0x81 : 0x82))
        if length < 126 {
            frame.writeInteger(UInt8(length))
        } else if length <= Int(UInt16.max) {
            frame.writeInteger(UInt8(126))
            frame.writeInteger(UInt16(length))
        } else {
            frame.writeInteger(UInt8(127))
            frame.writeInteger(UInt64(length))
        }
        frame.writeImmutableBuffer(data)
        return frame
    }
}

/// Who receives a channel's messages: a WebSocket or event-stream client. Called on its own event loop.
protocol HubSubscriber: AnyObject {
    func deliver(_ message: HubMessage)
}

/// A publish/subscribe hub (the job of nginx's nchan or Pushpin) behind a `websocket = { hub = true }` route:
/// channels named by the request path below the route, subscribers on every event loop, publishers anywhere.
///
/// Publishing takes the hub's lock once to number the message, keep it for replay and take the channel's
/// subscribers by event loop; then each loop with subscribers gets one task that hands the same message to its
/// subscribers there. A subscriber list is touched only on its own loop (``Shard``), so delivery takes no lock.
final class PubSubHub: Sendable {
    /// A channel's subscribers on one event loop; read and changed on that loop only.
    final class Shard: @unchecked Sendable {
        let loop: any EventLoop
        var subscribers: [ObjectIdentifier: any HubSubscriber] = [:]
        init(loop: any EventLoop) { self.loop = loop }
    }

    private struct ChannelState {
        var nextID: UInt64 = 1
        var recent: CircularBuffer<HubMessage> = CircularBuffer()
        var shards: [ObjectIdentifier: Shard] = [:]
        var subscribers = 0
    }

    private let channels = Mutex<[String: ChannelState]>([:])
    let settings: WebSocketRouteConfiguration.HubConfiguration

    init(settings: WebSocketRouteConfiguration.HubConfiguration) {
        self.settings = settings
    }

    /// Adds `subscriber` (on `loop`, the caller's) to `channel`; returns the kept messages after `lastID`, which the
    /// caller sends first (nothing when `lastID` is `nil`: a new client starts from now).
    func subscribe(_ subscriber: any HubSubscriber, to channel: String, on loop: any EventLoop, after lastID: UInt64?) -> [HubMessage] {
        let (shard, replay) = channels.withLock { channels -> (Shard, [HubMessage]) in
            var state = channels[channel] ?? ChannelState()
            let key = ObjectIdentifier(loop)
            let shard = state.shards[key] ?? Shard(loop: loop)
            state.shards[key] = shard
            state.subscribers += 1
            let replay = lastID.map { last in state.recent.filter { $0.id > last } } ?? []
            channels[channel] = state
            return (shard, replay)
        }
        shard.subscribers[ObjectIdentifier(subscriber)] = subscriber
        return replay
    }

    /// Removes `subscriber` (on `loop`, the caller's) from `channel`.
    func unsubscribe(_ subscriber: any HubSubscriber, from channel: String, on loop: any EventLoop) {
        let key = ObjectIdentifier(loop)
        channels.withLock { channels in
            guard var state = channels[channel], let shard = state.shards[key],
                shard.subscribers.removeValue(forKey: ObjectIdentifier(subscriber)) != nil
            else { return }
            state.subscribers -= 1
            if shard.subscribers.isEmpty { state.shards[key] = nil }
            if state.shards.isEmpty, state.recent.isEmpty {
                channels[channel] = nil
            } else {
                channels[channel] = state
            }
        }
    }

    /// Publishes to `channel`; returns the message's ID and how many subscribers it went to.
    func publish(_ data: ByteBuffer, isText: Bool, to channel: String) -> (id: UInt64, subscribers: Int) {
        var eventStream = ByteBuffer()
        eventStream.reserveCapacity(data.readableBytes + 32)
        let (message, shards, count) = channels.withLock { channels -> (HubMessage, [Shard], Int) in
            var state = channels[channel] ?? ChannelState()
            let id = state.nextID
            state.nextID += 1
            eventStream.writeString("id: \(id)\n")
            Self.writeEventData(data, to: &eventStream)
            let message = HubMessage(
                id: id, isText: isText, data: data, eventStreamBytes: eventStream, frameBytes: HubMessage.frame(data, isText: isText)
            )
            if settings.replay > 0 {
                state.recent.append(message)
                if state.recent.count > settings.replay { state.recent.removeFirst() }
            }
            let shards = Array(state.shards.values)
            let count = state.subscribers
            if !state.shards.isEmpty || !state.recent.isEmpty { channels[channel] = state }
            return (message, shards, count)
        }
        for shard in shards {
            shard.loop.execute {
                for subscriber in shard.subscribers.values { subscriber.deliver(message) }
            }
        }
        return (message.id, count)
    }

    /// Writes `data` as an event's `data:` lines (one per line of it, CR LF and CR ending lines too) and the blank
    /// line that ends the event.
    static func writeEventData(_ data: ByteBuffer, to buffer: inout ByteBuffer) {
        let bytes = data.readableBytesView
        var lineStart = bytes.startIndex
        var index = bytes.startIndex
        func line(_ end: Int) {
            buffer.writeStaticString("data: ")
            buffer.writeBytes(bytes[lineStart..<end])
            buffer.writeStaticString("\n")
        }
        while index < bytes.endIndex {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\n") || byte == UInt8(ascii: "\r") {
                line(index)
                if byte == UInt8(ascii: "\r"), index + 1 < bytes.endIndex, bytes[index + 1] == UInt8(ascii: "\n") { index += 1 }
                lineStart = index + 1
            }
            index += 1
        }
        line(bytes.endIndex)
        buffer.writeStaticString("\n")
    }
}

/// A WebSocket client subscribed to a hub channel: each message goes out as one frame; while its socket is full
/// messages wait, up to `max_queued_messages`, beyond which the client is closed with 1008. What a subscriber
/// sends is not published (publishers POST).
final class WebSocketHubSubscriber: WebSocketApplication, HubSubscriber {
    let hub: PubSubHub
    private let channel: String
    private let lastID: UInt64?
    private weak var session: WebSocketSession?
    private var queue = CircularBuffer<HubMessage>()
    private var loop: (any EventLoop)?

    init(hub: PubSubHub, channel: String, lastID: UInt64?) {
        self.hub = hub
        self.channel = channel
        self.lastID = lastID
    }

    func started(_ session: WebSocketSession, on loop: any EventLoop) {
        self.session = session
        self.loop = loop
        for message in hub.subscribe(self, to: channel, on: loop, after: lastID) { deliver(message) }
    }

    func deliver(_ message: HubMessage) {
        guard let session else { return }
        if queue.isEmpty, session.isWritable {
            session.send(message)
            return
        }
        guard queue.count < hub.settings.maxQueuedMessages else {
            // Out of the channel at once, not when the closing handshake ends: it gets nothing more either way.
            queue.removeAll()
            leave()
            session.close(code: .policyViolation, reason: "subscriber too slow")
            return
        }
        queue.append(message)
    }

    func writable(_ session: WebSocketSession) {
        while session.isWritable, let message = queue.popFirst() {
            session.send(message)
        }
    }

    func received(_ message: WebSocketMessage, on session: WebSocketSession) {}

    func ended(_ session: WebSocketSession) {
        queue.removeAll()
        leave()
    }

    private func leave() {
        guard let loop else { return }
        self.loop = nil
        hub.unsubscribe(self, from: channel, on: loop)
    }
}

/// A Server-Sent Events client subscribed to a hub channel (for clients that cannot use WebSocket): the response
/// body is a ``BodyPipe`` the hub writes events into. A comment line every `ping_seconds` keeps intermediaries
/// from timing it out; a client that stops reading is dropped once `max_queued_messages` wait.
final class EventStreamHubSubscriber: HubSubscriber {
    private let hub: PubSubHub
    private let channel: String
    private let pipe: BodyPipe
    private let loop: any EventLoop
    private var waiting = 0
    private var paused = false
    private var ended = false
    private var keepalive: Scheduled<Void>?

    init(hub: PubSubHub, channel: String, pipe: BodyPipe, loop: any EventLoop) {
        self.hub = hub
        self.channel = channel
        self.pipe = pipe
        self.loop = loop
    }

    func start(after lastID: UInt64?, ping: TimeAmount?) {
        pipe.onDemand = { [weak self] in
            self?.paused = false
            self?.waiting = 0
        }
        pipe.onCancel = { [weak self] _ in self?.end() }
        pipe.write(ByteBuffer(string: ": subscribed\n\n"))
        pipe.batchEnded()
        for message in hub.subscribe(self, to: channel, on: loop, after: lastID) { deliver(message) }
        if let ping { scheduleKeepalive(ping) }
    }

    private func scheduleKeepalive(_ ping: TimeAmount) {
        keepalive = loop.assumeIsolated().scheduleTask(in: ping) { [weak self] in
            guard let self, !self.ended else { return }
            if !self.paused {
                self.pipe.write(ByteBuffer(string: ": ping\n\n"))
                self.pipe.batchEnded()
            }
            self.scheduleKeepalive(ping)
        }
    }

    func deliver(_ message: HubMessage) {
        guard !ended else { return }
        if paused {
            waiting += 1
            if waiting > hub.settings.maxQueuedMessages {
                pipe.fail(BodyPipe.Broken(description: "subscriber too slow"))
                end()
                return
            }
        }
        if !pipe.write(message.eventStreamBytes) { paused = true }
        pipe.batchEnded()
    }

    private func end() {
        guard !ended else { return }
        ended = true
        keepalive?.cancel()
        pipe.onDemand = nil
        pipe.onCancel = nil
        hub.unsubscribe(self, from: channel, on: loop)
    }
}
