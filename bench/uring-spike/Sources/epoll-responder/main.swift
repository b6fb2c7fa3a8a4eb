// The io_uring responder's twin on plain epoll, with no framework: one thread, `epoll_wait`, then `read` and
// `write` per ready connection. It separates what io_uring saves (system calls batched into one `io_uring_enter`)
// from what any lean loop saves against SwiftNIO's channel machinery.
//
//   epoll-responder --port P --body FILE --content-type TYPE
import CURing  // for <sys/epoll.h>
import Glibc
import ResponderKit

struct Loop {
    static let batch = 64
    let epoll: Int32
    let listener: Int32
    var response: PreparedResponse
    var heads = [RequestHeadCounter](repeating: RequestHeadCounter(), count: 65536)
    var unsent = [Int](repeating: 0, count: 65536)  // bytes of answers a full socket has not taken yet

    init(options: ResponderOptions) {
        signal(SIGPIPE, SIG_IGN)
        let port = options.port
        response = PreparedResponse(options: options, copies: Self.batch)
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        var yes: Int32 = 1
        setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &yes, 4)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(listener, 4096) == 0 else { fatalError("cannot listen on port \(port): errno \(errno)") }
        self.listener = listener
        epoll = epoll_create1(0)
        var event = epoll_event(events: EPOLLIN.rawValue, data: epoll_data_t(fd: listener))
        epoll_ctl(epoll, EPOLL_CTL_ADD, listener, &event)
    }

    mutating func close(_ fd: Int32) {
        heads[Int(fd)] = RequestHeadCounter()
        unsent[Int(fd)] = 0
        Glibc.close(fd)
    }

    /// Writes `unsent` bytes of answers; whatever the socket does not take waits for EPOLLOUT.
    mutating func send(_ fd: Int32) {
        while unsent[Int(fd)] > 0 {
            let n = min(unsent[Int(fd)], Self.batch * response.one)
            let wrote = write(fd, response.bytes, n)
            if wrote < 0 {
                if errno == EAGAIN {
                    var event = epoll_event(events: EPOLLIN.rawValue | EPOLLOUT.rawValue, data: epoll_data_t(fd: fd))
                    epoll_ctl(epoll, EPOLL_CTL_MOD, fd, &event)
                } else {
                    close(fd)
                }
                return
            }
            // A short write leaves part of an answer: the rest is the same bytes further on, sent from the start
            // of a copy (every copy is identical), so the count of bytes is all that is kept.
            unsent[Int(fd)] -= wrote
            if wrote < n { continue }
        }
    }

    mutating func run() -> Never {
        var events = [epoll_event](repeating: epoll_event(), count: 512)
        let buffer = UnsafeMutablePointer<UInt8>.allocate(capacity: 65536)
        var yes: Int32 = 1
        while true {
            let ready = epoll_wait(epoll, &events, Int32(events.count), -1)
            response.refreshDate()
            if ready <= 0 { continue }
            for i in 0..<Int(ready) {
                let fd = events[i].data.fd
                if fd == listener {
                    while true {
                        let client = curing_accept_nonblocking(listener)
                        if client < 0 { break }
                        setsockopt(client, Int32(IPPROTO_TCP), TCP_NODELAY, &yes, 4)
                        var event = epoll_event(events: EPOLLIN.rawValue, data: epoll_data_t(fd: client))
                        epoll_ctl(epoll, EPOLL_CTL_ADD, client, &event)
                    }
                    continue
                }
                if events[i].events & EPOLLOUT.rawValue != 0 {
                    var event = epoll_event(events: EPOLLIN.rawValue, data: epoll_data_t(fd: fd))
                    epoll_ctl(epoll, EPOLL_CTL_MOD, fd, &event)
                    send(fd)
                }
                guard events[i].events & (EPOLLIN.rawValue | EPOLLHUP.rawValue | EPOLLERR.rawValue) != 0 else { continue }
                let n = read(fd, buffer, 65536)
                if n <= 0 {
                    if n < 0 && errno == EAGAIN { continue }
                    close(fd)
                    continue
                }
                let requests = heads[Int(fd)].count(UnsafeRawBufferPointer(start: buffer, count: n))
                if requests > 0 {
                    let waiting = unsent[Int(fd)] > 0
                    unsent[Int(fd)] += requests * response.one
                    if !waiting { send(fd) }
                }
            }
        }
    }
}

var loop = Loop(options: ResponderOptions.parse())
loop.run()
