import ArgumentParser
import Foundation
import Gantry

extension ImageCommand {
    struct Pull: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Pull an image from a registry.")

        @Argument(help: ArgumentHelp("The image: registry/repository[:tag][@digest].", valueName: "reference"))
        var reference: String

        @Option(help: ArgumentHelp("The platform to pull from a multi-platform image (default: this host's).", valueName: "os/arch[/variant]"))
        var platform: String?

        @OptionGroup var registry: RegistryFlags
        @OptionGroup var global: GlobalOptions
        @OptionGroup var output: FormatOption

        func run() async throws {
            let parsed = try ImageReference(parsing: reference)
            let gantry = try await global.openGantry(registry: registry, insecure: [parsed.registry])
            let progress = ProgressLine(enabled: output.format == .table)
            defer { progress.finish() }
            let report = try await gantry.images.pull(reference, platform: try platform.map(Platform.init(parsing:)), progress: progress.handler)
            progress.finish()
            switch output.format {
            case .json: try Terminal.printJSON(report)
            case .table:
                print("Pulled \(report.reference.familiarDescription) (\(report.downloaded) blobs, \(Terminal.bytes(report.bytes)); \(report.present) already here)")
                print("Digest: \(report.digest)")
            }
        }
    }

    struct Push: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Push a local image to a registry.")

        @Argument(help: "The local image's name or digest.") var image: String
        @Argument(help: ArgumentHelp("Where to push: registry/repository[:tag].", valueName: "reference")) var destination: String

        @OptionGroup var registry: RegistryFlags
        @OptionGroup var global: GlobalOptions
        @OptionGroup var output: FormatOption

        func run() async throws {
            let parsed = try ImageReference(parsing: destination)
            let gantry = try await global.openGantry(registry: registry, insecure: [parsed.registry])
            let progress = ProgressLine(enabled: output.format == .table)
            defer { progress.finish() }
            let report = try await gantry.images.push(image, to: destination, progress: progress.handler)
            progress.finish()
            switch output.format {
            case .json: try Terminal.printJSON(report)
            case .table:
                let counts = Dictionary(grouping: report.blobs.values, by: { $0 }).mapValues(\.count)
                let summary = [BlobPushOutcome.uploaded, .mounted, .existed].compactMap { outcome in counts[outcome].map { "\($0) \(outcome.rawValue)" } }
                print("Pushed \(report.reference.familiarDescription) (\(summary.joined(separator: ", ")); \(Terminal.bytes(report.bytes)) sent)")
                print("Digest: \(report.digest)")
            }
        }
    }

    struct Tags: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the tags of a repository in a registry.")

        @Argument(help: ArgumentHelp("The repository: registry/repository.", valueName: "repository")) var repository: String

        @OptionGroup var registry: RegistryFlags
        @OptionGroup var global: GlobalOptions
        @OptionGroup var output: FormatOption

        func run() async throws {
            let parsed = try ImageReference(parsing: repository)
            let gantry = try await global.openGantry(registry: registry, insecure: [parsed.registry])
            let tags = try await gantry.images.tags(repository)
            switch output.format {
            case .json: try Terminal.printJSON(tags)
            case .table: tags.forEach { print($0) }
            }
        }
    }
}

struct Login: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Check credentials with a registry and store them (mode 0600).")

    @Argument(help: ArgumentHelp("The registry: host[:port].", valueName: "registry")) var server: String

    @Option(name: .shortAndLong, help: "The user name.") var username: String

    @Flag(help: "Read the password (or token) from standard input.") var passwordStdin = false

    @OptionGroup var registry: RegistryFlags
    @OptionGroup var global: GlobalOptions

    func run() async throws {
        guard passwordStdin else {
            throw ValidationError("pass the password on standard input with --password-stdin")
        }
        var password = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
        while password.hasSuffix("\n") || password.hasSuffix("\r") { password.removeLast() }
        guard !password.isEmpty else { throw ValidationError("the password on standard input is empty") }
        let host = AuthFile.key(for: server) == "https://index.docker.io/v1/" ? ImageReference.defaultRegistry : AuthFile.key(for: server)
        let credential = RegistryCredential.basic(username: username, password: password)
        let client = try registry.client(insecure: [host], logger: global.logger)
        try await client.login(registry: host, credential: credential)
        let file = registry.authFileForWriting
        try file.store(credential, for: host)
        print("Login succeeded; credentials for \(host) stored in \(file.path)")
    }
}

struct Logout: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Remove stored credentials for a registry.")

    @Argument(help: ArgumentHelp("The registry: host[:port].", valueName: "registry")) var server: String

    @OptionGroup var registry: RegistryFlags
    @OptionGroup var global: GlobalOptions

    func run() async throws {
        let file = registry.authFileForWriting
        if try file.store(nil, for: server) {
            print("Removed the credentials for \(server) from \(file.path)")
        } else {
            throw ValidationError("no credentials for \(server) in \(file.path)")
        }
    }
}
