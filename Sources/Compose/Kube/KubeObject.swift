import Foundation
import Reconciler

/// A mapping of a Kubernetes manifest, which remembers the fields read:
/// those left over are reported, one warning per field, so that nothing
/// Gantry does not honour is dropped silently.
final class KubeObject {
    let fields: [String: Any]
    /// Where it is, for messages: `web.yaml: Deployment web: spec.template`.
    let location: String
    let path: String
    private var read: Set<String> = []
    private var children: [KubeObject] = []
    let sink: KubeWarnings

    init(_ fields: [String: Any], location: String, path: String, sink: KubeWarnings) {
        self.fields = fields
        self.location = location
        self.path = path
        self.sink = sink
    }

    private func at(_ key: String) -> String { path.isEmpty ? key : path + "." + key }

    func error(_ key: String?, _ message: String) -> ReconcilerError {
        let where_ = key.map { at($0) } ?? path
        return ReconcilerError(.compose, "\(location): \(where_.isEmpty ? "" : where_ + ": ")\(message)")
    }

    func warn(_ key: String, _ message: String) {
        sink.add("\(location): \(at(key)): \(message)")
    }

    /// Marks `key` as read without reading it (fields that change nothing).
    func accept(_ keys: String...) { read.formUnion(keys) }

    /// Reads `key`, if given, only to say why it changes nothing here.
    func ignore(_ key: String, because why: String) {
        guard fields[key] != nil else { return }
        read.insert(key)
        warn(key, why)
    }

    func has(_ key: String) -> Bool { fields[key] != nil && !(fields[key] is NSNull) }

    func raw(_ key: String) -> Any? {
        read.insert(key)
        guard let value = fields[key], !(value is NSNull) else { return nil }
        return value
    }

    /// A scalar as text (YAML gives numbers and booleans their types).
    static func text(_ value: Any) -> String? {
        switch value {
        case let text as String: text
        case let number as Int: String(number)
        case let number as Double: String(number)
        case let flag as Bool: flag ? "true" : "false"
        default: nil
        }
    }

    func string(_ key: String) throws -> String? {
        guard let value = raw(key) else { return nil }
        guard let text = Self.text(value) else { throw error(key, "must be a single value, not a list or mapping") }
        return text
    }

    func requiredString(_ key: String) throws -> String {
        guard let text = try string(key), !text.isEmpty else { throw error(key, "is missing") }
        return text
    }

    func int(_ key: String, _ range: ClosedRange<Int> = 0 ... Int.max) throws -> Int? {
        guard let value = raw(key) else { return nil }
        let number: Int? = switch value {
        case let number as Int: number
        case let text as String: Int(text)
        default: nil
        }
        guard let number, range.contains(number) else { throw error(key, "must be a whole number in \(range.lowerBound)…\(range.upperBound == Int.max ? "" : String(range.upperBound))") }
        return number
    }

    /// A file mode: a number (decimal, as JSON has it) or an octal string.
    func mode(_ key: String) throws -> UInt32? {
        guard let value = raw(key) else { return nil }
        let mode: UInt32? = switch value {
        case let number as Int: UInt32(exactly: number)
        case let text as String: UInt32(text.hasPrefix("0o") ? String(text.dropFirst(2)) : text, radix: 8)
        default: nil
        }
        guard let mode, mode <= 0o777 else { throw error(key, "must be a file mode of at most 0777") }
        return mode
    }

    func bool(_ key: String) throws -> Bool? {
        guard let value = raw(key) else { return nil }
        switch value {
        case let flag as Bool: return flag
        case let text as String where ["true", "false"].contains(text): return text == "true"
        default: throw error(key, "must be true or false")
        }
    }

    func object(_ key: String) throws -> KubeObject? {
        guard let value = raw(key) else { return nil }
        guard let mapping = value as? [String: Any] else { throw error(key, "must be a mapping") }
        let child = KubeObject(mapping, location: location, path: at(key), sink: sink)
        children.append(child)
        return child
    }

    func objects(_ key: String) throws -> [KubeObject] {
        guard let value = raw(key) else { return [] }
        guard let list = value as? [Any] else { throw error(key, "must be a list") }
        return try list.enumerated().map { index, item in
            guard let mapping = item as? [String: Any] else { throw error("\(key)[\(index)]", "must be a mapping") }
            let child = KubeObject(mapping, location: location, path: at(key) + "[\(index)]", sink: sink)
            children.append(child)
            return child
        }
    }

    func strings(_ key: String) throws -> [String] {
        guard let value = raw(key) else { return [] }
        guard let list = value as? [Any] else { throw error(key, "must be a list") }
        return try list.map { item in
            guard let text = Self.text(item) else { throw error(key, "must be a list of single values") }
            return text
        }
    }

    func stringMap(_ key: String) throws -> [String: String] {
        guard let value = raw(key) else { return [:] }
        guard let mapping = value as? [String: Any] else { throw error(key, "must be a mapping") }
        return try mapping.mapValues { item in
            if item is NSNull { return "" }
            guard let text = Self.text(item) else { throw error(key, "must map names to single values") }
            return text
        }
    }

    /// Warns about every field of this mapping and those read from it that
    /// was not read.
    func finish() {
        for key in fields.keys.sorted() where !read.contains(key) {
            warn(key, "not honoured by Gantry; ignored")
        }
        for child in children { child.finish() }
    }
}

/// Where warnings of one reading gather.
final class KubeWarnings {
    private(set) var all: [String] = []
    func add(_ warning: String) { all.append(warning) }
}
