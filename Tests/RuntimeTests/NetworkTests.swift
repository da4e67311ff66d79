import Foundation
import GantryTestSupport
import Synchronization
import Testing
@testable import Runtime
#if canImport(Glibc)
import Glibc
#endif

/// Bridge networks, names and published ports, on the real kernel: every
/// bridge, veth, rule and lease a test makes is checked gone afterwards.
@Suite(.requiresRoot) struct NetworkTests {
    static let server = "mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p 80 -h /www"

    @Test func containersOnANetworkReachEachOtherByNameAndNoOtherNetworkReachesThem() async throws {
        try await withRuntime("net-names") { runtime, _ in
            try await runtime.networks.create("front")
            try await runtime.networks.create("back")
            let web = try await runtime.create(shell(Self.server).named("web").network(.bridge("front"), aliases: ["www"]))
            try await web.start()
            let address = try #require(try web.record.network?.address)
            #expect(try runtime.networks.members(of: "front").map(\.name) == ["web"])
            // IPv4 only: no IPv6 on the bridge, the veth or eth0 (router advertisements).
            let bridge = try runtime.networks.network("front").bridge
            for device in [bridge, Networks.hostInterface(web.id)] where FileManager.default.fileExists(atPath: "/proc/sys/net/ipv6/conf/\(device)") {
                #expect(try readText("/proc/sys/net/ipv6/conf/\(device)/disable_ipv6") == "1\n", "IPv6 is on on \(device)")
            }
            if FileManager.default.fileExists(atPath: "/proc/sys/net/ipv6") {
                let (_, inside) = try await runCollecting(runtime, shell("cat /proc/sys/net/ipv6/conf/eth0/disable_ipv6").network(.bridge("front")))
                #expect(inside == "1\n")
            }

            // By name and by alias, from the same network.
            let (reached, output) = try await runCollecting(runtime, shell("""
                for i in $(seq 50); do wget -qO- http://web/ && wget -qO- http://www/ && exit 0; sleep 0.1; done; exit 1
                """).network(.bridge("front")))
            #expect(reached.code == 0)
            #expect(output == "hello\nhello\n")

            // By address from the same network, but not from another one.
            // Not exec'd: as PID 1, wget would ignore timeout's SIGTERM.
            let fetch = shell("timeout 3 wget -qO- http://\(address)/; exit $?")
            let (direct, page) = try await runCollecting(runtime, fetch.network(.bridge("front")))
            #expect(direct.code == 0 && page == "hello\n")
            let (blocked, _) = try await runCollecting(runtime, fetch.network(.bridge("back")))
            #expect(blocked.code != 0)
            try await runtime.networks.create("sealed", internal: true)
            let (sealed, routes) = try await runCollecting(runtime, shell("ip route").network(.bridge("sealed")))
            #expect(sealed.code == 0)
            #expect(!routes.contains("default"), "an internal network has no route out: \(routes)")
            // Nor does it publish ports; and no network takes a mode's name.
            var published = shell("true").network(.bridge("sealed"))
            published.publishedPorts = [PublishedPort(hostIP: IPv4Address("127.0.0.1"), hostPort: 0, containerPort: 80)]
            await #expect { _ = try await runtime.create(published) } throws: { ($0 as? RuntimeError)?.message.contains("internal") == true }
            for mode in ["bridge", "none", "host"] {
                await #expect { try await runtime.networks.create(mode) } throws: { ($0 as? RuntimeError)?.message.contains("network mode") == true }
            }

            // A network in use cannot go; once free, it goes with all it had.
            #expect(throws: RuntimeError.self) { try runtime.networks.remove("front") }
            try await web.remove(force: true)
            try expectNothingLeft(runtime, containers: [web.id])
        }
    }

    @Test func aContainerOnSeveralNetworksReachesEachOnesMembersAndAnswersToItsNamesThere() async throws {
        try await withRuntime("net-several") { runtime, _ in
            try await runtime.networks.create("front")
            try await runtime.networks.create("back")
            let web = try await runtime.create(shell(Self.server).named("web").network(.bridge("front")))
            let db = try await runtime.create(shell(Self.server.replacingOccurrences(of: "hello", with: "from db")).named("db").network(.bridge("back")))
            try await web.start()
            try await db.start()
            // On both: each network's members by name; the route out is the first's.
            var both = shell("""
                for i in $(seq 50); do wget -qO- http://web/ && wget -qO- http://db/ && break; sleep 0.1; done
                ip -4 route; ip -o -4 addr show eth1 | wc -l
                """).network(.bridge("front"))
            both.additionalNetworks = [.init("back", aliases: ["gateway"])]
            let (exit, output) = try await runCollecting(runtime, both)
            let front = try runtime.networks.network("front")
            let back = try runtime.networks.network("back")
            #expect(exit.code == 0 && output.hasPrefix("hello\nfrom db\n"), "\(output)")
            #expect(output.contains("default via \(front.gateway) dev eth0") && output.contains("\(back.subnet) dev eth1"), "\(output)")
            #expect(!output.contains("default via \(back.gateway)") && output.hasSuffix("1\n"), "\(output)")

            // A server on both answers on each, to its name on its first network and its alias on the other.
            var proxy = shell(Self.server.replacingOccurrences(of: "hello", with: "from proxy")).named("proxy").network(.bridge("front"))
            proxy.additionalNetworks = [.init("back", aliases: ["gateway"])]
            let server = try await runtime.create(proxy)
            try await server.start()
            #expect(try runtime.networks.members(of: "back").map(\.name).sorted() == ["db", "proxy"])
            let fetch = "for i in $(seq 50); do timeout 3 wget -qO- http://%@/ && exit 0; sleep 0.1; done; exit 1"
            let (fromBack, page) = try await runCollecting(runtime, shell(fetch.replacingOccurrences(of: "%@", with: "gateway")).network(.bridge("back")))
            #expect(fromBack.code == 0 && page == "from proxy\n")
            let (fromFront, frontPage) = try await runCollecting(runtime, shell(fetch.replacingOccurrences(of: "%@", with: "proxy")).network(.bridge("front")))
            #expect(fromFront.code == 0 && frontPage == "from proxy\n")
            // The networks stay apart: web is not known on back.
            let (apart, _) = try await runCollecting(runtime, shell("timeout 3 wget -qO- http://web/").network(.bridge("back")))
            #expect(apart.code != 0)

            // The same network twice, or another network without a bridge first, is refused.
            var twice = shell("true").network(.bridge("front"))
            twice.additionalNetworks = [.init("back"), .init("back")]
            await #expect { _ = try await runtime.create(twice) } throws: { ($0 as? RuntimeError)?.message.contains("lists network back twice") == true }
            var alone = shell("true")
            alone.additionalNetworks = [.init("back")]
            await #expect { _ = try await runtime.create(alone) } throws: { ($0 as? RuntimeError)?.message.contains("its first is not a bridge network") == true }

            // Stopped, it leaves both networks; removed, nothing of it is left.
            try await server.stop()
            #expect(try runtime.networks.members(of: "back").map(\.name) == ["db"])
            let links = try RouteNetlink().links().map(\.name)
            #expect(!links.contains(Networks.hostInterface(server.id, device: 1)))
            for container in [web, db, server] { try await container.remove(force: true) }
            try expectNothingLeft(runtime, containers: [web.id, db.id, server.id])
            try await runtime.networks.remove("back")
        }
    }

    @Test func aContainerJoinsAnothersNetworkNamespaceWhileThatOneRuns() async throws {
        try await withRuntime("net-join") { runtime, _ in
            try await runtime.networks.create("front")
            let vpn = try await runtime.create(shell(Self.server).named("vpn").network(.bridge("front")))
            // Not yet running: the joiner cannot start.
            let early = try await runtime.create(shell("true").network(.container("vpn")))
            await #expect { try await early.start() } throws: { ($0 as? RuntimeError)?.message.contains("joins the network of container vpn, which is not running") == true }
            try await early.remove(force: true)
            try await vpn.start()
            let address = try #require(try vpn.record.network?.address)
            // Its loopback, its address and its names are the other's.
            let (exit, output) = try await runCollecting(runtime, shell("""
                for i in $(seq 50); do wget -qO- http://127.0.0.1/ && break; sleep 0.1; done
                ip -o -4 addr show eth0 | grep -c \(address); grep -c vpn /etc/hosts
                """).network(.container("vpn")))
            #expect(exit.code == 0 && output == "hello\n1\n1\n", "\(output)")
            // Networks and ports are the other container's to give.
            var ports = shell("true").network(.container("vpn"))
            ports.publishedPorts = [PublishedPort(hostPort: 0, containerPort: 80)]
            await #expect { _ = try await runtime.create(ports) } throws: { ($0 as? RuntimeError)?.message.contains("give networks, aliases and ports to vpn") == true }
            await #expect { _ = try await runtime.create(shell("true").network(.container("nowhere"))) } throws: {
                ($0 as? RuntimeError)?.message.contains("which does not exist") == true
            }
            try await vpn.remove(force: true)
            try expectNothingLeft(runtime, containers: [vpn.id])
        }
    }

    @Test func theEmbeddedNameServerAnswersMembersAndForwardsTheRest() async throws {
        let upstream = try FakeNameServer(answer: IPv4Address("192.0.2.7")!)
        defer { upstream.stop() }
        try await withRuntime("net-dns", nameservers: ["127.0.0.1:\(upstream.port)"]) { runtime, _ in
            let network = try await runtime.networks.create("names")
            let web = try await runtime.create(shell("sleep 600").named("db").network(.bridge("names"), aliases: ["database"]))
            try await web.start()
            let address = try #require(try web.record.network?.address)
            // nslookup asks the first name server of resolv.conf itself,
            // without the hosts file.
            let (exit, output) = try await runCollecting(runtime, shell("""
                head -1 /etc/resolv.conf; nslookup db; nslookup database; nslookup \(address); nslookup elsewhere.test
                """).network(.bridge("names")))
            #expect(exit.code == 0, "\(output)")
            let lines = output.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
            #expect(lines.first == "nameserver \(network.gateway)")
            #expect(lines.filter { $0 == "Address: \(address)" }.count == 2, "\(output)")
            #expect(output.contains("name = db"), "\(output)")
            #expect(lines.contains("Address: 192.0.2.7"), "a name not on the network is forwarded: \(output)")
            #expect(upstream.queries.contains { $0.hasPrefix("elsewhere.test") })
            #expect(!upstream.queries.contains { $0.hasPrefix("db") }, "members are answered without asking upstream")

            // An internal network's names stay inside: nothing is forwarded.
            try await runtime.networks.create("vault", internal: true)
            let (sealed, refused) = try await runCollecting(runtime, shell("nslookup secret.test").network(.bridge("vault")))
            #expect(sealed.code != 0, "\(refused)")
            #expect(!upstream.queries.contains { $0.hasPrefix("secret") }, "an internal network's query left it")
            try await web.remove(force: true)
        }
    }

    @Test func publishedPortsAnswerOnLoopbackOverTCPAndUDP() async throws {
        try await withRuntime("net-ports", fixtures: ["udp-echo"]) { runtime, _ in
            let explicit = try #require(Networks.freeHostPort(.tcp))
            let web = try await runtime.create(shell(Self.server).network(.bridge(Networks.defaultName))
                .publishing(PublishedPort(hostPort: explicit, containerPort: 80), PublishedPort(containerPort: 80)))
            try await web.start()
            let echo = try await runtime.create(ContainerSpec(image: "busybox:test", command: ["/bin/udp-echo", "7"])
                .network(.bridge(Networks.defaultName)).publishing(PublishedPort(hostIP: IPv4Address("127.0.0.1"), containerPort: 7, protocol: .udp)))
            try await echo.start()

            let webPorts = try #require(try web.record.network?.ports)
            #expect(webPorts.count == 2)
            #expect(webPorts[0].hostPort == explicit)
            #expect(webPorts[1].hostPort != 0, "port 0 is given a free port, which inspect reports")
            for port in webPorts {
                let response = await httpGet(port: port.hostPort)
                #expect(response?.contains("hello") == true, "no answer on 127.0.0.1:\(port.hostPort)")
            }
            // The host's other addresses answer too.
            if let address = hostAddress() {
                #expect(await httpGet(port: webPorts[0].hostPort, host: address)?.contains("hello") == true, "no answer on \(address)")
            }
            // A port already published cannot be published again.
            await #expect(throws: RuntimeError.self) {
                try await runtime.create(shell("true").network(.bridge(Networks.defaultName)).publishing(PublishedPort(hostPort: explicit, containerPort: 80)))
            }

            let udpPort = try #require(try echo.record.network?.ports.first?.hostPort)
            #expect(await udpExchange(port: udpPort, "ping") == "echo:ping")

            try await web.remove(force: true)
            try await echo.remove(force: true)
            try expectNothingLeft(runtime, containers: [web.id, echo.id])
            #expect(await httpGet(port: webPorts[0].hostPort, attempts: 1) == nil, "the port still answers after the container is gone")
        }
    }

    @Test func podMembersShareLocalhostTheirHostNameAndThePodsPublishedPort() async throws {
        try await withRuntime("net-pod") { runtime, dir in
            let pod = try await runtime.pods.create(PodSpec(name: "svc", network: .bridge(Networks.defaultName), publishing: [PublishedPort(containerPort: 80)]))
            let port = try #require(pod.network?.ports.first?.hostPort)
            let web = try await runtime.create(shell(Self.server).inPod("svc"))
            try await web.start()
            let (exit, output) = try await runCollecting(runtime, shell("""
                for i in $(seq 50); do wget -qO- http://127.0.0.1/ && break; sleep 0.1; done; hostname; readlink /proc/self/ns/net; readlink /proc/self/ns/ipc
                """).inPod("svc"))
            #expect(exit.code == 0)
            let lines = output.split(separator: "\n").map(String.init)
            #expect(lines.prefix(2) == ["hello", "svc"], "\(output)")
            let probe = try await web.exec(ExecSpec(["sh", "-c", "readlink /proc/self/ns/net; readlink /proc/self/ns/ipc"]))
            var namespaces = ""
            for try await chunk in probe.output { namespaces += chunk.text }
            #expect(lines.dropFirst(2).joined(separator: "\n") + "\n" == namespaces, "members share the network and IPC namespaces")
            #expect(await httpGet(port: port)?.contains("hello") == true, "the pod's published port answers")
            #expect(try web.record.network?.address == pod.network?.address)

            #expect(try runtime.pods.containers(in: "svc") == [web.name])
            #expect(throws: RuntimeError.self) { try runtime.pods.remove("svc") }
            await #expect(throws: RuntimeError.self) {
                try await runtime.create(shell("true").inPod("svc").publishing(PublishedPort(containerPort: 81)))
            }
            try await web.remove(force: true)
            try await runtime.pods.remove("svc")
            try expectNothingLeft(runtime, containers: [pod.id])
            #expect(try runtime.pods.list().isEmpty)
            #expect(mounts(under: dir).isEmpty)
        }
    }

    @Test func aPodWithoutANetworkHasOnlyLoopback() async throws {
        try await withRuntime("net-pod-none") { runtime, _ in
            try await runtime.pods.create(PodSpec(name: "sealed", sharesIPC: false, sharesUTS: false))
            let (exit, output) = try await runCollecting(runtime, shell("ip -o link | cut -d: -f2; ip -o addr show lo | grep -c 127.0.0.1").inPod("sealed"))
            #expect(exit.code == 0)
            #expect(output.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) } == ["lo", "1"], "\(output)")
            try await runtime.pods.remove("sealed")
        }
    }

    @Test func containersCannotReachTheHostsLoopbackThroughTheBridge() async throws {
        try await withRuntime("net-loopback", fixtures: ["udp-send"]) { runtime, _ in
            // A service of the host on 127.0.0.1 only.
            let (fd, port) = try loopbackUDPSocket()
            defer { close(fd) }
            // The bridge accepts loopback addresses for published ports; a
            // container able to route 127.0.0.1 out of eth0 tries to use that.
            var spec = shell("""
                ip route del local 127.0.0.0/8 dev lo table local; ip route del local 127.0.0.1 dev lo table local
                ip route add 127.0.0.1/32 via $(ip route | sed -n 's/default via \\([0-9.]*\\).*/\\1/p') dev eth0 && udp-send 127.0.0.1 \(port) intruder
                """).network(.bridge(Networks.defaultName))
            spec.capabilitiesAdded = ["NET_ADMIN"]
            spec.sysctls["net.ipv4.conf.all.route_localnet"] = "1"
            let (exit, output) = try await runCollecting(runtime, spec)
            #expect(exit.code == 0, "the container could not send: \(output)")
            var timeout = timeval(tv_sec: 1, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            var buffer = [UInt8](repeating: 0, count: 64)
            #expect(recv(fd, &buffer, buffer.count, 0) < 0, "a datagram from the container reached the host's loopback")
        }
    }

    @Test func publishedPortParsing() throws {
        #expect(try PublishedPort(parsing: "8080:80") == PublishedPort(hostPort: 8080, containerPort: 80))
        #expect(try PublishedPort(parsing: "127.0.0.1:0:53/udp") == PublishedPort(hostIP: IPv4Address("127.0.0.1"), hostPort: 0, containerPort: 53, protocol: .udp))
        #expect(try PublishedPort(parsing: "80") == PublishedPort(containerPort: 80))
        for bad in ["", "x:80", "80:0", "1.2.3:80:80", "80/sctp", "70000:80", "1:2:3:4"] {
            #expect(throws: RuntimeError.self, "\(bad)") { try PublishedPort(parsing: bad) }
        }
        #expect(IPv4Subnet("10.1.2.0/24")?.contains(IPv4Address("10.1.2.200")!) == true)
        #expect(IPv4Subnet("10.1.2.1/24") == nil, "host bits must be zero")
        #expect(IPv4Subnet("10.0.0.0/8")!.overlaps(IPv4Subnet("10.88.0.0/16")!))
        #expect(!IPv4Subnet("10.88.0.0/24")!.overlaps(IPv4Subnet("10.88.1.0/24")!))
    }

    @Test func aNetworkNeedsAFreeSubnetAndAValidName() async throws {
        try await withRuntime("net-errors") { runtime, _ in
            let first = try await runtime.networks.create("one", subnet: IPv4Subnet("10.201.0.0/24"))
            #expect(first.gateway == IPv4Address("10.201.0.1"))
            #expect(throws: RuntimeError.self) { try runtime.networks.create("two", subnet: IPv4Subnet("10.201.0.128/25")) }
            #expect(throws: RuntimeError.self) { try runtime.networks.create("one") }
            #expect(throws: RuntimeError.self) { try runtime.networks.create("bad/name") }
            await #expect(throws: RuntimeError.self) { try await runtime.create(shell("true").network(.bridge("missing"))) }
            await #expect(throws: RuntimeError.self) {
                // Ports with no network to publish them from.
                try await runtime.create(shell("true").publishing(PublishedPort(containerPort: 80)).network(.none))
            }
        }
    }
}

/// A name server on 127.0.0.1 that answers every A query with one address
/// and records the names asked.
final class FakeNameServer: Sendable {
    let port: UInt16
    private let fd: Int32
    private let state = Mutex<(names: [String], stopped: Bool)>(([], false))

    var queries: [String] { state.withLock { $0.names } }

    init(answer: IPv4Address) throws {
        (fd, port) = try loopbackUDPSocket()
        var timeout = timeval(tv_sec: 0, tv_usec: 100_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let thread = Thread { [self] in serve(answer) }
        thread.start()
    }

    private func serve(_ answer: IPv4Address) {
        var buffer = [UInt8](repeating: 0, count: 1500)
        while !state.withLock({ $0.stopped }) {
            var peer = sockaddr_in()
            var peerLength = socklen_t(MemoryLayout<sockaddr_in>.size)
            let count = withUnsafeMutablePointer(to: &peer) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(fd, &buffer, buffer.count, 0, $0, &peerLength) }
            }
            guard count > 0, let query = DNSMessage(Array(buffer[..<count])) else { continue }
            state.withLock { $0.names.append(query.name) }
            let reply = query.type == DNSMessage.addressType ? query.answer(type: DNSMessage.addressType, data: answer.octets) : query.answer(type: nil, data: [])
            _ = withUnsafePointer(to: &peer) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, reply, reply.count, 0, $0, peerLength) }
            }
        }
        close(fd)
    }

    func stop() { state.withLock { $0.stopped = true } }
}

/// A UDP socket bound to 127.0.0.1 and a free port.
func loopbackUDPSocket() throws -> (fd: Int32, port: UInt16) {
    let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = IPv4Address("127.0.0.1")!.value.bigEndian
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
    }
    guard fd >= 0, bound else {
        if fd >= 0 { close(fd) }
        throw ToolError(description: "cannot bind a UDP socket on 127.0.0.1")
    }
    return (fd, UInt16(bigEndian: address.sin_port))
}

/// Checks that nothing of the containers is left on the host or in the state root.
func expectNothingLeft(_ runtime: ContainerRuntime, containers ids: [String]) throws {
    let links = try RouteNetlink().links().map(\.name)
    let rules = try Firewall.listRules().compactMap(\.comment)
    for id in ids {
        #expect(!links.contains(Networks.hostInterface(id)) && !links.contains(Networks.hostInterface(id, device: 1)), "veth of \(id.prefix(12)) is left")
        #expect(!rules.contains(Firewall.containerTag(id)), "rules of \(id.prefix(12)) are left")
    }
    for network in try runtime.networks.list() {
        let leases = runtime.networks.leases(network.name).map(\.containerID)
        #expect(Set(leases).isDisjoint(with: ids), "leases are left on \(network.name)")
    }
    let claims = (try? FileManager.default.contentsOfDirectory(atPath: Networks.portClaims)) ?? []
    for claim in claims {
        let holder = (try? String(contentsOfFile: Networks.portClaims + "/" + claim, encoding: .utf8)) ?? ""
        #expect(!ids.contains { holder.hasSuffix($0) }, "port claim \(claim) is left")
    }
}

/// The host's first non-loopback IPv4 address.
func hostAddress() -> String? {
    var list: UnsafeMutablePointer<ifaddrs>?
    guard getifaddrs(&list) == 0 else { return nil }
    defer { freeifaddrs(list) }
    var entry = list
    while let current = entry {
        defer { entry = current.pointee.ifa_next }
        let name = String(cString: current.pointee.ifa_name)
        guard let address = current.pointee.ifa_addr, address.pointee.sa_family == sa_family_t(AF_INET),
              name != "lo", !name.hasPrefix("gt-") else { continue }
        let value = address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt32(bigEndian: $0.pointee.sin_addr.s_addr) }
        return IPv4Address(value).description
    }
    return nil
}

/// Records written before a field existed still decode.
@Suite struct SpecDecodingTests {
    @Test func fieldsMissingFromOlderRecordsTakeTheirDefaults() throws {
        let spec = ContainerSpec(image: "busybox:test", command: ["true"]).named("old").mounting(.bind(source: "/srv", target: "/srv"))
        var object = try #require(try JSONSerialization.jsonObject(with: JSONEncoder().encode(spec)) as? [String: Any])
        for key in ["network", "networkAliases", "publishedPorts", "pod"] { object[key] = nil }
        let decoded = try JSONDecoder().decode(ContainerSpec.self, from: JSONSerialization.data(withJSONObject: object))
        #expect(decoded == spec)
        #expect(decoded.network == .none && decoded.publishedPorts.isEmpty)
        let changed = spec.network(.bridge("lan"), aliases: ["a"]).publishing(PublishedPort(containerPort: 80)).inPod("p")
        #expect(try JSONDecoder().decode(ContainerSpec.self, from: JSONEncoder().encode(changed)) == changed)
    }
}
