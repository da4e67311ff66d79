import Foundation
import GantryTestSupport

/// Writes a build context in `dir/context`: files by relative path.
func makeContext(_ dir: String, _ files: [String: String]) throws -> String {
    let context = dir + "/context"
    for (path, content) in files {
        let full = context + "/" + path
        try FileManager.default.createDirectory(atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try content.write(toFile: full, atomically: false, encoding: .utf8)
    }
    return context
}

/// Writes a tar archive at `archive`, made with the host's tar, of `files`
/// (by relative path) laid out in the scratch directory `scratch`.
func makeTar(_ archive: String, of files: [String: String], in scratch: String) async throws {
    _ = try makeContext(scratch, files)
    let top = Set(files.keys.map { String($0.prefix { $0 != "/" }) }).sorted()
    _ = try await GantryTestSupport.run("tar", ["-cf", archive, "-C", scratch + "/context"] + top)
}
