import Reconciler
import Runtime

/// The networks a service's replicas join.
struct ServiceNetwork {
    /// The first network: the route out and the published ports.
    var mode: ContainerSpec.NetworkMode
    var aliases: [String]
    /// The networks besides the first.
    var others: [ContainerSpec.NetworkMembership] = []
    /// The service whose replica's network the replicas share (`network_mode: service:NAME`).
    var service: String?
    /// Whether one of them is the project's implicit `default` network.
    var usesDefault: Bool

    var joinsBridge: Bool {
        if case .bridge = mode { return true }
        return false
    }
}

extension ServiceReader {
    /// `network_mode:` or `networks:`, the project's `default` network
    /// when none is listed. With several, the first is the one of the
    /// highest `gw_priority` (then `priority`, then the name's order): the
    /// replicas' route out and published ports go through it.
    func network(_ fields: [String: ComposeValue], service: ComposeValue) throws -> ServiceNetwork {
        let implicit = ServiceNetwork(mode: .bridge(networks["default"]?.name ?? "\(project)_default"), aliases: [], usesDefault: true)
        if let mode = fields["network_mode"] {
            if let listed = fields["networks"] { throw listed.keyError("network_mode and networks cannot both be given") }
            let text = try mode.string()
            switch text {
            case "none": return ServiceNetwork(mode: .none, aliases: [], usesDefault: false)
            case "host": return ServiceNetwork(mode: .host, aliases: [], usesDefault: false)
            case "bridge": return implicit
            default:
                if text.hasPrefix("service:"), case let other = String(text.dropFirst(8)), !other.isEmpty {
                    var shared = ServiceNetwork(mode: .none, aliases: [], usesDefault: false)
                    shared.service = other
                    return shared
                }
                if text.hasPrefix("container:"), case let other = String(text.dropFirst(10)), !other.isEmpty {
                    return ServiceNetwork(mode: .container(other), aliases: [], usesDefault: false)
                }
                throw mode.error("must be none, host, bridge, service:NAME or container:NAME")
            }
        }
        guard let listed = fields["networks"], !listed.isNull else { return implicit }
        var entries: [(key: String, value: ComposeValue?, at: ComposeValue)] = []
        if case .sequence = listed.node {
            entries = try listed.sequence().map { (try $0.string(), nil, $0) }
        } else {
            entries = try listed.mapping().map { ($0.key, $0.value, $0.value) }
        }
        guard !entries.isEmpty else { return implicit }
        var joined: [(name: String, aliases: [String], priority: (Int, Int), usesDefault: Bool)] = []
        for entry in entries {
            guard entry.key == "default" || networks[entry.key] != nil else {
                throw entry.at.keyError("the network \(entry.key) is not declared under the top-level networks:")
            }
            var aliases: [String] = []
            var priority = (0, 0)
            if let options = entry.value, !options.isNull {
                let fields = try options.fields(["aliases", "priority", "gw_priority", "ipv4_address", "ipv6_address", "link_local_ips", "mac_address",
                                                 "driver_opts", "interface_name"], what: "network option")
                aliases = try fields["aliases"]?.sequence().map { try $0.string() } ?? []
                priority = (try fields["gw_priority"]?.int(Int.min ... Int.max) ?? 0, try fields["priority"]?.int(Int.min ... Int.max) ?? 0)
                for key in ["ipv4_address", "ipv6_address", "link_local_ips", "mac_address", "driver_opts", "interface_name"] {
                    if let unsupported = fields[key] { throw unsupported.keyError("not supported: Gantry chooses addresses and devices itself") }
                }
            }
            let declared = networks[entry.key]
            joined.append((declared?.name ?? implicit.mode.description, aliases, priority, declared == nil))
        }
        joined.sort { $0.priority != $1.priority ? $0.priority > $1.priority : $0.name < $1.name }
        let first = joined[0]
        return ServiceNetwork(mode: .bridge(first.name), aliases: first.aliases,
                              others: joined.dropFirst().map { ContainerSpec.NetworkMembership($0.name, aliases: $0.aliases) },
                              usesDefault: joined.contains { $0.usesDefault })
    }

    /// One entry of `ports:`: `"8080:80"`, `"127.0.0.1:8080:80/udp"`, `"80"`,
    /// or `{target, published, host_ip, protocol}`. Ranges are an error.
    func port(_ item: ComposeValue) throws -> PublishedPort {
        guard case .mapping = item.node else {
            let text = try item.string()
            if text.contains("-") { throw item.error("port ranges are not supported; list each port") }
            do {
                return try PublishedPort(parsing: text)
            } catch {
                throw item.error("is not a port such as 8080:80, 127.0.0.1:8080:80/udp or 80")
            }
        }
        let fields = try item.fields(["target", "published", "host_ip", "protocol", "mode", "name", "app_protocol"], what: "port key")
        guard let target = fields["target"] else { throw item.keyError("target: is missing") }
        var port = PublishedPort(containerPort: UInt16(try target.int(1 ... 65535)))
        if let published = fields["published"], let text = try published.optionalString(), !text.isEmpty {
            if text.contains("-") { throw published.error("port ranges are not supported; list each port") }
            port.hostPort = UInt16(try published.int(0 ... 65535))
        }
        if let hostIP = fields["host_ip"], let text = try hostIP.optionalString(), !text.isEmpty {
            guard let address = IPv4Address(text) else { throw hostIP.error("is not an IPv4 address") }
            port.hostIP = address
        }
        if let transport = fields["protocol"] {
            guard let parsed = PublishedPort.TransportProtocol(rawValue: try transport.string().lowercased()) else { throw transport.error("must be tcp or udp") }
            port.protocol = parsed
        }
        if let mode = fields["mode"], !["host", "ingress"].contains(try mode.string()) { throw mode.error("must be host or ingress") }
        return port
    }
}
