import ArgumentParser
import Foundation
import Gantry

/// Docker's `-v`: `/host:/container[:OPTIONS]` binds a host path,
/// `NAME:/container[:OPTIONS]` mounts a named volume; OPTIONS is a comma
/// list of `ro`, `rw` and a propagation (`rprivate`, `rslave`, …), read as
/// compose files' short syntax is.
func parseVolumeOption(_ item: String) throws -> ContainerSpec.Mount {
    let syntax: ContainerSpec.VolumeSyntax
    do {
        syntax = try ContainerSpec.VolumeSyntax(parsing: item)
    } catch let error as RuntimeError {
        throw ValidationError("-v \(item): \(error.message)")
    }
    for option in syntax.ignoredOptions {
        FileHandle.standardError.write(Data("gantry: -v \(item): the option \(option) is ignored\n".utf8))
    }
    if syntax.source.hasPrefix("/") {
        return .bind(source: syntax.source, target: syntax.target, readOnly: syntax.readOnly, propagation: syntax.propagation)
    }
    guard !syntax.isHostPath else { throw ValidationError("-v \(item): a host path must be absolute") }
    return .volume(name: syntax.source, target: syntax.target, readOnly: syntax.readOnly)
}

/// Docker's `--mount type=bind|volume|tmpfs,source=…,target=…[,readonly]
/// [,bind-propagation=…][,tmpfs-size=…][,tmpfs-mode=…]`.
func parseMountOption(_ item: String) throws -> ContainerSpec.Mount {
    var fields: [String: String] = [:]
    var readOnly = false
    for field in item.split(separator: ",").map(String.init) {
        let pair = field.split(separator: "=", maxSplits: 1).map(String.init)
        switch pair[0] {
        case "readonly", "ro": readOnly = pair.count == 1 || pair[1] == "true" || pair[1] == "1"
        case "type", "source", "src", "target", "destination", "dst", "bind-propagation", "tmpfs-size", "tmpfs-mode":
            guard pair.count == 2 else { throw ValidationError("--mount \(item): \(pair[0]) needs a value") }
            let key = ["src": "source", "destination": "target", "dst": "target"][pair[0]] ?? pair[0]
            fields[key] = pair[1]
        default: throw ValidationError("--mount \(item): unknown field \(pair[0])")
        }
    }
    guard let target = fields["target"], target.hasPrefix("/") else { throw ValidationError("--mount \(item) needs target=/path") }
    switch fields["type"] ?? "volume" {
    case "bind":
        guard let source = fields["source"], source.hasPrefix("/") else { throw ValidationError("--mount \(item) needs source=/host/path") }
        let propagation = try fields["bind-propagation"].map { text in
            guard let value = ContainerSpec.MountPropagation(rawValue: text) else {
                throw ValidationError("--mount \(item): bind-propagation \(text) is not private, rprivate, slave or rslave")
            }
            return value
        }
        return .bind(source: source, target: target, readOnly: readOnly, propagation: propagation)
    case "volume":
        guard let source = fields["source"] else { throw ValidationError("--mount \(item) needs source=VOLUME") }
        return .volume(name: source, target: target, readOnly: readOnly)
    case "tmpfs":
        let mode: UInt32 = try fields["tmpfs-mode"].map { text -> UInt32 in
            guard let mode = UInt32(text, radix: 8) else { throw ValidationError("--mount \(item): tmpfs-mode \(text) is not octal") }
            return mode
        } ?? 0o1777
        return .tmpfs(target: target, size: try fields["tmpfs-size"].map(parseSize), mode: mode)
    case let other:
        throw ValidationError("--mount \(item): type \(other) is not bind, volume or tmpfs")
    }
}

/// What `volume inspect` and `volume ls --format json` print.
struct VolumeSummary: Encodable {
    var name: String
    var mountpoint: String
    var createdAt: String?
    var labels: [String: String]
    var containers: [String]

    init(_ record: VolumeRecord, containers: [String]) {
        name = record.name
        mountpoint = record.mountpoint
        createdAt = formatTime(record.createdAt)
        labels = record.labels
        self.containers = containers
    }
}

struct VolumeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "volume", abstract: "Create, list, inspect and remove named volumes.",
        subcommands: [Create.self, List.self, Inspect.self, Remove.self, Prune.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a named volume.")
        @Argument(help: "The volume's name (default: a random one).") var name: String?
        @Option(name: .customLong("label"), help: ArgumentHelp("Set a label.", valueName: "key=value")) var labels: [String] = []
        @OptionGroup var global: GlobalOptions

        func run() async throws {
            print(try await global.openGantry().containers.volumes.create(name, labels: try parseLabels(labels)).name)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List volumes.")
        @Flag(name: .shortAndLong, help: "Print names only.") var quiet = false
        @OptionGroup var global: GlobalOptions
        @OptionGroup var output: FormatOption

        func run() async throws {
            let volumes = try await global.openGantry().containers.volumes
            let records = try volumes.list()
            for damaged in volumes.damaged() {
                Terminal.printWarning("volume \(damaged.name) is not listed: its record \(damaged.file) cannot be read (\(damaged.reason)); \(damaged.advice(kind: "volume"))")
            }
            if quiet { return records.forEach { print($0.name) } }
            switch output.format {
            case .json: try Terminal.printJSON(try records.map { VolumeSummary($0, containers: try volumes.containers(using: $0.name)) })
            case .table:
                Terminal.printTable(["NAME", "CONTAINERS", "CREATED"], try records.map { record in
                    [record.name, try volumes.containers(using: record.name).joined(separator: ","), formatTime(record.createdAt) ?? ""]
                })
            }
        }
    }

    struct Inspect: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show volumes: mount point, labels, the containers using them.")
        @Argument(help: "The volumes' names.") var names: [String]
        @OptionGroup var global: GlobalOptions
        @Option(name: .long, help: "Output format: json.") var format: String = "json"

        func run() async throws {
            let volumes = try await global.openGantry().containers.volumes
            try Terminal.printJSON(try names.map { VolumeSummary(try volumes.volume($0), containers: try volumes.containers(using: $0)) })
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "rm", abstract: "Remove volumes and their data.")
        @Argument(help: "The volumes' names.") var names: [String]
        @Flag(name: .shortAndLong, help: "Also remove the stopped containers that use them, and volumes whose record cannot be read.") var force = false
        @OptionGroup var global: GlobalOptions

        func run() async throws {
            let runtime = try await global.openGantry().containers
            for name in names {
                if force {
                    for user in try runtime.volumes.containers(using: name) {
                        let container = try runtime.container(user)
                        guard try container.record.status != .running && container.record.status != .paused else {
                            throw ValidationError("volume \(name) is in use by running container \(user)")
                        }
                        try await container.remove()
                    }
                }
                if force, runtime.volumes.damaged().contains(where: { $0.name == name }) {
                    try runtime.volumes.removeDamaged(name)
                } else {
                    try await runtime.volumes.remove(name)
                }
                print(name)
            }
        }
    }

    struct Prune: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove every volume no container uses.")
        @OptionGroup var global: GlobalOptions

        func run() async throws {
            for name in try await global.openGantry().containers.volumes.prune() { print(name) }
        }
    }
}
