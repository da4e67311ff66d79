import Reconciler
import Runtime

extension ServiceReader {
    /// `volumes:` then `tmpfs:`.
    func mounts(_ fields: [String: ComposeValue], service: String) throws -> [ContainerSpec.Mount] {
        var mounts: [ContainerSpec.Mount] = []
        for item in try fields["volumes"]?.sequence() ?? [] {
            if case .mapping = item.node {
                mounts.append(try longVolume(item, service: service))
            } else {
                mounts.append(try shortVolume(item, service: service))
            }
        }
        for item in try fields["tmpfs"]?.strings() ?? [] { mounts.append(try tmpfs(item)) }
        return mounts
    }

    /// `NAME:/path[:ro]`, `./dir:/path`, `/dir:/path[:ro,rslave]`, `~/dir:/path`.
    private func shortVolume(_ item: ComposeValue, service: String) throws -> ContainerSpec.Mount {
        let text = try item.string()
        // A path alone: an anonymous volume.
        if text.hasPrefix("/"), !text.contains(":") { return anonymousVolume(at: text, service: service) }
        let syntax: ContainerSpec.VolumeSyntax
        do {
            syntax = try ContainerSpec.VolumeSyntax(parsing: text)
        } catch let error as RuntimeError {
            throw item.error(error.message + (text.contains(":") ? "" : " and declare it under the top-level volumes:"))
        }
        for option in syntax.ignoredOptions {
            item.warn(option == "z" || option == "Z" ? "the SELinux option \(option) is ignored"
                : option == "nocopy" ? "nocopy is ignored; a new volume is filled from the image" : "\(option) is ignored")
        }
        if syntax.isHostPath {
            return .bind(source: try hostPath(syntax.source, at: item), target: syntax.target, readOnly: syntax.readOnly,
                         propagation: syntax.propagation)
        }
        return .volume(name: try volumeName(syntax.source, at: item), target: syntax.target, readOnly: syntax.readOnly)
    }

    /// `{type: bind|volume|tmpfs, source, target, read_only, bind: {propagation}, tmpfs: {size, mode}}`.
    private func longVolume(_ item: ComposeValue, service: String) throws -> ContainerSpec.Mount {
        let fields = try item.fields(["type", "source", "target", "read_only", "bind", "volume", "tmpfs", "consistency"], what: "volume key")
        guard let typeValue = fields["type"] else { throw item.keyError("type: is missing (bind, volume or tmpfs)") }
        guard let targetValue = fields["target"] else { throw item.keyError("target: is missing") }
        let target = try targetValue.string()
        guard target.hasPrefix("/") else { throw targetValue.error("must be an absolute path") }
        let readOnly = try fields["read_only"]?.bool() ?? false
        let type = try typeValue.string()
        for (key, owner) in [("bind", "bind"), ("volume", "volume"), ("tmpfs", "tmpfs")] where fields[key] != nil && type != owner {
            throw fields[key, default: item].keyError("applies to type: \(owner), not \(type)")
        }
        switch type {
        case "bind":
            guard let source = fields["source"] else { throw item.keyError("source: is missing for a bind mount") }
            let options = try fields["bind"]?.fields(["propagation", "create_host_path", "selinux"], what: "bind option") ?? [:]
            var propagation: ContainerSpec.MountPropagation?
            if let value = options["propagation"] {
                guard let parsed = ContainerSpec.MountPropagation(rawValue: try value.string()) else {
                    throw value.error("must be private, rprivate, slave or rslave")
                }
                propagation = parsed
            }
            options["selinux"]?.warn("ignored")
            return .bind(source: try hostPath(try source.string(), at: source), target: target, readOnly: readOnly, propagation: propagation)
        case "volume":
            guard let source = fields["source"], let name = try source.optionalString(), !name.isEmpty else {
                if let nocopy = try fields["volume"]?.fields(["nocopy", "subpath"], what: "volume option")["nocopy"], try nocopy.bool() {
                    nocopy.warn("ignored; a new volume is filled from the image")
                }
                return anonymousVolume(at: target, service: service, readOnly: readOnly)
            }
            let options = try fields["volume"]?.fields(["nocopy", "subpath"], what: "volume option") ?? [:]
            if let nocopy = options["nocopy"], try nocopy.bool() { nocopy.warn("ignored; a new volume is filled from the image") }
            if let subpath = options["subpath"] { throw subpath.keyError("not supported: a volume is mounted whole") }
            return .volume(name: try volumeName(name, at: source), target: target, readOnly: readOnly)
        case "tmpfs":
            if readOnly { throw fields["read_only", default: item].keyError("a tmpfs is always writable") }
            if let source = fields["source"] { throw source.keyError("a tmpfs has no source") }
            let options = try fields["tmpfs"]?.fields(["size", "mode"], what: "tmpfs option") ?? [:]
            return .tmpfs(target: target, size: try options["size"]?.size(), mode: try options["mode"].map(mode) ?? 0o1777)
        default:
            throw typeValue.error("must be bind, volume or tmpfs")
        }
    }

    /// `tmpfs:` entries: `/path[:size=64m,mode=1777]`.
    private func tmpfs(_ item: ComposeValue) throws -> ContainerSpec.Mount {
        let text = try item.string()
        let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
        guard let target = parts.first, target.hasPrefix("/") else { throw item.error("must be an absolute path, with :size=…,mode=… options") }
        var size: Int64?
        var mode: UInt32 = 0o1777
        for option in parts.count > 1 ? parts[1].split(separator: ",").map(String.init) : [] {
            let pair = option.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
            switch (pair[0], pair.count) {
            case ("size", 2):
                guard let parsed = ComposeSyntax.size(pair[1]) else { throw item.error("the size \(pair[1]) is not such as 64m or 1g") }
                size = parsed
            case ("mode", 2):
                guard let parsed = UInt32(pair[1], radix: 8), parsed <= 0o7777 else { throw item.error("the mode \(pair[1]) is not octal such as 1777") }
                mode = parsed
            case ("rw", 1): break
            case ("noexec", 1), ("nosuid", 1), ("nodev", 1), ("exec", 1), ("suid", 1), ("dev", 1):
                item.warn("the mount option \(option) is ignored")
            default:
                throw item.error("unknown option \(option); use size=… and mode=…")
            }
        }
        return .tmpfs(target: target, size: size, mode: mode)
    }

    /// An octal file mode, as `1777` or `0o1777`.
    private func mode(_ value: ComposeValue) throws -> UInt32 {
        var text = try value.string()
        if text.hasPrefix("0o") { text.removeFirst(2) }
        guard let mode = UInt32(text, radix: 8), mode <= 0o7777 else { throw value.error("must be an octal mode such as 1777") }
        return mode
    }

    /// A bind source made absolute: `~` is the `HOME` variable, a relative
    /// path is taken from the compose file's directory.
    private func hostPath(_ source: String, at item: ComposeValue) throws -> String {
        if source == "~" || source.hasPrefix("~/") {
            guard let home = item.context.environment["HOME"] else { throw item.error("~ needs the HOME variable") }
            return ComposeSyntax.absolutePath(String(source.dropFirst(source == "~" ? 1 : 2)), relativeTo: home)
        }
        return ComposeSyntax.absolutePath(source, relativeTo: directory)
    }

    /// The runtime name of a named volume, which must be declared.
    /// An anonymous volume (a path without a source): a volume of the
    /// project named after the service and the path, made when the project
    /// is applied and removed with `down -v`. Docker makes one per container;
    /// here the service's replicas share it, which a warning says when it
    /// runs more than one.
    private func anonymousVolume(at target: String, service: String, readOnly: Bool = false) -> ContainerSpec.Mount {
        let path = target.split(separator: "/").joined(separator: "-")
        let mangled = String(path.map { $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) ? $0 : "-" })
        return .volume(name: "\(project)_\(service)_\(mangled.isEmpty ? "root" : mangled)", target: target, readOnly: readOnly)
    }

    private func volumeName(_ key: String, at item: ComposeValue) throws -> String {
        guard let volume = volumes[key] else { throw item.error("the volume \(key) is not declared under the top-level volumes:") }
        return volume.name
    }
}
