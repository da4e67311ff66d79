import Foundation
import GantryTestSupport
import Testing
@testable import Runtime
#if canImport(Glibc)
import Glibc
#endif

/// Load-balanced endpoints on the real kernel: connections to a published
/// port and to a virtual address are spread over the backends, follow
/// their changes, are refused without backends, and nothing is left.
@Suite(.requiresRoot) struct EndpointTests {
    /// A web server answering with `name`.
    static func server(_ name: String) -> String { "mkdir -p /www && echo \(name) > /www/index.html && exec httpd -f -p 80 -h /www" }

    /// The bodies of `count` requests to 127.0.0.1:port.
    private func bodies(port: UInt16, count: Int) async -> [String] {
        var bodies: [String] = []
        for _ in 0 ..< count {
            // On a thread of its own: the call blocks.
            guard let response = await onOwnThread({ httpGetBlocking(port: port) }) else { bodies.append("(failed)"); continue }
            bodies.append(response.components(separatedBy: "\r\n\r\n").last?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "")
        }
        return bodies
    }

    @Test func anEndpointSpreadsConnectionsOverItsBackendsAndFollowsThem() async throws {
        try await withRuntime("endpoint") { runtime, _ in
            try await runtime.networks.create("lb")
            var servers: [Container] = []
            for index in 0 ..< 3 {
                let server = try await runtime.create(shell(Self.server("web\(index)")).named("web\(index)").network(.bridge("lb")))
                try await server.start()
                servers.append(server)
            }
            // Port 0: a free one is claimed (one the kernel calls free may be
            // another test's published port).
            let endpoint = ServiceEndpoint(name: "web", network: "lb",
                                           ports: [PublishedPort(hostIP: IPv4Address("127.0.0.1"), hostPort: 0, containerPort: 80)])
            let record = try await runtime.setEndpoint("test/web", endpoint, backends: servers.map(\.id))
            let port = try #require(record.ports.first?.hostPort)
            #expect(port != 0)
            let virtual = try #require(record.virtualAddress)
            #expect(try runtime.networks.network("lb").subnet.contains(virtual))
            #expect(record.backends.count == 3)
            // Each server is running before its first answer is asked for.
            for server in servers {
                let address = try #require(try server.record.network?.address)
                let (up, _) = try await runCollecting(runtime, shell("for i in $(seq 50); do wget -qO- http://\(address)/ && exit 0; sleep 0.1; done; exit 1").network(.bridge("lb")))
                #expect(up.code == 0)
            }

            // Through the published port: every backend answers.
            let answers = await bodies(port: port, count: 60)
            #expect(!answers.contains("(failed)"), "\(answers)")
            #expect(Set(answers) == ["web0", "web1", "web2"], "\(Set(answers))")

            // Through the name and the virtual address, from the network.
            let (fetched, output) = try await runCollecting(runtime, shell("""
                for i in $(seq 30); do wget -qO- http://web/ || exit 1; done; nslookup web | grep -c 'Address: \(virtual)'
                """).network(.bridge("lb")))
            #expect(fetched.code == 0, "\(output)")
            let lines = output.split(separator: "\n").map(String.init)
            #expect(Set(lines.dropLast()) == ["web0", "web1", "web2"], "\(output)")
            #expect(lines.last == "1", "the name resolves to the virtual address: \(output)")
            // The host reaches the virtual address as well.
            let direct = await httpGet(port: 80, host: virtual.description, attempts: 1)
            #expect(direct?.contains("web") == true)

            // A backend taken out gets no new connections.
            try await runtime.setEndpoint("test/web", endpoint, backends: [servers[0].id, servers[2].id])
            #expect(Set(await bodies(port: port, count: 30)) == ["web0", "web2"])

            // Affinity by client address: one backend for this client.
            var sticky = endpoint
            sticky.affinity = .clientAddress
            try await runtime.setEndpoint("test/web", sticky, backends: servers.map(\.id))
            #expect(Set(await bodies(port: port, count: 20)).count == 1)

            // No backend: refused at once, not left to time out.
            try await runtime.setEndpoint("test/web", sticky, backends: [])
            let began = ContinuousClock.now
            #expect(await httpGet(port: port, attempts: 1) == nil)
            #expect(ContinuousClock.now - began < .milliseconds(400))
            #expect(await httpGet(port: 80, host: virtual.description, attempts: 1) == nil)

            // A port an endpoint holds is not for a container.
            await #expect(throws: RuntimeError.self) {
                try await runtime.create(shell("true").network(.bridge("lb")).publishing(PublishedPort(hostIP: IPv4Address("127.0.0.1"), hostPort: port, containerPort: 80)))
            }
            // While the endpoint is there, its network stays.
            #expect(throws: RuntimeError.self) { try runtime.networks.remove("lb") }

            try await runtime.removeEndpoint("test/web")
            #expect(try runtime.endpoints().isEmpty)
            let rules = try Firewall.listRules().compactMap(\.comment)
            let id = runtime.networks.endpointID("test/web")
            #expect(!rules.contains(Firewall.endpointTag(id)), "\(rules)")
            #expect(!Firewall.listChains().contains { [Firewall.portsChain(id), Firewall.addressChain(id)].contains($0) })
            #expect(runtime.networks.leases("lb").filter { $0.virtual == true }.isEmpty)
            let bridge = try runtime.networks.network("lb").bridge
            let addresses = try await runWithStatus("/sbin/ip", ["-4", "-o", "addr", "show", "dev", bridge]).output
            #expect(!addresses.contains(virtual.description + "/32"), "\(addresses)")
            for server in servers { try await server.remove(force: true) }
            try expectNothingLeft(runtime, containers: servers.map(\.id))
            // The port is free again.
            let reuse = try await runtime.create(shell(Self.server("again")).network(.bridge("lb")).publishing(PublishedPort(hostIP: IPv4Address("127.0.0.1"), hostPort: port, containerPort: 80)))
            try await reuse.remove(force: true)
        }
    }

    @Test func anEndpointWhoseRulesAreGoneIsMadeAgainOnItsPorts() async throws {
        try await withRuntime("endpoint-rules") { runtime, _ in
            try await runtime.networks.create("lb")
            let server = try await runtime.create(shell(Self.server("only")).named("only").network(.bridge("lb")))
            try await server.start()
            let endpoint = ServiceEndpoint(name: "one", network: "lb", ports: [PublishedPort(hostIP: IPv4Address("127.0.0.1"), hostPort: 0, containerPort: 80)])
            let first = try await runtime.setEndpoint("test/one", endpoint, backends: [server.id])
            let port = try #require(first.ports.first?.hostPort)
            #expect(await httpGet(port: port)?.contains("only") == true)
            // As after a reboot or a flushed rule set: the rules go.
            try Firewall.removeEndpoint(id: runtime.networks.endpointID("test/one"), host: .system)
            #expect(await httpGet(port: port, attempts: 1)?.contains("only") != true)
            // The next change finds them gone and makes them again, on the same port.
            let again = try await runtime.setEndpoint("test/one", endpoint, backends: [server.id])
            #expect(again.ports == first.ports && again.virtualAddress == first.virtualAddress)
            #expect(await httpGet(port: port)?.contains("only") == true)
            try await runtime.removeEndpoint("test/one")
            try await server.remove(force: true)
            // An internal network's endpoint publishes nothing.
            try await runtime.networks.create("sealed", internal: true)
            await #expect { try await runtime.setEndpoint("test/sealed", ServiceEndpoint(name: "s", network: "sealed", ports: endpoint.ports), backends: []) }
                throws: { ($0 as? RuntimeError)?.message.contains("internal") == true }
            #expect(try runtime.endpoints().isEmpty)
        }
    }

    @Test func anEndpointWhoseRecordIsGoneIsRemovedByRecovery() async throws {
        try await withRuntime("endpoint-left") { runtime, _ in
            try await runtime.networks.create("lb")
            let endpoint = ServiceEndpoint(name: "api", network: "lb", ports: [PublishedPort(hostIP: IPv4Address("127.0.0.1"), hostPort: 0, containerPort: 80)])
            let record = try await runtime.setEndpoint("test/api", endpoint, backends: [])
            let port = try #require(record.ports.first?.hostPort)
            // A state root damaged by hand: the endpoint's record is lost.
            let directory = runtime.networks.endpointsDirectory + "/" + runtime.networks.endpointID("test/api")
            try FileManager.default.removeItem(atPath: directory + "/" + Networks.endpointFile)
            runtime.removeNetworkLeftovers()
            #expect(runtime.networks.leases("lb").isEmpty)
            #expect(!FileManager.default.fileExists(atPath: directory))
            #expect(!(try Firewall.listRules().compactMap(\.comment)).contains(Firewall.endpointTag(runtime.networks.endpointID("test/api"))))
            let virtual = try #require(record.virtualAddress)
            let addresses = try await runWithStatus("/sbin/ip", ["-4", "-o", "addr", "show", "dev", try runtime.networks.network("lb").bridge]).output
            #expect(!addresses.contains(virtual.description + "/32"))
            // The host port is free again.
            let reuse = try await runtime.create(shell("true").network(.bridge("lb")).publishing(PublishedPort(hostIP: IPv4Address("127.0.0.1"), hostPort: port, containerPort: 80)))
            try await reuse.remove(force: true)
        }
    }
}
