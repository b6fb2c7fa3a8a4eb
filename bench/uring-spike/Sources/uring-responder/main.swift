// A minimal HTTP/1.1 responder on io_uring: one thread, one ring. It answers every request (a head ending in
// CRLF CRLF; no bodies) with the same response, as Edge answers a cache hit, so that what it costs per request is
// the transport. Multishot accept, multishot receive into a provided-buffer ring, sends from one static buffer,
// and everything a loop iteration prepares submitted by the one `io_uring_enter` that also waits.
//
//   uring-responder --port P --body FILE --content-type TYPE
import CURing
import Glibc
import ResponderKit

/// Pipelined requests are answered by one send of up to this many responses.
let batch = 64

struct Connection {
    var open = false
    var heads = RequestHeadCounter()
    var sending = 0  // bytes of the send in flight still unsent (0: none in flight)
    var sendFrom = 0
    var waiting = 0  // requests answered once the send in flight completes
    var peerClosed = false
}

enum Kind: UInt64 { case accept = 1, receive = 2, send = 3, close = 4 }

@inline(__always) func data(_ kind: Kind, _ fd: Int32) -> UInt64 { kind.rawValue << 32 | UInt64(UInt32(bitPattern: fd)) }

struct Loop {
    let ring: UnsafeMutablePointer<io_uring>
    let listener: Int32
    let buffers: UnsafeMutablePointer<io_uring_buf_ring>
    let storage: UnsafeMutablePointer<UInt8>
    let bufferCount: UInt32 = 4096, bufferSize: UInt32 = 4096, group: UInt16 = 0
    var response: PreparedResponse
    var connections = [Connection](repeating: Connection(), count: 65536)

    init(options: ResponderOptions) {
        signal(SIGPIPE, SIG_IGN)
        response = PreparedResponse(options: options, copies: batch)
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        self.listener = listener
        var one: Int32 = 1
        setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, 4)
        setsockopt(listener, SOL_SOCKET, SO_REUSEPORT, &one, 4)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = options.port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(listener, 4096) == 0 else { fatalError("cannot listen on port \(options.port): errno \(errno)") }
        var error: Int32 = 0
        guard let ring = curing_create(4096, &error) else { fatalError("io_uring_queue_init_params: errno \(error)") }
        self.ring = ring
        var storage: UnsafeMutablePointer<UInt8>? = nil
        guard let buffers = curing_buffers(ring, bufferCount, bufferSize, group, &storage, &error), let storage else {
            fatalError("io_uring_register_buf_ring: errno \(error)")
        }
        self.buffers = buffers
        self.storage = storage
    }

    @inline(__always) mutating func startSend(_ fd: Int32, _ requests: Int) {
        let count = min(requests, batch)
        connections[Int(fd)].waiting = requests - count
        connections[Int(fd)].sending = count * response.one
        connections[Int(fd)].sendFrom = 0
        _ = curing_send(ring, fd, response.bytes, UInt32(count * response.one), data(.send, fd))
    }

    @inline(__always) mutating func closeConnection(_ fd: Int32) {
        connections[Int(fd)] = Connection()
        _ = curing_close(ring, fd, data(.close, fd))
    }

    mutating func run() -> Never {
        var one: Int32 = 1
        _ = curing_accept_multishot(ring, listener, data(.accept, listener))
        let cqes = UnsafeMutablePointer<UnsafeMutablePointer<io_uring_cqe>?>.allocate(capacity: 1024)
        while true {
            let rc = curing_submit_and_wait(ring, 1)
            if rc < 0 && rc != -EINTR && rc != -ETIME { fatalError("io_uring_submit_and_wait: \(rc)") }
            response.refreshDate()
            let count = Int(curing_peek(ring, cqes, 1024))
            var returned = false
            for i in 0..<count {
                let cqe = cqes[i]!.pointee
                let fd = Int32(truncatingIfNeeded: cqe.user_data & 0xffff_ffff)
                let res = cqe.res
                switch Kind(rawValue: cqe.user_data >> 32) {
                case .accept:
                    if res >= 0 {
                        setsockopt(res, Int32(IPPROTO_TCP), TCP_NODELAY, &one, 4)
                        connections[Int(res)] = Connection(open: true)
                        _ = curing_recv_multishot(ring, res, group, data(.receive, res))
                    }
                    if cqe.flags & IORING_CQE_F_MORE == 0 { _ = curing_accept_multishot(ring, listener, data(.accept, listener)) }
                case .receive:
                    guard connections[Int(fd)].open else {
                        if cqe.flags & IORING_CQE_F_BUFFER != 0 {
                            curing_buffer_return(buffers, bufferCount, storage, bufferSize, UInt16(cqe.flags >> IORING_CQE_BUFFER_SHIFT))
                            returned = true
                        }
                        continue
                    }
                    if res > 0 {
                        let bid = UInt16(cqe.flags >> IORING_CQE_BUFFER_SHIFT)
                        let bytes = storage + Int(bid) * Int(bufferSize)
                        let requests = connections[Int(fd)].heads.count(UnsafeRawBufferPointer(start: bytes, count: Int(res)))
                        curing_buffer_return(buffers, bufferCount, storage, bufferSize, bid)
                        returned = true
                        if requests > 0 {
                            if connections[Int(fd)].sending > 0 { connections[Int(fd)].waiting += requests } else { startSend(fd, requests) }
                        }
                        if cqe.flags & IORING_CQE_F_MORE == 0 { _ = curing_recv_multishot(ring, fd, group, data(.receive, fd)) }
                    } else if res == -ENOBUFS {
                        _ = curing_recv_multishot(ring, fd, group, data(.receive, fd))
                    } else {
                        if connections[Int(fd)].sending > 0 { connections[Int(fd)].peerClosed = true } else { closeConnection(fd) }
                    }
                case .send:
                    guard connections[Int(fd)].open else { continue }
                    if res < 0 { closeConnection(fd); continue }
                    var c = connections[Int(fd)]
                    c.sending -= Int(res)
                    c.sendFrom += Int(res)
                    if c.sending > 0 {
                        connections[Int(fd)] = c
                        _ = curing_send(ring, fd, response.bytes + c.sendFrom, UInt32(c.sending), data(.send, fd))
                    } else if c.peerClosed {
                        closeConnection(fd)
                    } else {
                        connections[Int(fd)] = c
                        if c.waiting > 0 { startSend(fd, c.waiting) }
                    }
                case .close, .none:
                    break
                }
            }
            if returned { curing_buffer_commit(buffers, 0) }
            curing_advance(ring, UInt32(count))
        }
    }
}

var loop = Loop(options: ResponderOptions.parse())
loop.run()
