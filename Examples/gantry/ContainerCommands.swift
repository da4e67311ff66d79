import ArgumentParser
import Foundation
import Gantry

/// `64m`, `1g`, `512k` or a number of bytes.
func parseSize(_ text: String) throws -> Int64 {
    let lower = text.lowercased().replacingOccurrences(of: "ib", with: "").replacingOccurrences(of: "b", with: "")
    let units: [Character: Double] = ["k": 0x1p10, "m": 0x1p20, "g": 0x1p30, "t": 0x1p40]
    var number = Substring(lower)
    var scale = 1.0
    if let last = number.last, let unit = units[last] {
        scale = unit
        number = number.dropLast()
    }
    // Digits and one point only: Double would also take "nan", "inf" and hex.
    guard !number.isEmpty, number.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == ".") }), let value = Double(number), value > 0 else {
        throw ValidationError("\"\(text)\" is not a size such as 64m, 1g or 1048576")
    }
    let bytes = (value * scale).rounded(.down)
    guard bytes >= 1, bytes <= 0x1p62 else { throw ValidationError("\"\(text)\" is more bytes than any host has (at most 4 EiB)") }
    return Int64(bytes)
}

/// `30s`, `500ms`, `2m`, `1h` or a number of seconds.
func parseDuration(_ text: String) throws -> Duration {
    let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]
    var number = Substring(text)
    var scale = 1.0
    if let (suffix, unit) = units.first(where: { text.hasSuffix($0.0) }) {
        number = number.dropLast(suffix.count)
        scale = unit
    }
    guard !number.isEmpty, number.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == ".") }), let value = Double(number) else {
        throw ValidationError("\"\(text)\" is not a duration such as 30s, 500ms or 2m")
    }
    let milliseconds = (value * scale * 1000).rounded()
    // A century is longer than any process is meant to wait.
    guard milliseconds <= 100 * 365 * 86_400_000 else { throw ValidationError("\"\(text)\" is longer than a century") }
    return .milliseconds(Int64(milliseconds))
}

/// A signal by name (`TERM`, `SIGKILL`) or number.
func parseSignal(_ text: String) throws -> Signal {
    guard let signal = Signal(parsing: text) else { throw ValidationError("unknown signal \(text): give a name such as TERM or SIGUSR1, or a number") }
    return signal
}

/// Times as ISO 8601 with milliseconds.
/// `KEY=value` options (`--label`) as a map; a bare `KEY` has an empty value.
func parseLabels(_ items: [String], option: String = "--label") throws -> [String: String] {
    var labels: [String: String] = [:]
    for item in items {
        let parts = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        guard let key = parts.first, !key.isEmpty else { throw ValidationError("\(option) \(item): expected KEY=value") }
        labels[key] = parts.count > 1 ? parts[1] : ""
    }
    return labels
}

func formatTime(_ date: Date?) -> String? {
    guard let date else { return nil }
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    return formatter.string(from: date)
}

/// What `inspect` and `ps --format json` print about a container.
struct ContainerSummary: Encodable {
    var id: String
    var name: String
    var image: String
    var command: [String]
    var status: String
    var pid: Int32?
    var exitCode: Int32?
    var signal: Int32?
    var reason: String?
    var oomKilled: Bool
    var createdAt: String?
    var startedAt: String?
    var finishedAt: String?
    var limits: ResourceLimits
    var labels: [String: String]
    var network: String
    var ipAddress: String?
    var networkAliases: [String]?
    var ports: [String]?
    /// Each secret's and config's name and path inside; never a value.
    var secrets: [String]?
    var configs: [String]?

    init(_ record: ContainerRecord) {
        id = record.id
        name = record.name
        switch record.spec.root {
        case .image(let image): self.image = image
        case .directory(let path): image = path
        }
        command = record.process.arguments
        status = record.status.rawValue
        pid = record.pid
        if let exit = record.exit {
            exitCode = exit.code
            if case .signaled(let killer) = exit.status { signal = killer.rawValue }
            reason = exit.reason.rawValue
        }
        oomKilled = record.exit?.reason == .oomKilled
        createdAt = formatTime(record.createdAt)
        startedAt = formatTime(record.startedAt)
        finishedAt = formatTime(record.finishedAt)
        limits = record.spec.resources
        labels = record.spec.labels
        network = record.spec.network.description
        ipAddress = record.network?.address.description
        networkAliases = record.network?.aliases
        ports = record.network?.ports.map(\.description)
        let spec = record.spec
        secrets = spec.secrets.isEmpty ? nil : spec.secrets.map { $0.name + " " + ($0.mounted ? $0.path : "") + ($0.environmentVariable.map { " $" + $0 } ?? "") }
        configs = spec.configs.isEmpty ? nil : spec.configs.map { $0.name + " " + $0.path }
    }
}

/// Copies this command's standard input to a container's (or a process's)
/// on a thread of its own, then closes it there (but for a terminal, where
/// end-of-file is a keystroke).
func relayStandardInput(write: @escaping @Sendable (ArraySlice<UInt8>) throws -> Void, closeAtEnd: Bool,
                        close: @escaping @Sendable () -> Void) {
    Thread {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = read(0, &buffer, buffer.count)
            if count <= 0 { break }
            if (try? write(buffer[..<count])) == nil { break }
        }
        if closeAtEnd { close() }
    }.start()
}

/// Runs `action` on each named container in turn, printing each name once done.
func forEachContainer(_ names: [String], _ global: GlobalOptions, _ action: (Container) async throws -> Void) async throws {
    let runtime = try await global.openGantry().containers
    for name in names {
        try await action(try runtime.container(name))
        print(name)
    }
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a command in a new container.",
        discussion: "Exits with the container's exit code (128 + the signal when a signal ended it: 137 after SIGKILL or an OOM kill).")

    @Flag(help: "Remove the container when it ends.") var rm = false
    @Flag(name: .shortAndLong, help: "Run in the background, outliving this command; print the ID.") var detach = false
    @Option(help: "A name for the container.") var name: String?
    @Option(name: .shortAndLong, help: ArgumentHelp("Set an environment variable.", valueName: "KEY=VALUE")) var env: [String] = []
    @Option(name: .shortAndLong, help: "The working directory.") var workdir: String?
    @Option(name: .shortAndLong, help: ArgumentHelp("The user: uid[:gid] or a name from the image.", valueName: "user")) var user: String?
    @Option(help: ArgumentHelp("Run this program instead of the image's entry point (\"\" for none); the image's command is then not used.", valueName: "program")) var entrypoint: String?
    @Option(help: "The host name.") var hostname: String?
    @Option(help: ArgumentHelp("The memory limit (64m, 1g).", valueName: "size")) var memory: String?
    @Option(name: .customLong("memory-swap"), help: ArgumentHelp("Memory plus swap (-1: unlimited).", valueName: "size")) var memorySwap: String?
    @Option(help: "CPUs' worth of time (0.5: half a CPU).") var cpus: Double?
    @Option(name: .customLong("cpu-shares"), help: "Relative CPU weight (v1 shares).") var cpuShares: UInt64?
    @Option(name: .customLong("cpuset-cpus"), help: "The CPUs it may use (0-3,5).") var cpusetCPUs: String?
    @Option(help: "The most processes and threads.") var pids: Int64?
    @Option(help: ArgumentHelp("A process limit, as nofile=1024:2048 (clamped to this host's hard limits).", valueName: "name=soft[:hard]")) var ulimit: [String] = []
    @Flag(name: .customLong("read-only"), help: "Mount the root file system read-only.") var readOnly = false
    @Flag(help: "Run privileged: every capability and host device, no seccomp filter, nothing of /proc masked. No sandbox.") var privileged = false
    @Option(name: .customLong("cap-add"), help: "Add a capability (NET_ADMIN, ALL).") var capAdd: [String] = []
    @Option(name: .customLong("cap-drop"), help: "Drop a capability (ALL drops every one).") var capDrop: [String] = []
    @Option(name: .customLong("security-opt"), help: ArgumentHelp("seccomp=unconfined|FILE, or no-new-privileges=false.", valueName: "opt")) var securityOptions: [String] = []
    @Option(help: ArgumentHelp("Mount a tmpfs: /path[:size].", valueName: "path")) var tmpfs: [String] = []
    @Option(name: .shortAndLong, help: ArgumentHelp("Bind a host path or mount a named volume: /host:/container[:ro][,rslave] or VOLUME:/container[:ro].", valueName: "bind")) var volume: [String] = []
    @Option(help: ArgumentHelp("Give the container a device of the host: /dev/HOST[:/dev/CONTAINER][:rwm].", valueName: "device")) var device: [String] = []
    @Option(name: .customLong("device-cgroup-rule"), help: ArgumentHelp("Allow devices the container makes or is given otherwise: \"c 1:3 rwm\", \"b 8:* r\".", valueName: "rule")) var deviceCgroupRules: [String] = []
    @Option(help: ArgumentHelp("Mount: type=bind|volume|tmpfs,source=…,target=…[,readonly][,bind-propagation=rslave][,tmpfs-size=64m].", valueName: "mount")) var mount: [String] = []
    @Option(help: ArgumentHelp("The network: none (loopback only; the default without -p), host, bridge (the default network; the default with -p), container:NAME (another container's) or a network's name; several networks comma-separated, the first the route out.", valueName: "network")) var network: String?
    @Option(name: .shortAndLong, help: ArgumentHelp("Publish a port on the host: [IP:]HOST:CONTAINER[/udp] (HOST 0: a free one).", valueName: "port")) var publish: [String] = []
    @Option(help: ArgumentHelp("Run in a pod: its network (address, ports, localhost) and, as it shares them, IPC and host name.", valueName: "pod")) var pod: String?
    @Option(name: .customLong("net-alias"), help: ArgumentHelp("Another name the container answers to on its network.", valueName: "name")) var netAliases: [String] = []
    @Option(name: .customLong("sysctl"), help: ArgumentHelp("Set a namespaced kernel parameter.", valueName: "key=value")) var sysctls: [String] = []
    @Option(name: .customLong("uidmap"), help: ArgumentHelp("Run in a user namespace mapping container user IDs to the host's: CONTAINER:HOST:SIZE, as 0:100000:65536 (repeatable).", valueName: "map")) var uidMaps: [String] = []
    @Option(name: .customLong("gidmap"), help: ArgumentHelp("Map group IDs likewise (default: as --uidmap).", valueName: "map")) var gidMaps: [String] = []
    @Option(name: .customLong("label"), help: ArgumentHelp("Set a label.", valueName: "key=value")) var labels: [String] = []
    @Option(name: .customLong("log-opt"), help: ArgumentHelp("How its log is kept: max-size=10m (a file's size before it is rotated), max-file=2 (files kept).", valueName: "key=value")) var logOptions: [String] = []
    @Option(help: ArgumentHelp("Kill the container after this long (30s, 2m).", valueName: "duration")) var timeout: String?
    @Option(name: .customLong("stop-signal"), help: "The signal stop sends first.") var stopSignal: String?
    @Option(name: .customLong("stop-timeout"), help: ArgumentHelp("How long stop waits before SIGKILL.", valueName: "duration")) var stopTimeout: String?
    @Flag(help: "Run a tiny init as PID 1 that reaps zombies and forwards signals.") var `init` = false
    @Flag(name: .shortAndLong, help: "Keep standard input open and pass it to the container.") var interactive = false
    @Flag(name: .shortAndLong, help: "Run on a pseudo-terminal.") var tty = false
    @Argument(help: "The image.") var image: String
    @Argument(parsing: .captureForPassthrough, help: "The command and its arguments (default: the image's).") var command: [String] = []
    @OptionGroup var global: GlobalOptions

    func validate() throws {
        if detach && (interactive || tty) { throw ValidationError("--detach cannot be combined with -i or -t") }
        if detach && rm { throw ValidationError("--rm cannot be combined with --detach: the container outlives this command") }
        if let cpus, !(cpus.isFinite && cpus > 0) { throw ValidationError("--cpus \(cpus) is not a number of CPUs above 0, such as 0.5") }
        if let network, ["none", "host"].contains(network), !publish.isEmpty {
            throw ValidationError("-p publishes ports on a bridge network, but --network \(network) has none: leave out --network, or name a bridge network")
        }
        if let network, pod != nil { throw ValidationError("--network \(network) cannot be combined with --pod: the container uses the pod's network") }
    }

    func makeSpec() throws -> ContainerSpec {
        var spec = ContainerSpec(image: image, command: command.isEmpty ? nil : command)
        spec.name = name
        spec.environment = env
        spec.workingDirectory = workdir
        spec.user = user
        if let entrypoint {
            spec.entrypoint = entrypoint.isEmpty ? [] : [entrypoint]
            if command.isEmpty { spec.command = [] }
        }
        spec.hostname = hostname
        spec = spec.resources(cpus: cpus, memory: try memory.map(parseSize), pids: pids)
        if let memorySwap { spec.resources.memorySwap = memorySwap == "-1" ? -1 : try parseSize(memorySwap) }
        spec.resources.cpuShares = cpuShares
        spec.resources.cpusetCPUs = cpusetCPUs
        spec.resourceLimits = try ulimit.map { item in
            let parts = item.split(separator: "=", maxSplits: 1).map(String.init)
            let values = parts.count == 2 ? parts[1].split(separator: ":").compactMap { UInt64($0) } : []
            guard parts.count == 2, values.count == 1 || values.count == 2 else { throw ValidationError("--ulimit \(item) is not name=soft[:hard]") }
            return .init(parts[0], soft: values[0], hard: values.last!)
        }
        spec.readOnlyRootfs = readOnly
        spec.privileged = privileged
        spec.capabilitiesAdded = capAdd
        spec.capabilitiesDropped = capDrop
        for option in securityOptions {
            if option == "seccomp=unconfined" || option == "seccomp:unconfined" {
                spec.seccomp = .unconfined
            } else if option.hasPrefix("seccomp=") || option.hasPrefix("seccomp:") {
                spec.seccomp = .profile(try SeccompProfile.load(contentsOf: String(option.dropFirst(8))))
            } else if option == "no-new-privileges=false" || option == "no-new-privileges:false" {
                spec.noNewPrivileges = false
            } else if option == "no-new-privileges" || option.hasSuffix("=true") || option.hasSuffix(":true") {
                spec.noNewPrivileges = true
            } else {
                throw ValidationError("unsupported --security-opt \(option)")
            }
        }
        spec.mounts = try tmpfs.map { item in
            let parts = item.split(separator: ":", maxSplits: 1).map(String.init)
            return .tmpfs(target: parts[0], size: parts.count > 1 ? try parseSize(parts[1]) : nil)
        } + volume.map(parseVolumeOption) + mount.map(parseMountOption)
        spec.devices = try device.map { try ContainerSpec.Device(parsing: $0) }
        spec.deviceRules = try deviceCgroupRules.map { try DeviceRule(parsing: $0) }
        spec.pod = pod
        // Without --network, publishing a port puts the container on the default network.
        // Several bridge networks, comma-separated: the first is the route out.
        let networks = (network ?? (publish.isEmpty ? "none" : "bridge")).split(separator: ",", omittingEmptySubsequences: false).map { String($0) }
        if networks.count > 1 {
            guard !networks.contains(where: \.isEmpty), Set(networks).count == networks.count else {
                throw ValidationError("--network \(network ?? ""): list each network once, comma-separated, without empty entries")
            }
        }
        spec.network = parseNetworkMode(networks.first ?? "none")
        for other in networks.dropFirst() {
            guard case .bridge(let name) = parseNetworkMode(other), case .bridge = spec.network else {
                throw ValidationError("--network \(network ?? ""): only bridge networks are listed together")
            }
            spec.additionalNetworks.append(ContainerSpec.NetworkMembership(name))
        }
        spec.networkAliases = netAliases
        spec.publishedPorts = try publish.map { try PublishedPort(parsing: $0) }
        for item in sysctls {
            let parts = item.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { throw ValidationError("--sysctl \(item) is not key=value") }
            spec.sysctls[parts[0]] = parts[1]
        }
        if !uidMaps.isEmpty || !gidMaps.isEmpty {
            spec.namespaces.insert(.user)
            spec.uidMappings = try (uidMaps.isEmpty ? gidMaps : uidMaps).map { try parseIDMapping($0, option: "--uidmap") }
            spec.gidMappings = try (gidMaps.isEmpty ? uidMaps : gidMaps).map { try parseIDMapping($0, option: "--gidmap") }
        }
        spec.labels.merge(try parseLabels(labels)) { $1 }
        for (key, value) in try parseLabels(logOptions, option: "--log-opt") {
            switch key {
            case "max-size": spec.log.maxSize = try parseSize(value)
            case "max-file":
                guard let files = Int(value), files >= 1 else { throw ValidationError("--log-opt max-file=\(value) is not a number of files of at least 1") }
                spec.log.maxFiles = files
            default: throw ValidationError("--log-opt \(key) is not max-size or max-file")
            }
        }
        spec.timeout = try timeout.map(parseDuration)
        if let stopSignal { spec.stopSignal = try parseSignal(stopSignal) }
        if let stopTimeout { spec.stopGracePeriod = try parseDuration(stopTimeout) }
        spec.initProcess = `init`
        spec.openStdin = interactive
        spec.terminal = tty
        spec.lifetime = detach ? .independent : .boundToHost
        return spec
    }

    func run() async throws {
        let gantry = try await global.openGantry()
        let runtime = try gantry.containers
        let container = try await runtime.create(try makeSpec())
        do {
            try await container.start()
        } catch {
            try? await container.remove(force: true)
            throw error
        }
        if detach {
            print(container.id)
            return
        }
        // Signals to this command go to the container, as with docker run.
        let forwarding = SignalForwarder(container: container, signals: [SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2])
        let terminal = tty ? HostTerminal() : nil
        try? terminal?.enterRawMode()
        defer { terminal?.restore() }
        // The container's terminal follows this one's size.
        let resizer = terminal != nil ? DispatchSource.makeSignalSource(signal: SIGWINCH) : nil
        if let resizer, let terminal {
            let resize: @Sendable () -> Void = {
                if let size = terminal.size { container.resizeTerminal(rows: size.rows, columns: size.columns) }
            }
            signal(SIGWINCH, SIG_IGN)
            resizer.setEventHandler(handler: resize)
            resizer.resume()
            resize()
        }
        defer { resizer?.cancel() }
        if interactive || tty {
            relayStandardInput(write: { try container.write($0) }, closeAtEnd: !tty, close: { container.closeStdin() })
        }
        for try await chunk in container.output {
            let handle = chunk.stream == .stderr ? FileHandle.standardError : FileHandle.standardOutput
            handle.write(Data(chunk.bytes))
        }
        let exit = try await container.wait()
        forwarding.stop()
        terminal?.restore()
        if rm {
            try await container.remove()
            await ContainerRuntime.settle()
        }
        if exit.reason != .exited { Terminal.printError("container \(container.name) \(exit)") }
        _exit(Self.exitCode(exit))
    }
}

extension Run {
    /// The command's exit code: the container's, but never success when
    /// its end was a failure the process itself did not report (a child
    /// OOM-killed while the main process exited 0, a timeout that struck
    /// as the process was ending).
    static func exitCode(_ exit: ContainerExit) -> Int32 {
        guard exit.code == 0 else { return exit.code }
        return switch exit.reason {
        case .oomKilled: 128 + SIGKILL
        case .timedOut: 124
        case .exited, .stopped, .unknown: 0
        }
    }
}

/// Forwards this process's signals to a container while it runs.
final class SignalForwarder: @unchecked Sendable {
    // The sources are created once and only cancelled afterwards.
    private let sources: [any DispatchSourceSignal]

    init(container: Container, signals: [Int32]) {
        sources = signals.map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number)
            source.setEventHandler { try? container.kill(Signal(number)) }
            source.resume()
            return source
        }
    }

    func stop() { sources.forEach { $0.cancel() } }
}

struct PS: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ps", abstract: "List containers.")
    @Flag(name: .shortAndLong, help: "Also list containers that are not running.") var all = false
    @OptionGroup var global: GlobalOptions
    @OptionGroup var output: FormatOption

    func run() async throws {
        let runtime = try await global.openGantry().containers
        let records = try runtime.list().filter { all || $0.status == .running || $0.status == .paused }
        for damaged in runtime.damagedContainers() {
            let names = damaged.names.isEmpty ? "" : " (named \(damaged.names.joined(separator: ", ")))"
            Terminal.printWarning("container \(damaged.id.prefix(12))\(names) is not listed: its record \(damaged.stateFile) cannot be read; \(damaged.processes.count) processes of it run; `gantry rm -f \(damaged.id.prefix(12))` removes it")
        }
        switch output.format {
        case .json: try Terminal.printJSON(records.map(ContainerSummary.init))
        case .table:
            Terminal.printTable(["ID", "NAME", "IMAGE", "STATUS", "COMMAND"], records.map { record in
                let summary = ContainerSummary(record)
                let status = record.exit.map { "\(record.status) (\($0.code)\($0.reason == .exited ? "" : ", \($0.reason)"))" } ?? record.status.rawValue
                return [record.shortID, record.name, summary.image, status, summary.command.joined(separator: " ")]
            })
        }
    }
}

struct Inspect: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a container's state, process, limits and exit.")
    @Argument(help: "The container's name or ID.") var names: [String]
    @OptionGroup var global: GlobalOptions
    @Option(name: .long, help: "Output format: json.") var format: String = "json"

    func run() async throws {
        let runtime = try await global.openGantry().containers
        let summaries = try names.map { ContainerSummary(try runtime.container($0).record) }
        try Terminal.printJSON(summaries.count == 1 ? [summaries[0]] : summaries)
    }
}

struct Logs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print a container's output.")
    @Flag(name: .shortAndLong, help: "Follow the output until the container ends.") var follow = false
    @Flag(name: .shortAndLong, help: "Prefix each chunk with its time.") var timestamps = false
    @Argument(help: "The container's name or ID.") var name: String
    @OptionGroup var global: GlobalOptions

    func run() async throws {
        let container = try await global.openGantry().containers.container(name)
        for try await chunk in follow ? container.output : container.logs {
            let handle = chunk.stream == .stderr ? FileHandle.standardError : FileHandle.standardOutput
            if timestamps { handle.write(Data((formatTime(chunk.time) ?? "") .utf8 + [0x20])) }
            handle.write(Data(chunk.bytes))
        }
    }
}

struct Exec: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run a command in a running container.")
    @Flag(name: .shortAndLong, help: "Pass standard input to the command.") var interactive = false
    @Flag(name: .shortAndLong, help: "Run the command on a pseudo-terminal.") var tty = false
    @Option(name: .shortAndLong, help: ArgumentHelp("Set an environment variable.", valueName: "KEY=VALUE")) var env: [String] = []
    @Option(name: .shortAndLong, help: "The working directory.") var workdir: String?
    @Option(name: .shortAndLong, help: "The user: uid[:gid] or a name.") var user: String?
    @Argument(help: "The container's name or ID.") var name: String
    @Argument(parsing: .captureForPassthrough, help: "The command and its arguments.") var command: [String]
    @OptionGroup var global: GlobalOptions

    func run() async throws {
        let container = try await global.openGantry().containers.container(name)
        let environment = tty ? ["TERM=" + (ProcessInfo.processInfo.environment["TERM"] ?? "xterm")] + env : env
        let process = try await container.exec(ExecSpec(command, environment: environment, workingDirectory: workdir, user: user,
                                                        openStdin: interactive, terminal: tty))
        let terminal = tty ? HostTerminal() : nil
        try? terminal?.enterRawMode()
        defer { terminal?.restore() }
        if interactive || tty {
            relayStandardInput(write: { try process.write($0) }, closeAtEnd: !tty, close: { process.closeStdin() })
        }
        for try await chunk in process.output {
            (chunk.stream == .stderr ? FileHandle.standardError : FileHandle.standardOutput).write(Data(chunk.bytes))
        }
        let status = await process.wait().code
        terminal?.restore()
        _exit(status)
    }
}

struct Stop: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Stop containers: their stop signal, then SIGKILL after the grace period.")
    @Option(name: .shortAndLong, help: ArgumentHelp("The grace period (default: the container's).", valueName: "duration")) var time: String?
    @Argument(help: "Names or IDs.") var names: [String]
    @OptionGroup var global: GlobalOptions

    func run() async throws {
        let grace = try time.map(parseDuration)
        try await forEachContainer(names, global) { try await $0.stop(grace: grace) }
    }
}

struct Kill: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Send a signal to containers (after KILL, waits until they have ended).")
    @Option(name: .shortAndLong, help: "The signal (default KILL).") var signal: String = "KILL"
    @Argument(help: "Names or IDs.") var names: [String]
    @OptionGroup var global: GlobalOptions

    func run() async throws {
        let number = try parseSignal(signal)
        try await forEachContainer(names, global) { container in
            try container.kill(number)
            // As Docker's: after SIGKILL the container has ended when this
            // returns, its published ports and address free for the next.
            if number == .kill { await Self.awaitEnd(of: container, within: .seconds(10)) }
        }
    }

    static func awaitEnd(of container: Container, within limit: Duration) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { _ = try? await container.wait() }
            group.addTask { try? await Task.sleep(for: limit) }
            await group.next()
            group.cancelAll()
        }
    }
}

struct Remove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rm", abstract: "Remove containers.")
    @Flag(name: .shortAndLong, help: "Kill running containers first.") var force = false
    @Option(name: .customLong("label"), help: ArgumentHelp(
        "Also remove every container and volume with this label (and value, when given): `--label dev.gantry.testing.reuse` removes what tests keep for reuse.",
        valueName: "key[=value]")) var labels: [String] = []
    @Argument(help: "Names or IDs.") var names: [String] = []
    @OptionGroup var global: GlobalOptions

    func validate() throws {
        if names.isEmpty && labels.isEmpty { throw ValidationError("name the containers to remove, or give --label") }
    }

    func run() async throws {
        let runtime = try await global.openGantry().containers
        let wanted = try parseLabels(labels)
        let labelled = try runtime.list().filter { record in
            !wanted.isEmpty && wanted.allSatisfy { key, value in record.spec.labels[key].map { value.isEmpty || $0 == value } ?? false }
        }
        for name in names + labelled.map(\.name) {
            do {
                try await runtime.container(name).remove(force: force)
            } catch let error as RuntimeError where error.code == .invalidState && runtime.damagedContainers().contains(where: { name.count >= 4 && $0.id.hasPrefix(name) || $0.names.contains(name) }) {
                // Its record cannot be read: only a forced removal takes it.
                guard force else { throw RuntimeError(.invalidState, "\(error.message); `gantry rm -f \(name)` removes it and what it holds") }
                try runtime.removeDamaged(name)
            }
            print(name)
        }
        // Volumes with the labels, once the containers that used them are gone.
        guard !wanted.isEmpty else { return }
        for volume in try runtime.volumes.list()
        where wanted.allSatisfy({ key, value in volume.labels[key].map { value.isEmpty || $0 == value } ?? false }) {
            do {
                try await runtime.volumes.remove(volume.name)
                print(volume.name)
            } catch {
                Terminal.printWarning("volume \(volume.name) is kept: \(error)")
            }
        }
    }
}

struct Stats: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show what containers use (CPU time, memory, pids, OOM kills).")
    @Argument(help: "Names or IDs.") var names: [String]
    @OptionGroup var global: GlobalOptions
    @OptionGroup var output: FormatOption

    struct Row: Encodable {
        var name: String
        var usage: ResourceUsage
    }

    func run() async throws {
        let runtime = try await global.openGantry().containers
        let rows = try names.map { Row(name: $0, usage: try runtime.container($0).usage()) }
        switch output.format {
        case .json: try Terminal.printJSON(rows)
        case .table:
            Terminal.printTable(["NAME", "CPU", "MEMORY", "PEAK", "LIMIT", "PIDS", "OOM KILLS"], rows.map { row in
                let usage = row.usage
                return [row.name, String(format: "%.3fs", Double(usage.cpuNanoseconds) / 1e9), Terminal.bytes(usage.memory),
                        usage.memoryPeak.map(Terminal.bytes) ?? "-", usage.memoryLimit.map(Terminal.bytes) ?? "-",
                        "\(usage.pids)/\(usage.pidsLimit.map(String.init) ?? "-")", "\(usage.oomKills)"]
            })
        }
    }
}

struct Pause: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Freeze every process of containers.")
    @Argument(help: "Names or IDs.") var names: [String]
    @OptionGroup var global: GlobalOptions

    func run() async throws {
        try await forEachContainer(names, global) { try await $0.pause() }
    }
}

struct Unpause: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Thaw paused containers.")
    @Argument(help: "Names or IDs.") var names: [String]
    @OptionGroup var global: GlobalOptions

    func run() async throws {
        try await forEachContainer(names, global) { try await $0.resume() }
    }
}

/// `CONTAINER:HOST:SIZE` of `--uidmap` and `--gidmap`.
func parseIDMapping(_ text: String, option: String) throws -> ContainerSpec.IDMapping {
    let parts = text.split(separator: ":", omittingEmptySubsequences: false).compactMap { UInt32($0) }
    guard parts.count == 3, text.split(separator: ":", omittingEmptySubsequences: false).count == 3, parts[2] > 0 else {
        throw ValidationError("\(option) \(text) is not CONTAINER:HOST:SIZE (as 0:100000:65536)")
    }
    return ContainerSpec.IDMapping(containerID: parts[0], hostID: parts[1], size: parts[2])
}
