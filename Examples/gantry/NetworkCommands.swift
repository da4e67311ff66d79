import ArgumentParser
import Foundation
import Gantry

/// The network mode `--network` names: `none`, `host`, `bridge` (the
/// default network), `container:NAME` or a network's name.
func parseNetworkMode(_ text: String) -> ContainerSpec.NetworkMode {
    switch text {
    case "none": .none
    case "host": .host
    case "bridge", "default": .bridge(Networks.defaultName)
    case _ where text.hasPrefix("container:") && text.count > 10: .container(String(text.dropFirst(10)))
    default: .bridge(text)
    }
}

/// What `network inspect` and `network ls --format json` print.
struct NetworkSummary: Encodable {
    struct Member: Encodable {
        var id: String
        var name: String
        var address: String
    }

    var id: String
    var name: String
    var bridge: String
    var subnet: String
    var gateway: String
    var `internal`: Bool
    var createdAt: String?
    var labels: [String: String]
    var containers: [Member]

    init(_ record: NetworkRecord, members: [(containerID: String, name: String, address: IPv4Address)]) {
        id = record.id
        name = record.name
        bridge = record.bridge
        subnet = record.subnet.description
        gateway = record.gateway.description
        self.internal = record.internal
        createdAt = formatTime(record.createdAt)
        labels = record.labels
        containers = members.map { Member(id: $0.containerID, name: $0.name, address: $0.address.description) }
    }
}

struct NetworkCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "network", abstract: "Create, list, inspect and remove bridge networks.",
        subcommands: [Create.self, List.self, Inspect.self, Remove.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a bridge network.")
        @Argument(help: "The network's name.") var name: String
        @Option(help: ArgumentHelp("Its addresses in CIDR form (default: a free /24 of 10.88.0.0/14).", valueName: "cidr")) var subnet: String?
        @Flag(help: "Cut its containers off from everything but each other.") var `internal` = false
        @Option(name: .customLong("label"), help: ArgumentHelp("Set a label.", valueName: "key=value")) var labels: [String] = []
        @OptionGroup var global: GlobalOptions

        func run() async throws {
            let parsed = try subnet.map { text in
                guard let subnet = IPv4Subnet(text) else { throw ValidationError("--subnet \(text) is not an IPv4 subnet such as 10.90.0.0/24") }
                return subnet
            }
            let record = try await global.openGantry().containers.networks.create(name, subnet: parsed, internal: `internal`, labels: try parseLabels(labels))
            print(record.id)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List networks.")
        @OptionGroup var global: GlobalOptions
        @OptionGroup var output: FormatOption

        func run() async throws {
            let networks = try await global.openGantry().containers.networks
            let records = try networks.list()
            for damaged in networks.damaged() {
                Terminal.printWarning("network \(damaged.name) is not listed: its record \(damaged.file) cannot be read (\(damaged.reason)); \(damaged.advice(kind: "network"))")
            }
            switch output.format {
            case .json: try Terminal.printJSON(try records.map { NetworkSummary($0, members: try networks.members(of: $0.name)) })
            case .table:
                Terminal.printTable(["ID", "NAME", "SUBNET", "BRIDGE", "INTERNAL", "CONTAINERS"], try records.map { record in
                    [record.shortID, record.name, record.subnet.description, record.bridge, record.internal ? "yes" : "no",
                     "\(try networks.members(of: record.name).count)"]
                })
            }
        }
    }

    struct Inspect: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a network, with its containers and their addresses.")
        @Argument(help: "The network's name.") var names: [String]
        @OptionGroup var global: GlobalOptions
        @Option(name: .long, help: "Output format: json.") var format: String = "json"

        func run() async throws {
            let networks = try await global.openGantry().containers.networks
            try Terminal.printJSON(try names.map { NetworkSummary(try networks.network($0), members: try networks.members(of: $0)) })
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "rm", abstract: "Remove networks that no container uses.")
        @Argument(help: "The networks' names.") var names: [String]
        @Flag(name: .shortAndLong, help: "Also remove networks whose record cannot be read, with their bridges and rules.") var force = false
        @OptionGroup var global: GlobalOptions

        func run() async throws {
            let networks = try await global.openGantry().containers.networks
            for name in names {
                if force, networks.damaged().contains(where: { $0.name == name }) {
                    try networks.removeDamaged(name)
                } else {
                    try await networks.remove(name)
                }
                print(name)
            }
        }
    }
}
