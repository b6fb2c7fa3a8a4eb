// swift-tools-version:6.1
// Issue 29, step 1: the same minimal HTTP/1.1 responder on io_uring (liburing, Debian's liburing-dev), on plain
// epoll and on SwiftNIO's epoll transport, to measure what the transport alone costs per request. Not part of
// Edge's build. `swift build -c release` here, then `bench/ab-cpu --tool wrk EDGE nginx responder:BINARY ...`
// measures them beside Edge and nginx (README, "io_uring: the spike").
import PackageDescription

let package = Package(
    name: "uring-spike",
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
    ],
    targets: [
        .target(name: "CURing", linkerSettings: [.linkedLibrary("uring")]),
        .target(name: "ResponderKit", swiftSettings: [.unsafeFlags(["-Ounchecked"])]),
        .executableTarget(name: "uring-responder", dependencies: ["CURing", "ResponderKit"],
                          swiftSettings: [.unsafeFlags(["-Ounchecked"])]),
        .executableTarget(name: "epoll-responder", dependencies: ["CURing", "ResponderKit"], swiftSettings: [.unsafeFlags(["-Ounchecked"])]),
        .executableTarget(name: "nio-responder", dependencies: [
            "ResponderKit",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ], swiftSettings: [.unsafeFlags(["-Ounchecked"])]),
    ],
    swiftLanguageModes: [.v6]
)
