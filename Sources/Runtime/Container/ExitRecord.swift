import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// How the program of a container that outlives its starter ended, as its
/// own init wrote it: the file `exit` in the container's directory, holding
/// `exited N` or `signaled N`.
///
/// No helper process waits for such a container, and its parent (the
/// process that started it) may be gone long before it ends. Its init, the
/// container's first process, waits for the program anyway; it is given
/// this file, opened before the launch, and writes the program's end to it
/// before it exits. Whichever process opens the state root next reads it.
/// An init killed outright (SIGKILL to the container's first process)
/// writes nothing: the end is then unknown, and reported as a SIGKILL.
enum ExitRecord {
    static let fileName = "exit"

    /// Creates (empty) the record of the container in `directory`, for the
    /// init; the caller closes the descriptor once the launch is done.
    static func create(in directory: String) throws -> Int32 {
        let path = directory + "/" + fileName
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw RuntimeError(.systemCall, "cannot create \(path)", underlying: Sys.errno) }
        return fd
    }

    /// The program's end as recorded, or nil when nothing (or nothing
    /// readable) was written.
    static func read(in directory: String) -> ProcessExit? {
        guard let text = try? FileIO.read(directory + "/" + fileName, code: .systemCall) else { return nil }
        let words = text.split(whereSeparator: \.isWhitespace)
        guard words.count == 2, let value = Int32(words[1]), value >= 0 else { return nil }
        switch words[0] {
        case "exited" where value <= 255: return .exited(value)
        case "signaled" where value > 0 && value < 65: return .signaled(Signal(value))
        default: return nil
        }
    }

    /// The end to record for a container whose process is gone while no
    /// process watched it: the recorded one, else an unknown SIGKILL.
    static func exit(in directory: String) -> ContainerExit {
        read(in: directory).map { ContainerExit(status: $0, reason: .exited) } ?? ContainerExit(status: .signaled(.kill), reason: .unknown)
    }
}
