import Foundation
import Reconciler
import Yams

/// Compose's `extends`: a service takes another's keys (of this file or of
/// another), its own winning. Mappings merge key by key, lists are joined
/// (an item given by both once), and other values are replaced.
struct ComposeExtends {
    let file: String
    let directory: String
    let budget: ComposeNodeBudget
    /// How many files deep `extends: {file:}` may lead.
    static let maximumFileDepth = 8

    /// The services, each with what it extends merged in.
    func resolve(_ services: [(key: String, value: ComposeNode)], depth: Int = 0) throws -> [(key: String, value: ComposeNode)] {
        var resolved: [String: ComposeNode] = [:]
        func resolve(_ name: String, chain: [String]) throws -> ComposeNode {
            if let done = resolved[name] { return done }
            guard let node = services.first(where: { $0.key == name })?.value else {
                throw ReconcilerError(.compose, "\(file): service \(chain.last ?? name): extends service \(name), which does not exist")
            }
            guard case .mapping(let pairs) = node, let extends = pairs.first(where: { $0.key == "extends" })?.value else {
                resolved[name] = node
                return node
            }
            let local = ComposeNode.mapping(pairs.filter { $0.key != "extends" })
            let (baseName, baseFile) = try target(extends, service: name)
            let base: ComposeNode
            if let baseFile {
                base = try resolveInFile(baseFile, service: baseName, from: name, depth: depth)
            } else {
                guard !chain.contains(baseName), baseName != name else {
                    throw ReconcilerError(.compose, "\(file): service \(name): extends goes round in a circle: \((chain + [name, baseName]).joined(separator: " → "))")
                }
                base = try resolve(baseName, chain: chain + [name])
            }
            let merged = ComposeNode.merge(base, under: local)
            resolved[name] = merged
            return merged
        }
        return try services.map { ($0.key, try resolve($0.key, chain: [])) }
    }

    /// `extends: NAME` or `extends: {service: NAME, file: PATH}`.
    private func target(_ node: ComposeNode, service: String) throws -> (String, String?) {
        switch node {
        case .scalar(let name) where !name.isEmpty:
            return (name, nil)
        case .mapping(let pairs):
            for pair in pairs where pair.key != "service" && pair.key != "file" {
                throw ReconcilerError(.compose, "\(file): service \(service): extends.\(pair.key): is not an extends key (service, file)")
            }
            guard case .scalar(let name)? = pairs.first(where: { $0.key == "service" })?.value, !name.isEmpty else {
                throw ReconcilerError(.compose, "\(file): service \(service): extends needs service:")
            }
            if let given = pairs.first(where: { $0.key == "file" })?.value {
                guard case .scalar(let path) = given, !path.isEmpty else {
                    throw ReconcilerError(.compose, "\(file): service \(service): extends.file must be a path")
                }
                return (name, path)
            }
            return (name, nil)
        default:
            throw ReconcilerError(.compose, "\(file): service \(service): extends must name a service, or be a mapping with service: and file:")
        }
    }

    /// The service `name` of another compose file, with its own extends resolved.
    private func resolveInFile(_ path: String, service name: String, from service: String, depth: Int) throws -> ComposeNode {
        guard depth < Self.maximumFileDepth else {
            throw ReconcilerError(.compose, "\(file): service \(service): extends leads through more than \(Self.maximumFileDepth) files")
        }
        let full = path.hasPrefix("/") ? path : directory + "/" + path
        let size = (try? FileManager.default.attributesOfItem(atPath: full)[.size] as? Int) ?? 0
        guard size <= ComposeProject.maximumFileSize, let text = try? String(contentsOfFile: full, encoding: .utf8) else {
            throw ReconcilerError(.compose, "\(file): service \(service): extends.file \(path) cannot be read")
        }
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch {
            throw ReconcilerError(.compose, "\(full): not valid YAML (extended by service \(service) of \(file))")
        }
        guard let root, case .mapping(let top) = try ComposeNode(root, file: full, path: "", budget: budget),
              case .mapping(let services)? = top.first(where: { $0.key == "services" })?.value else {
            throw ReconcilerError(.compose, "\(full): has no services: (extended by service \(service) of \(file))")
        }
        let other = ComposeExtends(file: full, directory: (full as NSString).deletingLastPathComponent, budget: budget)
        guard let found = try other.resolve(services, depth: depth + 1).first(where: { $0.key == name })?.value else {
            throw ReconcilerError(.compose, "\(file): service \(service): extends service \(name) of \(path), which does not exist")
        }
        return found
    }
}

extension ComposeNode {
    /// `local` over `base`: mappings merged key by key, lists joined (an
    /// item of both once), anything else `local`'s.
    static func merge(_ base: ComposeNode, under local: ComposeNode) -> ComposeNode {
        switch (base, local) {
        case (.mapping(let under), .mapping(let over)):
            var result = under.map { pair -> (key: String, value: ComposeNode) in
                guard let mine = over.first(where: { $0.key == pair.key })?.value else { return pair }
                // A command is replaced whole, never joined.
                if ["command", "entrypoint", "test"].contains(pair.key) { return (pair.key, mine) }
                return (pair.key, merge(pair.value, under: mine))
            }
            result += over.filter { pair in !under.contains { $0.key == pair.key } }
            return .mapping(result)
        case (.sequence(let under), .sequence(let over)):
            return .sequence(under.filter { item in !over.contains { $0.sameValue(as: item) } } + over)
        default:
            return local
        }
    }

    /// Whether two values are the same (scalars by text, the rest by structure).
    func sameValue(as other: ComposeNode) -> Bool {
        switch (self, other) {
        case (.null, .null): return true
        case (.scalar(let a), .scalar(let b)): return a == b
        case (.sequence(let a), .sequence(let b)): return a.count == b.count && zip(a, b).allSatisfy { $0.sameValue(as: $1) }
        case (.mapping(let a), .mapping(let b)):
            return a.count == b.count && zip(a, b).allSatisfy { $0.key == $1.key && $0.value.sameValue(as: $1.value) }
        default: return false
        }
    }
}
