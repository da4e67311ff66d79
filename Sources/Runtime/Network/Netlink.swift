import CGantrySystem
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// A route netlink socket: links, addresses and routes of one network
/// namespace, set through the kernel's own interface rather than by running
/// `ip`. Not shared between threads.
final class RouteNetlink {
    private let fd: Int32
    private var sequence: UInt32 = 0

    /// A link as the kernel lists it.
    struct Link: Hashable, Sendable {
        var index: Int32
        var name: String
        /// `bridge`, `veth`, … (nil for devices without one, as loopback).
        var kind: String?
        /// The index of the bridge it is a port of.
        var master: Int32?
    }

    /// A socket in this thread's network namespace.
    init() throws {
        fd = socket(AF_NETLINK, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), Netlink.route)
        guard fd >= 0 else { throw RuntimeError(.network, "cannot open a route netlink socket", underlying: Sys.errno) }
        configure()
    }

    /// A socket in the network namespace of the namespace file `namespace`.
    init(namespace path: String) throws {
        guard let namespace = OwnedDescriptor(opening: path, O_RDONLY | O_CLOEXEC) else { throw RuntimeError(.network, "cannot open network namespace \(path)", underlying: Sys.errno) }
        fd = gantry_socket_in_netns(namespace.raw, AF_NETLINK, Int32(SOCK_RAW.rawValue), Netlink.route)
        guard fd >= 0 else { throw RuntimeError(.network, "cannot open a route netlink socket in \(path)", underlying: Sys.errno) }
        configure()
    }

    private func configure() {
        var on: Int32 = 1
        // Errors with the kernel's own explanation, and without the request echoed.
        setsockopt(fd, Netlink.solNetlink, Netlink.extendedAck, &on, socklen_t(MemoryLayout<Int32>.size))
        setsockopt(fd, Netlink.solNetlink, Netlink.capAck, &on, socklen_t(MemoryLayout<Int32>.size))
    }

    deinit { close(fd) }

    // MARK: - Links

    /// Creates a bridge, up, with the hardware address `address` when given.
    func createBridge(_ name: String, address: [UInt8]? = nil) throws {
        var message = NetlinkMessage(type: Netlink.newLink, flags: Netlink.create | Netlink.exclusive)
        message.appendLinkHeader(index: 0, up: true)
        message.append(attribute: Netlink.linkName, string: name)
        if let address { message.append(attribute: Netlink.linkAddress, bytes: address) }
        message.nest(Netlink.linkInfo) { $0.append(attribute: Netlink.infoKind, string: "bridge") }
        try perform(message, what: "create bridge \(name)")
    }

    /// Creates a veth pair: `name` here, up, a port of the bridge
    /// with index `master`, and `peer` (down) in the network namespace
    /// `namespace`, with the hardware address `peerAddress` when given.
    func createVethPair(_ name: String, master: Int32, peer: String, peerNamespace namespace: Int32, peerAddress: [UInt8]? = nil) throws {
        var message = NetlinkMessage(type: Netlink.newLink, flags: Netlink.create | Netlink.exclusive)
        message.appendLinkHeader(index: 0, up: true)
        message.append(attribute: Netlink.linkName, string: name)
        message.append(attribute: Netlink.linkMaster, uint32: UInt32(bitPattern: master))
        message.nest(Netlink.linkInfo) { info in
            info.append(attribute: Netlink.infoKind, string: "veth")
            info.nest(Netlink.infoData) { data in
                data.nest(Netlink.vethPeer) { peerMessage in
                    // Up only once both ends exist: a veth cannot open without its peer.
                    peerMessage.appendLinkHeader(index: 0, up: false)
                    peerMessage.append(attribute: Netlink.linkName, string: peer)
                    peerMessage.append(attribute: Netlink.linkNamespaceDescriptor, uint32: UInt32(bitPattern: namespace))
                    if let peerAddress { peerMessage.append(attribute: Netlink.linkAddress, bytes: peerAddress) }
                }
            }
        }
        try perform(message, what: "create veth pair \(name)/\(peer)")
    }

    /// Brings a link up.
    func setUp(_ index: Int32, name: String) throws {
        var message = NetlinkMessage(type: Netlink.newLink, flags: 0)
        message.appendLinkHeader(index: index, up: true)
        try perform(message, what: "bring \(name) up")
    }

    /// Deletes a link; false when there was none of that name.
    @discardableResult
    func deleteLink(_ name: String) throws -> Bool {
        var message = NetlinkMessage(type: Netlink.deleteLink, flags: 0)
        message.appendLinkHeader(index: 0, up: false)
        message.append(attribute: Netlink.linkName, string: name)
        do {
            try perform(message, what: "delete \(name)")
            return true
        } catch let error as RuntimeError where error.systemError == Errno(rawValue: ENODEV) {
            return false
        }
    }

    /// The link named `name`, if there is one.
    func link(_ name: String) throws -> Link? {
        var message = NetlinkMessage(type: Netlink.getLink, flags: 0)
        message.appendLinkHeader(index: 0, up: false)
        message.append(attribute: Netlink.linkName, string: name)
        do {
            return try request(message, what: "look up \(name)").compactMap(Self.parseLink).first
        } catch let error as RuntimeError where error.systemError == Errno(rawValue: ENODEV) {
            return nil
        }
    }

    /// Every link of the namespace.
    func links() throws -> [Link] {
        var message = NetlinkMessage(type: Netlink.getLink, flags: Netlink.dump)
        message.appendLinkHeader(index: 0, up: false)
        return try request(message, what: "list links").compactMap(Self.parseLink)
    }

    // MARK: - Addresses and routes

    /// Adds `address/prefixLength` to the link `index`.
    func addAddress(_ address: IPv4Address, prefixLength: Int, index: Int32, name: String) throws {
        var message = NetlinkMessage(type: Netlink.newAddress, flags: Netlink.create | Netlink.exclusive)
        message.append(bytes: [UInt8(AF_INET), UInt8(prefixLength), 0, 0])
        message.append(uint32: UInt32(bitPattern: index))
        message.append(attribute: Netlink.addressLocal, bytes: address.octets)
        message.append(attribute: Netlink.addressAddress, bytes: address.octets)
        if prefixLength < 31 {
            let broadcast = IPv4Subnet(address, prefixLength: prefixLength).broadcast
            message.append(attribute: Netlink.addressBroadcast, bytes: broadcast.octets)
        }
        try perform(message, what: "add \(address)/\(prefixLength) to \(name)")
    }

    /// Removes `address/prefixLength` from the link `index`; false when it
    /// was not there.
    @discardableResult
    func deleteAddress(_ address: IPv4Address, prefixLength: Int, index: Int32, name: String) throws -> Bool {
        var message = NetlinkMessage(type: Netlink.deleteAddress, flags: 0)
        message.append(bytes: [UInt8(AF_INET), UInt8(prefixLength), 0, 0])
        message.append(uint32: UInt32(bitPattern: index))
        message.append(attribute: Netlink.addressLocal, bytes: address.octets)
        do {
            try perform(message, what: "remove \(address)/\(prefixLength) from \(name)")
        } catch let error as RuntimeError where error.systemError == Errno(rawValue: EADDRNOTAVAIL) {
            return false
        }
        return true
    }

    /// Adds the default route through `gateway` on the link `index`.
    func addDefaultRoute(via gateway: IPv4Address, index: Int32) throws {
        var message = NetlinkMessage(type: Netlink.newRoute, flags: Netlink.create | Netlink.exclusive)
        // family, dst_len, src_len, tos, table, protocol (boot), scope (universe), type (unicast); flags
        message.append(bytes: [UInt8(AF_INET), 0, 0, 0, Netlink.mainTable, 3, 0, 1])
        message.append(uint32: 0)
        message.append(attribute: Netlink.routeGateway, bytes: gateway.octets)
        message.append(attribute: Netlink.routeOutput, uint32: UInt32(bitPattern: index))
        try perform(message, what: "add a default route via \(gateway)")
    }

    /// The destinations of the main table's IPv4 routes (the default route excluded).
    func routedSubnets() throws -> [IPv4Subnet] {
        var message = NetlinkMessage(type: Netlink.getRoute, flags: Netlink.dump)
        message.append(bytes: [UInt8(AF_INET), 0, 0, 0, 0, 0, 0, 0])
        message.append(uint32: 0)
        return try request(message, what: "list routes").compactMap { reply -> IPv4Subnet? in
            guard reply.type == Netlink.newRoute, reply.payload.count >= 12 else { return nil }
            let prefixLength = Int(reply.payload[1])
            guard prefixLength > 0 else { return nil }
            let attributes = NetlinkMessage.attributes(reply.payload[12...])
            guard let destination = attributes[Netlink.routeDestination], destination.count == 4 else { return nil }
            let value = destination.reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
            return IPv4Subnet(IPv4Address(value), prefixLength: prefixLength)
        }
    }

    // MARK: - Exchange

    private static func parseLink(_ reply: NetlinkReply) -> Link? {
        guard reply.type == Netlink.newLink, reply.payload.count >= 16 else { return nil }
        let index = reply.payload.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4, as: Int32.self) }
        let attributes = NetlinkMessage.attributes(reply.payload[16...])
        guard let nameBytes = attributes[Netlink.linkName] else { return nil }
        let name = String(decoding: nameBytes.prefix { $0 != 0 }, as: UTF8.self)
        var kind: String?
        if let info = attributes[Netlink.linkInfo], let kindBytes = NetlinkMessage.attributes(info)[Netlink.infoKind] {
            kind = String(decoding: kindBytes.prefix { $0 != 0 }, as: UTF8.self)
        }
        let master = attributes[Netlink.linkMaster].flatMap { bytes -> Int32? in
            bytes.count == 4 ? bytes.withUnsafeBytes { $0.loadUnaligned(as: Int32.self) } : nil
        }
        return Link(index: index, name: name, kind: kind, master: master)
    }

    /// Sends a request that changes something and waits for its acknowledgement.
    private func perform(_ message: NetlinkMessage, what: String) throws {
        var message = message
        message.flags |= Netlink.acknowledge
        _ = try request(message, what: what)
    }

    /// Sends a request and gathers its replies until the acknowledgement or
    /// the end of a dump.
    private func request(_ message: NetlinkMessage, what: String) throws -> [NetlinkReply] {
        sequence &+= 1
        let bytes = message.encoded(sequence: sequence)
        let sent = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
        guard sent == bytes.count else { throw RuntimeError(.network, "cannot \(what): netlink send failed", underlying: Sys.errno) }
        let dump = message.flags & Netlink.dump == Netlink.dump
        var replies: [NetlinkReply] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count < 0 {
                if errno == EINTR { continue }
                throw RuntimeError(.network, "cannot \(what): netlink receive failed", underlying: Sys.errno)
            }
            var offset = 0
            while offset + 16 <= count {
                let header = buffer.withUnsafeBytes { raw in
                    (length: Int(raw.loadUnaligned(fromByteOffset: offset, as: UInt32.self)),
                     type: raw.loadUnaligned(fromByteOffset: offset + 4, as: UInt16.self),
                     flags: raw.loadUnaligned(fromByteOffset: offset + 6, as: UInt16.self),
                     sequence: raw.loadUnaligned(fromByteOffset: offset + 8, as: UInt32.self))
                }
                guard header.length >= 16, offset + header.length <= count else { break }
                defer { offset += (header.length + 3) & ~3 }
                guard header.sequence == sequence else { continue }
                let payload = Array(buffer[(offset + 16) ..< (offset + header.length)])
                switch header.type {
                case Netlink.done:
                    return replies
                case Netlink.error:
                    let code = payload.count >= 4 ? payload.withUnsafeBytes { $0.loadUnaligned(as: Int32.self) } : -EPROTO
                    if code == 0 {
                        if !dump { return replies }
                        continue
                    }
                    var text = ""
                    // With extended acknowledgements: the kernel's message after the echoed header.
                    if header.flags & Netlink.acknowledgementTLVs != 0, payload.count > 20,
                       let explanation = NetlinkMessage.attributes(payload[20...])[1] {
                        text = " (" + String(decoding: explanation.prefix { $0 != 0 }, as: UTF8.self) + ")"
                    }
                    throw RuntimeError(.network, "cannot \(what)\(text)", underlying: Errno(rawValue: -code))
                default:
                    replies.append(NetlinkReply(type: header.type, payload: payload))
                    if !dump && header.flags & Netlink.multipart == 0 && message.flags & Netlink.acknowledge == 0 {
                        return replies
                    }
                }
            }
        }
    }
}

/// One message the kernel sent back.
struct NetlinkReply {
    var type: UInt16
    var payload: [UInt8]
}

/// A netlink request being built: a fixed header, then attributes (which nest).
struct NetlinkMessage {
    var type: UInt16
    var flags: UInt16
    private(set) var body: [UInt8] = []

    init(type: UInt16, flags: UInt16) {
        self.type = type
        self.flags = flags
    }

    /// The whole message with its header.
    func encoded(sequence: UInt32) -> [UInt8] {
        var header = NetlinkMessage(type: 0, flags: 0)
        header.append(uint32: UInt32(16 + body.count))
        header.append(uint16: type)
        header.append(uint16: flags | Netlink.request)
        header.append(uint32: sequence)
        header.append(uint32: 0)
        return header.body + body
    }

    /// An `ifinfomsg`: any family, the index, and IFF_UP set (or left as is).
    mutating func appendLinkHeader(index: Int32, up: Bool) {
        append(bytes: [0, 0, 0, 0])
        append(uint32: UInt32(bitPattern: index))
        append(uint32: up ? UInt32(IFF_UP) : 0)
        append(uint32: up ? UInt32(IFF_UP) : 0)
    }

    mutating func append(bytes: [UInt8]) { body += bytes }
    mutating func append(uint16 value: UInt16) { withUnsafeBytes(of: value) { body += $0 } }
    mutating func append(uint32 value: UInt32) { withUnsafeBytes(of: value) { body += $0 } }

    /// An attribute, padded to four bytes.
    mutating func append(attribute type: UInt16, bytes value: [UInt8]) {
        append(uint16: UInt16(4 + value.count))
        append(uint16: type)
        body += value
        pad()
    }

    mutating func append(attribute type: UInt16, string: String) {
        append(attribute: type, bytes: Array(string.utf8) + [0])
    }

    mutating func append(attribute type: UInt16, uint32 value: UInt32) {
        append(attribute: type, bytes: withUnsafeBytes(of: value) { Array($0) })
    }

    /// An attribute holding what `build` appends.
    mutating func nest(_ type: UInt16, _ build: (inout NetlinkMessage) -> Void) {
        var inner = NetlinkMessage(type: 0, flags: 0)
        build(&inner)
        append(uint16: UInt16(4 + inner.body.count))
        append(uint16: type | Netlink.nested)
        body += inner.body
        pad()
    }

    private mutating func pad() {
        while body.count % 4 != 0 { body.append(0) }
    }

    /// The attributes in `bytes`, by type (the last of a repeated type).
    static func attributes(_ bytes: ArraySlice<UInt8>) -> [UInt16: [UInt8]] {
        var result: [UInt16: [UInt8]] = [:]
        var offset = bytes.startIndex
        while offset + 4 <= bytes.endIndex {
            let length = Int(UInt16(bytes[offset]) | UInt16(bytes[offset + 1]) << 8)
            let type = (UInt16(bytes[offset + 2]) | UInt16(bytes[offset + 3]) << 8) & ~Netlink.nested
            guard length >= 4, offset + length <= bytes.endIndex else { break }
            result[type] = Array(bytes[(offset + 4) ..< (offset + length)])
            offset += (length + 3) & ~3
        }
        return result
    }

    static func attributes(_ bytes: [UInt8]) -> [UInt16: [UInt8]] { attributes(bytes[...]) }
}

/// The numbers of the route netlink protocol (linux/netlink.h, linux/rtnetlink.h, linux/if_link.h).
enum Netlink {
    static let route: Int32 = 0
    static let solNetlink: Int32 = 270
    static let capAck: Int32 = 10
    static let extendedAck: Int32 = 11

    static let request: UInt16 = 0x1
    static let multipart: UInt16 = 0x2
    static let acknowledge: UInt16 = 0x4
    static let dump: UInt16 = 0x300
    static let exclusive: UInt16 = 0x200
    static let create: UInt16 = 0x400
    static let acknowledgementTLVs: UInt16 = 0x200
    static let nested: UInt16 = 0x8000

    static let error: UInt16 = 2
    static let done: UInt16 = 3
    static let newLink: UInt16 = 16
    static let deleteLink: UInt16 = 17
    static let getLink: UInt16 = 18
    static let newAddress: UInt16 = 20
    static let deleteAddress: UInt16 = 21
    static let newRoute: UInt16 = 24
    static let getRoute: UInt16 = 26

    static let linkAddress: UInt16 = 1
    static let linkName: UInt16 = 3
    static let linkMaster: UInt16 = 10
    static let linkInfo: UInt16 = 18
    static let linkNamespaceDescriptor: UInt16 = 28
    static let infoKind: UInt16 = 1
    static let infoData: UInt16 = 2
    static let vethPeer: UInt16 = 1

    static let addressAddress: UInt16 = 1
    static let addressLocal: UInt16 = 2
    static let addressBroadcast: UInt16 = 4

    static let routeDestination: UInt16 = 1
    static let routeOutput: UInt16 = 4
    static let routeGateway: UInt16 = 5
    static let mainTable: UInt8 = 254
}
