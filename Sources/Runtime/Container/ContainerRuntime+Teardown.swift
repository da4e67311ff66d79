import Foundation
import GantryCore

extension ContainerRuntime {
    /// Removes everything of containers that the state root holds: every
    /// container (killed first, damaged records too), pod, network (its
    /// bridge, address leases and firewall rules) and named volume (its
    /// data too), waits until their teardown is done, and removes the
    /// cgroup parent from every hierarchy once nothing else uses it (the
    /// runtimes of other state roots may share it). Images stay: they are
    /// the image store's.
    ///
    /// It goes on past what it cannot remove, and then throws naming all of it.
    ///
    /// - Throws: `RuntimeError` with code `invalidState` listing what is left.
    public func removeEverything() async throws {
        var left: [String] = []
        for record in (try? list()) ?? [] {
            do {
                try await container(record.id).remove(force: true)
            } catch {
                left.append("container \(record.name) (\(error))")
            }
        }
        for damaged in damagedContainers() {
            do { try removeDamaged(damaged.id) } catch { left.append("container \(damaged.id) (\(error))") }
        }
        let steps: [(kind: String, names: () throws -> [String], remove: (String) throws -> Void)] = [
            ("pod", { [pods] in try pods.list().map(\.name) }, { [pods] in try pods.remove($0) }),
            ("network", { [networks] in try networks.list().map(\.name) }, { [networks] in try networks.remove($0) }),
            ("damaged network", { [networks] in networks.damaged().map(\.name) }, { [networks] in try networks.removeDamaged($0) }),
            ("volume", { [volumes] in try volumes.list().map(\.name) }, { [volumes] in try volumes.remove($0) }),
            ("damaged volume", { [volumes] in volumes.damaged().map(\.name) }, { [volumes] in try volumes.removeDamaged($0) }),
        ]
        for step in steps {
            let names: [String]
            do { names = try step.names() } catch {
                left.append("the \(step.kind)s (\(error))")
                continue
            }
            for name in names {
                do { try step.remove(name) } catch { left.append("\(step.kind) \(name) (\(error))") }
            }
        }
        await Self.settle()
        _ = await offload { [cgroups, cgroupParent] in cgroups.removeIfEmpty(cgroupParent) }
        guard left.isEmpty else {
            throw RuntimeError(.invalidState, "could not remove everything; left: \(left.joined(separator: "; "))")
        }
    }
}
