import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The embedded DNS server of the bridge networks: a UDP socket on each
/// network's gateway address, port 53, that answers the names of the
/// network's containers (names, short IDs and aliases, and their reverse
/// lookups) from its leases, and forwards every other query to the host's
/// name servers.
///
/// It runs on the supervisor thread of the process that attached the
/// containers; every process using the network binds the same address with
/// `SO_REUSEPORT`, so the network keeps a server while any of them runs.
/// Answers come from the lease files, so all of them give the same ones.
///
/// Containers are not trusted: the socket hears only its bridge and only
/// the network's addresses; each forwarded query goes out on a connected
/// socket of its own (a random port, answers only from that server) with a
/// random ID, and its answer must repeat its question; an internal
/// network's names go nowhere else; a wakeup handles a bounded number of
/// queries, so a flood cannot hold the supervisor thread.
final class NetworkResolver: Sendable {
    /// A name server that queries are forwarded to.
    struct Upstream: Hashable, Sendable {
        var address: IPv4Address
        var port: UInt16

        init(address: IPv4Address, port: UInt16) {
            self.address = address
            self.port = port
        }

        /// `IP` or `IP:port`.
        init(parsing text: String) throws {
            let parts = text.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            guard (1 ... 2).contains(parts.count), let address = IPv4Address(parts[0]),
                  let port = parts.count == 2 ? UInt16(parts[1]) : 53, port > 0 else {
                throw RuntimeError(.invalidSpec, "name server \"\(text)\" is not an IPv4 address with an optional port (10.0.0.2, 127.0.0.1:5353)")
            }
            self.init(address: address, port: port)
        }
    }

    /// How long a forwarded query waits for its answer before it is forgotten.
    static let forwardTimeout: Duration = .seconds(5)

    /// Queries forwarded at once, at most; past that, queries fail at once.
    static let maximumPending = 1024
    /// Datagrams read per wakeup of the supervisor thread.
    static let batch = 16

    private struct Server {
        var fd: Int32
        var network: NetworkRecord
        var stopping = false
    }

    /// A forwarded query: who asked, what, and under which ID.
    private struct Pending {
        var server: Int32
        var client: sockaddr_in
        var query: DNSMessage
        /// The ID it went out with.
        var id: UInt16
        var sent: ContinuousClock.Instant
        /// The connected sockets it went out on (one per name server).
        var sockets: [Int32]
    }

    private struct State {
        /// Servers by network ID.
        var servers: [String: Server] = [:]
        /// Forwarded queries, by each of their sockets.
        var pending: [Int32: Pending] = [:]
        /// Sockets being closed (shut down, their watch ending).
        var closing: Set<Int32> = []
    }

    private let state = Mutex(State())
    private let upstreams: [Upstream]
    /// Where the networks' bridges are, and the servers' sockets with them.
    private let host: NetworkHost
    private let leases: @Sendable (String) -> [NetworkLease]
    private let networkID: @Sendable (String) -> String?

    /// - Parameters:
    ///   - upstreams: where other names are asked; the host's resolvers when nil.
    ///   - leases: a network's leases, by network name.
    ///   - networkID: the ID of the network of that name now (nil when gone).
    init(upstreams: [Upstream]?, host: NetworkHost, leases: @escaping @Sendable (String) -> [NetworkLease],
         networkID: @escaping @Sendable (String) -> String?) {
        self.upstreams = upstreams ?? Self.hostNameservers()
        self.host = host
        self.leases = leases
        self.networkID = networkID
    }

    /// Serves `network` on its gateway, unless this process already does.
    func serve(_ network: NetworkRecord) throws {
        let fd: Int32 = try state.withLock { state in
            if state.servers[network.id] != nil { return -1 }
            let fd = try boundSocket(network.gateway, port: 53, reusePort: true, device: network.bridge)
            state.servers[network.id] = Server(fd: fd, network: network)
            return fd
        }
        guard fd >= 0 else { return }
        let id = network.id
        ProcessSupervisor.dns.watch(fd, handler: { [self] fd in receiveQueries(fd, networkID: id) }, ended: { [self] in
            let orphans = state.withLock { state in
                state.servers[id] = nil
                return state.pending.filter { $0.value.server == fd }.map(\.key)
            }
            orphans.forEach(abandon)
            close(fd)
        })
    }

    /// Stops serving the network (when it is removed).
    func stop(networkID id: String) {
        state.withLock { state in
            guard var server = state.servers[id], !server.stopping else { return }
            server.stopping = true
            state.servers[id] = server
            // Wakes the supervisor thread, which then closes the socket.
            shutdown(server.fd, Int32(SHUT_RDWR))
        }
    }

    // MARK: - Queries

    /// Answers what arrived on a network's socket; false once it is to close.
    private func receiveQueries(_ fd: Int32, networkID id: String) -> Bool {
        var buffer = [UInt8](repeating: 0, count: 1500)
        for _ in 0 ..< Self.batch {
            var client = sockaddr_in()
            let count = Self.receive(fd, into: &buffer, from: &client)
            let server = state.withLock { $0.servers[id] }
            guard let server, !server.stopping else { return false }
            if count < 0 { return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR }
            if count == 0 { continue }
            // A network removed and made again under the name is another network.
            guard networkID(server.network.name) == id else { return false }
            // Only the network's own addresses are served.
            guard server.network.subnet.contains(IPv4Address(UInt32(bigEndian: client.sin_addr.s_addr))) else { continue }
            handle(Array(buffer[..<count]), from: client, on: fd, network: server.network)
        }
        return true
    }

    private func handle(_ bytes: [UInt8], from client: sockaddr_in, on fd: Int32, network: NetworkRecord) {
        guard let message = DNSMessage(bytes), !message.isResponse else { return }
        if let answer = localAnswer(message, network: network.name) {
            send(answer, to: client, on: fd)
        } else if network.internal {
            // Nothing leaves an internal network, not even as a name.
            send(message.failure(code: DNSMessage.refused), to: client, on: fd)
        } else {
            forward(message, from: client, on: fd)
        }
    }

    /// The answer from the leases, or nil when the name is not the network's.
    private func localAnswer(_ message: DNSMessage, network: String) -> [UInt8]? {
        let members = leases(network)
        let name = message.name.lowercased()
        if let address = Self.reverseLookupAddress(name) {
            guard let member = members.first(where: { $0.address == address }) else { return nil }
            return message.answer(type: DNSMessage.pointerType, data: DNSMessage.encodeName(member.name))
        }
        func member(named name: String) -> NetworkLease? {
            members.first { lease in
                lease.name.lowercased() == name || lease.containerID.prefix(12) == name || lease.aliases.contains { $0.lowercased() == name }
            }
        }
        guard let member = member(named: name) ?? Self.clusterName(name, network: network).flatMap(member(named:)) else { return nil }
        // Only IPv4 addresses exist: any other type gets an empty answer.
        if message.type == DNSMessage.addressType { return message.answer(type: DNSMessage.addressType, data: member.address.octets) }
        return message.answer(type: nil, data: [])
    }

    /// A Kubernetes Service's name as pods write it, without what a
    /// cluster adds: `web.default.svc.cluster.local`, `web.default.svc`,
    /// `web.default` and `web.PROJECT` (on the network `PROJECT_default`)
    /// name `web`; nil for a name of no such form.
    static func clusterName(_ name: String, network: String) -> String? {
        var rest = Substring(name.hasSuffix(".") ? String(name.dropLast()) : name)
        for suffix in [".svc.cluster.local", ".cluster.local", ".svc"] where rest.hasSuffix(suffix) {
            rest = rest.dropLast(suffix.count)
            // What is left is NAME.NAMESPACE.
            guard let dot = rest.firstIndex(of: "."), rest[rest.index(after: dot)...].allSatisfy({ $0 != "." }) else { return nil }
            return String(rest[..<dot])
        }
        let project = network.hasSuffix("_default") ? String(network.dropLast(8)) : nil
        for namespace in ["default", project].compactMap({ $0 }) where rest.hasSuffix("." + namespace) {
            let stripped = rest.dropLast(namespace.count + 1)
            return stripped.contains(".") || stripped.isEmpty ? nil : String(stripped)
        }
        return nil
    }

    private func forward(_ query: DNSMessage, from client: sockaddr_in, on fd: Int32) {
        expire()
        let full = state.withLock { $0.pending.count >= Self.maximumPending }
        var sockets: [Int32] = []
        for upstream in upstreams where !full {
            if let socket = try? Self.connectedSocket(upstream) { sockets.append(socket) }
        }
        guard !sockets.isEmpty else {
            send(query.failure(code: DNSMessage.serverFailure), to: client, on: fd)
            return
        }
        let id = UInt16.random(in: 0 ... .max)
        let pending = Pending(server: fd, client: client, query: query, id: id, sent: .now, sockets: sockets)
        state.withLock { state in sockets.forEach { state.pending[$0] = pending } }
        var relayed = query.bytes
        relayed[0] = UInt8(id >> 8)
        relayed[1] = UInt8(id & 0xFF)
        for socket in sockets {
            _ = relayed.withUnsafeBytes { Glibc.send(socket, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            ProcessSupervisor.dns.watch(socket, handler: { [self] in receiveAnswer($0) }, ended: { [self] in
                state.withLock { state in
                    state.pending[socket] = nil
                    state.closing.remove(socket)
                }
                close(socket)
            })
        }
    }

    /// Relays the answer that came on a forwarding socket; false once the
    /// socket is done with.
    private func receiveAnswer(_ fd: Int32) -> Bool {
        var buffer = [UInt8](repeating: 0, count: 65535)
        for _ in 0 ..< Self.batch {
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            guard let pending = state.withLock({ state in state.closing.contains(fd) ? nil : state.pending[fd] }) else { return false }
            if count < 0 { return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR }
            // Only an answer to this very question, under its ID, counts.
            guard count >= 12, UInt16(buffer[0]) << 8 | UInt16(buffer[1]) == pending.id,
                  let answer = DNSMessage(Array(buffer[..<count])), answer.isResponse,
                  answer.bytes[12 ..< answer.questionEnd] == pending.query.bytes[12 ..< pending.query.questionEnd] else { continue }
            var relayed = answer.bytes
            relayed[0] = UInt8(pending.query.id >> 8)
            relayed[1] = UInt8(pending.query.id & 0xFF)
            send(relayed, to: pending.client, on: pending.server)
            abandon(fd)
            return true
        }
        return true
    }

    /// Forgets the forwarded query of a socket, shutting down all its sockets
    /// (their watches end and close them).
    private func abandon(_ fd: Int32) {
        state.withLock { state in
            guard let pending = state.pending[fd] else { return }
            for socket in pending.sockets where !state.closing.contains(socket) {
                state.closing.insert(socket)
                shutdown(socket, Int32(SHUT_RDWR))
            }
        }
    }

    /// Forgets forwarded queries no answer came for.
    private func expire() {
        let now = ContinuousClock.now
        let stale = state.withLock { state in
            state.pending.filter { now - $0.value.sent >= Self.forwardTimeout && !state.closing.contains($0.key) }.map(\.key)
        }
        stale.forEach(abandon)
    }

    private func send(_ bytes: [UInt8], to address: sockaddr_in, on fd: Int32) {
        guard !bytes.isEmpty else { return }
        var address = address
        _ = bytes.withUnsafeBytes { raw in
            withUnsafePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, raw.baseAddress, raw.count, Int32(MSG_DONTWAIT), $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        }
    }

    // MARK: - Sockets and addresses

    private static func socketAddress(_ address: IPv4Address, port: UInt16) -> sockaddr_in {
        var result = sockaddr_in()
        result.sin_family = sa_family_t(AF_INET)
        result.sin_port = port.bigEndian
        result.sin_addr.s_addr = address.value.bigEndian
        return result
    }

    /// A non-blocking UDP socket connected to a name server.
    private static func connectedSocket(_ upstream: Upstream) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw RuntimeError(.network, "cannot open a DNS socket", underlying: Sys.errno) }
        var address = socketAddress(upstream.address, port: upstream.port)
        let result = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else {
            let error = Sys.errno
            close(fd)
            throw RuntimeError(.network, "cannot reach name server \(upstream.address):\(upstream.port)", underlying: error)
        }
        return fd
    }

    private static func receive(_ fd: Int32, into buffer: inout [UInt8], from sender: inout sockaddr_in) -> Int {
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        return buffer.withUnsafeMutableBytes { bytes in
            withUnsafeMutablePointer(to: &sender) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    recvfrom(fd, bytes.baseAddress, bytes.count, Int32(MSG_DONTWAIT), $0, &length)
                }
            }
        }
    }

    /// A non-blocking UDP socket bound to `address:port` on `device`.
    private func boundSocket(_ address: IPv4Address, port: UInt16, reusePort: Bool, device: String) throws -> Int32 {
        let fd = try host.socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        var on: Int32 = 1
        if reusePort { setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, socklen_t(MemoryLayout<Int32>.size)) }
        // Only the bridge's own traffic: not other networks, not the host's other devices.
        guard device.withCString({ setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, $0, socklen_t(strlen($0) + 1)) }) == 0 else {
            let error = Sys.errno
            close(fd)
            throw RuntimeError(.network, "cannot bind a DNS socket to \(device)", underlying: error)
        }
        var bound = Self.socketAddress(address, port: port)
        let result = withUnsafePointer(to: &bound) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else {
            let error = Sys.errno
            close(fd)
            throw RuntimeError(.network, "cannot serve DNS on \(address):\(port)", underlying: error)
        }
        return fd
    }

    /// The address a reverse lookup (`4.3.2.1.in-addr.arpa`) asks about.
    static func reverseLookupAddress(_ name: String) -> IPv4Address? {
        guard name.hasSuffix(".in-addr.arpa") else { return nil }
        let octets = name.dropLast(".in-addr.arpa".count).split(separator: ".", omittingEmptySubsequences: false)
        guard octets.count == 4 else { return nil }
        return IPv4Address(octets.reversed().joined(separator: "."))
    }

    /// The IPv4 name servers of the host's `/etc/resolv.conf`.
    static func hostNameservers() -> [Upstream] {
        nameserverLines((try? String(contentsOfFile: "/etc/resolv.conf", encoding: .utf8)) ?? "")
            .compactMap { IPv4Address($0) }.map { Upstream(address: $0, port: 53) }
    }

    /// The addresses of a resolv.conf's `nameserver` lines.
    static func nameserverLines(_ text: String) -> [String] {
        text.split(separator: "\n").compactMap { line in
            let fields = line.split(whereSeparator: \.isWhitespace)
            return fields.count > 1 && fields[0] == "nameserver" ? String(fields[1]) : nil
        }
    }
}

/// The parts of a DNS query the resolver reads (RFC 1035): its ID, flags
/// and first question, and answers built from them.
struct DNSMessage {
    static let addressType: UInt16 = 1
    static let pointerType: UInt16 = 12

    let bytes: [UInt8]
    let id: UInt16
    let flags: UInt16
    /// The question's name, without the trailing dot.
    let name: String
    let type: UInt16
    /// Where the question ends.
    let questionEnd: Int

    var isResponse: Bool { flags & 0x8000 != 0 }

    init?(_ bytes: [UInt8]) {
        guard bytes.count >= 12, bytes[4] == 0, bytes[5] >= 1 else { return nil }
        self.bytes = bytes
        id = UInt16(bytes[0]) << 8 | UInt16(bytes[1])
        flags = UInt16(bytes[2]) << 8 | UInt16(bytes[3])
        var labels: [String] = []
        var offset = 12
        while true {
            guard offset < bytes.count else { return nil }
            let length = Int(bytes[offset])
            offset += 1
            if length == 0 { break }
            // Compression has no place in a question.
            guard length < 64, offset + length <= bytes.count, labels.count < 128 else { return nil }
            labels.append(String(decoding: bytes[offset ..< offset + length], as: UTF8.self))
            offset += length
        }
        guard offset + 4 <= bytes.count else { return nil }
        name = labels.joined(separator: ".")
        type = UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1])
        questionEnd = offset + 4
    }

    /// An authoritative answer with one record of `type` holding `data`
    /// (none when `type` is nil).
    func answer(type: UInt16?, data: [UInt8]) -> [UInt8] {
        var reply = header(code: 0, answers: type == nil ? 0 : 1)
        reply += bytes[12 ..< questionEnd]
        guard let type else { return reply }
        reply += [0xC0, 12]  // the question's name
        reply += [UInt8(type >> 8), UInt8(type & 0xFF), 0, 1]
        reply += [0, 0, 0, 10]  // a short TTL: containers come and go
        reply += [UInt8(data.count >> 8), UInt8(data.count & 0xFF)] + data
        return reply
    }

    static let serverFailure: UInt8 = 2
    static let refused: UInt8 = 5

    /// An answer with no records and the error `code`.
    func failure(code: UInt8) -> [UInt8] { header(code: code, answers: 0) + bytes[12 ..< questionEnd] }

    private func header(code: UInt8, answers: UInt8) -> [UInt8] {
        // QR, authoritative, the query's opcode and RD; RA.
        let high = 0x84 | UInt8(flags >> 8) & 0x79
        return [UInt8(id >> 8), UInt8(id & 0xFF), high, 0x80 | code, 0, 1, 0, answers, 0, 0, 0, 0]
    }

    /// A name in wire form.
    static func encodeName(_ name: String) -> [UInt8] {
        name.split(separator: ".").flatMap { label in [UInt8(min(label.utf8.count, 63))] + label.utf8.prefix(63) } + [0]
    }
}
