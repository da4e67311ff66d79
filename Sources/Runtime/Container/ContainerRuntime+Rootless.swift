import Foundation

extension ContainerRuntime {
    /// Makes a spec run in the user namespace of a process that is not
    /// root: the namespace is added with the store's mapping (the one the
    /// layers' owners are for), and what an ordinary user cannot do on the
    /// host is refused, naming the limit.
    func adaptToUserNamespace(_ spec: inout ContainerSpec, name: String, _ mapping: UserNamespaceMapping) throws {
        spec.namespaces.insert(.user)
        if spec.uidMappings.isEmpty && spec.gidMappings.isEmpty {
            spec.uidMappings = mapping.uids
            spec.gidMappings = mapping.gids
        } else if spec.uidMappings != mapping.uids || spec.gidMappings != mapping.gids {
            throw RuntimeError(.invalidSpec, "container \(name): an ordinary user's containers use the user's own mapping (\(mapping)), which the image layers are unpacked for; the spec gives another")
        }
        if spec.pod != nil {
            throw RuntimeError(.invalidSpec, "container \(name): pods are not available to an ordinary user yet; run as root, or without the pod")
        }
        if case .bridge(let network) = spec.network {
            throw RuntimeError(.invalidSpec, "container \(name): network \(network) is a bridge on the host, which an ordinary user cannot make or join; use network none (or host)")
        }
    }

    /// Checks that the user namespace maps the IDs the process runs as.
    static func checkMapped(_ process: ResolvedProcess, name: String, _ mapping: UserNamespaceMapping) throws {
        for uid in [process.uid] where UserNamespaceMapping.hostID(uid, in: mapping.uids) == nil {
            throw RuntimeError(.invalidSpec, "container \(name) runs as \(mapping.unmappedOwner(uid: uid, gid: 0) ?? "user \(uid)")")
        }
        for gid in [process.gid] + process.groups where UserNamespaceMapping.hostID(gid, in: mapping.gids) == nil {
            throw RuntimeError(.invalidSpec, "container \(name) runs with \(mapping.unmappedOwner(uid: 0, gid: gid) ?? "group \(gid)")")
        }
        if mapping.helpers == nil, !process.groups.isEmpty {
            throw RuntimeError(.invalidSpec, "container \(name) runs with supplementary groups \(process.groups.map(String.init).joined(separator: ", ")), which a user namespace without subordinate IDs cannot give (setgroups is denied in it)")
        }
    }
}
