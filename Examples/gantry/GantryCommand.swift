import ArgumentParser
import Build
import Foundation
import Gantry
import Logging

@main
struct GantryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gantry",
        abstract: "Pull, build, unpack and run OCI images natively, without a daemon.",
        subcommands: [
            Run.self, PS.self, Inspect.self, Logs.self, Exec.self, Copy.self, Stop.self, Kill.self, Remove.self, Stats.self, Pause.self, Unpause.self,
            NetworkCommand.self, VolumeCommand.self, PodCommand.self, ImageCommand.self, BuildImage.self, Login.self, Logout.self,
            Up.self, Down.self, ComposeCommand.self, KubeCommand.self, ServiceCommand.self, Events.self, JobCommand.self, CronCommand.self, Check.self, Demo.self,
        ]
    )

    /// Parses the command line and runs the command, printing errors from
    /// Gantry as one line and exiting non-zero.
    static func main() async {
        var command: any ParsableCommand
        do {
            command = try parseAsRoot(hoistingGlobalOptions(Array(CommandLine.arguments.dropFirst())))
        } catch {
            exit(withError: error)
        }
        do {
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
            // Removed containers' files, deleted in the background.
            await ContainerRuntime.settle()
        } catch let error as OCIImageError {
            Terminal.printError(error.description)
            _exit(1)
        } catch let error as RuntimeError {
            Terminal.printError(error.description)
            _exit(1)
        } catch let error as ReconcilerError {
            Terminal.printError(error.description)
            _exit(1)
        } catch let error as BuildError {
            Terminal.printError(error.description)
            _exit(1)
        } catch let error as ValidationError {
            // The command line was right; what it asked for cannot be done:
            // the reason alone, without the usage.
            Terminal.printError(error.message)
            _exit(64)
        } catch {
            exit(withError: error)
        }
    }
}

/// Moves global options written before the subcommand (`gantry --root DIR
/// image ls`) behind it, where the argument parser looks for them.
func hoistingGlobalOptions(_ arguments: [String]) -> [String] {
    var leading: [String] = []
    var rest = arguments[...]
    while let first = rest.first, first.hasPrefix("-") {
        if first == "--root", rest.count >= 2 {
            leading.append(contentsOf: rest.prefix(2))
            rest = rest.dropFirst(2)
        } else if first.hasPrefix("--root=") || first == "--debug" || first == "--ignore-unenforceable-limits" {
            leading.append(first)
            rest = rest.dropFirst()
        } else {
            break
        }
    }
    guard !leading.isEmpty else { return arguments }
    // Right after the (sub)command's name: later, they could be taken for
    // the arguments of the command a container runs.
    let groups: Set<String> = ["image", "network", "volume", "pod", "service", "rollout", "job", "cron"]
    var path = 0
    while path < rest.count, !rest[rest.startIndex + path].hasPrefix("-") {
        path += 1
        if !groups.contains(rest[rest.startIndex + path - 1]) { break }
    }
    return Array(rest.prefix(path)) + leading + Array(rest.dropFirst(path))
}

/// Options every command that touches the state root accepts.
struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The state root.", discussion: "Defaults to $GANTRY_ROOT, else /var/lib/gantry for root, else $XDG_DATA_HOME/gantry.", valueName: "dir"))
    var root: String?

    @Flag(name: .long, help: "Log debug messages to standard error.")
    var debug = false

    @Flag(name: .long, help: ArgumentHelp("Run containers that ask for resource limits without them where none can be enforced (an ordinary user without a delegated cgroup), instead of refusing them."))
    var ignoreUnenforceableLimits = false

    var stateRoot: StateRoot {
        if let root { return StateRoot(root) }
        if let root = ProcessInfo.processInfo.environment["GANTRY_ROOT"], !root.isEmpty { return StateRoot(root) }
        return .default
    }

    var logger: Logger {
        var logger = Logger(label: "gantry") { label in StreamLogHandler.standardError(label: label) }
        logger.logLevel = debug ? .debug : .warning
        return logger
    }

    func openGantry(registry: RegistryFlags? = nil, insecure registries: [String] = []) async throws -> Gantry {
        let client = try registry?.client(insecure: registries, logger: logger)
        let parent = ProcessInfo.processInfo.environment["GANTRY_CGROUP_PARENT"].flatMap { $0.isEmpty ? nil : $0 } ?? "gantry"
        return try Gantry(root: stateRoot, registry: client, cgroupParent: parent, leftovers: .recover,
                          runWithoutUnenforceableLimits: ignoreUnenforceableLimits, logger: logger)
    }
}

/// `--format table|json`.
enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case table
    case json
}

struct FormatOption: ParsableArguments {
    @Option(name: .long, help: "Output format: table or json.")
    var format: OutputFormat = .table
}

/// Options of commands that talk to registries.
struct RegistryFlags: ParsableArguments {
    @Flag(help: "Reach the registry over plain HTTP (loopback registries always are).")
    var insecure = false

    @Option(name: .customLong("ca-file"), help: ArgumentHelp("PEM certificate authorities to trust besides the system's.", valueName: "file"))
    var certificateAuthority: String?

    @Option(name: .customLong("auth-file"), help: ArgumentHelp("The credentials file (default: $GANTRY_AUTH_FILE or ~/.config/gantry/auth.json, then ~/.docker/config.json).", valueName: "file"))
    var authFile: String?

    @Option(name: .customLong("chunk-size"), help: ArgumentHelp("Upload blobs in chunks of this many bytes instead of one request each.", valueName: "bytes"))
    var chunkSize: Int?

    var credentials: any CredentialProvider {
        authFile.map { AuthFile(path: $0) } ?? CredentialChain.standard
    }

    var authFileForWriting: AuthFile {
        authFile.map { AuthFile(path: $0) } ?? .default
    }

    /// A client for these flags; `insecure` names the registries that
    /// `--insecure` applies to.
    func client(insecure registries: [String], logger: Logger) throws -> RegistryClient {
        let options = RegistryOptions(
            insecureRegistries: insecure ? Set(registries) : [], certificateAuthority: certificateAuthority, uploadChunkSize: chunkSize)
        return try RegistryClient(options: options, credentials: credentials, logger: logger)
    }
}
