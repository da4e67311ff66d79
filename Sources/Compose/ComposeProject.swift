public import Foundation
public import Reconciler
import Runtime
import Yams

/// A compose file (the Compose Specification's `compose.yaml`) read into
/// service specs, networks and volumes for a `Reconciler` to apply.
///
/// ```swift
/// let project = try ComposeProject.load(path: "compose.yaml")
/// for warning in project.warnings { print("warning:", warning) }
/// try await reconciler.apply(project)
/// ```
///
/// What Gantry cannot honour is an error naming the file, the service and
/// the key (`compose.yaml: service web: ports[1] "8000-8010:80": …`); keys
/// that change nothing essential are accepted with a warning.
public struct ComposeProject: Hashable, Sendable, Codable {
    /// The project's name: the file's `name:`, else its directory's name
    /// (lowercased, reduced to `a-z 0-9 _ -`), else `default`.
    public var name: String
    /// The services, sorted by name.
    public var services: [ServiceSpec]
    /// The declared networks, and `default` when a service joins it, sorted by key.
    public var networks: [ComposeNetwork]
    /// The declared named volumes, sorted by key.
    public var volumes: [ComposeVolume]
    /// Keys that were accepted but change nothing, each naming the file, service and key.
    public var warnings: [String]
    /// When each service's image is pulled (Compose's `pull_policy`), by
    /// service name; a service not listed has ``PullPolicy/missing``.
    public var pullPolicies: [String: PullPolicy]
    /// How the images of services with a `build:` are made, by service name.
    public var builds: [String: ComposeBuild]

    /// A project as given.
    ///
    /// - Parameters:
    ///   - name: the project's name.
    ///   - services: its services.
    ///   - networks: its networks.
    ///   - volumes: its named volumes.
    ///   - warnings: what was accepted but ignored.
    ///   - pullPolicies: when each service's image is pulled, by service name.
    ///   - builds: how services' images are built, by service name.
    public init(name: String, services: [ServiceSpec] = [], networks: [ComposeNetwork] = [], volumes: [ComposeVolume] = [],
                warnings: [String] = [], pullPolicies: [String: PullPolicy] = [:], builds: [String: ComposeBuild] = [:]) {
        self.name = name
        self.services = services
        self.networks = networks
        self.volumes = volumes
        self.warnings = warnings
        self.pullPolicies = pullPolicies
        self.builds = builds
    }

    /// The largest compose file read, in bytes (real ones are a few
    /// kilobytes; the bound keeps a hostile one from exhausting memory).
    public static let maximumFileSize = 4 << 20

    /// Reads a compose file; relative paths in it (binds, `env_file`) are
    /// taken from the file's directory.
    ///
    /// - Parameters:
    ///   - path: the compose file.
    ///   - environment: the variables for interpolation (`${VAR}`) and bare
    ///     `environment` keys, over those of `directory`'s `.env` file.
    ///   - projectName: the project's name, over the file's `name:` and its directory's name.
    ///   - profiles: the active profiles (`*` for all); `COMPOSE_PROFILES` of `environment` (comma-separated) when nil.
    /// - Throws: `ReconcilerError` with code `compose` naming what is wrong.
    public static func load(path: String, environment: [String: String] = ProcessInfo.processInfo.environment,
                            projectName: String? = nil, profiles: [String]? = nil) throws -> ComposeProject {
        let text: String
        do {
            let size = try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int ?? 0
            guard size <= maximumFileSize else {
                throw ReconcilerError(.compose, "\(path): the compose file is \(size) bytes; at most \(maximumFileSize) are read")
            }
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch let error as ReconcilerError {
            throw error
        } catch {
            throw ReconcilerError(.compose, "\(path): cannot read the compose file: \(error.localizedDescription)")
        }
        let directory = (path as NSString).deletingLastPathComponent
        return try parse(text, file: path, directory: directory.isEmpty ? "." : directory, environment: environment, projectName: projectName,
                         profiles: profiles)
    }

    /// The variables of the `.env` file in `directory`, if there is one
    /// (`KEY=VALUE` lines, as an `env_file`).
    static func dotEnvironment(directory: String) throws -> [String: String] {
        let path = (directory as NSString).appendingPathComponent(".env")
        guard let data = FileManager.default.contents(atPath: path) else { return [:] }
        guard data.count <= maximumFileSize, let text = String(data: data, encoding: .utf8) else {
            throw ReconcilerError(.compose, "\(path): not a text file of at most \(maximumFileSize) bytes")
        }
        let variables = try ServiceReader.parseEnvFile(text, environment: [:]) { line, message in
            ReconcilerError(.compose, "\(path): line \(line): \(message)")
        }
        return Dictionary(variables, uniquingKeysWith: { $1 })
    }

    /// Parses the text of a compose file.
    ///
    /// - Parameters:
    ///   - yaml: the file's text.
    ///   - file: the file's name, for messages.
    ///   - directory: the directory relative paths are taken from; its name is the default project name.
    ///   - environment: the variables for interpolation (`${VAR}`) and bare `environment` keys.
    ///   - projectName: the project's name, over the file's `name:` and the directory's name.
    ///   - profiles: the active profiles (`*` for all): a service with
    ///     `profiles:` runs only when one of them is active. `COMPOSE_PROFILES`
    ///     of `environment` (comma-separated) when nil.
    /// - Throws: `ReconcilerError` with code `compose` naming what is wrong.
    public static func parse(_ yaml: String, file: String = "compose.yaml", directory: String = ".", environment: [String: String] = [:],
                             projectName: String? = nil, profiles: [String]? = nil) throws -> ComposeProject {
        guard yaml.utf8.count <= maximumFileSize else {
            throw ReconcilerError(.compose, "\(file): the compose file is \(yaml.utf8.count) bytes; at most \(maximumFileSize) are read")
        }
        let root: Node?
        do {
            root = try Yams.compose(yaml: yaml)
        } catch {
            // The parser quotes the offending line, which a hostile file makes enormous.
            let reason = "\(error)"
            throw ReconcilerError(.compose, "\(file): not valid YAML: \(reason.count > 600 ? reason.prefix(600) + "…" : reason)")
        }
        guard let root else { throw ReconcilerError(.compose, "\(file): the file is empty") }
        // The project directory's .env gives variables the environment does not.
        let environment = try dotEnvironment(directory: directory).merging(environment) { $1 }
        let context = ComposeContext(file: file, environment: environment)
        let top = ComposeValue(node: try ComposeNode(root, file: file, path: "", budget: ComposeNodeBudget()), scope: nil, path: "", context: context)
        guard case .mapping = top.node else { throw ReconcilerError(.compose, "\(file): the file must be a mapping with services:") }
        let fields = try top.fields(["name", "services", "networks", "volumes", "secrets", "configs", "version"], what: "top-level key")
        if let version = fields["version"] { version.warn("obsolete and ignored") }

        let name = try Self.projectName(projectName, declared: fields["name"], directory: directory, file: file)
        var networks: [String: ComposeNetwork] = [:]
        for (key, value) in try fields["networks"]?.mapping() ?? [] {
            networks[key] = try ComposeNetwork(key: key, value.scoped("network \(key)"), project: name)
        }
        var volumes: [String: ComposeVolume] = [:]
        for (key, value) in try fields["volumes"]?.mapping() ?? [] {
            volumes[key] = try ComposeVolume(key: key, value.scoped("volume \(key)"), project: name)
        }

        var secrets: [String: ComposeProvided] = [:]
        for (key, value) in try fields["secrets"]?.mapping() ?? [] {
            secrets[key] = try ComposeProvided(key: key, value.scoped("secret \(key)"), kind: "secret", directory: directory)
        }
        var configs: [String: ComposeProvided] = [:]
        for (key, value) in try fields["configs"]?.mapping() ?? [] {
            configs[key] = try ComposeProvided(key: key, value.scoped("config \(key)"), kind: "config", directory: directory)
        }
        guard let servicesValue = fields["services"], !servicesValue.isNull else {
            throw ReconcilerError(.compose, "\(file): services: is missing")
        }
        let active = profiles ?? (environment["COMPOSE_PROFILES"] ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        let reader = ServiceReader(project: name, directory: directory, networks: networks, volumes: volumes, secrets: secrets, configs: configs,
                                   profiles: Set(active.filter { !$0.isEmpty }))
        var services: [ServiceSpec] = []
        var leftOut: Set<String> = []
        var usesDefaultNetwork = false
        var links: [(from: String, link: ServiceReader.Link)] = []
        var pullPolicies: [String: PullPolicy] = [:]
        var builds: [String: ComposeBuild] = [:]
        // Each service with what it extends merged in.
        let listed = try servicesValue.mapping().map { (key: $0.key, value: $0.value.node) }
        let extended = try ComposeExtends(file: file, directory: directory, budget: ComposeNodeBudget()).resolve(listed)
        let resolved = ComposeValue(node: .mapping(extended), scope: servicesValue.scope, path: servicesValue.path, context: servicesValue.context)
        for (key, value) in try resolved.mapping() {
            let service = value.scoped("service \(key)")
            guard let read = try reader.read(name: key, service) else {
                leftOut.insert(key)
                continue
            }
            services.append(read.spec)
            usesDefaultNetwork = usesDefaultNetwork || read.usesDefaultNetwork
            links += read.links.map { (key, $0) }
            if read.pullPolicy != .missing { pullPolicies[key] = read.pullPolicy }
            if let build = read.build { builds[key] = build }
        }
        // A link makes the linked service answer to its alias on the network
        // the two share, as Docker's links did.
        for (from, link) in links {
            guard let target = services.firstIndex(where: { $0.name == link.service }) else {
                throw link.at.error("links to service \(link.service), which \(leftOut.contains(link.service) ? "is left out (profiles)" : "does not exist")")
            }
            guard let source = services.first(where: { $0.name == from }), source.template.network == services[target].template.network,
                  case .bridge = source.template.network else {
                throw link.at.error("links to service \(link.service), which is not on the same network")
            }
            if link.alias != link.service, !services[target].template.networkAliases.contains(link.alias) {
                services[target].template.networkAliases.append(link.alias)
            }
        }
        try Self.checkDependencies(services, leftOut: leftOut, file: file)
        // Anonymous volumes: the volumes services mount that none declares.
        let declared = Set(volumes.values.map(\.name))
        for service in services {
            for case .volume(let volume, _, _) in service.template.mounts + service.initContainers.flatMap(\.mounts) where !declared.contains(volume) {
                volumes[volume] = ComposeVolume(key: volume, name: volume)
            }
        }
        if usesDefaultNetwork, networks["default"] == nil {
            networks["default"] = ComposeNetwork(key: "default", name: "\(name)_default")
        }
        return ComposeProject(name: name, services: services.sorted { $0.name < $1.name }, networks: networks.values.sorted { $0.key < $1.key },
                              volumes: volumes.values.sorted { $0.key < $1.key }, warnings: context.warnings, pullPolicies: pullPolicies,
                              builds: builds)
    }

    /// The given name, the file's `name:`, or the directory's name made fit.
    private static func projectName(_ given: String?, declared: ComposeValue?, directory: String, file: String) throws -> String {
        func check(_ name: String, _ source: String) throws -> String {
            let allowed = name.allSatisfy { $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "_" || $0 == "-") }
            guard allowed, let first = name.first, first.isLetter || first.isNumber, name.count <= 63 else {
                throw ReconcilerError(.compose, "\(file): \(source) \"\(name)\" is not a project name: use up to 63 of a-z 0-9 _ -, starting with a letter or digit")
            }
            return name
        }
        if let given { return try check(given, "the project name") }
        if let declared, let name = try declared.optionalString() { return try check(name, "name:") }
        let base = (ComposeSyntax.absolutePath(".", relativeTo: directory) as NSString).lastPathComponent.lowercased()
        let kept = base.filter { $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "_" || $0 == "-") }
        let name = String(kept.drop { !($0.isLetter || $0.isNumber) }.prefix(63))
        return name.isEmpty ? ServiceSpec.defaultProject : name
    }

    /// Every dependency names a service of the file, and none go round in a circle.
    private static func checkDependencies(_ services: [ServiceSpec], leftOut: Set<String>, file: String) throws {
        let byName = Dictionary(services.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        for service in services {
            for dependency in service.dependsOn where byName[dependency.service] == nil {
                let why = leftOut.contains(dependency.service) ? "which has profiles and is left out" : "which is not a service of the file"
                let key = service.networkService == dependency.service ? "network_mode: service:" : "depends_on "
                throw ReconcilerError(.compose, "\(file): service \(service.name): \(key)\(dependency.service), \(why)")
            }
        }
        var finished: Set<String> = []
        func visit(_ name: String, _ trail: [String]) throws {
            if finished.contains(name) { return }
            if let start = trail.firstIndex(of: name) {
                throw ReconcilerError(.compose, "\(file): depends_on goes round in a circle: \((trail[start...] + [name]).joined(separator: " → "))")
            }
            for dependency in byName[name]?.dependsOn ?? [] { try visit(dependency.service, trail + [name]) }
            finished.insert(name)
        }
        for service in services { try visit(service.name, []) }
    }
}

/// A network of a compose project.
public struct ComposeNetwork: Hashable, Sendable, Codable {
    /// Its key in the file (`default` for the implicit one).
    public var key: String
    /// The runtime network's name: `<project>_<key>`, unless the file names it or it is external.
    public var name: String
    /// Whether it exists already and is not created or removed with the project.
    public var external: Bool
    /// Whether it has no route out.
    public var `internal`: Bool
    /// Its IPv4 subnet (`10.89.0.0/24`); one is chosen when nil.
    public var subnet: String?
    /// Labels put on the network.
    public var labels: [String: String]

    /// A network as given.
    ///
    /// - Parameters:
    ///   - key: its key in the file.
    ///   - name: the runtime network's name.
    ///   - external: whether it exists outside the project.
    ///   - internal: whether it has no route out.
    ///   - subnet: its IPv4 subnet, or nil.
    ///   - labels: labels put on it.
    public init(key: String, name: String, external: Bool = false, internal: Bool = false, subnet: String? = nil, labels: [String: String] = [:]) {
        self.key = key
        self.name = name
        self.external = external
        self.internal = `internal`
        self.subnet = subnet
        self.labels = labels
    }

    init(key: String, _ value: ComposeValue, project: String) throws {
        self.init(key: key, name: "\(project)_\(key)")
        let fields = try value.fields(["name", "external", "internal", "driver", "driver_opts", "ipam", "labels", "attachable", "enable_ipv6"])
        (name, external) = try ComposeResource.name(key: key, project: project, fields)
        if external, let extra = ["internal", "driver", "driver_opts", "ipam", "labels"].first(where: { fields[$0] != nil }) {
            throw fields[extra, default: value].keyError("an external network is made elsewhere; only name: goes with external: true")
        }
        self.internal = try fields["internal"]?.bool() ?? false
        if let driver = fields["driver"], try driver.string() != "bridge" { throw driver.error("Gantry networks are bridges; use driver: bridge or leave it out") }
        if let options = fields["driver_opts"] { throw options.keyError("driver options are not supported") }
        if let attachable = fields["attachable"] { attachable.warn("ignored; Gantry networks take any container") }
        if let ipv6 = fields["enable_ipv6"], try ipv6.bool() { throw ipv6.error("IPv6 networks are not supported") }
        labels = try ComposeLabels.read(fields["labels"])
        if let ipam = fields["ipam"] {
            let ipamFields = try ipam.fields(["driver", "config", "options"])
            if let driver = ipamFields["driver"], try driver.string() != "default" { throw driver.error("only the default address allocator is supported") }
            if let options = ipamFields["options"] { throw options.keyError("address allocator options are not supported") }
            let configs = try ipamFields["config"]?.sequence() ?? []
            if configs.count > 1 { throw ipamFields["config", default: ipam].keyError("a Gantry network has one subnet; list one") }
            if let config = configs.first {
                let configFields = try config.fields(["subnet", "gateway", "ip_range", "aux_addresses"])
                if let text = try configFields["subnet"]?.optionalString() {
                    guard IPv4Subnet(text) != nil else { throw configFields["subnet", default: config].error("is not an IPv4 subnet such as 10.89.0.0/24") }
                    subnet = text
                }
                for key in ["gateway", "ip_range", "aux_addresses"] {
                    configFields[key]?.warn("ignored; Gantry takes the subnet's first address as the gateway and hands out the rest")
                }
            }
        }
    }
}

/// A named volume of a compose project.
public struct ComposeVolume: Hashable, Sendable, Codable {
    /// Its key in the file.
    public var key: String
    /// The runtime volume's name: `<project>_<key>`, unless the file names it or it is external.
    public var name: String
    /// Whether it exists already and is not created or removed with the project.
    public var external: Bool
    /// Labels put on the volume.
    public var labels: [String: String]

    /// A volume as given.
    ///
    /// - Parameters:
    ///   - key: its key in the file.
    ///   - name: the runtime volume's name.
    ///   - external: whether it exists outside the project.
    ///   - labels: labels put on it.
    public init(key: String, name: String, external: Bool = false, labels: [String: String] = [:]) {
        self.key = key
        self.name = name
        self.external = external
        self.labels = labels
    }

    init(key: String, _ value: ComposeValue, project: String) throws {
        self.init(key: key, name: "\(project)_\(key)")
        let fields = try value.fields(["name", "external", "driver", "driver_opts", "labels"])
        (name, external) = try ComposeResource.name(key: key, project: project, fields)
        if external, let extra = ["driver", "driver_opts", "labels"].first(where: { fields[$0] != nil }) {
            throw fields[extra, default: value].keyError("an external volume is made elsewhere; only name: goes with external: true")
        }
        if let driver = fields["driver"], try driver.string() != "local" { throw driver.error("Gantry volumes are local directories; use driver: local or leave it out") }
        if let options = fields["driver_opts"] { throw options.keyError("volume driver options are not supported") }
        labels = try ComposeLabels.read(fields["labels"])
    }
}

/// What networks and volumes share.
enum ComposeResource {
    /// The runtime name and whether it is external: `name:`, else the key
    /// for an external one (or the legacy `external: {name: …}`), else
    /// `<project>_<key>`.
    static func name(key: String, project: String, _ fields: [String: ComposeValue]) throws -> (name: String, external: Bool) {
        var external = false
        var legacyName: String?
        if let flag = fields["external"] {
            if case .mapping = flag.node {
                external = true
                legacyName = try flag.fields(["name"])["name"]?.string()
            } else {
                external = try flag.bool()
            }
        }
        if let declared = try fields["name"]?.optionalString() { return (declared, external) }
        return (external ? legacyName ?? key : "\(project)_\(key)", external)
    }
}

/// Labels as a mapping or a list of `KEY=VALUE`.
enum ComposeLabels {
    static func read(_ value: ComposeValue?) throws -> [String: String] {
        var labels: [String: String] = [:]
        for (key, text, _) in try value?.keyValues() ?? [] { labels[key] = text ?? "" }
        return labels
    }
}

/// When a compose service's image is pulled from its registry (Compose's
/// `pull_policy`), as the project is applied.
public enum PullPolicy: String, Hashable, Sendable, Codable, CaseIterable {
    /// Only when the image store does not have it (`missing`,
    /// `if_not_present`; the default, as `docker compose up` does).
    case missing
    /// Every time the project is applied, so that a moved tag is followed.
    case always
    /// Never: an image the store lacks is an error naming the service.
    case never
    /// Built with the service's `build:` every time the project is applied.
    case build
}
