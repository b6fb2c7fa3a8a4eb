import NIOCore

/// The running configuration as JSON for `GET /config`, built by reflection so that every setting a future change
/// adds shows up without a line here. Values of keys that hold secrets (`token`, `password`, `secret`, `key` in
/// their name, but not file paths such as `private_key`) are written as `"<redacted>"`. Times are seconds.
enum ConfigurationDump {
    static func json(_ configuration: EdgeConfiguration) -> String {
        var out = ""
        write(configuration, name: nil, indent: 0, to: &out)
        return out + "\n"
    }

    private static func isSecret(_ name: String) -> Bool {
        let lower = name.lowercased()
        return ["token", "password", "secret", "authorization", "cookie", "api_key", "api-key", "apikey"].contains {
            lower == $0 || lower.hasSuffix("_" + $0) || lower.hasSuffix("-" + $0)
        }
    }

    private static func write(_ value: Any, name: String?, indent: Int, to out: inout String) {
        if let name, isSecret(name) {
            out += "\"<redacted>\""
            return
        }
        switch value {
        case let text as String: out += quoted(text)
        case let flag as Bool: out += flag ? "true" : "false"
        case let number as Int: out += String(number)
        case let number as Double: out += String(number)
        case let amount as TimeAmount: out += String(Double(amount.nanoseconds) / 1e9)
        case let convertible as any CustomStringConvertible where isLeaf(value):
            out += quoted(convertible.description)
        default:
            let mirror = Mirror(reflecting: value)
            let pad = String(repeating: "  ", count: indent + 1)
            switch mirror.displayStyle {
            case .optional:
                if let inner = mirror.children.first { write(inner.value, name: name, indent: indent, to: &out) } else { out += "null" }
            case .collection, .set:
                if mirror.children.isEmpty { out += "[]"; return }
                out += "[\n"
                for (index, child) in mirror.children.enumerated() {
                    out += pad
                    write(child.value, name: nil, indent: indent + 1, to: &out)
                    out += index < mirror.children.count - 1 ? ",\n" : "\n"
                }
                out += String(repeating: "  ", count: indent) + "]"
            case .dictionary:
                if mirror.children.isEmpty { out += "{}"; return }
                out += "{\n"
                for (index, child) in mirror.children.enumerated() {
                    let pair = Array(Mirror(reflecting: child.value).children)
                    let key = pair.first.map { "\($0.value)" } ?? "?"
                    out += pad + quoted(key) + ": "
                    write(pair.count > 1 ? pair[1].value : "", name: key, indent: indent + 1, to: &out)
                    out += index < mirror.children.count - 1 ? ",\n" : "\n"
                }
                out += String(repeating: "  ", count: indent) + "}"
            case .tuple:
                // A header edit (name, value): the value is redacted by the name.
                let parts = Array(mirror.children)
                out += "["
                for (index, part) in parts.enumerated() {
                    let key = index > 0 ? parts[0].value as? String : nil
                    write(part.value, name: key, indent: indent, to: &out)
                    if index < parts.count - 1 { out += ", " }
                }
                out += "]"
            case .enum:
                // A case with a payload: { "case": payload }; without: "case".
                if let payload = mirror.children.first {
                    out += "{" + quoted(payload.label ?? "value") + ": "
                    write(payload.value, name: payload.label, indent: indent, to: &out)
                    out += "}"
                } else {
                    out += quoted("\(value)")
                }
            default:
                let children = mirror.children.filter { $0.label != nil }
                if children.isEmpty { out += quoted("\(value)"); return }
                out += "{\n"
                for (index, child) in children.enumerated() {
                    let key = snakeCase(child.label!)
                    out += pad + quoted(key) + ": "
                    write(child.value, name: key, indent: indent + 1, to: &out)
                    out += index < children.count - 1 ? ",\n" : "\n"
                }
                out += String(repeating: "  ", count: indent) + "}"
            }
        }
    }

    /// Types shown by their description rather than their fields (addresses, ranges).
    private static func isLeaf(_ value: Any) -> Bool {
        value is HostPort || value is AddressRange
    }

    private static func snakeCase(_ name: String) -> String {
        var result = ""
        for character in name {
            if character.isUppercase {
                result += "_" + character.lowercased()
            } else {
                result.append(character)
            }
        }
        return result
    }

    private static func quoted(_ text: String) -> String { JSONText.quoted(text) }
}
