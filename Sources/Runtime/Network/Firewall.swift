import CNftables
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Gantry's packet filter rules: one nftables table, `ip gantry`, driven
/// in-process through libnftables. Every rule carries a comment naming the
/// network or container it belongs to (`gantry network <id>`, `gantry
/// container <id>`), which is how it is found and deleted.
///
/// - `forward`: isolation. A network's traffic may not be forwarded to
///   another network's bridge; an internal network's not to anywhere.
/// - `postrouting`: a network's traffic leaving by another device is
///   masqueraded; so is traffic from 127.0.0.0/8 to a published port
///   (the bridge accepts it with `route_localnet`).
/// - `prerouting` and `output` send traffic for this host's addresses to
///   `ports`, which translates each published port to its container.
/// - `input`: packets from a bridge to a loopback address are dropped
///   unless they answer the host (route_localnet would let them in);
///   `ingress`: packets from a bridge with a loopback source are dropped.
/// - Into a network's bridge from elsewhere, `forward` lets only answers
///   and published ports through.
enum Firewall {
    static let table = "gantry"


    /// Runs a change made of several commands (list, then delete what was
    /// listed) holding the host-wide `firewall.lock`, so that Gantry
    /// threads and processes do not change the table under each other
    /// (flock excludes every other open of the file, in this process too).
    static func changing<T>(_ host: NetworkHost, _ body: () throws -> T) throws -> T {
        try host.withLock("firewall.lock", body)
    }

    /// Runs nft commands in `host`'s namespace; returns their (JSON) output.
    @discardableResult
    static func run(_ commands: String, json: Bool = false, host: NetworkHost) throws -> String {
        guard host.isSystem else { return try host.nft(commands, json: json) }
        // One thread, with low descriptor numbers (libnftables selects on
        // its socket), makes every call: contexts are not safe to share.
        return try LowDescriptorThread.nftables.perform {
            let context = try SystemContext.shared.context()
            nft_ctx_output_set_flags(context, json ? UInt32(NFT_CTX_OUTPUT_JSON | NFT_CTX_OUTPUT_HANDLE) : 0)
            let status = nft_run_cmd_from_buffer(context, commands)
            guard status == 0 else {
                let message = nft_ctx_get_error_buffer(context).map { String(cString: $0) } ?? ""
                throw RuntimeError(.network, "nftables refused the rules: \(message.trimmingCharacters(in: .whitespacesAndNewlines))")
            }
            return nft_ctx_get_output_buffer(context).map { String(cString: $0) } ?? ""
        }
    }

    /// The libnftables context of the thread that makes every call, made
    /// once and kept with its netlink socket: closing a socket that made a
    /// change waits for the kernel to finish committing it (10 to 20 ms
    /// here), which a kept socket never pays. Used on that thread only.
    private final class SystemContext: @unchecked Sendable {
        static let shared = SystemContext()
        private var made: OpaquePointer?

        func context() throws -> OpaquePointer {
            if let made { return made }
            guard let context = nft_ctx_new(UInt32(NFT_CTX_DEFAULT)) else {
                throw RuntimeError(.network, "cannot start libnftables")
            }
            nft_ctx_buffer_output(context)
            nft_ctx_buffer_error(context)
            made = context
            return context
        }
    }

    /// The table and its chains (adding what exists changes nothing).
    static func ensureTable(_ host: NetworkHost) throws {
        try run("""
            add table ip \(table)
            add chain ip \(table) forward { type filter hook forward priority filter; policy accept; }
            add chain ip \(table) postrouting { type nat hook postrouting priority srcnat; policy accept; }
            add chain ip \(table) ports
            add chain ip \(table) prerouting { type nat hook prerouting priority dstnat; policy accept; }
            add chain ip \(table) output { type nat hook output priority -100; policy accept; }
            add chain ip \(table) input { type filter hook input priority filter; policy accept; }
            add chain ip \(table) ingress { type filter hook prerouting priority raw; policy accept; }
            """, host: host)
        let rules = try listRules(host: host)
        // Bridges accept loopback addresses (route_localnet, for published
        // ports on 127.0.0.1), so a container could reach the host's
        // loopback services with crafted packets: only answers to
        // connections the host made may come in that way.
        if !rules.contains(where: { $0.chain == "input" && $0.comment == "gantry loopback" }) {
            try run("add rule ip \(table) input iifname \"gt-*\" ip daddr 127.0.0.0/8 ct state != { established, related } drop comment \"gantry loopback\"", host: host)
        }
        // Nothing from a bridge may claim a loopback source: such packets
        // could pass for the host's own name servers or services.
        if !rules.contains(where: { $0.chain == "ingress" && $0.comment == "gantry loopback source" }) {
            try run("add rule ip \(table) ingress iifname \"gt-*\" ip saddr 127.0.0.0/8 drop comment \"gantry loopback source\"", host: host)
        }
        // The jumps to `ports`, once.
        for chain in ["prerouting", "output"] where !rules.contains(where: { $0.chain == chain && $0.comment == "gantry ports" }) {
            try run("add rule ip \(table) \(chain) fib daddr type local jump ports comment \"gantry ports\"", host: host)
        }
    }

    /// Installs a network's rules (replacing any it had).
    static func installNetwork(_ network: NetworkRecord, host: NetworkHost) throws {
        try changing(host) { try installNetworkRules(network, host: host) }
    }

    private static func installNetworkRules(_ network: NetworkRecord, host: NetworkHost) throws {
        try ensureTable(host)
        let tag = networkTag(network.id)
        let bridge = "\"\(network.bridge)\""
        // A member reaching a member through a translated address (an
        // endpoint's, a published port's) must see the answer come back
        // through the host, which undoes the translation: the request then
        // seems to come from the gateway.
        var commands = deleteCommands(tagged: tag, host: host) + [
            "add rule ip \(table) postrouting oifname \(bridge) ip saddr \(network.subnet) ct status dnat masquerade comment \"\(tag)\"",
        ]
        if network.internal {
            commands += [
                "add rule ip \(table) forward iifname \(bridge) oifname != \(bridge) drop comment \"\(tag)\"",
                "add rule ip \(table) forward oifname \(bridge) iifname != \(bridge) drop comment \"\(tag)\"",
            ]
        } else {
            commands += [
                // Other networks' published ports stay reachable, as from anywhere.
                "add rule ip \(table) forward iifname \(bridge) oifname != \(bridge) oifname \"gt-*\" ct status != dnat drop comment \"\(tag)\"",
                // From outside, only answers and published ports come in:
                // a neighbour routing the subnet through this host reaches nothing else.
                "add rule ip \(table) forward oifname \(bridge) iifname != \(bridge) ct state established,related accept comment \"\(tag)\"",
                "add rule ip \(table) forward oifname \(bridge) iifname != \(bridge) ct status dnat accept comment \"\(tag)\"",
                "add rule ip \(table) forward oifname \(bridge) iifname != \(bridge) drop comment \"\(tag)\"",
                "add rule ip \(table) postrouting ip saddr \(network.subnet) oifname != \(bridge) masquerade comment \"\(tag)\"",
                "add rule ip \(table) postrouting oifname \(bridge) ip saddr 127.0.0.0/8 masquerade comment \"\(tag)\"",
            ]
        }
        try run(commands.joined(separator: "\n"), host: host)
        // Published ports answer on 127.0.0.1: the bridge must accept
        // packets from loopback addresses, which the rule above rewrites.
        try? host.writeSetting("/proc/sys/net/ipv4/conf/\(network.bridge)/route_localnet", "1")
        // Packets whose source could not come from the bridge are dropped.
        try? host.writeSetting("/proc/sys/net/ipv4/conf/\(network.bridge)/rp_filter", "1")
        // (An ordinary user's network host forwards from its start.)
        if !network.internal, host.isSystem {
            try FileIO.write("1", to: "/proc/sys/net/ipv4/ip_forward", code: .network)
        }
    }

    /// Translates a container's published ports to its address.
    static func installPorts(containerID: String, address: IPv4Address, ports: [PublishedPort], host: NetworkHost) throws {
        guard !ports.isEmpty else { return }
        try changing(host) { try installPortRules(containerID: containerID, address: address, ports: ports, host: host) }
    }

    private static func installPortRules(containerID: String, address: IPv4Address, ports: [PublishedPort], host: NetworkHost) throws {
        let tag = containerTag(containerID)
        let rules = ports.map { port in
            let destination = port.hostIP.map { "ip daddr \($0) " } ?? ""
            return "add rule ip \(table) ports \(destination)\(port.protocol.rawValue) dport \(port.hostPort) dnat to \(address):\(port.containerPort) comment \"\(tag)\""
        }.joined(separator: "\n")
        // The table is checked (a listing of it, parsed) once per process;
        // should another process have removed it since, adding the rules
        // fails, and it is made again.
        if host.isSystem, systemTableEnsured.load(ordering: .relaxed), (try? run(rules, host: host)) != nil { return }
        try ensureTable(host)
        if host.isSystem { systemTableEnsured.store(true, ordering: .relaxed) }
        try run(rules, host: host)
    }

    /// Whether this process has made sure of the host's table and chains.
    private static let systemTableEnsured = Atomic<Bool>(false)

    /// Deletes every rule tagged for a network or container.
    static func removeRules(network id: String, host: NetworkHost) throws { try removeRules(tagged: networkTag(id), host: host) }
    /// A container's rules are in the `ports` chain only: that chain is listed, not the table.
    static func removeRules(container id: String, host: NetworkHost) throws { try removeRules(tagged: containerTag(id), in: "ports", host: host) }

    /// The comments of every rule in the table (none when there is no table).
    static func listRules(host: NetworkHost = .system, chain: String? = nil) throws -> [(chain: String, handle: Int, comment: String?)] {
        let output: String
        do {
            output = try run(chain.map { "list chain ip \(table) \($0)" } ?? "list table ip \(table)", json: true, host: host)
        } catch {
            return []
        }
        guard let document = try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any],
              let items = document["nftables"] as? [[String: Any]] else { return [] }
        return items.compactMap { item in
            guard let rule = item["rule"] as? [String: Any], let chain = rule["chain"] as? String, let handle = rule["handle"] as? Int else { return nil }
            return (chain, handle, rule["comment"] as? String)
        }
    }

    /// The names of the table's chains (none when there is no table).
    static func listChains(host: NetworkHost = .system) -> [String] {
        guard let output = try? run("list table ip \(table)", json: true, host: host),
              let document = try? JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any],
              let items = document["nftables"] as? [[String: Any]] else { return [] }
        return items.compactMap { ($0["chain"] as? [String: Any])?["name"] as? String }
    }

    private static func removeRules(tagged tag: String, in chain: String? = nil, host: NetworkHost) throws {
        try changing(host) {
            let commands = deleteCommands(tagged: tag, in: chain, host: host)
            guard !commands.isEmpty else { return }
            try run(commands.joined(separator: "\n"), host: host)
        }
    }

    static func deleteCommands(tagged tag: String, in chain: String? = nil, host: NetworkHost) -> [String] {
        ((try? listRules(host: host, chain: chain)) ?? []).filter { $0.comment == tag }.map { "delete rule ip \(table) \($0.chain) handle \($0.handle)" }
    }

    static func networkTag(_ id: String) -> String { "gantry network " + id.prefix(12) }
    static func containerTag(_ id: String) -> String { "gantry container " + id.prefix(12) }
}
