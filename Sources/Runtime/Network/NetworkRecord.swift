public import Foundation

/// A bridge network: a Linux bridge on the host, a subnet its containers
/// take addresses from, and (unless internal) a route out through the host.
public struct NetworkRecord: Hashable, Sendable, Codable {
    /// 64 hex digits.
    public var id: String
    /// The unique name.
    public var name: String
    /// The bridge device on the host.
    public var bridge: String
    /// The addresses of the network.
    public var subnet: IPv4Subnet
    /// The bridge's address: the containers' default route.
    public var gateway: IPv4Address
    /// Whether containers on it are cut off from everything but each other.
    public var `internal`: Bool
    /// Free-form labels.
    public var labels: [String: String]
    /// When it was created.
    public var createdAt: Date

    /// The short form of the ID (12 hex digits).
    public var shortID: String { String(id.prefix(12)) }
}

/// A container's place on a network: its address, its device on the host,
/// and the names it answers to there.
public struct NetworkAttachment: Hashable, Sendable, Codable {
    /// The network's name.
    public var network: String
    /// The network's ID.
    public var networkID: String
    /// The container's address.
    public var address: IPv4Address
    /// The subnet's prefix length.
    public var prefixLength: Int
    /// The network's gateway (the default route unless the network is internal).
    public var gateway: IPv4Address
    /// The host's end of the container's veth pair.
    public var hostInterface: String
    /// Names the container answers to on the network besides its own.
    public var aliases: [String]
    /// Its published ports, with the host ports chosen for those asked as 0.
    public var ports: [PublishedPort]
}

/// A container port reachable on the host's addresses (`-p 8080:80`).
public struct PublishedPort: Hashable, Sendable, Codable, CustomStringConvertible {
    /// TCP or UDP.
    public enum TransportProtocol: String, Hashable, Sendable, Codable {
        case tcp
        case udp
    }

    /// The host address it answers on; every address of the host when nil.
    public var hostIP: IPv4Address?
    /// The port on the host; 0 asks for a free one.
    public var hostPort: UInt16
    /// The port in the container.
    public var containerPort: UInt16
    public var `protocol`: TransportProtocol

    public init(hostIP: IPv4Address? = nil, hostPort: UInt16 = 0, containerPort: UInt16, protocol: TransportProtocol = .tcp) {
        self.hostIP = hostIP
        self.hostPort = hostPort
        self.containerPort = containerPort
        self.protocol = `protocol`
    }

    /// Parses Docker's form: `[IP:]HOST:CONTAINER[/udp]`, or `CONTAINER`
    /// alone for a free host port.
    ///
    /// - Throws: ``RuntimeError`` with code `invalidSpec` naming the text.
    public init(parsing text: String) throws {
        let invalid = RuntimeError(.invalidSpec, "\"\(text)\" is not a published port such as 8080:80, 127.0.0.1:8080:80/udp or 80")
        var body = Substring(text)
        var transport = TransportProtocol.tcp
        if let slash = body.lastIndex(of: "/") {
            guard let parsed = TransportProtocol(rawValue: String(body[body.index(after: slash)...]).lowercased()) else { throw invalid }
            transport = parsed
            body = body[..<slash]
        }
        let parts = body.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        func port(_ text: String, allowZero: Bool) throws -> UInt16 {
            guard let value = UInt16(text), value > 0 || allowZero else { throw invalid }
            return value
        }
        switch parts.count {
        case 1: self.init(containerPort: try port(parts[0], allowZero: false), protocol: transport)
        case 2: self.init(hostPort: try port(parts[0].isEmpty ? "0" : parts[0], allowZero: true), containerPort: try port(parts[1], allowZero: false), protocol: transport)
        case 3:
            guard let address = IPv4Address(parts[0]) else { throw invalid }
            self.init(hostIP: address, hostPort: try port(parts[1].isEmpty ? "0" : parts[1], allowZero: true),
                      containerPort: try port(parts[2], allowZero: false), protocol: transport)
        default: throw invalid
        }
    }

    public var description: String {
        (hostIP.map { "\($0):" } ?? "") + "\(hostPort):\(containerPort)/\(self.protocol.rawValue)"
    }
}

/// What a network's lease file records: who holds an address.
struct NetworkLease: Hashable, Sendable, Codable {
    var containerID: String
    var name: String
    var aliases: [String]
    var address: IPv4Address
    /// The directory of the container or pod holding it.
    var owner: String?
    /// Whether it is an endpoint's virtual address (held by the bridge).
    var virtual: Bool?
    /// The host end of the veth pair of a container's network besides its
    /// first, which joins the first's namespace; `nil` for the first.
    var hostInterface: String?
    /// Names and addresses its `hosts` file adds (its first network's lease only).
    var extraHosts: [String: String]?
}
