import Foundation
import GantryTestSupport
import Testing
@testable import OCIImage
@testable import Runtime

/// Network and volume records damaged as a full disk, a crash or a careless
/// edit leaves them: reported by name, never taken for absent, never the
/// cause of a deletion, and rebuilt from what the kernel and the data
/// directory still hold.
@Suite(.requiresRoot, .serialized) struct DamagedRecordTests {
    @Test func aDamagedVolumeRecordIsReportedAndRebuiltWithItsData() async throws {
        try await withRuntime("damaged-volume") { runtime, _ in
            let volumes = runtime.volumes
            let record = try await volumes.create("kept", labels: ["team": "a"])
            try Data("precious\n".utf8).write(to: URL(fileURLWithPath: record.mountpoint + "/file"))
            let file = volumes.directory + "/kept/volume.json"
            try Data("{\"name\":\"ke".utf8).write(to: URL(fileURLWithPath: file))

            #expect(try volumes.list().isEmpty)
            let damaged = try #require(volumes.damaged().first)
            #expect(damaged.name == "kept" && damaged.file == file && damaged.repairSource != nil)
            // Every way in names the file, and none says "missing" or "already exists".
            for error in [
                try #require(throws: RuntimeError.self) { try volumes.volume("kept") },
                try #require(throws: RuntimeError.self) { try volumes.create("kept") },
                try #require(throws: RuntimeError.self) { try volumes.remove("kept") },
            ] {
                #expect(error.code == .invalidState && error.description.contains(file), "\(error)")
            }
            let mounting = await #expect(throws: RuntimeError.self) {
                try await runtime.create(shell("true").mounting(.volume(name: "kept", target: "/data")))
            }
            #expect(mounting?.description.contains(file) == true, "\(String(describing: mounting))")
            #expect(try runtime.list().isEmpty)

            let rebuilt = try volumes.repair("kept")
            #expect(rebuilt.name == "kept" && rebuilt.mountpoint == record.mountpoint && rebuilt.labels.isEmpty)
            #expect(try volumes.list().map(\.name) == ["kept"])
            let (exit, output) = try await runCollecting(runtime, shell("cat /data/file").mounting(.volume(name: "kept", target: "/data")))
            #expect(exit.code == 0 && output == "precious\n")
            for record in try runtime.list() { try await runtime.container(record.id).remove() }

            // A record that is missing altogether: reported, and removed only when asked.
            unlink(file)
            #expect(volumes.damaged().first?.reason == "it is missing")
            try volumes.removeDamaged("kept")
            #expect(volumes.damaged().isEmpty && access(volumes.directory + "/kept", F_OK) != 0)
        }
    }

    @Test func aDamagedNetworkRecordIsRebuiltFromItsBridge() async throws {
        try await withRuntime("damaged-network") { runtime, _ in
            let networks = runtime.networks
            let record = try await networks.create("mended", internal: true, labels: ["a": "b"])
            let file = networks.directory + "/mended/network.json"
            _ = truncate(file, 0)

            #expect(try networks.list().isEmpty)
            let damaged = try #require(networks.damaged().first)
            #expect(damaged.name == "mended" && damaged.repairSource == "bridge \(record.bridge)")
            for error in [
                try #require(throws: RuntimeError.self) { try networks.network("mended") },
                try #require(throws: RuntimeError.self) { try networks.create("mended") },
                try #require(throws: RuntimeError.self) { try networks.remove("mended") },
            ] {
                #expect(error.code == .invalidState && error.description.contains(file), "\(error)")
            }
            // The bridge and its rules stay while the record is damaged.
            #expect(try RouteNetlink().link(record.bridge) != nil)

            let rebuilt = try networks.repair("mended")
            #expect(rebuilt.id == record.id && rebuilt.subnet == record.subnet && rebuilt.gateway == record.gateway)
            #expect(rebuilt.internal && rebuilt.bridge == record.bridge && rebuilt.labels.isEmpty)
            #expect(try Firewall.listRules().contains { $0.comment == Firewall.networkTag(record.id) })
            // Containers join it as before.
            let (exit, output) = try await runCollecting(runtime, shell("ip -4 -o addr show eth0").network(.bridge("mended")))
            #expect(exit.code == 0 && output.contains(record.subnet.description.split(separator: "/")[0].dropLast(2)), "\(output)")
            for record in try runtime.list() { try await runtime.container(record.id).remove() }
            // The fixture removes it as usual, bridge and rules.
        }
    }

    @Test func aNetworkWhoseRecordIsLostIsRemovedWithItsBridgeAndRulesWhenAsked() async throws {
        try await withRuntime("lost-network") { runtime, _ in
            let networks = runtime.networks
            let record = try networks.create("lost")
            unlink(networks.directory + "/lost/network.json")
            #expect(networks.damaged().map(\.name) == ["lost"])
            try networks.removeDamaged("lost")
            #expect(try RouteNetlink().link(record.bridge) == nil)
            #expect(!(try Firewall.listRules()).contains { $0.comment == Firewall.networkTag(record.id) })
            #expect(networks.damaged().isEmpty)
            // With no bridge left to rebuild it from, a repair says so.
            try FileManager.default.createDirectory(atPath: networks.directory + "/gone", withIntermediateDirectories: false)
            let error = try #require(throws: RuntimeError.self) { try networks.repair("gone") }
            #expect(error.description.contains("nothing is left to rebuild it from"), "\(error)")
            try networks.removeDamaged("gone")
        }
    }

    @Test func aDamagedLeaseKeepsItsAddressAndIsRebuiltFromItsContainer() async throws {
        try await withRuntime("damaged-lease") { runtime, _ in
            let networks = runtime.networks
            let record = try await networks.create("leased")
            let first = try await runtime.create(shell("exec sleep 600").network(.bridge("leased")))
            try await first.start()
            let address = try #require(try first.record.network?.address)
            let file = networks.leasePath("leased", address)
            try Data("{\"containerID\": ".utf8).write(to: URL(fileURLWithPath: file))

            // The address stays taken: the next container gets another one.
            let second = try await runtime.create(shell("exec sleep 600").network(.bridge("leased")))
            try await second.start()
            #expect(try second.record.network?.address != address)

            let damaged = try #require(networks.damagedLeases().first)
            #expect(damaged.file == file && damaged.repairSource == "record of container \(first.id.prefix(12))")
            try runtime.repairLease(damaged)
            #expect(networks.damagedLeases().isEmpty)
            #expect(networks.leases("leased").contains { $0.containerID == first.id && $0.address == address })

            // A damaged lease no container holds goes on repair.
            let stray = try #require(record.subnet.address(200))
            try Data("garbage".utf8).write(to: URL(fileURLWithPath: networks.leasePath("leased", stray)))
            let unclaimed = try #require(networks.damagedLeases().first)
            #expect(unclaimed.repairSource == nil)
            try runtime.repairLease(unclaimed)
            #expect(networks.damagedLeases().isEmpty && !networks.leasedAddresses("leased").contains(stray))

            try await first.remove(force: true)
            try await second.remove(force: true)
            #expect(networks.leasedAddresses("leased").isEmpty)
        }
    }
}

/// What a bridge's alias holds, read back as written; anything else is not
/// taken for a network's.
@Suite struct BridgeAliasTests {
    @Test func anAliasRoundTripsAndForeignOnesAreIgnored() throws {
        let id = String(repeating: "ab", count: 32)
        let record = NetworkRecord(id: id, name: "shop_back", bridge: "gt-" + id.prefix(12), subnet: try #require(IPv4Subnet("10.88.7.0/24")),
                                   gateway: try #require(IPv4Address("10.88.7.1")), internal: true, labels: ["a": "b"], createdAt: Date())
        let alias = Networks.BridgeAlias(record)
        #expect(alias.text.utf8.count < 256)
        #expect(Networks.BridgeAlias(parsing: alias.text) == alias)
        #expect(alias.bridge == record.bridge)
        let longest = Networks.BridgeAlias(NetworkRecord(id: id, name: String(repeating: "n", count: 128), bridge: record.bridge, subnet: record.subnet,
                                                         gateway: record.gateway, internal: true, labels: [:], createdAt: Date()))
        #expect(longest.text.utf8.count < 256, "IFALIASZ is 256 with its NUL")
        for foreign in ["", "my bridge", "gantry-network name=x", "gantry-network name=x id=abc subnet=10.0.0.0/24 internal=0",
                        "gantry-network name=x id=\(id) subnet=nonsense internal=0", "gantry-network name=x id=\(id) subnet=10.0.0.0/24 internal=2"] {
            #expect(Networks.BridgeAlias(parsing: foreign) == nil, "\(foreign)")
        }
    }
}
