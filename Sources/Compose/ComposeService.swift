import Foundation
import Reconciler
import Runtime

/// Reads one entry of `services:` into a `ServiceSpec`.
struct ServiceReader {
    let project: String
    let directory: String
    let networks: [String: ComposeNetwork]
    let volumes: [String: ComposeVolume]
    /// The top-level `secrets:` and `configs:`.
    let secrets: [String: ComposeProvided]
    let configs: [String: ComposeProvided]
    /// The active profiles (`*`: all).
    let profiles: Set<String>

    /// The service keys Gantry takes; the ones only checked for an error
    /// or a warning are among them, so that the message says more than
    /// "not supported".
    static let keys: Set<String> = [
        "image", "command", "entrypoint", "environment", "env_file", "working_dir", "user", "hostname", "labels", "read_only",
        "init", "cap_add", "cap_drop", "sysctls", "ulimits", "stop_grace_period", "stop_signal", "ports", "expose", "volumes",
        "tmpfs", "networks", "network_mode", "restart", "healthcheck", "depends_on", "deploy", "scale", "mem_limit", "cpus",
        "pids_limit", "devices", "device_cgroup_rules", "security_opt", "memswap_limit", "links",
        "container_name", "profiles", "pull_policy", "secrets", "configs", "privileged",
        "build", "extra_hosts", "shm_size", "mem_reservation", "cpu_shares", "cpu_quota", "cpu_period", "cpuset", "oom_score_adj",
        "group_add", "pid", "ipc", "uts", "userns_mode", "blkio_config",
        // Accepted, ignored, warned about.
        "logging", "dns", "dns_search", "dns_opt", "platform", "runtime", "tty", "stdin_open", "domainname", "annotations",
        "attach", "develop", "cgroup_parent", "cpu_count", "cpu_percent", "isolation", "label_file", "pull_refresh_after",
        "credential_spec", "mem_swappiness",
        // Errors with a reason.
        "volumes_from", "external_links", "mac_address", "gpus", "storage_opt", "cgroup", "oom_kill_disable", "cpu_rt_runtime",
        "cpu_rt_period", "post_start", "pre_stop", "use_api_socket", "provider", "models",
    ]

    /// Keys that change nothing in Gantry, and why.
    static let ignored: [(key: String, why: String)] = [
        ("logging", "ignored; each replica's output goes to its Gantry container log"),
        ("dns", "ignored; Gantry sets up name resolution itself"),
        ("dns_search", "ignored; Gantry sets up name resolution itself"),
        ("dns_opt", "ignored; Gantry sets up name resolution itself"),
        ("platform", "ignored; the image is run as the image store has it"),
        ("runtime", "ignored; Gantry runs the containers itself"),
        ("tty", "ignored; replicas run detached, without a terminal"),
        ("stdin_open", "ignored; replicas run detached, without stdin"),
        ("domainname", "ignored; a replica's host name is all it has of its own"),
        ("annotations", "ignored; Gantry keeps labels (labels:), not annotations"),
        ("attach", "ignored; replicas' output goes to their logs (gantry service logs)"),
        ("develop", "ignored; Gantry does not watch files (compose watch)"),
        ("cgroup_parent", "ignored; replicas live under the runtime's cgroup parent (GANTRY_CGROUP_PARENT)"),
        ("cpu_count", "ignored; a Windows setting (cpus: limits CPU here)"),
        ("cpu_percent", "ignored; a Windows setting (cpus: limits CPU here)"),
        ("isolation", "ignored; a Windows setting"),
        ("label_file", "ignored; give the labels under labels:"),
        ("pull_refresh_after", "ignored; pull_policy decides when images are pulled"),
        ("credential_spec", "ignored; a Windows setting"),
        ("mem_swappiness", "ignored; swappiness is not set per container on this kernel's cgroups"),
    ]

    /// Keys Gantry cannot honour, and why: an error naming them.
    static let refused: [(key: String, why: String)] = [
        ("volumes_from", "not supported: list the volumes themselves under volumes:"),
        ("external_links", "not supported: put the service on the other container's network instead"),
        ("mac_address", "not supported: Gantry chooses hardware addresses itself"),
        ("gpus", "not supported: give the device nodes under devices:"),
        ("storage_opt", "not supported: a replica's root file system is an overlay of the image"),
        ("cgroup", "not supported: replicas have cgroup namespaces of their own"),
        ("oom_kill_disable", "not supported: a replica over its memory limit is killed"),
        ("cpu_rt_runtime", "not supported: replicas get no real-time CPU time"),
        ("cpu_rt_period", "not supported: replicas get no real-time CPU time"),
        ("post_start", "not supported: run the command from the service's entrypoint"),
        ("pre_stop", "not supported: the stop signal (stop_signal:) is what a replica gets before it stops"),
        ("use_api_socket", "not supported: Gantry has no daemon socket to give"),
        ("provider", "not supported: Gantry runs containers, not providers"),
        ("models", "not supported: Gantry runs no model runner"),
    ]

    /// A service's `links:` entry: the service it names, and the name it
    /// is to be reached by (as an alias on its network).
    struct Link {
        var service: String
        var alias: String
        var at: ComposeValue
    }

    /// The spec, whether it joins the project's default network, and its
    /// links; nil for a service left out because it has profiles.
    func read(name: String, _ service: ComposeValue) throws
        -> (spec: ServiceSpec, usesDefaultNetwork: Bool, links: [Link], pullPolicy: PullPolicy, build: ComposeBuild?)? {
        do {
            try ServiceSpec.validate(name: name, kind: "service")
        } catch let error as ReconcilerError {
            throw service.keyError(error.message)
        }
        let fields = try service.fields(Self.keys, what: "service key")
        if let listed = fields["profiles"] {
            let names = try listed.strings().map { try $0.string() }
            guard profiles.contains("*") || !profiles.isDisjoint(with: names) else {
                listed.warn("the service is left out: none of its profiles (\(names.joined(separator: ", "))) is active (--profile, COMPOSE_PROFILES)")
                return nil
            }
        }
        let build = try fields["build"].map { try self.build($0) }
        for (key, why) in Self.refused { if let value = fields[key] { throw value.keyError(why) } }
        for (key, why) in Self.ignored { fields[key]?.warn(why) }

        // A service that is built is named as Compose names it, unless image: names it.
        guard let image = try fields["image"]?.optionalString().flatMap({ $0.isEmpty ? nil : $0 }) ?? build.map({ _ in "\(project)-\(name)" }) else {
            throw service.keyError("image: is missing, and there is no build: to make one")
        }
        var template = ContainerSpec(image: image)
        template.entrypoint = try fields["entrypoint"].flatMap(commandLine)
        template.command = try fields["command"].flatMap(commandLine)
        template.environment = try environment(fields)
        if let directory = try fields["working_dir"]?.optionalString() {
            guard directory.hasPrefix("/") else { throw fields["working_dir", default: service].error("must be an absolute path") }
            template.workingDirectory = directory
        }
        template.user = try fields["user"]?.optionalString()
        template.hostname = try fields["hostname"]?.optionalString()
        if let name = fields["container_name"] {
            let container = try name.string()
            do {
                try ContainerRuntime.validate(name: container, kind: "container")
            } catch let error as RuntimeError {
                throw name.error(error.message)
            }
            template.name = container
        }
        template.labels = try ComposeLabels.read(fields["labels"])
        template.readOnlyRootfs = try fields["read_only"]?.bool() ?? false
        template.initProcess = try fields["init"]?.bool() ?? false
        template.capabilitiesAdded = try capabilities(fields["cap_add"])
        template.capabilitiesDropped = try capabilities(fields["cap_drop"])
        template.privileged = try fields["privileged"]?.bool() ?? false
        for (key, value, at) in try fields["sysctls"]?.keyValues() ?? [] {
            guard let value else { throw at.error("needs a value (KEY=VALUE)") }
            template.sysctls[key] = value
        }
        template.resourceLimits = try ulimits(fields["ulimits"])
        template.devices = try devices(fields["devices"])
        template.deviceRules = try (fields["device_cgroup_rules"]?.sequence() ?? []).map { item in
            do { return try DeviceRule(parsing: try item.string()) } catch let error as RuntimeError { throw item.error(error.message) }
        }
        if let period = fields["stop_grace_period"] { template.stopGracePeriod = try period.duration() }
        if let signal = fields["stop_signal"] {
            guard let number = Signal(parsing: try signal.string()) else { throw signal.error("is not a signal such as SIGTERM, TERM or 15") }
            template.stopSignal = number
        }
        template = template.resources(cpus: try fields["cpus"].map(cpus), memory: try fields["mem_limit"]?.size(),
                                      pids: try fields["pids_limit"].map { Int64(try $0.int(1 ... Int.max)) })
        try processSettings(fields, into: &template)
        if let swap = fields["memswap_limit"] {
            // -1: swap without limit, as Docker reads it.
            template.resources.memorySwap = try swap.optionalString() == "-1" ? -1 : try swap.size()
        }
        try securityOptions(fields["security_opt"], into: &template)
        template.mounts = try mounts(fields, service: name)
        try provided(fields, into: &template)
        let network = try network(fields, service: service)
        template = template.network(network.mode, aliases: network.aliases)
        template.additionalNetworks = network.others
        if !template.extraHosts.isEmpty, !network.joinsBridge {
            throw fields["extra_hosts", default: service].keyError("needs a bridge network, whose hosts file Gantry writes; this service's network is \(network.service.map { "service:" + $0 } ?? network.mode.description)")
        }
        let ports = try fields["ports"]?.sequence().map(port) ?? []
        if !ports.isEmpty, !network.joinsBridge {
            fields["ports"]?.warn("ignored: published ports need a bridge network, not network_mode \(network.service.map { "service:" + $0 } ?? network.mode.description)")
        } else {
            template.publishedPorts = ports
        }

        var spec = ServiceSpec(name: name, project: project, template: template)
        // Without restart:, replicas are kept running, as deploy.restart_policy
        // (condition any) does: the reconciler is an orchestrator, not a one-shot runner.
        spec.restartPolicy = try fields["restart"].map(restartPolicy) ?? .always
        if let healthcheck = fields["healthcheck"] { spec.probes.readiness = try probe(healthcheck) }
        spec.dependsOn = try fields["depends_on"].map(dependencies) ?? []
        if let shared = network.service {
            // Its replicas start in the other service's replica's network, once there is one.
            spec.networkService = shared
            if !spec.dependsOn.contains(where: { $0.service == shared }) { spec.dependsOn.append(ServiceDependency(shared)) }
        }
        var replicas = try fields["scale"]?.int(0 ... ServiceSpec.maximumReplicas)
        if let deploy = fields["deploy"] {
            let deployed = try self.deploy(deploy, into: &spec)
            if let deployed, let scale = replicas, scale != deployed {
                throw fields["scale", default: service].keyError("scale: \(scale) and deploy.replicas: \(deployed) disagree; give one")
            }
            replicas = replicas ?? deployed
        }
        spec.replicas = replicas ?? 1
        let anonymous = template.mounts.compactMap { mount -> String? in
            if case .volume(let volume, let target, _) = mount, volume.hasPrefix("\(project)_\(name)_"), !volumes.values.contains(where: { $0.name == volume }) { return target }
            return nil
        }
        if spec.replicas > 1, !anonymous.isEmpty {
            fields["volumes"]?.warn("the anonymous volume\(anonymous.count == 1 ? "" : "s") of \(anonymous.joined(separator: ", ")) \(anonymous.count == 1 ? "is" : "are") the service's, shared by its \(spec.replicas) replicas (Docker gives each container its own)")
        }
        if let name = fields["container_name"], spec.replicas > 1 {
            throw name.keyError("names one container, and the service asks for \(spec.replicas) replicas; drop container_name or run one")
        }
        if let extensions = try service.mapping().first(where: { $0.key == "x-gantry" })?.value { try gantryExtensions(extensions, into: &spec) }
        do {
            try spec.validate()
        } catch let error as ReconcilerError {
            throw ReconcilerError(.compose, "\(service.context.file): \(error.message)")
        }
        let links = try (fields["links"]?.sequence() ?? []).map { item -> Link in
            let parts = try item.string().split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            guard (1 ... 2).contains(parts.count), !parts[0].isEmpty, parts.last?.isEmpty == false else {
                throw item.error("must be SERVICE or SERVICE:ALIAS")
            }
            return Link(service: parts[0], alias: parts.last!, at: item)
        }
        let policy = try pullPolicy(fields["pull_policy"])
        if policy == .build, build == nil { throw fields["pull_policy", default: service].error("build asks for a build:, which the service does not have") }
        return (spec, network.usesDefault, links, policy, build)
    }

    /// `pull_policy`; the refreshing ones (`daily`, `weekly`, `every_…`)
    /// pull when the image is missing, with a warning.
    private func pullPolicy(_ value: ComposeValue?) throws -> PullPolicy {
        guard let value, let text = try value.optionalString() else { return .missing }
        switch text {
        case "missing", "if_not_present": return .missing
        case "always": return .always
        case "never": return .never
        case "build": return .build
        case "daily", "weekly":
            value.warn("the image is pulled when missing, not refreshed \(text)")
            return .missing
        default:
            guard text.hasPrefix("every_") else { throw value.error("must be always, missing, never, daily, weekly or every_<duration>") }
            value.warn("the image is pulled when missing, not refreshed on a schedule")
            return .missing
        }
    }

    /// `security_opt`: no-new-privileges and seccomp as Docker reads them;
    /// SELinux and AppArmor options, which this host's containers do not
    /// use, with a warning.
    private func securityOptions(_ value: ComposeValue?, into template: inout ContainerSpec) throws {
        for item in try value?.sequence() ?? [] {
            let option = try item.string()
            let separator = option.firstIndex { $0 == ":" || $0 == "=" }
            let key = separator.map { String(option[..<$0]) } ?? option
            let argument = separator.map { String(option[option.index(after: $0)...]) }
            switch key {
            case "no-new-privileges":
                switch argument {
                case nil, "true": template.noNewPrivileges = true
                case "false": template.noNewPrivileges = false
                default: throw item.error("no-new-privileges takes true or false")
                }
            case "seccomp":
                guard let argument, !argument.isEmpty else { throw item.error("seccomp needs unconfined or a profile file") }
                if argument == "unconfined" {
                    template.seccomp = .unconfined
                } else {
                    let path = argument.hasPrefix("/") ? argument : directory + "/" + argument
                    do {
                        template.seccomp = .profile(try SeccompProfile.load(contentsOf: path))
                    } catch let error as RuntimeError {
                        throw item.error(error.message)
                    }
                }
            case "label", "apparmor":
                item.warn("ignored: Gantry's containers get no \(key == "label" ? "SELinux label" : "AppArmor profile") on this host")
            default:
                throw item.error("is not a security option Gantry supports (no-new-privileges, seccomp, label, apparmor)")
            }
        }
    }

    /// A command line: a list as it is, a string split as a shell would.
    private func commandLine(_ value: ComposeValue) throws -> [String]? {
        switch value.node {
        case .null: return nil
        case .sequence: return try value.sequence().map { try $0.string() }
        default:
            guard let words = ComposeSyntax.shellWords(try value.string()) else { throw value.error("has a quote that is not closed") }
            return words
        }
    }

    /// Resources, namespaces and host entries beyond the common ones:
    /// `extra_hosts`, `shm_size`, `mem_reservation`, `cpu_shares`,
    /// `cpu_quota`, `cpu_period`, `cpuset`, `blkio_config.weight`,
    /// `oom_score_adj`, `group_add`, `pid`, `ipc`, `uts`, `userns_mode`.
    private func processSettings(_ fields: [String: ComposeValue], into template: inout ContainerSpec) throws {
        if let hosts = fields["extra_hosts"] {
            // HOST:IP or HOST=IP, a list or a mapping; host-gateway is the host.
            var entries: [(String, String, ComposeValue)] = []
            if hosts.isMapping {
                entries = try hosts.mapping().map { ($0.key, try $0.value.string(), $0.value) }
            } else {
                for item in try hosts.sequence() {
                    let text = try item.string()
                    guard let separator = text.firstIndex(where: { $0 == "=" || $0 == ":" }) else { throw item.error("must be HOST:IP or HOST=IP") }
                    entries.append((String(text[..<separator]), String(text[text.index(after: separator)...]), item))
                }
            }
            for (host, address, at) in entries {
                guard address == ContainerSpec.hostGateway || IPv4Address(address) != nil else {
                    throw at.error("\(address) is neither an IPv4 address nor host-gateway (IPv6 is not supported)")
                }
                template.extraHosts[host] = address
            }
        }
        // expose: ports the network reaches anyway (every port of a replica is reachable there); checked only.
        for item in try fields["expose"]?.sequence() ?? [] {
            let text = try item.string()
            let ports = text.split(separator: "/", maxSplits: 1).first.map(String.init) ?? ""
            let valid = ports.split(separator: "-", omittingEmptySubsequences: false).allSatisfy { UInt16($0).map { $0 > 0 } ?? false }
            guard valid, text.split(separator: "/").count <= 2, ["tcp", "udp", nil].contains(text.split(separator: "/").dropFirst().first.map(String.init)) else {
                throw item.error("is not a port such as 80, 80/udp or 8000-8010")
            }
        }
        if let size = fields["shm_size"] { template.shmSize = try size.size() }
        if let reservation = fields["mem_reservation"] { template.resources.memoryReservation = try reservation.size() }
        if let shares = fields["cpu_shares"] { template.resources.cpuShares = UInt64(try shares.int(2 ... 262_144)) }
        if let period = fields["cpu_period"] { template.resources.cpuPeriod = UInt64(try period.int(1000 ... 1_000_000)) }
        if let quota = fields["cpu_quota"] {
            template.resources.cpuQuota = Int64(try quota.int(1000 ... Int.max))
            if template.resources.cpuPeriod == nil { template.resources.cpuPeriod = 100_000 }
        }
        if let cpuset = fields["cpuset"] { template.resources.cpusetCPUs = try cpuset.string() }
        if let blkio = fields["blkio_config"] {
            let settings = try blkio.fields(["weight", "weight_device", "device_read_bps", "device_write_bps", "device_read_iops", "device_write_iops"],
                                            what: "blkio_config key")
            if let weight = settings["weight"] { template.resources.ioWeight = UInt16(try weight.int(10 ... 1000)) }
            for key in ["weight_device", "device_read_bps", "device_write_bps", "device_read_iops", "device_write_iops"] {
                if let value = settings[key] { throw value.keyError("not supported: Gantry limits I/O by weight only") }
            }
        }
        if let score = fields["oom_score_adj"] { template.oomScoreAdjustment = try score.int(-1000 ... 1000) }
        for group in try fields["group_add"]?.sequence() ?? [] {
            guard let gid = UInt32(try group.string()) else { throw group.error("Gantry adds groups by number; name the group's ID") }
            template.supplementaryGroups.append(gid)
        }
        for (key, namespace) in [("pid", Namespaces.pid), ("ipc", .ipc), ("uts", .uts)] {
            guard let value = fields[key] else { continue }
            switch try value.string() {
            case "host": template.namespaces.remove(namespace)
            case "private", "shareable", "": break
            case let other: throw value.error("must be host or private (sharing another's, \(other), is not supported)")
            }
        }
        if let mode = fields["userns_mode"], try mode.string() != "host" {
            throw mode.error("only host is supported: replicas run in the host's user namespace unless the runtime is an ordinary user's")
        }
    }

    /// `env_file` then `environment`, later values winning; a key without a
    /// value takes the variable of that name, or is left out.
    private func environment(_ fields: [String: ComposeValue]) throws -> [String] {
        var order: [String] = []
        var values: [String: String] = [:]
        func set(_ key: String, _ value: String) {
            if values[key] == nil { order.append(key) }
            values[key] = value
        }
        for entry in try fields["env_file"]?.strings() ?? [] {
            for (key, value) in try envFile(entry) { set(key, value) }
        }
        for (key, value, _) in try fields["environment"]?.keyValues() ?? [] {
            if let value = value ?? fields["environment"]?.context.environment[key] { set(key, value) }
        }
        return order.compactMap { key in values[key].map { "\(key)=\($0)" } }
    }

    /// The variables of one `env_file` entry: a path, or `{path, required}`.
    private func envFile(_ entry: ComposeValue) throws -> [(String, String)] {
        var pathValue = entry
        var required = true
        if case .mapping = entry.node {
            let fields = try entry.fields(["path", "required", "format"])
            guard let path = fields["path"] else { throw entry.keyError("path: is missing") }
            pathValue = path
            required = try fields["required"]?.bool() ?? true
            if let format = fields["format"], try format.string() != "raw" { throw format.error("only the plain KEY=VALUE format is supported") }
        }
        let path = ComposeSyntax.absolutePath(try pathValue.string(), relativeTo: directory)
        guard FileManager.default.fileExists(atPath: path) else {
            if required { throw pathValue.error("no such file (\(path))") }
            return []
        }
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw pathValue.error("cannot read \(path): \(error.localizedDescription)")
        }
        return try Self.parseEnvFile(text, environment: entry.context.environment) { line, message in
            pathValue.error("line \(line): \(message)")
        }
    }

    /// `KEY=VALUE` lines; blank lines and `#` comments are skipped, an
    /// `export ` prefix is allowed, a value loses one pair of surrounding
    /// quotes, and a bare `KEY` takes the variable of that name if set.
    static func parseEnvFile(_ text: String, environment: [String: String],
                             error: (Int, String) -> ReconcilerError) throws -> [(String, String)] {
        var variables: [(String, String)] = []
        for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            var line = Substring(rawLine.trimmingCharacters(in: .whitespacesAndNewlines))
            if line.isEmpty || line.hasPrefix("#") { continue }
            if line.hasPrefix("export ") { line = line.dropFirst(7).drop(while: \.isWhitespace) }
            let parts = line.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = parts[0].trimmingCharacters(in: .whitespaces)
            guard !key.isEmpty, !key.contains(where: \.isWhitespace) else { throw error(index + 1, "expected KEY=VALUE") }
            guard parts.count > 1 else {
                if let value = environment[key] { variables.append((key, value)) }
                continue
            }
            var value = parts[1].trimmingCharacters(in: .whitespaces)
            if value.count >= 2, let first = value.first, first == "\"" || first == "'", value.last == first {
                value = String(value.dropFirst().dropLast())
            }
            variables.append((key, value))
        }
        return variables
    }

    /// Capability names, checked (`ALL` stands for every one).
    private func capabilities(_ value: ComposeValue?) throws -> [String] {
        try (value?.sequence() ?? []).map { item in
            let name = try item.string()
            guard ["ALL", "CAP_ALL"].contains(name.uppercased()) || Capability(name) != nil else { throw item.error("is not a capability such as NET_ADMIN") }
            return name
        }
    }

    /// `devices:` — `/dev/x[:/dev/y][:rwm]`, or `{source:, target:, permissions:}`.
    private func devices(_ value: ComposeValue?) throws -> [ContainerSpec.Device] {
        try (value?.sequence() ?? []).map { item in
            do {
                if item.isMapping {
                    let fields = try item.fields(["source", "target", "permissions"], what: "device key")
                    guard let source = try fields["source"]?.string() else { throw item.error("needs a source:") }
                    let access = try fields["permissions"].map { try DeviceRule.Access(parsing: try $0.string()) } ?? .all
                    return ContainerSpec.Device(source, at: try fields["target"]?.string(), access: access)
                }
                return try ContainerSpec.Device(parsing: try item.string())
            } catch let error as RuntimeError {
                throw item.error(error.message)
            }
        }
    }

    /// `ulimits:` — `nofile: 1024` or `nofile: {soft: 1024, hard: 2048}`; -1 is unlimited.
    private func ulimits(_ value: ComposeValue?) throws -> [ContainerSpec.ResourceLimit] {
        func limit(_ value: ComposeValue) throws -> UInt64 {
            let number = try value.int(-1 ... Int.max)
            return number == -1 ? .max : UInt64(number)
        }
        return try (value?.mapping() ?? []).map { name, entry in
            if case .mapping = entry.node {
                let fields = try entry.fields(["soft", "hard"])
                guard let soft = fields["soft"], let hard = fields["hard"] else { throw entry.keyError("needs soft: and hard:") }
                return ContainerSpec.ResourceLimit(name, soft: try limit(soft), hard: try limit(hard))
            }
            let both = try limit(entry)
            return ContainerSpec.ResourceLimit(name, soft: both, hard: both)
        }
    }

    /// A number of CPUs, as a string or a number, above 0.
    func cpus(_ value: ComposeValue) throws -> Double {
        guard let cpus = Double(try value.string()), cpus > 0, cpus.isFinite else { throw value.error("must be a number of CPUs above 0, such as 0.5") }
        return cpus
    }

    /// `restart:` — `no`, `always`, `on-failure[:N]` or `unless-stopped`.
    private func restartPolicy(_ value: ComposeValue) throws -> RestartPolicy {
        let text = try value.string()
        switch text {
        case "no": return .never
        case "always", "unless-stopped": return .always
        case "on-failure": return .onFailure
        default:
            if text.hasPrefix("on-failure:"), let limit = Int(text.dropFirst("on-failure:".count)), limit >= 0 {
                value.warn("the retry limit \(limit) is ignored; Gantry restarts with a growing back-off instead")
                return .onFailure
            }
            throw value.error("must be no, always, on-failure[:N] or unless-stopped")
        }
    }

    /// `depends_on:` — a list of services, or a mapping to `{condition}`.
    private func dependencies(_ value: ComposeValue) throws -> [ServiceDependency] {
        if case .sequence = value.node { return try value.sequence().map { ServiceDependency(try $0.string()) } }
        return try value.mapping().map { service, entry in
            let fields = try entry.fields(["condition", "restart", "required"])
            var condition = ServiceDependency.Condition.started
            if let text = fields["condition"] {
                guard let parsed = ServiceDependency.Condition(rawValue: try text.string()) else {
                    throw text.error("must be service_started, service_healthy or service_completed_successfully")
                }
                condition = parsed
            }
            fields["restart"]?.warn("ignored; Gantry does not restart a service with its dependency")
            if let required = fields["required"], try !required.bool() { required.warn("ignored; every dependency is required") }
            return ServiceDependency(service, condition: condition)
        }
    }
}
