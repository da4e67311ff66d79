import CGantryLauncher
import CGantrySystem
import Foundation
import GantryCore
import Synchronization
import SystemPackage
import Tracing
#if canImport(Glibc)
import Glibc
#endif

extension Container {
    /// Launches a process of the container in its cgroup, with pipes for
    /// its stdio: the plan of the main process, changed by `configure`.
    /// Returns the process and the parent's ends of the pipes.
    func launchInCgroup(_ record: ContainerRecord, pipes makePipes: @autoclosure () throws -> ProcessPipes, what: String,
                        configure: (inout LaunchPlan) throws -> Void) async throws -> (LaunchedProcess, ProcessPipes) {
        var pipes = try makePipes()
        defer { pipes.closeChildEnds() }
        var launched = false
        defer { if !launched { pipes.closeParentEnds() } }
        let cgroup = try runtime.cgroups.openForLaunch(record.cgroup)
        defer { (cgroup.tasks + [cgroup.directory]).filter { $0 >= 0 }.forEach { close($0) } }
        var plan = try makePlan(record, stdin: pipes.childStdin, stdout: pipes.childStdout, stderr: pipes.childStderr)
        let spec = record.spec
        plan.cgroupDescriptor = cgroup.directory
        plan.cgroupTasksDescriptors = cgroup.tasks
        plan.consoleSocket = pipes.console
        plan.controllingTerminal = pipes.console >= 0
        try configure(&plan)
        // A pasta that a start which failed left would hold the ports.
        if plan.networkHelper != nil { UserModeNetwork.stop(pidFile: runtime.pastaPidFile(id)) }
        // The main process starts in the namespaces made for it or its pod
        // (a process joining the container enters them through the pidfd).
        var namespaces: [Int32] = []
        defer { namespaces.forEach { close($0) } }
        if plan.joinPidfd < 0 {
            for file in try runtime.namespaceFiles(record) {
                let fd = open(file.path, O_RDONLY | O_CLOEXEC)
                guard fd >= 0 else {
                    throw RuntimeError(.launch, "container \(name) has lost the namespace \(file.path)", underlying: Sys.errno)
                }
                namespaces.append(fd)
                plan.namespaceFiles.append((fd, file.type))
            }
            // An ordinary user's namespace files belong to the user namespace
            // of its network host, which the container starts in.
            if !plan.namespaceFiles.isEmpty, runtime.userNamespace != nil {
                let user = try runtime.networks.host.userNamespaceOfHolder()
                let fd = dup(user.raw)
                guard fd >= 0 else { throw RuntimeError(.launch, "cannot keep the network host's user namespace open", underlying: Sys.errno) }
                namespaces.append(fd)
                plan.userNamespaceDescriptor = fd
                plan.cloneFlags &= ~GANTRY_CLONE_NEWUSER
                // (Without subordinate IDs, setgroups stays denied there.)
                plan.deniesSetgroups = runtime.userNamespace?.helpers == nil
            }
            // Root's container in a user namespace: the namespace is made
            // first, so that the image layers can be mapped into it
            // (ID-mapped mounts) under an overlay that root mounts (which
            // reads the layers' trusted.overlay attributes).
            if runtime.userNamespace == nil, plan.cloneFlags & GANTRY_CLONE_NEWUSER != 0, record.usesOverlay {
                let mapping = UserNamespaceMapping(uids: spec.uidMappings, gids: spec.gidMappings, helpers: nil)
                let user = try mapping.makeNamespace()
                namespaces.append(user)
                let overlay = try ContainerRuntime.idmappedOverlay(record, directory: runtime.containerDirectory(id), userNamespace: user)
                namespaces.append(overlay)
                plan.userNamespaceDescriptor = user
                plan.cloneFlags &= ~GANTRY_CLONE_NEWUSER
                plan.rootfsMountDescriptor = overlay
            }
            // A network namespace of its own, made ahead of need: by the
            // host's root, or in the user namespace an ordinary user's
            // runtime keeps (in one made for the container, the clone
            // makes it there).
            if plan.cloneFlags & GANTRY_CLONE_NEWNET != 0, plan.cloneFlags & GANTRY_CLONE_NEWUSER == 0,
               let fd = runtime.networkNamespaceReserve(joining: plan.userNamespaceDescriptor)?.take() {
                namespaces.append(fd)
                plan.namespaceFiles.append((fd, GANTRY_CLONE_NEWNET))
                plan.cloneFlags &= ~GANTRY_CLONE_NEWNET
            }
        }
        let process: LaunchedProcess
        do {
            if plan.networkHelper != nil {
                // pasta writes its pid file in the run-time directory.
                let host = runtime.networks.host
                process = try await LaunchThreads.shared.run { [plan] in try host.withRuntime { try Launcher.launch(plan, what: what) } }
            } else {
                process = try await LaunchThreads.shared.run { [plan] in try Launcher.launch(plan, what: what) }
            }
        } catch {
            if plan.networkHelper != nil { UserModeNetwork.stop(pidFile: runtime.pastaPidFile(id)) }
            throw error
        }
        do {
            try pipes.receiveTerminal()
            try publishThroughSlirp(record)
        } catch {
            if plan.networkHelper != nil { UserModeNetwork.stop(pidFile: runtime.pastaPidFile(id)) }
            gantry_pidfd_signal(process.pidfd, SIGKILL)
            _ = ProcessSupervisor.reap(process.pidfd)
            close(process.pidfd)
            if process.mountNamespace >= 0 { close(process.mountNamespace) }
            throw error
        }
        launched = true
        // A container bound to this process holds its network namespace
        // through its processes alone from now on: should this process
        // die, even by SIGKILL, the kernel takes the namespace and its veth
        // pair with the container's processes, instead of leaving them to
        // the next open of the state root.
        if record.spec.lifetime == .boundToHost, record.spec.pod == nil, runtime.networks.host.isSystem,
           let attachment = record.network, !attachment.isUserMode {
            umount2(runtime.containerDirectory(id) + "/netns", Int32(MNT_DETACH))
        }
        return (process, pipes)
    }

    /// Where slirp4netns serves an ordinary user's container, asks it to
    /// publish the container's ports once it runs: the container's own on
    /// the default network, the network host's on a user network.
    private func publishThroughSlirp(_ record: ContainerRecord) throws {
        guard UserModeNetwork.slirp4netns != nil, runtime.userNamespace != nil, record.spec.pod == nil,
              let attachment = record.network, !attachment.ports.isEmpty else { return }
        let file = runtime.pastaPidFile(id)
        if attachment.isUserMode {
            _ = try UserModeNetwork.forward(attachment.ports, api: UserModeNetwork.apiSocket(file), to: nil)
        } else {
            try runtime.networks.host.forward(attachment.ports, recordIn: file)
        }
    }

    /// Whether the container's overlay is mounted `volatile` (Linux 5.10 and later).
    static func volatileUpper(_ record: ContainerRecord) -> Bool {
        record.spec.lifetime == .boundToHost && SeccompCompiler.Host.current.kernelAtLeast("5.10")
    }

    /// The launch plan of the container's main process.
    func makePlan(_ record: ContainerRecord, stdin: Int32, stdout: Int32, stderr: Int32) throws -> LaunchPlan {
        let spec = record.spec
        let process = record.process
        let directory = runtime.containerDirectory(id)
        var plan = LaunchPlan(
            executables: ContainerRuntime.executableCandidates(process.arguments[0], environment: process.environment),
            arguments: process.arguments, environment: process.environment, workingDirectory: process.workingDirectory,
            cloneFlags: ContainerRuntime.cloneFlags(spec, joining: try runtime.namespaceFiles(record)), hostname: spec.hostname ?? record.shortID,
            // The overlay is mounted over the container's own directory, in
            // the container's mount namespace only.
            rootfs: record.usesOverlay ? directory : record.layers[0],
            stdin: stdin, stdout: stdout, stderr: stderr)
        if record.usesOverlay {
            plan.overlayOptions = "lowerdir=\(record.layers.joined(separator: ":")),upperdir=\(directory)/upper,workdir=\(directory)/work"
            // A container bound to the host never outlives a crash (the next
            // open removes it), so its root's writes need not reach the disk:
            // the overlay skips syncs (its own when it goes, which would sync
            // the whole upper file system, and fsync inside alike).
            if Self.volatileUpper(record) { plan.overlayOptions! += ",volatile" }
            // In a user namespace, overlayfs keeps its own attributes
            // (opaque directories) as user.overlay.*, as the layers have them.
            if runtime.userNamespace != nil { plan.overlayOptions! += ",userxattr" }
        }
        plan.uidMap = ContainerRuntime.idMap(spec.uidMappings)
        plan.gidMap = ContainerRuntime.idMap(spec.gidMappings)
        if let mapping = runtime.userNamespace, spec.namespaces.contains(.user) {
            if let shared = try runtime.userNamespaceDescriptor() {
                // The namespace every container of this runtime starts in.
                plan.userNamespaceDescriptor = shared
                plan.cloneFlags &= ~GANTRY_CLONE_NEWUSER
            } else {
                plan.deniesSetgroups = mapping.helpers == nil
            }
        }
        plan.mounts = try ContainerRuntime.mounts(spec, volumes: runtime.volumes)
        let provided = try runtime.providedMounts(record)
        plan.mounts += provided.mounts
        plan.environment = ContainerRuntime.overriding(plan.environment, with: provided.environment)
        if case .container = spec.network, let attachment = try runtime.sharedNetworkHolder(of: record).network, !attachment.isUserMode {
            // The names the other container's network gives it.
            let files = runtime.networks.memberDirectory(attachment.network, try runtime.sharedNetworkHolder(of: record).id)
            plan.mounts.append(.bind(files + "/hosts", at: "/etc/hosts", directory: false))
            plan.mounts.append(.bind(files + "/resolv.conf", at: "/etc/resolv.conf", directory: false))
        } else if let attachment = record.network, attachment.isUserMode {
            let files = runtime.userModeNetworkFiles(id)
            plan.networkHelper = UserModeNetwork.arguments(attachment, pidFile: runtime.pastaPidFile(id))
            plan.mounts.append(.bind(files + "/hosts", at: "/etc/hosts", directory: false))
            plan.mounts.append(.bind(files + "/resolv.conf", at: "/etc/resolv.conf", directory: false))
        } else if let attachment = record.network {
            if runtime.userNamespace != nil, spec.pod == nil {
                plan.networkHelper = UserModeNetwork.portArguments(attachment, pidFile: runtime.pastaPidFile(id))
            }
            // Generated files, bound over the image's (as Docker does); a
            // pod's members share the pod's.
            let holder = try spec.pod.map { try runtime.pods.pod($0).id } ?? id
            let files = runtime.networks.memberDirectory(attachment.network, holder)
            plan.mounts.append(.bind(files + "/hosts", at: "/etc/hosts", directory: false))
            plan.mounts.append(.bind(files + "/resolv.conf", at: "/etc/resolv.conf", directory: false))
        }
        plan.maskedPaths = spec.privileged ? [] : ContainerDefaults.maskedPaths
        plan.readonlyPaths = spec.privileged ? [] : ContainerDefaults.readonlyPaths
        plan.readonlyRootfs = spec.readOnlyRootfs
        plan.sysctls = try ContainerRuntime.sysctls(spec)
        plan.rlimits = try ContainerRuntime.resourceLimits(spec)
        plan.oomScoreAdjustment = spec.oomScoreAdjustment
        plan.uid = process.uid
        plan.gid = process.gid
        plan.groups = process.groups
        let mask = Capability.mask(try ContainerRuntime.capabilities(spec))
        // As Docker does: a process that is not root keeps only the bounding set.
        plan.capabilities = process.uid == 0 ? .container(mask) : CapabilitySets(bounding: mask, effective: 0, permitted: 0, inheritable: 0, ambient: 0)
        plan.noNewPrivileges = spec.noNewPrivileges
        plan.seccompFilter = try runtime.seccompProgram(spec)
        plan.initProcess = spec.initProcess
        plan.parentDeathSignal = spec.lifetime == .boundToHost ? SIGKILL : 0
        return plan
    }
}
