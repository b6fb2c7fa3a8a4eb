import NIOCore

/// A `respond` route: the same complete response to every request, answered at once.
final class FixedResponse: Origin {
    let response: EdgeResponse

    init(_ response: EdgeResponse) {
        self.response = response
    }

    func immediateReply(to request: OriginRequest, loop: LoopState) -> Reply? {
        .response(response)
    }

    func serve(_ request: OriginRequest, context: OriginContext) -> Dispatch {
        .ready(.response(response))
    }
}
