import Foundation
import GantryCore
import OCIImage
import Runtime

extension StepRunner {
    /// The container a `RUN` step runs in: the image so far, the stage's
    /// environment and arguments, its working directory and user, the
    /// step's network and mounts.
    func runSpec(_ instruction: Instruction, state: State) throws -> ContainerSpec {
        let config = state.configuration.config ?? RunConfiguration()
        var command: [String]
        switch instruction.arguments {
        case .exec(let words):
            command = words
        case .shell(let line):
            // A line that is only a here-document runs it as the script;
            // otherwise here-documents are handed to the shell, which reads
            // them itself.
            var script = line
            let marker = line.trimmingCharacters(in: .whitespaces)
            if instruction.heredocs.count == 1, marker.hasPrefix("<<"), !marker.contains(" ") {
                script = instruction.heredocs[0].content
            } else {
                for heredoc in instruction.heredocs {
                    script += "\n" + heredoc.content + heredoc.delimiter
                }
            }
            command = (config.shell ?? ["/bin/sh", "-c"]) + [script]
        }
        guard !command.isEmpty else { throw BuildError(.instruction, "\(instruction.location): RUN has no command") }
        var spec = ContainerSpec(image: state.root ?? "scratch", command: command)
        spec.entrypoint = []
        var environment = config.env ?? []
        let named = Set(environment.map { String($0.prefix { $0 != "=" }) })
        for (name, value) in state.arguments where !named.contains(name) { environment.append("\(name)=\(value)") }
        if !environment.contains(where: { $0.hasPrefix("PATH=") }) {
            environment.append("PATH=" + StageBuilder.defaultPath)
        }
        spec.environment = environment
        spec.workingDirectory = config.workingDir.flatMap { $0.isEmpty ? nil : $0 }
        spec.user = config.user.flatMap { $0.isEmpty ? nil : $0 }
        let network = try instruction.flag("network").map { value -> BuildOptions.RunNetwork in
            switch value {
            case "default": options.network
            case "host": .host
            case "none": .none
            default: throw BuildError(.instruction, "\(instruction.location): RUN --network=\(value): the choices are default, host and none")
            }
        } ?? options.network
        spec.network = network == .host ? .host : .none
        for flag in instruction.flags where !["network", "mount", "security"].contains(flag.name) {
            throw BuildError(.instruction, "\(instruction.location): RUN does not take --\(flag.name)")
        }
        if let security = instruction.flag("security"), security != "sandbox" {
            throw BuildError(.instruction, "\(instruction.location): RUN --security=\(security) is not allowed: steps run sandboxed")
        }
        return spec
    }

    /// A `RUN` step's mounts: what they add to its cache key, and the work
    /// that fills their sources, done only when the step runs.
    struct RunMounts {
        var mounts: [ContainerSpec.Mount] = []
        var keyParts: [String] = []
        var prepare: [@Sendable () async throws -> Void] = []
    }

    /// A `RUN --mount`: `type=cache` (a directory kept between builds),
    /// `type=bind` (read-only unless `rw`, whose writes are discarded: a
    /// copy of part of the context, less what the ignore file leaves out, or
    /// of a stage's or an image's files with `from`), `type=secret` (a file
    /// given to the build, at `/run/secrets/ID`) or `type=tmpfs`.
    func runMounts(_ instruction: Instruction, staging: Staging) async throws -> RunMounts {
        var result = RunMounts()
        for (index, text) in instruction.flagValues("mount").enumerated() {
            var fields: [String: String] = [:]
            for field in text.split(separator: ",") {
                let parts = field.split(separator: "=", maxSplits: 1)
                fields[String(parts[0]).lowercased()] = parts.count > 1 ? String(parts[1]) : "true"
            }
            let type = fields["type"] ?? "bind"
            let target = fields["target"] ?? fields["dst"] ?? fields["destination"]
            func required(_ value: String?) throws -> String {
                guard let value, !value.isEmpty else {
                    throw BuildError(.instruction, "\(instruction.location): --mount=\(text) needs a target")
                }
                return StepRunner.absolute(value, in: "/")
            }
            let readOnly = !["rw", "readwrite"].contains { fields[$0] == "true" }
            switch type {
            case "cache":
                let path = try required(target)
                let id = fields["id"] ?? path
                let directory = stage.store.root.buildCacheMounts + "/" + StageBuilder.hash([id]).prefix(32)
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
                let cacheReadOnly = fields["ro"] == "true" || fields["readonly"] == "true"
                result.mounts.append(.bind(source: directory, target: path, readOnly: cacheReadOnly))
                result.keyParts.append("cache \(id) \(path) \(cacheReadOnly)")
            case "bind":
                let path = try required(target)
                let source = StepRunner.absolute(fields["source"] ?? fields["src"] ?? ".", in: "/")
                let area = try staging.area("mount-\(index)")
                if let from = fields["from"] {
                    // A stage's or an image's files, unpacked for the step.
                    let image: String
                    if let dependency = stage.run.stageIndex(named: from, before: stage.index) {
                        image = try await stage.run.stage(dependency).image.manifestDescriptor.digest.description
                    } else {
                        image = try await stage.resolve(from, platform: options.platform, at: instruction).record.reference.description
                    }
                    let store = stage.store
                    let digest = try await store.resolve(image).manifestDescriptor.digest
                    result.keyParts.append("bind from \(digest) \(source) \(path) \(readOnly)")
                    result.mounts.append(.bind(source: area + (source == "/" ? "" : source), target: path, readOnly: readOnly))
                    result.prepare.append { try await store.unpack(image, into: area, keepingPrivileges: true) }
                } else {
                    // The context's files, copied: the ignore file's choice holds, and writes stay in the copy.
                    let entries = try await stage.run.entries()
                    let host = stage.run.context.directory + (source == "/" ? "" : source)
                    let name = source == "/" ? "" : (source as NSString).lastPathComponent
                    var status = stat()
                    guard stat(host, &status) == 0 else {
                        throw BuildError(.instruction, "\(instruction.location): --mount=\(text): \(source) is not in the build context")
                    }
                    let isDirectory = status.st_mode & S_IFMT == S_IFDIR
                    let listing = try self.listing(host, as: isDirectory ? "" : name, entries: isDirectory ? entries : nil)
                    result.keyParts.append("bind \(source) \(path) \(readOnly)")
                    result.keyParts += try Staging.fingerprint(listing, owner: nil, mode: nil)
                    result.mounts.append(.bind(source: isDirectory ? area : area + "/" + name, target: path, readOnly: readOnly))
                    result.prepare.append {
                        try await offload { _ in
                            try FileManager.default.createDirectory(atPath: area, withIntermediateDirectories: true)
                            try Staging.place(listing, into: area, owner: (0, 0), mode: nil)
                        }
                    }
                }
            case "secret":
                guard let id = fields["id"] ?? target.map({ ($0 as NSString).lastPathComponent }) else {
                    throw BuildError(.instruction, "\(instruction.location): --mount=type=secret needs an id")
                }
                let path = try required(target ?? "/run/secrets/" + id)
                result.keyParts.append("secret \(id) \(path)")
                guard let file = options.secrets[id] else {
                    if fields["required"] == "true" {
                        throw BuildError(.instruction, "\(instruction.location): the secret \(id) was not given to the build")
                    }
                    result.mounts.append(.tmpfs(target: path))
                    continue
                }
                result.mounts.append(.bind(source: file, target: path, readOnly: true))
            case "tmpfs":
                let path = try required(target)
                result.mounts.append(.tmpfs(target: path))
                result.keyParts.append("tmpfs \(path)")
            default:
                throw BuildError(.instruction, "\(instruction.location): --mount type \(type) is not one of bind, cache, secret, tmpfs")
            }
        }
        return result
    }

    /// Starts a `RUN` step's container, passes its output on, and waits
    /// for it; a failure names the step, its exit and its last output.
    func runContainer(_ container: Container, _ instruction: Instruction) async throws {
        let (events, label) = (stage.run.events, label)
        try await container.runStep("\(instruction.location): \(instruction.text)") { events?(.output(stage: label, bytes: $0)) }
    }

    /// A `HEALTHCHECK`: `NONE`, or options and a `CMD`.
    func healthcheck(_ instruction: Instruction, shell: [String]?) throws -> RunConfiguration.Healthcheck {
        var check = RunConfiguration.Healthcheck(test: nil)
        func words(_ arguments: Arguments) -> [String] {
            switch arguments {
            case .exec(let list): list
            case .shell(let line): line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            }
        }
        let all = words(instruction.arguments)
        if all.first?.uppercased() == "NONE" {
            check.test = ["NONE"]
            return check
        }
        guard all.first?.uppercased() == "CMD" else {
            throw BuildError(.instruction, "\(instruction.location): HEALTHCHECK takes NONE or CMD followed by a command")
        }
        switch instruction.arguments {
        case .shell(let line):
            let rest = line.drop { $0 == " " || $0 == "\t" }.dropFirst(3).drop { $0 == " " || $0 == "\t" }
            if rest.hasPrefix("[") {
                let data = Data(rest.utf8)
                guard let array = try? JSONDecoder().decode([String].self, from: data) else {
                    throw BuildError(.instruction, "\(instruction.location): HEALTHCHECK CMD has a malformed JSON array")
                }
                check.test = ["CMD"] + array
            } else {
                check.test = ["CMD-SHELL", String(rest)]
            }
        case .exec(let list):
            check.test = ["CMD"] + list.dropFirst()
        }
        for flag in instruction.flags {
            let value = flag.value ?? ""
            switch flag.name {
            case "interval": check.interval = try duration(value, flag.name, instruction)
            case "timeout": check.timeout = try duration(value, flag.name, instruction)
            case "start-period": check.startPeriod = try duration(value, flag.name, instruction)
            case "start-interval": check.startInterval = try duration(value, flag.name, instruction)
            case "retries":
                guard let retries = Int(value), retries >= 0 else {
                    throw BuildError(.instruction, "\(instruction.location): HEALTHCHECK --retries=\(value) is not a count")
                }
                check.retries = retries
            default:
                throw BuildError(.instruction, "\(instruction.location): HEALTHCHECK does not take --\(flag.name)")
            }
        }
        return check
    }

    /// A Go duration (`30s`, `1m30s`, `500ms`) in nanoseconds.
    func duration(_ text: String, _ name: String, _ instruction: Instruction) throws -> Int64 {
        let units: [(String, Double)] = [("ns", 1), ("us", 1e3), ("µs", 1e3), ("ms", 1e6), ("s", 1e9), ("m", 60e9), ("h", 3600e9)]
        var rest = Substring(text)
        var total = 0.0
        while !rest.isEmpty {
            let number = rest.prefix { $0.isNumber || $0 == "." }
            rest = rest.dropFirst(number.count)
            let unit = rest.prefix { !$0.isNumber && $0 != "." }
            rest = rest.dropFirst(unit.count)
            guard let value = Double(number), let scale = units.first(where: { $0.0 == unit })?.1 else {
                throw BuildError(.instruction, "\(instruction.location): HEALTHCHECK --\(name)=\(text) is not a duration such as 30s or 1m30s")
            }
            total += value * scale
        }
        return Int64(total)
    }
}
