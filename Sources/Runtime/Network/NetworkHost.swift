import CGantryLauncher
import CGantrySystem
import Foundation
import Logging
import GantryCore
#if canImport(Glibc)
import Glibc
#endif

/// Where the bridges of a state root's networks live, with their veth
/// ends, packet filter rules and name servers.
///
/// For root that is the host's own network namespace (``system``). An
/// ordinary user can make no bridge there, so its networks live in a
/// network namespace of its own, as Podman's rootless networks do: made
/// with the first network, in the user's user namespace (where the user is
/// root), held by one sleeping process (the *holder*, not a child of any
/// Gantry process), and connected to the host's network by one pasta,
/// which gives it the address 10.0.2.100 and a default route: what the
/// containers send out is masqueraded to that address, and pasta makes
/// the connections on the host. The holder's mount namespace has a private
/// tmpfs where the namespace files of the user's containers on those
/// networks are bound (an ordinary user can bind nothing on the host);
/// other processes reach them through `/proc/<holder>/root`. The holder
/// and pasta end when nothing is on the networks any more (the bridges
/// and rules come back with the next container).
///
/// Processes of the host's namespaces cannot enter that namespace; work
/// there is done by short-lived children that enter its user namespace
/// first: sockets they make (netlink, DNS) are handed back, `nft` runs in
/// one.
final class NetworkHost: Sendable {
    /// The host's own network namespace.
    static let system = NetworkHost()

    /// The directory of the locks; nil for ``system``.
    let directory: String?
    /// The state root, whose run-time directory has the pid files of the
    /// holder and of every pasta; nil for ``system``.
    private let root: StateRoot?
    /// The user namespace the holder starts in (a new one with the
    /// store's mapping; the caller closes it).
    private let userNamespace: (@Sendable () throws -> Int32)?
    private let logger: Logger?

    private init() {
        directory = nil
        root = nil
        userNamespace = nil
        logger = nil
    }

    /// An ordinary user's network host, for the networks of `root`.
    init(root: StateRoot, logger: Logger, userNamespace: @escaping @Sendable () throws -> Int32) {
        self.directory = root.networks + "/.host"
        self.root = root
        self.logger = logger
        self.userNamespace = userNamespace
    }

    var isSystem: Bool { directory == nil }

    /// The address pasta gives the network host, and its gateway (the host).
    static let address = IPv4Address(0x0A00_0264)  // 10.0.2.100
    static let gateway = IPv4Address(0x0A00_0202)  // 10.0.2.2
    /// Where pasta answers DNS queries with the host's resolvers.
    static let nameserver = IPv4Address(0x0A00_0203)  // 10.0.2.3

    // MARK: - Locks

    /// Runs `body` holding the lock `name`: host-wide (`/run/gantry`) for
    /// the host's namespace, in the network host's directory otherwise.
    func withLock<T>(_ name: String, _ body: () throws -> T) throws -> T {
        guard let directory else { return try Networks.withHostLock(name, body) }
        try Sys.makeDirectories(directory, mode: 0o700)
        guard let lock = OwnedDescriptor(opening: directory + "/" + name, O_RDWR | O_CREAT | O_CLOEXEC, mode: 0o600) else {
            throw RuntimeError(.network, "cannot open the lock \(directory)/\(name)", underlying: Sys.errno)
        }
        flock(lock.raw, LOCK_EX)
        return try body()
    }

    // MARK: - The holder

    /// The file the holder makes on its private tmpfs: named for the
    /// directory's inode, so that another state root's holder (or a process
    /// that took a dead holder's pid) is not taken for this one's.
    private var marker: String {
        var status = stat()
        stat(directory ?? "/", &status)
        return "/tmp/gantry-network-host-\(status.st_dev)-\(status.st_ino)"
    }

    /// The holder's pid, when it runs.
    func holder() -> Int32? {
        guard !isSystem, let text = try? String(contentsOfFile: holderPidFile, encoding: .utf8),
              let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 1,
              access("/proc/\(pid)/root" + marker, F_OK) == 0 else { return nil }
        return pid
    }

    /// The holder's pid, started (with pasta) if it does not run.
    func start() throws -> Int32 {
        guard !isSystem else { throw RuntimeError(.network, "the host's network namespace has no holder") }
        return try withLock("host.lock") {
            if let pid = holder() {
                if !pastaRuns() { try startPasta(pid) }
                return pid
            }
            if access(holderPidFile, F_OK) == 0 {
                // It did not end through Gantry (its pid file, in a run-time
                // directory, would not outlast a restart of the machine):
                // what was on the networks lost its connection.
                logger?.warning("the network namespace of this user's networks had ended without Gantry (its holder was killed): containers and pods that were on them have lost their network until they are started again; making a new one")
            }
            stopPasta()
            guard let sleep = Sys.findProgram("sleep") else {
                throw RuntimeError(.network, "an ordinary user's networks need the sleep program to hold their namespace; none is on PATH")
            }
            let userNamespace = try self.userNamespace!()
            defer { close(userNamespace) }
            var message = [CChar](repeating: 0, count: 256)
            let pid = gantry_spawn_network_host(userNamespace, sleep, marker, &message, message.count)
            guard pid > 0 else {
                let error = Sys.errno
                let step = Self.text(message)
                throw RuntimeError(.network, "cannot make the network namespace of an ordinary user's networks" + (step.isEmpty ? "" : " (at: \(step))"), underlying: error)
            }
            do {
                try withRuntime {
                    try FileIO.replaceStateFile(holderPidFile, with: Data("\(pid)\n".utf8))
                    try startPasta(pid)
                }
            } catch {
                kill(pid, SIGKILL)
                unlink(holderPidFile)
                throw error
            }
            return pid
        }
    }

    /// Ends pasta and the holder, and with them the namespace and
    /// everything in it, unless `inUse` says otherwise or a namespace file
    /// is bound on the holder's tmpfs.
    func stopIfIdle(inUse: () -> Bool) {
        guard !isSystem else { return }
        _ = try? withLock("host.lock") {
            guard let pid = holder() else { return }
            let files = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/root/tmp")) ?? ["?"]
            guard files == [String(marker.dropFirst("/tmp/".count))], !inUse() else { return }
            stopPasta()
            kill(pid, SIGKILL)
            unlink(holderPidFile)
        }
        removeRuntimeIfUnused()
    }

    private var holderPidFile: String { pidFile("network-host") }
    private var pastaPidFile: String { pidFile("network-host-pasta") }

    // MARK: - Run-time files

    /// The pid file of a process that serves `name` (the holder, a pasta
    /// of a container or pod), in the state root's run-time directory.
    func pidFile(_ name: String) -> String {
        (root?.runtime ?? StateRoot.runtimeBase) + "/" + name + ".pid"
    }

    /// Calls `body` with the state root's run-time directory made (0700),
    /// which ``removeRuntimeIfUnused()`` leaves alone meanwhile: a process
    /// started in `body` may write its pid file there.
    func withRuntime<T>(_ body: () throws -> T) throws -> T {
        guard let root else { return try body() }
        return try Self.withRuntime(of: root, body)
    }

    /// Calls `body` with `root`'s run-time directory made (0700), which
    /// ``removeRuntimeIfUnused(of:)`` leaves alone meanwhile.
    static func withRuntime<T>(of root: StateRoot, _ body: () throws -> T) throws -> T {
        let base = StateRoot.runtimeBase
        if mkdir(base, 0o700) != 0 && Sys.errno == .noSuchFileOrDirectory { try Sys.makeDirectories(base, mode: 0o700) }
        guard StateRoot.isOwnPrivateDirectory(base), let lock = OwnedDescriptor(opening: base, O_RDONLY | O_DIRECTORY | O_CLOEXEC) else {
            throw RuntimeError(.network, "the run-time directory \(base) is missing or not a private directory of user \(geteuid()) (another user made it?): remove it, or set XDG_RUNTIME_DIR to a directory of this user's")
        }
        flock(lock.raw, LOCK_SH)
        try Sys.makeDirectories(root.runtime, mode: 0o700)
        return try body()
    }

    /// Removes the state root's run-time directory when no pid file is left
    /// in it and no ``withRuntime(_:)`` is under way.
    func removeRuntimeIfUnused() {
        guard let root else { return }
        Self.removeRuntimeIfUnused(of: root)
    }

    /// Removes `root`'s run-time directory when it is empty and no
    /// ``withRuntime(of:_:)`` is under way.
    static func removeRuntimeIfUnused(of root: StateRoot) {
        guard let lock = OwnedDescriptor(opening: StateRoot.runtimeBase, O_RDONLY | O_DIRECTORY | O_CLOEXEC),
              flock(lock.raw, LOCK_EX | LOCK_NB) == 0 else { return }
        rmdir(root.runtime)
    }

    private func pastaRuns() -> Bool { UserModeNetwork.helperPid(pastaPidFile) != nil }

    private func stopPasta() {
        UserModeNetwork.stop(pidFile: pastaPidFile)
    }

    /// Connects the holder's namespace to the host's network: pasta's (or
    /// slirp4netns's) tap with the fixed addresses and a default route, DNS
    /// forwarded to the host's resolvers, and no port forwarded either way
    /// (containers' published ports have a pasta of their own, or forwards
    /// of this slirp4netns: ``forward(_:recordIn:)``).
    private func startPasta(_ holder: Int32) throws {
        let arguments: [String]
        switch UserModeNetwork.stack {
        case .pasta(let pasta):
            arguments = [pasta, "--config-net", "--quiet", "--pid", pastaPidFile, "--ipv4-only", "--address", Self.address.description, "--netmask", "24",
                         "--gateway", Self.gateway.description, "--dns-forward", Self.nameserver.description, "--no-dhcp", "--ns-ifname", "tap0",
                         "-t", "none", "-u", "none", "-T", "none", "-U", "none", "\(holder)"]
        case .slirp4netns(let slirp):
            arguments = UserModeNetwork.slirpArguments(slirp, pidFile: pastaPidFile,
                                                       target: ["--netns-type=path", "--userns-path=/proc/\(holder)/ns/user", "/proc/\(holder)/ns/net"])
        case nil:
            throw RuntimeError(.network, "an ordinary user's networks reach the host's network through pasta or slirp4netns, and \(UserModeNetwork.missingStack)")
        }
        try UserModeNetwork.run(arguments, what: "connect the network namespace of an ordinary user's networks")
    }

    /// Publishes `ports` of a container or pod on these networks through
    /// the slirp4netns serving the namespace: forwarded to the namespace's
    /// own address at the host's port, where the rules that attaching
    /// installed (``PublishedPort/onNetworkHost``) take them on to the
    /// container. The forwards are recorded in `file` (where a pasta of
    /// the container's own would keep its pid), which
    /// ``UserModeNetwork/stop(pidFile:)`` removes.
    func forward(_ ports: [PublishedPort], recordIn file: String) throws {
        _ = try start()
        let api = UserModeNetwork.apiSocket(pastaPidFile)
        let ids = try UserModeNetwork.forward(ports.map { port in
            var port = port
            port.containerPort = port.hostPort
            return port
        }, api: api, to: nil)
        do {
            try withRuntime { try FileIO.replaceStateFile(file, with: Data(UserModeNetwork.HostForwards(api: api, ids: ids).text.utf8)) }
        } catch {
            UserModeNetwork.HostForwards(api: api, ids: ids).remove()
            throw error
        }
    }

    /// The text a C buffer holds, up to its NUL.
    static func text(_ buffer: [CChar]) -> String {
        String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    // MARK: - Work in the namespace

    /// The namespace file of the holder's network namespace.
    private func namespacePath() throws -> String { "/proc/\(try start())/ns/net" }

    /// A route netlink socket in the namespace (the holder started if need be).
    func routeNetlink() throws -> RouteNetlink {
        isSystem ? try RouteNetlink() : try RouteNetlink(namespace: try namespacePath())
    }

    /// A route netlink socket in the namespace, nil when an ordinary user's
    /// holder does not run (and its devices are gone with it).
    func routeNetlinkIfRunning() throws -> RouteNetlink? {
        if isSystem { return try RouteNetlink() }
        guard let pid = holder() else { return nil }
        return try RouteNetlink(namespace: "/proc/\(pid)/ns/net")
    }

    /// A socket in the namespace.
    func socket(_ domain: Int32, _ type: Int32, _ protocol: Int32) throws -> Int32 {
        if isSystem {
            let fd = Glibc.socket(domain, type | Int32(SOCK_CLOEXEC.rawValue), `protocol`)
            guard fd >= 0 else { throw RuntimeError(.network, "cannot open a socket", underlying: Sys.errno) }
            return fd
        }
        let path = try namespacePath()
        guard let namespace = OwnedDescriptor(opening: path, O_RDONLY | O_CLOEXEC) else { throw RuntimeError(.network, "cannot open \(path)", underlying: Sys.errno) }
        let fd = gantry_socket_in_netns(namespace.raw, domain, type, `protocol`)
        guard fd >= 0 else { throw RuntimeError(.network, "cannot open a socket in \(path)", underlying: Sys.errno) }
        return fd
    }

    /// Writes a setting under `/proc/sys/net` of the namespace.
    func writeSetting(_ path: String, _ value: String) throws {
        guard !isSystem else { return try FileIO.write(value, to: path, code: .network) }
        let namespace = try namespacePath()
        guard let fd = OwnedDescriptor(opening: namespace, O_RDONLY | O_CLOEXEC) else { throw RuntimeError(.network, "cannot open \(namespace)", underlying: Sys.errno) }
        guard gantry_write_in_netns(fd.raw, path, value) == 0 else { throw RuntimeError(.network, "cannot write \(path) in \(namespace)", underlying: Sys.errno) }
    }

    /// Runs nft commands in the namespace (through the nft program: the
    /// library would open its socket where this process is); returns the
    /// output, JSON with handles when `json`.
    func nft(_ commands: String, json: Bool) throws -> String {
        guard let nft = Sys.findProgram("nft") else {
            throw RuntimeError(.network, "an ordinary user's networks need the nft program (Debian's nftables) for their rules; it is not installed")
        }
        let namespace = try namespacePath()
        guard let fd = OwnedDescriptor(opening: namespace, O_RDONLY | O_CLOEXEC) else { throw RuntimeError(.network, "cannot open \(namespace)", underlying: Sys.errno) }
        var output = [CChar](repeating: 0, count: json ? 1 << 22 : 4096)
        var message = [CChar](repeating: 0, count: 4096)
        let arguments = [nft] + (json ? ["-j", "-a"] : []) + ["-f", "-"]
        let status = UserModeNetwork.withArguments(arguments) { argv in
            gantry_run_in_owned_netns(fd.raw, argv, commands, &output, output.count, &message, message.count)
        }
        guard status == 0 else {
            let said = Self.text(message).trimmingCharacters(in: .whitespacesAndNewlines)
            if status < 0 { throw RuntimeError(.network, "cannot run nft in \(namespace)", underlying: Sys.errno) }
            throw RuntimeError(.network, "nftables refused the rules: \(said)")
        }
        return Self.text(output)
    }

    // MARK: - Namespace files

    /// Where the namespace file that root binds at `path` is for this host:
    /// `path` itself, or the file of that name on the holder's tmpfs.
    func namespaceFile(_ path: String) -> String {
        guard !isSystem else { return path }
        return "/proc/\(holder() ?? 0)/root" + boundPath(path)
    }

    /// The path inside the holder's mount namespace for `path`.
    private func boundPath(_ path: String) -> String {
        // Named for the owner (a container's ID, wherever its directory
        // is, or a pod's name) and the file.
        let components = path.split(separator: "/").suffix(3).map(String.init)
        guard components.count == 3 else { return "/tmp/" + components.joined(separator: "-") }
        return "/tmp/" + (components[0] == "pods" ? "pod-" : "") + components[1] + "-" + components[2]
    }

    /// Makes a namespace of `type` (network, IPC or UTS, the last with
    /// `hostname`) bound at `path` (or, for an ordinary user, where
    /// ``namespaceFile(_:)`` says).
    func createNamespace(at path: String, type: UInt64 = GANTRY_CLONE_NEWNET, hostname: String? = nil) throws {
        guard !isSystem else { return try Networks.createNamespace(at: path, type: type, hostname: hostname) }
        try withHolderNamespaces(try start()) { user, mounts in
            guard gantry_network_host_namespace(user, mounts, Int32(type), boundPath(path), hostname) == 0 else {
                throw RuntimeError(.network, "cannot create a namespace for \(path)", underlying: Sys.errno)
            }
        }
    }

    /// Removes a namespace file made by ``createNamespace(at:type:hostname:)``
    /// (what is already gone is skipped).
    func removeNamespace(at path: String) throws {
        guard !isSystem else { return try Networks.removeNamespace(at: path) }
        guard let pid = holder(), access(namespaceFile(path), F_OK) == 0 else { return }
        try withHolderNamespaces(pid) { user, mounts in
            guard gantry_network_host_namespace(user, mounts, 0, boundPath(path), nil) == 0 else {
                throw RuntimeError(.network, "cannot remove the namespace of \(path)", underlying: Sys.errno)
            }
        }
    }

    /// The holder's user namespace, which containers on the networks start in.
    func userNamespaceOfHolder() throws -> OwnedDescriptor {
        let pid = try start()
        guard let fd = OwnedDescriptor(opening: "/proc/\(pid)/ns/user", O_RDONLY | O_CLOEXEC) else {
            throw RuntimeError(.network, "cannot open the user namespace of the network host", underlying: Sys.errno)
        }
        return fd
    }

    /// Calls `body` with the holder's user and mount namespaces open.
    private func withHolderNamespaces(_ pid: Int32, _ body: (Int32, Int32) throws -> Void) throws {
        guard let user = OwnedDescriptor(opening: "/proc/\(pid)/ns/user", O_RDONLY | O_CLOEXEC),
              let mounts = OwnedDescriptor(opening: "/proc/\(pid)/ns/mnt", O_RDONLY | O_CLOEXEC) else {
            throw RuntimeError(.network, "cannot open the namespaces of the network host (process \(pid))", underlying: Sys.errno)
        }
        try body(user.raw, mounts.raw)
    }
}
