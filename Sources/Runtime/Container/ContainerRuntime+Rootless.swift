import CGantrySystem
import Foundation
#if canImport(Glibc)
import Glibc
#endif

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
        if case .bridge(let network) = spec.network {
            guard UserModeNetwork.stack != nil else {
                throw RuntimeError(.invalidSpec, "container \(name): an ordinary user's containers reach the network through pasta or slirp4netns, and \(UserModeNetwork.missingStack)")
            }
            if network == Networks.defaultName, !spec.networkAliases.isEmpty {
                throw RuntimeError(.invalidSpec, "container \(name): an ordinary user's containers on the default network have no names there (as on Docker's default bridge); leave out the aliases")
            }
        }
    }

    /// The user namespace an ordinary user's containers start in, when it
    /// has subordinate IDs: made once (newuidmap and newgidmap run once, not
    /// for every container) and kept while the runtime lives; nil for a
    /// single mapping, which each container's launch writes itself.
    func userNamespaceDescriptor() throws -> Int32? {
        guard let mapping = userNamespace, mapping.helpers != nil else { return nil }
        return try sharedUserNamespace.withLock { fd in
            if fd < 0 {
                fd = try mapping.makeNamespace()
                let copy = dup(fd)
                if copy >= 0 { sharedUserNamespaceReserve.withLock { $0 = NetworkNamespaceReserve(capacity: 2, userNamespace: copy) } }
            }
            return fd
        }
    }

    /// Where a launch in the user namespace `descriptor` (-1: none joined)
    /// takes a network namespace made ahead of need: the host's reserve,
    /// the one of the namespace this runtime keeps, or none.
    func networkNamespaceReserve(joining descriptor: Int32) -> NetworkNamespaceReserve? {
        if descriptor < 0 { return .shared }
        guard descriptor == sharedUserNamespace.withLock({ $0 }) else { return nil }
        return sharedUserNamespaceReserve.withLock { $0 }
    }

    /// Where an ordinary user's container on the default network keeps its
    /// `hosts` and `resolv.conf`: beside its directory, which its overlay
    /// covers.
    func userModeNetworkFiles(_ id: String) -> String {
        networks.directory + "/.pasta/" + id
    }

    /// The pid file of the pasta of an ordinary user's container (its
    /// default network, or the published ports on a user network), in the
    /// state root's run-time directory.
    func pastaPidFile(_ id: String) -> String {
        networks.host.pidFile("pasta-" + id)
    }

    /// Gives a container that root runs in a user namespace its directory
    /// and upper layer, owned by the IDs its root maps to: its launch,
    /// already in the namespace, goes through the directory, and the upper
    /// layer's root is the container's `/`.
    static func giveToMappedRoot(_ directory: String, _ spec: ContainerSpec) throws {
        guard let uid = UserNamespaceMapping.hostID(0, in: spec.uidMappings), let gid = UserNamespaceMapping.hostID(0, in: spec.gidMappings) else { return }
        for path in [directory, directory + "/upper"] where chown(path, uid, gid) != 0 {
            throw RuntimeError(.systemCall, "cannot give \(path) to the container's mapped root (\(uid):\(gid))", underlying: Sys.errno)
        }
    }

    /// The overlay of a container that root runs in a user namespace, its
    /// layers ID-mapped into `userNamespace`: a detached mount, which the
    /// container's launch puts at its root.
    static func idmappedOverlay(_ record: ContainerRecord, directory: String, userNamespace: Int32) throws -> Int32 {
        let layers = record.layers.map { strdup($0) }
        defer { layers.forEach { free($0) } }
        let fd = layers.map { UnsafePointer($0) }.withUnsafeBufferPointer { pointers in
            gantry_idmapped_overlay(pointers.baseAddress, pointers.count, directory + "/upper", directory + "/work", userNamespace,
                                    Container.volatileUpper(record) ? 1 : 0)
        }
        guard fd >= 0 else {
            throw RuntimeError(.launch, "container \(record.name): cannot mount its layers mapped into its user namespace (ID-mapped mounts need Linux 5.19 and a file system that allows them)", underlying: Sys.errno)
        }
        return fd
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

/// The network of an ordinary user's container on the default network: its
/// own network namespace, which pasta (Debian's passt) connects to the
/// host's network in user mode: a tap device with a fixed address, outbound
/// connections made by pasta on the host, published ports bound on the
/// host by pasta, and the gateway address leading to the host's loopback.
/// pasta attaches before the program starts, and is ended with the
/// container through its pid file (it holds the namespace, so it would not
/// see it go). Where pasta is not installed, slirp4netns does the same
/// with the same addresses (see ``stack``).
enum UserModeNetwork {
    static let address = IPv4Address(0x0A00_0264)  // 10.0.2.100
    static let gateway = IPv4Address(0x0A00_0202)  // 10.0.2.2
    static let nameserver = IPv4Address(0x0A00_0203)  // 10.0.2.3
    static let prefixLength = 24
    /// The network ID an attachment to it records.
    static let networkID = "pasta"

    /// pasta, when it is the ``stack``.
    static var pasta: String? {
        if case .pasta(let path) = stack { return path }
        return nil
    }

    /// The attachment recorded for a container: the fixed addresses, and
    /// the published ports with a free host port chosen for each asked as 0.
    static func attachment(ports: [PublishedPort]) throws -> NetworkAttachment {
        let resolved = try ports.map { port in
            var port = port
            if port.hostPort == 0 { port.hostPort = try freePort(port) }
            return port
        }
        return NetworkAttachment(network: Networks.defaultName, networkID: networkID, address: address, prefixLength: prefixLength,
                                 gateway: gateway, hostInterface: "", aliases: [], ports: resolved)
    }

    /// A port the host has free now for `port`'s address and protocol.
    static func freePort(_ port: PublishedPort) throws -> UInt16 {
        let fd = socket(AF_INET, (port.protocol == .udp ? Int32(SOCK_DGRAM.rawValue) : Int32(SOCK_STREAM.rawValue)) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw RuntimeError(.network, "cannot open a socket to find a free port", underlying: Sys.errno) }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = (port.hostIP?.value ?? 0).bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound else { throw RuntimeError(.network, "cannot find a free host port on \(port.hostIP?.description ?? "the host")", underlying: Sys.errno) }
        return UInt16(bigEndian: address.sin_port)
    }

    /// pasta's arguments (the container's pid follows them): IPv4 only,
    /// the fixed addresses, DNS forwarded to the host's resolvers, the
    /// published ports, and nothing forwarded from the namespace to the
    /// host's own ports.
    static func arguments(_ attachment: NetworkAttachment, pidFile: String) -> [String]? {
        if let slirp4netns { return slirpArguments(slirp4netns, pidFile: pidFile) }
        guard let pasta else { return nil }
        var arguments = [pasta, "--config-net", "--quiet", "--pid", pidFile, "--ipv4-only", "--address", address.description, "--netmask", "\(prefixLength)",
                         "--gateway", gateway.description, "--dns-forward", nameserver.description, "--no-dhcp", "-T", "none", "-U", "none"]
        arguments += portOptions(attachment.ports)
        return arguments
    }

    /// pasta's arguments for the published ports of an ordinary user's
    /// container on a user network (the container's pid follows them): its
    /// namespace has the network already, so pasta's tap (`pasta0`) stays
    /// unconfigured, and the ports answer connections from the host's
    /// loopback, which pasta hands to the container's loopback.
    static func portArguments(_ attachment: NetworkAttachment, pidFile: String) -> [String]? {
        guard let pasta, !attachment.ports.isEmpty else { return nil }
        var arguments = [pasta, "--quiet", "--pid", pidFile, "--ipv4-only", "--ns-ifname", "pasta0", "-T", "none", "-U", "none"]
        arguments += portOptions(attachment.ports)
        return arguments
    }

    /// `-t`/`-u` options forwarding the published ports (`none` for a protocol without any).
    private static func portOptions(_ ports: [PublishedPort]) -> [String] {
        var arguments: [String] = []
        let tcp = ports.filter { $0.protocol == .tcp }, udp = ports.filter { $0.protocol == .udp }
        for (flag, ports) in [("-t", tcp), ("-u", udp)] {
            if ports.isEmpty {
                arguments += [flag, "none"]
            }
            for port in ports {
                arguments += [flag, (port.hostIP.map { "\($0)/" } ?? "") + "\(port.hostPort):\(port.containerPort)"]
            }
        }
        return arguments
    }

    /// Starts a pasta for the published ports of an ordinary user's pod: in
    /// the pod's network namespace (a file of the network host) and the
    /// network host's user namespace; its pid goes to `pidFile`.
    static func startForPorts(_ attachment: NetworkAttachment, namespace: String, userNamespace: String, pidFile: String) throws {
        guard var arguments = portArguments(attachment, pidFile: pidFile) else { return }
        arguments += ["--no-netns-quit", "--userns", userNamespace, "--netns", namespace]
        try run(arguments, what: "publish the pod's ports")
    }

    /// Runs pasta (which goes to the background once it is ready) with
    /// `arguments`; its complaint is in the error.
    static func run(_ arguments: [String], what: String) throws {
        var message = [CChar](repeating: 0, count: 1024)
        let status = withArguments(arguments) { gantry_run_program($0, &message, message.count) }
        guard status == 0 else {
            let said = NetworkHost.text(message).trimmingCharacters(in: .whitespacesAndNewlines)
            throw RuntimeError(.network, "\(slirp4netns == nil ? "pasta" : "slirp4netns") could not \(what)" + (said.isEmpty ? "" : ": \(said)"), underlying: Sys.errno)
        }
    }

    /// Calls `body` with `arguments` as a C array of strings ending in NULL.
    static func withArguments<T>(_ arguments: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> T) -> T {
        let pointers = arguments.map { strdup($0) } + [nil]
        defer { pointers.forEach { free($0) } }
        return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
    }

    /// Ends the pasta a container's start left (it outlives the namespace
    /// it serves, holding it): the process its pid file names, if it is
    /// still that pasta.
    ///
    /// The file may list instead the forwards a slirp4netns serving the
    /// network host made for the container's ports, which are removed.
    static func stop(pidFile: String) {
        guard let text = try? String(contentsOfFile: pidFile, encoding: .utf8) else { return }
        if let forwards = HostForwards(text) {
            forwards.remove()
        } else if let pid = helperPid(pidFile) {
            kill(pid, SIGTERM)
        }
        unlink(pidFile)
        unlink(apiSocket(pidFile))
    }

    /// The pid in `pidFile`, if it is still of the helper that wrote it
    /// (whose command line names the file, or the API socket beside it).
    static func helperPid(_ pidFile: String) -> Int32? {
        guard let text = try? String(contentsOfFile: pidFile, encoding: .utf8),
              let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 1,
              let arguments = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return nil }
        let line = String(decoding: arguments, as: UTF8.self)
        return line.contains(pidFile) || line.contains(apiSocket(pidFile)) ? pid : nil
    }

    /// `/etc/resolv.conf` and `/etc/hosts` for the container, written in its directory.
    static func writeFiles(in directory: String, hostname: String) throws {
        try FileIO.replaceStateFile(directory + "/resolv.conf", with: Data("nameserver \(nameserver)\n".utf8))
        try FileIO.replaceStateFile(directory + "/hosts", with: Data("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\(address)\t\(hostname)\n".utf8))
    }
}

extension NetworkAttachment {
    /// Whether it is an ordinary user's place on the default network, which
    /// pasta serves alone (no bridge, no lease).
    var isUserMode: Bool { networkID == UserModeNetwork.networkID }
}
