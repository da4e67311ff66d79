import ArgumentParser
import Foundation
import Gantry
import OCIImage
import Runtime

/// `gantry check [--repair]`: finds what is damaged in the state root and,
/// when asked, rebuilds what can be rebuilt from the kernel and the content
/// store. It never removes a container, network or volume; those whose
/// records cannot be rebuilt are named with the command that removes them.
struct Check: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check the state root for damaged records and corrupt content; repair what can be rebuilt.",
        discussion: """
            Reads every container, network and volume record and every image blob. \
            With --repair, rebuilds network records from their bridges, volume records from their data \
            directories (their labels are lost) and network leases from their containers' records, and removes \
            corrupt blobs so that a new pull fetches them. \
            Exits with 1 while anything is left damaged.
            """
    )
    @Flag(help: "Rebuild what can be rebuilt; remove corrupt blobs.") var repair = false
    @OptionGroup var global: GlobalOptions

    func run() async throws {
        let gantry: Gantry
        do {
            gantry = try await global.openGantry()
        } catch let error as OCIImageError where error.code == .damagedState {
            print("images: \(error.message)")
            throw ExitCode(1)
        }
        let runtime = try gantry.containers
        var left = 0
        for damaged in runtime.damagedContainers() {
            left += 1
            print("container \(damaged.id.prefix(12)): its record \(damaged.stateFile) cannot be read (\(damaged.reason)); \(damaged.processes.count) processes of it run; `gantry rm -f \(damaged.id.prefix(12))` removes it")
        }
        for (kind, records, rebuild) in [
            ("network", runtime.networks.damaged(), { try _ = runtime.networks.repair($0) }),
            ("volume", runtime.volumes.damaged(), { try _ = runtime.volumes.repair($0) }),
        ] as [(String, [DamagedRecord], (String) throws -> Void)] {
            for damaged in records {
                if repair, let source = damaged.repairSource {
                    do {
                        try rebuild(damaged.name)
                        print("\(kind) \(damaged.name): rebuilt its record from its \(source) (its labels are lost)")
                        continue
                    } catch {
                        print("\(kind) \(damaged.name): cannot be rebuilt: \(error)")
                    }
                } else {
                    print("\(kind) \(damaged.name): its record \(damaged.file) cannot be read (\(damaged.reason)); \(damaged.advice(kind: kind))")
                }
                left += 1
            }
        }
        for damaged in runtime.networks.damagedLeases() {
            if repair {
                do {
                    try runtime.repairLease(damaged)
                    print("lease \(damaged.file): \(damaged.repairSource.map { "rebuilt from the \($0)" } ?? "removed: no container holds its address")")
                    continue
                } catch {
                    print("lease \(damaged.file): cannot be repaired: \(error)")
                }
            } else {
                print("lease \(damaged.file) of network \(damaged.name) cannot be read (\(damaged.reason)); its address stays taken; `gantry check --repair` \(damaged.repairSource.map { "rebuilds it from the \($0)" } ?? "removes it, since no container holds its address")")
            }
            left += 1
        }
        let images = try await gantry.images.check(repair: repair)
        for digest in images.removedBlobs {
            print("blob \(digest): corrupt; removed")
        }
        for digest in images.corruptBlobs where !images.removedBlobs.contains(digest) {
            left += 1
            print("blob \(digest): corrupt (its content does not match its digest); `gantry check --repair` removes it")
        }
        for image in images.brokenImages {
            left += 1
            print("image \(image.reference.familiarDescription): \(image.problem); pull or import it again")
        }
        print("checked \(images.blobsChecked) blobs; \(left == 0 ? "nothing is damaged" : "\(left) damaged")")
        if left > 0 { throw ExitCode(1) }
    }
}
