import Foundation
import Reconciler
import Yams

/// A YAML value of a compose file. Scalars keep the text as written, so
/// that interpolation runs on it before it is read as a number or a flag
/// (`replicas: ${REPLICAS:-2}`).
indirect enum ComposeNode {
    case null
    case scalar(String)
    case sequence([ComposeNode])
    case mapping([(key: String, value: ComposeNode)])

    /// Converts a Yams tree, applying merge keys (`<<: *defaults`).
    ///
    /// - Parameters:
    ///   - node: the parsed YAML.
    ///   - file: the file, for messages.
    ///   - path: where the node is, for messages.
    ///   - budget: what the conversion may still make: aliases are expanded
    ///     here, so a small file can stand for an enormous tree.
    init(_ node: Node, file: String, path: String, budget: ComposeNodeBudget) throws {
        try budget.spend(depth: budget.depth + 1, file: file, path: path)
        budget.depth += 1
        defer { budget.depth -= 1 }
        switch node {
        case .scalar(let scalar):
            self = node.tag.rawValue == Tag.Name.null.rawValue ? .null : .scalar(scalar.string)
        case .alias:
            // The parser resolves aliases to the anchored node.
            throw ReconcilerError(.compose, "\(file): \(path): an unresolved YAML alias")
        case .sequence(let sequence):
            self = .sequence(try sequence.enumerated().map { index, element in
                try ComposeNode(element, file: file, path: "\(path)[\(index)]", budget: budget)
            })
        case .mapping(let mapping):
            var own: [(key: String, value: ComposeNode)] = []
            var merged: [(key: String, value: ComposeNode)] = []
            for (key, value) in mapping {
                if key.tag.rawValue == Tag.Name.merge.rawValue {
                    let sources = value.mapping != nil ? [value] : Array(value.sequence ?? [])
                    guard !sources.isEmpty, sources.allSatisfy({ $0.mapping != nil }) else {
                        throw ReconcilerError(.compose, "\(file): \(path): << merges a mapping or a list of mappings")
                    }
                    // The first source that has a key wins, as YAML's merge keys say.
                    for source in sources {
                        guard case .mapping(let pairs) = try ComposeNode(source, file: file, path: path, budget: budget) else { continue }
                        for pair in pairs where !merged.contains(where: { $0.key == pair.key }) { merged.append(pair) }
                    }
                    continue
                }
                guard case .scalar(let scalar) = key else {
                    throw ReconcilerError(.compose, "\(file): \(path): mapping keys must be plain values")
                }
                // Yams rejects a key given twice.
                let name = scalar.string
                own.append((name, try ComposeNode(value, file: file, path: path.isEmpty ? name : "\(path).\(name)", budget: budget)))
            }
            self = .mapping(own + merged.filter { pair in !own.contains { $0.key == pair.key } })
        }
    }
}

/// The bounds on a compose document once its aliases are expanded: how
/// many values it may hold and how deeply they may nest. A YAML alias
/// names a whole subtree, so a few lines of anchors can stand for billions
/// of values (an "alias bomb"); the conversion stops at these bounds
/// instead of exhausting memory.
final class ComposeNodeBudget {
    /// The most values (scalars, lists and mappings) a document may expand to.
    static let maximumNodes = 1_000_000
    /// The deepest nesting of lists and mappings.
    static let maximumDepth = 64

    private var remaining = maximumNodes
    var depth = 0

    func spend(depth: Int, file: String, path: String) throws {
        remaining -= 1
        guard remaining >= 0 else {
            throw ReconcilerError(.compose, "\(file): more than \(Self.maximumNodes) values once YAML aliases are expanded (at \(path.isEmpty ? "the top" : path)); is an alias repeated into itself?")
        }
        guard depth <= Self.maximumDepth else {
            throw ReconcilerError(.compose, "\(file): \(path): values nest more than \(Self.maximumDepth) levels deep")
        }
    }
}

/// What the parse of one file shares: where it is from, the variables
/// for interpolation, and the warnings so far.
final class ComposeContext {
    let file: String
    let environment: [String: String]
    private(set) var warnings: [String] = []
    private var unsetVariables: Set<String> = []

    init(file: String, environment: [String: String]) {
        self.file = file
        self.environment = environment
    }

    func warn(_ message: String) { warnings.append(message) }

    /// Warns once per variable that stands for an empty string, as compose does.
    func noteUnset(_ variable: String) {
        guard unsetVariables.insert(variable).inserted else { return }
        warn("\(file): the variable \(variable) is not set; it stands for an empty string")
    }
}

/// A value at a place in the file: reads it as one type or fails with a
/// message naming the file, the service and the key.
struct ComposeValue {
    let node: ComposeNode
    /// `service web`, `network front`, or nil at the top.
    let scope: String?
    /// The key path within the scope: `ports[1]`, `deploy.resources.limits.memory`.
    let path: String
    let context: ComposeContext

    /// `compose.yaml: service web: ports[1]`.
    var location: String { [context.file, scope, path.isEmpty ? nil : path].compactMap { $0 }.joined(separator: ": ") }

    /// An error at this value; scalars are quoted after their key.
    func error(_ message: String) -> ReconcilerError {
        if case .scalar(let text) = node, !path.isEmpty {
            return ReconcilerError(.compose, "\(location) \"\(text)\": \(message)")
        }
        return ReconcilerError(.compose, "\(location): \(message)")
    }

    /// An error about the key itself, whatever its value.
    func keyError(_ message: String) -> ReconcilerError { ReconcilerError(.compose, "\(location): \(message)") }

    /// Records a warning about this key, quoting a scalar as ``error(_:)`` does.
    func warn(_ message: String) {
        if case .scalar(let text) = node, !path.isEmpty {
            context.warn("\(location) \"\(text)\": \(message)")
        } else {
            context.warn("\(location): \(message)")
        }
    }

    func child(_ key: String, _ node: ComposeNode) -> ComposeValue {
        ComposeValue(node: node, scope: scope, path: path.isEmpty ? key : "\(path).\(key)", context: context)
    }

    /// The same value as the top of a new scope (a service's mapping).
    func scoped(_ scope: String) -> ComposeValue { ComposeValue(node: node, scope: scope, path: "", context: context) }

    var isNull: Bool {
        if case .null = node { return true }
        return false
    }

    var isMapping: Bool {
        if case .mapping = node { return true }
        return false
    }

    /// A scalar, interpolated.
    func string() throws -> String {
        switch node {
        case .scalar(let text):
            do {
                return try Interpolation(environment: context.environment, unset: context.noteUnset).apply(text)
            } catch let failure as Interpolation.Failure {
                throw error(failure.message)
            }
        case .null: throw error("needs a value")
        case .sequence, .mapping: throw error("must be a single value, not a list or mapping")
        }
    }

    /// A scalar, or nil when the key has no value.
    func optionalString() throws -> String? { isNull ? nil : try string() }

    /// `true`/`false` (and YAML 1.1's yes/no/on/off).
    func bool() throws -> Bool {
        switch try string().lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default: throw error("must be true or false")
        }
    }

    /// A whole number in `range`.
    func int(_ range: ClosedRange<Int> = 0 ... Int.max) throws -> Int {
        guard let value = Int(try string()), range.contains(value) else {
            throw error(range.upperBound == Int.max ? "must be a whole number of at least \(range.lowerBound)" : "must be a whole number in \(range.lowerBound)…\(range.upperBound)")
        }
        return value
    }

    /// A compose duration: `10s`, `1m30s`, `500ms`, `1h` (or a number of seconds).
    func duration() throws -> Duration {
        guard let duration = ComposeSyntax.duration(try string()) else {
            throw error("is not a duration such as 10s, 1m30s or 500ms")
        }
        return duration
    }

    /// A size in bytes: `64m`, `1g`, `512k`, `1gb` or a number of bytes.
    func size() throws -> Int64 {
        guard let size = ComposeSyntax.size(try string()) else {
            throw error("is not a size such as 64m, 1g, 512k or a number of bytes")
        }
        return size
    }

    /// A list's elements, each at `path[i]`.
    func sequence() throws -> [ComposeValue] {
        guard case .sequence(let elements) = node else { throw error("must be a list") }
        return elements.enumerated().map { index, element in
            ComposeValue(node: element, scope: scope, path: "\(path)[\(index)]", context: context)
        }
    }

    /// A mapping's entries, in file order.
    func mapping() throws -> [(key: String, value: ComposeValue)] {
        guard case .mapping(let pairs) = node else { throw error("must be a mapping") }
        return pairs.map { ($0.key, child($0.key, $0.value)) }
    }

    /// A mapping whose keys must be among `allowed` (extension keys, `x-…`,
    /// are skipped), by key.
    /// The key of `allowed` within two edits of `key` (and closer than any
    /// other), if there is one.
    static func nearest(_ key: String, among allowed: Set<String>) -> String? {
        func distance(_ a: [Character], _ b: [Character]) -> Int {
            var previous = Array(0 ... b.count)
            for (i, x) in a.enumerated() {
                var current = [i + 1] + Array(repeating: 0, count: b.count)
                for (j, y) in b.enumerated() {
                    current[j + 1] = min(previous[j + 1] + 1, current[j] + 1, previous[j] + (x == y ? 0 : 1))
                }
                previous = current
            }
            return previous[b.count]
        }
        guard key.count <= 64 else { return nil }
        let typed = Array(key.lowercased())
        let scored = allowed.map { ($0, distance(typed, Array($0))) }.filter { $0.1 <= min(2, max(1, typed.count / 3)) }
        guard let best = scored.min(by: { ($0.1, $0.0) < ($1.1, $1.0) }), scored.filter({ $0.1 == best.1 }).count == 1 else { return nil }
        return best.0
    }

    func fields(_ allowed: Set<String>, what: String = "key") throws -> [String: ComposeValue] {
        if isNull { return [:] }
        var fields: [String: ComposeValue] = [:]
        for (key, value) in try mapping() where !key.hasPrefix("x-") {
            guard allowed.contains(key) else {
                // The nearest key helps with a typo; a short list, when there is none.
                if let nearest = Self.nearest(key, among: allowed) {
                    throw value.keyError("is not a \(what) Gantry supports; did you mean \(nearest)?")
                }
                let listing = allowed.count <= 12 ? " (supported: \(allowed.sorted().joined(separator: ", ")))" : ""
                throw value.keyError("is not a \(what) Gantry supports\(listing)")
            }
            fields[key] = value
        }
        return fields
    }

    /// A single string or a list of strings (`env_file`, `tmpfs`, `dns`).
    func strings() throws -> [ComposeValue] {
        switch node {
        case .null: return []
        case .sequence: return try sequence()
        default: return [self]
        }
    }

    /// A mapping or a list of `KEY=VALUE` (or bare `KEY`) items, in file
    /// order; a bare key or a key without a value has a nil value.
    func keyValues() throws -> [(key: String, value: String?, at: ComposeValue)] {
        switch node {
        case .null: return []
        case .mapping:
            return try mapping().map { key, value in (key, try value.optionalString(), value) }
        case .sequence:
            return try sequence().map { item in
                let text = try item.string()
                let parts = text.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                guard let key = parts.first, !key.isEmpty else { throw item.error("expected KEY=VALUE") }
                return (String(key), parts.count > 1 ? String(parts[1]) : nil, item)
            }
        case .scalar: throw error("must be a mapping or a list of KEY=VALUE")
        }
    }
}

/// Compose's variable interpolation: `${VAR}`, `${VAR:-default}`,
/// `${VAR-default}`, `${VAR:?message}`, `${VAR?message}`, `${VAR:+other}`,
/// `${VAR+other}`, `$VAR` and `$$` for a dollar sign.
struct Interpolation {
    struct Failure: Error {
        var message: String
    }

    let environment: [String: String]
    let unset: (String) -> Void

    func apply(_ text: String) throws -> String {
        guard text.contains("$") else { return text }
        let characters = Array(text)
        var result = ""
        var index = 0
        while index < characters.count {
            let character = characters[index]
            guard character == "$", index + 1 < characters.count else {
                result.append(character)
                index += 1
                continue
            }
            let next = characters[index + 1]
            if next == "$" {
                result.append("$")
                index += 2
            } else if next == "{" {
                var depth = 1
                var end = index + 2
                while end < characters.count {
                    if characters[end] == "{" { depth += 1 }
                    if characters[end] == "}" { depth -= 1; if depth == 0 { break } }
                    end += 1
                }
                guard depth == 0 else { throw Failure(message: "${ without its closing }") }
                result += try expand(String(characters[(index + 2) ..< end]))
                index = end + 1
            } else if Self.startsName(next) {
                var end = index + 1
                while end < characters.count, Self.continuesName(characters[end]) { end += 1 }
                result += value(of: String(characters[(index + 1) ..< end]))
                index = end
            } else {
                // A dollar sign before anything else stands for itself.
                result.append(character)
                index += 1
            }
        }
        return result
    }

    private static func startsName(_ character: Character) -> Bool { character.isASCII && (character.isLetter || character == "_") }
    private static func continuesName(_ character: Character) -> Bool { character.isASCII && (character.isLetter || character.isNumber || character == "_") }

    private func value(of name: String) -> String {
        guard let value = environment[name] else {
            unset(name)
            return ""
        }
        return value
    }

    /// The inside of `${…}`.
    private func expand(_ body: String) throws -> String {
        guard let first = body.first, Self.startsName(first) else { throw Failure(message: "${\(body)} does not start with a variable name") }
        let name = String(body.prefix(while: Self.continuesName))
        let rest = body.dropFirst(name.count)
        if rest.isEmpty { return value(of: name) }
        let current = environment[name]
        let setAndNotEmpty = current.map { !$0.isEmpty } ?? false
        for (operation, needsValue) in [(":-", true), ("-", false), (":?", true), ("?", false), (":+", true), ("+", false)] where rest.hasPrefix(operation) {
            let argument = String(rest.dropFirst(operation.count))
            let present = needsValue ? setAndNotEmpty : current != nil
            switch operation.last {
            case "-": return present ? current ?? "" : try apply(argument)
            case "?":
                guard present, let current else {
                    let message = try apply(argument)
                    throw Failure(message: "the variable \(name) is required" + (message.isEmpty ? "" : ": \(message)"))
                }
                return current
            default: return present ? try apply(argument) : ""
            }
        }
        throw Failure(message: "${\(body)} is not ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message} or ${VAR:+other}")
    }
}
