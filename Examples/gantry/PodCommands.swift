import ArgumentParser
import Foundation
import Gantry

/// What `pod inspect` and `pod ls --format json` print.
struct PodSummary: Encodable {
    var id: String
    var name: String
    var network: String
    var ipAddress: String?
    var ports: [String]
    var shares: [String]
    var createdAt: String?
    var labels: [String: String]
    var containers: [String]

    init(_ record: PodRecord, containers: [String]) {
        id = record.id
        name = record.name
        network = record.spec.network.description
        ipAddress = record.network?.address.description
        ports = record.network?.ports.map(\.description) ?? []
        shares = ["net"] + (record.spec.sharesIPC ? ["ipc"] : []) + (record.spec.sharesUTS ? ["uts"] : [])
        createdAt = formatTime(record.createdAt)
        labels = record.spec.labels
        self.containers = containers
    }
}

struct PodCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pod", abstract: "Create, list, inspect and remove pods: containers that share a network namespace.",
        subcommands: [Create.self, List.self, Inspect.self, Remove.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a pod; run containers in it with run --pod.")
        @Argument(help: "The pod's name (also its members' host name).") var name: String
        @Option(help: ArgumentHelp("none (loopback only; the default without -p), bridge or a network's name.", valueName: "network")) var network: String = "none"
        @Option(name: .shortAndLong, help: ArgumentHelp("Publish a port of the pod: [IP:]HOST:CONTAINER[/udp].", valueName: "port")) var publish: [String] = []
        @Option(name: .customLong("net-alias"), help: ArgumentHelp("Another name the pod answers to on its network.", valueName: "name")) var netAliases: [String] = []
        @Option(help: ArgumentHelp("Namespaces shared besides the network: ipc, uts, both (the default: ipc,uts) or none.", valueName: "list")) var share: String = "ipc,uts"
        @Option(help: ArgumentHelp("The members' host name (default: the pod's name).", valueName: "name")) var hostname: String?
        @Option(name: .customLong("label"), help: ArgumentHelp("Set a label.", valueName: "key=value")) var labels: [String] = []
        @OptionGroup var global: GlobalOptions

        func run() async throws {
            let shared = Set(share.split(separator: ",").map(String.init))
            guard shared.isSubset(of: ["ipc", "uts", "net", "none"]) else { throw ValidationError("--share \(share): expected ipc, uts or none") }
            var mode = parseNetworkMode(network)
            if !publish.isEmpty, network == "none" { mode = .bridge(Networks.defaultName) }
            let spec = PodSpec(name: name, network: mode, publishing: try publish.map { try PublishedPort(parsing: $0) }, aliases: netAliases,
                               sharesIPC: shared.contains("ipc"), sharesUTS: shared.contains("uts"), hostname: hostname, labels: try parseLabels(labels))
            print(try await global.openGantry().containers.pods.create(spec).id)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List pods.")
        @OptionGroup var global: GlobalOptions
        @OptionGroup var output: FormatOption

        func run() async throws {
            let pods = try await global.openGantry().containers.pods
            let summaries = try pods.list().map { PodSummary($0, containers: try pods.containers(in: $0.name)) }
            switch output.format {
            case .json: try Terminal.printJSON(summaries)
            case .table:
                Terminal.printTable(["ID", "NAME", "NETWORK", "ADDRESS", "PORTS", "CONTAINERS"], summaries.map { pod in
                    [String(pod.id.prefix(12)), pod.name, pod.network, pod.ipAddress ?? "", pod.ports.joined(separator: ","), "\(pod.containers.count)"]
                })
            }
        }
    }

    struct Inspect: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show pods: address, ports, shared namespaces, containers.")
        @Argument(help: "The pods' names.") var names: [String]
        @OptionGroup var global: GlobalOptions
        @Option(name: .long, help: "Output format: json.") var format: String = "json"

        func run() async throws {
            let pods = try await global.openGantry().containers.pods
            try Terminal.printJSON(try names.map { PodSummary(try pods.pod($0), containers: try pods.containers(in: $0)) })
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "rm", abstract: "Remove pods.")
        @Argument(help: "The pods' names.") var names: [String]
        @Flag(name: .shortAndLong, help: "Remove their containers too, stopping running ones.") var force = false
        @OptionGroup var global: GlobalOptions

        func run() async throws {
            let runtime = try await global.openGantry().containers
            for name in names {
                if force {
                    for member in try runtime.pods.containers(in: name) { try await runtime.container(member).remove(force: true) }
                }
                try await runtime.pods.remove(name)
                print(name)
            }
        }
    }
}
