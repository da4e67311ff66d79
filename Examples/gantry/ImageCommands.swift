import ArgumentParser
import Foundation
import Gantry

struct ImageCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "image",
        abstract: "Manage local images.",
        subcommands: [
            ImportLayout.self, ImportRootfs.self, List.self, Inspect.self, Tag.self, Remove.self, Prune.self, Unpack.self, ExportLayout.self,
            Pull.self, Push.self, Tags.self,
        ]
    )
}

/// Splits `DIR[:TAG]`, keeping a colon that belongs to an existing directory's name.
func splitLocation(_ argument: String) -> (directory: String, tag: String?) {
    guard let colon = argument.lastIndex(of: ":"), !FileManager.default.fileExists(atPath: argument) else { return (argument, nil) }
    let tag = String(argument[argument.index(after: colon)...])
    guard !tag.isEmpty, !tag.contains("/") else { return (argument, nil) }
    return (String(argument[..<colon]), tag)
}

func printRecords(_ records: [ImageRecord], format: OutputFormat) throws {
    switch format {
    case .json: try Terminal.printJSON(records)
    case .table:
        for record in records { print("\(record.reference.familiarDescription)   \(record.descriptor.digest)") }
    }
}

extension ImageCommand {
    struct ImportLayout: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "import-layout",
            abstract: "Import images from an OCI image layout directory.",
            discussion: "Without :TAG every image listed in the layout's index.json is imported.")

        @Argument(help: ArgumentHelp("The layout directory, optionally with the tag to import.", valueName: "dir[:tag]"))
        var location: String

        @Option(help: "The name to give the image (default: the layout's name for it, or the directory name with the layout tag).")
        var name: String?

        @OptionGroup var global: GlobalOptions
        @OptionGroup var output: FormatOption

        func run() async throws {
            let gantry = try await global.openGantry()
            let (directory, tag) = splitLocation(location)
            let progress = ProgressLine(enabled: output.format == .table)
            defer { progress.finish() }
            let records = try await gantry.images.importLayout(at: directory, tag: tag, name: name, progress: progress.handler)
            progress.finish()
            try printRecords(records, format: output.format)
        }
    }

    struct ImportRootfs: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "import-rootfs",
            abstract: "Make a single-layer image from a directory, like docker import.")

        @Argument(help: ArgumentHelp("The root filesystem directory.", valueName: "dir"))
        var directory: String

        @Option(help: "The name to give the image.")
        var name: String

        @Option(parsing: .unconditional, help: ArgumentHelp("The default command, as a JSON array or a shell-split string.", valueName: "command"))
        var cmd: String?

        @Option(help: ArgumentHelp("The entrypoint, as a JSON array or a shell-split string.", valueName: "command"))
        var entrypoint: String?

        @Option(name: .shortAndLong, help: ArgumentHelp("An environment variable NAME=value (repeatable).", valueName: "NAME=value"))
        var env: [String] = []

        @Option(name: [.short, .customLong("workdir")], help: "The working directory.")
        var workingDirectory: String?

        @Option(name: .shortAndLong, help: "The user to run as (name, uid or uid:gid).")
        var user: String?

        @Option(name: .shortAndLong, help: ArgumentHelp("A label KEY=value (repeatable).", valueName: "KEY=value"))
        var label: [String] = []

        @Option(help: ArgumentHelp("The platform to record (default: this host's).", valueName: "os/arch[/variant]"))
        var platform: String?

        @OptionGroup var global: GlobalOptions
        @OptionGroup var output: FormatOption

        func run() async throws {
            var config = RunConfiguration()
            config.cmd = try cmd.map(parseCommand)
            config.entrypoint = try entrypoint.map(parseCommand)
            // Like Docker's builders, give images a PATH unless one is set.
            config.env = env.contains { $0.hasPrefix("PATH=") } ? env : ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] + env
            for variable in env where !variable.contains("=") {
                throw ValidationError("--env \(variable): expected NAME=value")
            }
            config.workingDir = workingDirectory
            config.user = user
            if !label.isEmpty { config.labels = try parseLabels(label) }
            var options = RootfsImportOptions(config: config)
            if let platform { options.platform = try Platform(parsing: platform) }
            let gantry = try await global.openGantry()
            let record = try await gantry.images.importRootfs(at: directory, name: name, options: options)
            try printRecords([record], format: output.format)
        }

        private func parseCommand(_ text: String) throws -> [String] {
            if text.hasPrefix("["), let data = text.data(using: .utf8), let array = try? JSONDecoder().decode([String].self, from: data) {
                return array
            }
            let words = try shellWords(text)
            guard !words.isEmpty else { throw ValidationError("the command \"\(text)\" is empty") }
            return words
        }

        /// Splits a command line as a POSIX shell would, honouring single and
        /// double quotes and backslashes (no expansions).
        private func shellWords(_ text: String) throws -> [String] {
            var words: [String] = []
            var current = ""
            var inWord = false
            var quote: Character?
            var escaped = false
            for character in text {
                if escaped {
                    current.append(character)
                    escaped = false
                } else if let open = quote {
                    if character == open {
                        quote = nil
                    } else if character == "\\" && open == "\"" {
                        escaped = true
                    } else {
                        current.append(character)
                    }
                } else if character == "\\" {
                    escaped = true
                    inWord = true
                } else if character == "'" || character == "\"" {
                    quote = character
                    inWord = true
                } else if character.isWhitespace {
                    if inWord { words.append(current) }
                    current = ""
                    inWord = false
                } else {
                    current.append(character)
                    inWord = true
                }
            }
            guard quote == nil, !escaped else { throw ValidationError("the command \"\(text)\" has an unclosed quote or a trailing backslash") }
            if inWord { words.append(current) }
            return words
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List images.", aliases: ["list"])

        @Flag(name: .shortAndLong, help: "Print only image names.")
        var quiet = false

        @OptionGroup var global: GlobalOptions
        @OptionGroup var output: FormatOption

        func run() async throws {
            let gantry = try await global.openGantry()
            // An image that cannot be read for this host is still listed.
            var images: [(record: ImageRecord, details: ImageDetails?)] = []
            for record in try await gantry.images.list() {
                images.append((record, try? await gantry.images.inspect(record.reference.description)))
            }
            if quiet {
                images.forEach { print($0.record.reference.familiarDescription) }
                return
            }
            switch output.format {
            case .json: try Terminal.printJSON(images.map { ImageSummary($0.record, $0.details) })
            case .table:
                Terminal.printTable(
                    ["REPOSITORY", "TAG", "DIGEST", "PLATFORM", "CREATED", "SIZE"],
                    images.map { record, details in
                        [record.reference.familiarName, record.reference.tag ?? "<none>", record.descriptor.digest.shortForm,
                         details?.platform.description ?? "-", Terminal.age(details?.created), details.map { Terminal.bytes($0.size) } ?? "-"]
                    })
            }
        }
    }

    /// One line of `image ls --format json`.
    struct ImageSummary: Encodable {
        var name: String
        var familiarName: String
        var digest: Digest
        var mediaType: MediaType
        var platform: String?
        var created: String?
        var size: Int64?
        var layers: Int?

        init(_ record: ImageRecord, _ details: ImageDetails?) {
            name = record.reference.description
            familiarName = record.reference.familiarDescription
            digest = record.descriptor.digest
            mediaType = record.descriptor.mediaType
            platform = details?.platform.description
            created = details?.created
            size = details?.size
            layers = details?.layers.count
        }
    }

    struct Inspect: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show an image's manifest, configuration and layers.")

        @Argument(help: "The image's name or digest.")
        var image: String

        @Option(help: ArgumentHelp("The platform to show for a multi-platform image.", valueName: "os/arch[/variant]"))
        var platform: String?

        @OptionGroup var global: GlobalOptions
        @OptionGroup var output: FormatOption

        func run() async throws {
            let gantry = try await global.openGantry()
            let details = try await gantry.images.inspect(image, platform: try platform.map(Platform.init(parsing:)))
            switch output.format {
            case .json: try Terminal.printJSON(details)
            case .table:
                let config = details.config.config
                var rows: [[String]] = [
                    ["Name", details.familiarName],
                    ["Digest", details.digest.description],
                    ["Media type", details.mediaType.rawValue],
                    ["Manifest", details.manifestDigest.description],
                    ["Config", details.configDigest.description],
                    ["Platform", details.platform.description],
                    ["Created", details.created ?? "-"],
                    ["Size", Terminal.bytes(details.size)],
                ]
                if let platforms = details.platforms { rows.append(["Platforms", platforms.map(\.description).joined(separator: ", ")]) }
                if let entrypoint = config?.entrypoint { rows.append(["Entrypoint", entrypoint.joined(separator: " ")]) }
                if let cmd = config?.cmd { rows.append(["Cmd", cmd.joined(separator: " ")]) }
                if let env = config?.env { rows.append(contentsOf: env.map { ["Env", $0] }) }
                if let dir = config?.workingDir, !dir.isEmpty { rows.append(["Working dir", dir]) }
                if let user = config?.user, !user.isEmpty { rows.append(["User", user]) }
                for (index, layer) in details.layers.enumerated() {
                    rows.append(["Layer \(index + 1)", "\(layer.digest) \(Terminal.bytes(layer.size)) \(layer.mediaType.layerCompression?.rawValue ?? "")"])
                }
                let width = rows.map(\.[0].count).max() ?? 0
                for row in rows { print(row[0].padding(toLength: width, withPad: " ", startingAt: 0) + "  " + row[1]) }
            }
        }
    }

    struct Tag: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Give an image another name.")

        @Argument(help: "The image's name or digest.") var source: String
        @Argument(help: "The new name.") var name: String
        @OptionGroup var global: GlobalOptions
        @OptionGroup var output: FormatOption

        func run() async throws {
            let gantry = try await global.openGantry()
            try printRecords([try await gantry.images.tag(source, as: name)], format: output.format)
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rm", abstract: "Remove image names, and the content only they used.", aliases: ["remove"])

        @Argument(help: "Image names or digests.") var images: [String]

        @Flag(help: "Remove only the names; leave content for `image prune`.")
        var noPrune = false

        @OptionGroup var global: GlobalOptions
        @OptionGroup var output: FormatOption

        struct Removal: Encodable {
            var removed: String
            var familiarName: String
            var digest: Digest
            var freed: PruneReport?
        }

        func run() async throws {
            let gantry = try await global.openGantry()
            var removals: [Removal] = []
            for (index, image) in images.enumerated() {
                let (record, report) = try await gantry.images.remove(image, prune: !noPrune && index == images.count - 1)
                removals.append(Removal(removed: record.reference.description, familiarName: record.reference.familiarDescription,
                                        digest: record.descriptor.digest, freed: report))
            }
            switch output.format {
            case .json: try Terminal.printJSON(removals)
            case .table:
                for removal in removals {
                    print("Removed \(removal.familiarName) (\(removal.digest.shortForm))")
                    if let freed = removal.freed {
                        print("Freed \(Terminal.bytes(freed.bytes)) in \(freed.blobs) blobs and \(freed.snapshots) snapshots")
                    }
                }
            }
        }
    }

    struct Prune: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove content no image name uses, and leftovers of interrupted work.")

        @Flag(name: .customLong("build-cache"), help: "Forget the build cache first (cached steps and RUN --mount=type=cache directories).")
        var buildCache = false

        @OptionGroup var global: GlobalOptions
        @OptionGroup var output: FormatOption

        func run() async throws {
            let gantry = try await global.openGantry()
            let report = buildCache ? try await gantry.images.pruneBuildCache().freed : try await gantry.images.prune()
            switch output.format {
            case .json: try Terminal.printJSON(report)
            case .table:
                print("Removed \(report.blobs) blobs (\(Terminal.bytes(report.bytes))), \(report.snapshots) snapshots and \(report.leftovers) leftovers")
            }
        }
    }

    struct Unpack: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Write an image's root filesystem into a new or empty directory.")

        @Argument(help: "The image's name or digest.") var image: String
        @Argument(help: "The directory to create or fill.") var directory: String

        @Option(help: ArgumentHelp("The platform to unpack for a multi-platform image.", valueName: "os/arch[/variant]"))
        var platform: String?

        @Flag(name: .customLong("keep-privileges"), help: "Keep set-user-ID and set-group-ID bits and create device nodes (by default the tree is made safe for the host).")
        var keepPrivileges = false

        @OptionGroup var global: GlobalOptions
        @OptionGroup var output: FormatOption

        func run() async throws {
            let gantry = try await global.openGantry()
            let progress = ProgressLine(enabled: output.format == .table)
            defer { progress.finish() }
            let report = try await gantry.images.unpack(image, into: directory, platform: try platform.map(Platform.init(parsing:)),
                                                        keepingPrivileges: keepPrivileges, progress: progress.handler)
            progress.finish()
            switch output.format {
            case .json: try Terminal.printJSON(report)
            case .table:
                print("Unpacked \(report.layers) layers (\(report.entries) entries, \(Terminal.bytes(report.bytes))) into \(directory)")
                if !keepPrivileges {
                    print("Made safe for the host: set-ID bits cleared, \(report.skippedDeviceNodes) device nodes skipped (--keep-privileges keeps them)")
                }
            }
        }
    }

    struct ExportLayout: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "export-layout",
            abstract: "Write an image into an OCI image layout (new, empty, or existing).")

        @Argument(help: "The image's name or digest.") var image: String
        @Argument(help: ArgumentHelp("The layout directory, optionally with the tag to give (default: the image's tag).", valueName: "dir[:tag]"))
        var location: String

        @OptionGroup var global: GlobalOptions
        @OptionGroup var output: FormatOption

        struct Export: Encodable {
            var image: String
            var layout: String
            var tag: String
        }

        func run() async throws {
            let gantry = try await global.openGantry()
            let (directory, tag) = splitLocation(location)
            let record = try await gantry.images.image(image)
            let finalTag = tag ?? record.reference.tag ?? ImageReference.defaultTag
            let progress = ProgressLine(enabled: output.format == .table)
            defer { progress.finish() }
            try await gantry.images.exportLayout(image, to: directory, tag: finalTag, progress: progress.handler)
            progress.finish()
            let export = Export(image: record.reference.description, layout: directory, tag: finalTag)
            switch output.format {
            case .json: try Terminal.printJSON(export)
            case .table: print("Exported \(record.reference.familiarDescription) to \(directory):\(finalTag)")
            }
        }
    }
}
