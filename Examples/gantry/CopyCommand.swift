import ArgumentParser
import Foundation
import Gantry

/// `gantry cp`: files and directories into and out of a container, or tar
/// streams on standard input and output with `-`.
struct Copy: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cp",
        abstract: "Copy files or directories between a container and the host.",
        usage: """
            gantry cp [OPTIONS] CONTAINER:SRC DEST|-
            gantry cp [OPTIONS] SRC|- CONTAINER:DEST
            """,
        discussion: """
            A directory destination that exists receives the source under its own name; SRC/. copies a \
            directory's contents. A missing destination is created. With -, a tar archive is written to \
            standard output or read from standard input (into an existing directory). Paths inside the \
            container are resolved within its root. A local path with a colon is written ./a:b.
            """
    )

    @Flag(name: [.customShort("L"), .long], help: "Copy what a symlink source points to, not the link.") var followLink = false
    @Flag(name: .shortAndLong, help: "Keep the owners files have at the source.") var archive = false
    @Argument(help: ArgumentHelp("What to copy: CONTAINER:SRC, a local path, or - for a tar archive on standard input.", valueName: "source"))
    var source: String
    @Argument(help: ArgumentHelp("Where to: CONTAINER:DEST, a local path, or - for a tar archive on standard output.", valueName: "destination"))
    var destination: String
    @OptionGroup var global: GlobalOptions

    /// A `CONTAINER:PATH` argument, or a local one (`-`, or starting with
    /// `/` or `.`, or without a colon).
    static func split(_ argument: String) -> (container: String, path: String)? {
        guard argument != "-", !argument.hasPrefix("/"), !argument.hasPrefix("."),
              let colon = argument.firstIndex(of: ":"), colon != argument.startIndex
        else { return nil }
        return (String(argument[..<colon]), String(argument[argument.index(after: colon)...]))
    }

    func validate() throws {
        switch (Self.split(source), Self.split(destination)) {
        case (.some, .some): throw ValidationError("copying between containers is not supported; copy through the host")
        case (nil, nil): throw ValidationError("one of the source and the destination must be CONTAINER:PATH")
        default: break
        }
        if source == "-" && destination == "-" { throw ValidationError("the source and the destination cannot both be -") }
    }

    func run() async throws {
        let runtime = try await global.openGantry().containers
        let options = CopyOptions(followSymlink: followLink, keepOwners: archive)
        if let from = Self.split(source) {
            let container = try runtime.container(from.container)
            let path = from.path.isEmpty ? "/" : from.path
            if destination == "-" {
                try await container.archive(path, to: .standardOutput, options: options)
            } else {
                try await container.copyOut(path, to: destination, options: options)
            }
        } else if let to = Self.split(destination) {
            let container = try runtime.container(to.container)
            let path = to.path.isEmpty ? "/" : to.path
            if source == "-" {
                try await container.extract(from: .standardInput, into: path, options: options)
            } else {
                try await container.copyIn(from: source, to: path, options: options)
            }
        }
    }
}
