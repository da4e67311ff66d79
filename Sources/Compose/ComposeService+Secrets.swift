import Reconciler
import Runtime

/// A top-level `secrets:` or `configs:` entry: where its value comes from.
struct ComposeProvided {
    enum Source {
        case file(String)
        case environment(String)
        case content(String)
    }

    var source: Source

    /// `{file: PATH}`, `{environment: VARIABLE}`, or for a config
    /// `{content: TEXT}`; `external:` is refused (Gantry keeps no store of
    /// secrets of its own to refer to).
    init(key: String, _ value: ComposeValue, kind: String, directory: String) throws {
        let allowed: Set<String> = kind == "config" ? ["file", "environment", "content", "external", "name", "labels", "template_driver"]
            : ["file", "environment", "external", "name", "labels", "driver", "driver_opts", "template_driver"]
        let fields = try value.fields(allowed, what: "\(kind) key")
        if let external = fields["external"], try external.bool() {
            throw external.error("an external \(kind) is kept by a Swarm or a cluster, and Gantry has no store of them: give it as file:, environment:\(kind == "config" ? " or content:" : "")")
        }
        for key in ["driver", "driver_opts", "template_driver"] {
            if let given = fields[key] { throw given.keyError("not supported: Gantry reads \(kind)s from file:, environment:\(kind == "config" ? " or content:" : "")") }
        }
        fields["labels"]?.warn("ignored; a \(kind) has no labels in Gantry")
        fields["name"]?.warn("ignored; name: names an external \(kind)")
        let given = [fields["file"], fields["environment"], fields["content"]].compactMap { $0 }
        guard given.count == 1 else {
            throw value.keyError("give exactly one of file:, environment:\(kind == "config" ? ", content:" : "")")
        }
        if let file = fields["file"] {
            source = .file(ComposeSyntax.absolutePath(try file.string(), relativeTo: directory))
        } else if let variable = fields["environment"] {
            source = .environment(try variable.string())
        } else {
            source = .content(try fields["content", default: value].string())
        }
    }
}

extension ServiceReader {
    /// A service's `secrets:` and `configs:`: names of top-level entries, or
    /// `{source, target, uid, gid, mode}`.
    func provided(_ fields: [String: ComposeValue], into template: inout ContainerSpec) throws {
        for item in try fields["secrets"]?.sequence() ?? [] {
            let use = try reference(item, kind: "secret", declared: secrets)
            let source: ContainerSpec.Secret.Source = switch use.source {
            case .file(let path): .file(path: path)
            case .environment(let variable): .environment(variable: variable)
            case .content: throw item.error("a secret has no content:")
            }
            template.secrets.append(ContainerSpec.Secret(name: use.name, source: source, target: use.target, uid: use.uid, gid: use.gid,
                                                         mode: use.mode ?? 0o400))
        }
        for item in try fields["configs"]?.sequence() ?? [] {
            let use = try reference(item, kind: "config", declared: configs)
            let source: ContainerSpec.Config.Source = switch use.source {
            case .file(let path): .file(path: path)
            case .environment(let variable): .environment(variable: variable)
            case .content(let text): .content(text)
            }
            template.configs.append(ContainerSpec.Config(name: use.name, source: source, target: use.target, uid: use.uid, gid: use.gid,
                                                         mode: use.mode ?? 0o444))
        }
    }

    private func reference(_ item: ComposeValue, kind: String, declared: [String: ComposeProvided])
        throws -> (name: String, source: ComposeProvided.Source, target: String?, uid: UInt32?, gid: UInt32?, mode: UInt32?) {
        func find(_ name: String, at value: ComposeValue) throws -> ComposeProvided {
            guard let found = declared[name] else { throw value.error("the \(kind) \(name) is not declared under the top-level \(kind)s:") }
            return found
        }
        guard case .mapping = item.node else {
            let name = try item.string()
            return (name, try find(name, at: item).source, nil, nil, nil, nil)
        }
        let fields = try item.fields(["source", "target", "uid", "gid", "mode"], what: "\(kind) key")
        guard let sourceValue = fields["source"] else { throw item.keyError("source: is missing") }
        let name = try sourceValue.string()
        let found = try find(name, at: sourceValue)
        var target = try fields["target"]?.optionalString()
        if let given = target, given.isEmpty { target = nil }
        func id(_ key: String) throws -> UInt32? {
            guard let value = fields[key] else { return nil }
            guard let id = UInt32(try value.string()) else { throw value.error("must be a numeric ID") }
            return id
        }
        var mode: UInt32?
        if let value = fields["mode"] {
            // YAML 1.1 reads 0440 as octal; a string is taken as octal too.
            let text = try value.string()
            guard let parsed = text.hasPrefix("0o") ? UInt32(text.dropFirst(2), radix: 8)
                    : text.hasPrefix("0") && text.count > 1 ? UInt32(text.dropFirst(), radix: 8) : UInt32(text), parsed <= 0o777 else {
                throw value.error("must be permission bits, as 0440")
            }
            mode = parsed
        }
        return (name, found.source, target, try id("uid"), try id("gid"), mode)
    }
}
