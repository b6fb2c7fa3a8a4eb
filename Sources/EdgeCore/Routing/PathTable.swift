/// The routes of one site, found for a request path in time that does not grow with the number of routes.
///
/// - Exact routes (`match = "exact"`, nginx's `location =`) are looked up first, in a ``PerfectHashTable``.
/// - Prefix routes sit on a tree of path segments: `/api/v1` is the node reached by `api`, then `v1`. A request
///   walks the tree once, segment by segment (each step a perfect-hash look-up of the segment's bytes), and the
///   deepest node with a route wins: the longest prefix that ends at a segment boundary, as ``Route/matches(_:)``
///   defines it. The walk is as long as the request path is deep, never as long as the route list.
struct PathTable: Sendable {
    private let exact: PerfectHashTable<Route>
    private let nodes: [Node]

    private struct Node: Sendable {
        var route: Route?
        var children: PerfectHashTable<Int>
    }

    /// Builds the table. `routes` have distinct match forms within each kind (the loader refuses duplicates).
    init(routes: [Route]) {
        exact = PerfectHashTable(routes.filter(\.isExact).map { (Array($0.prefix.utf8), $0) })
        // Build with plain dictionaries, then freeze each node's children into a perfect hash.
        var routesAt: [Route?] = [nil]
        var childrenAt: [[[UInt8]: Int]] = [[:]]
        for route in routes where !route.isExact {
            var node = 0
            for segment in Self.segments(of: route.matchPrefix) {
                let key = Array(segment)
                if let next = childrenAt[node][key] {
                    node = next
                } else {
                    routesAt.append(nil)
                    childrenAt.append([:])
                    childrenAt[node][key] = routesAt.count - 1
                    node = routesAt.count - 1
                }
            }
            if routesAt[node] == nil { routesAt[node] = route }
        }
        nodes = zip(routesAt, childrenAt).map { route, children in
            Node(route: route, children: PerfectHashTable(children.map { ($0.key, $0.value) }))
        }
    }

    /// The route for `path` (in normal form): the exact route with that path, else the longest matching prefix.
    @inline(__always)
    func route(for path: Substring) -> Route? {
        let utf8 = path.utf8
        if exact.count > 0, let route = exact.value(for: utf8) { return route }
        // Nodes by index, read in place: a copy of a node (a route and a table of arrays) would retain each part.
        var node = 0
        var best = 0  // the deepest node with a route; the root's route, if any, to begin with
        var start = utf8.startIndex
        // The root node stands for `/`; each step consumes one `/segment`.
        while start < utf8.endIndex, utf8[start] == UInt8(ascii: "/") {
            let from = utf8.index(after: start)
            let end = utf8[from...].firstIndex(of: UInt8(ascii: "/")) ?? utf8.endIndex
            guard nodes[node].children.count > 0, let next = nodes[node].children.value(for: utf8[from..<end]) else { break }
            node = next
            if nodes[node].route != nil { best = node }
            start = end
        }
        return nodes[best].route
    }

    /// The segments of a path in match form: `/` has none, `/a/b` has `a` and `b`.
    private static func segments(of path: String) -> [ArraySlice<UInt8>] {
        let bytes = Array(path.utf8)
        guard bytes.count > 1 else { return [] }
        return bytes.dropFirst().split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
    }
}
