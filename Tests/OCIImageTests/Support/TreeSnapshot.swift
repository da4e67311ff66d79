import CGantrySystem
import Foundation
import GantryTestSupport
@testable import OCIImage

/// Everything about one file that an unpacked tree must reproduce.
struct TreeEntry: Hashable, CustomStringConvertible {
    var type: String
    var mode: UInt32
    var uid: UInt32
    var gid: UInt32
    var size: Int64
    var content: String?
    var linkTarget: String?
    var device: UInt64?
    var xattrs: [String: String]
    var mtime: Int?

    var description: String {
        var parts = ["\(type) \(String(mode, radix: 8)) \(uid):\(gid)"]
        if type == "file" { parts.append("size \(size) \(content ?? "")") }
        if let linkTarget { parts.append("-> \(linkTarget)") }
        if let device { parts.append("dev \(device)") }
        if !xattrs.isEmpty { parts.append("xattrs \(xattrs.sorted { $0.key < $1.key })") }
        if let mtime { parts.append("mtime \(mtime)") }
        return parts.joined(separator: " ")
    }
}

/// Reads a whole tree (without following symlinks) into a map from
/// relative path to entry. `overlay.*` attributes are left out.
func snapshotTree(_ root: String, mtimes: Bool = true, directoryMtimes: Bool = true) throws -> [String: TreeEntry] {
    var result: [String: TreeEntry] = [:]
    func visit(_ relative: String) throws {
        let path = relative.isEmpty ? root : root + "/" + relative
        var st = stat()
        guard lstat(path, &st) == 0 else { throw ToolError(description: "lstat \(path) failed: \(errno)") }
        let kind = st.st_mode & S_IFMT
        var entry = TreeEntry(type: "other", mode: st.st_mode & 0o7777, uid: st.st_uid, gid: st.st_gid, size: 0, xattrs: xattrs(path))
        switch kind {
        case S_IFREG:
            entry.type = "file"
            entry.size = Int64(st.st_size)
            entry.content = Digest.compute(try Data(contentsOf: URL(fileURLWithPath: path))).shortForm
        case S_IFDIR: entry.type = "dir"
        case S_IFLNK:
            entry.type = "symlink"
            entry.linkTarget = try FileManager.default.destinationOfSymbolicLink(atPath: path)
            entry.mode = 0
        case S_IFIFO: entry.type = "fifo"
        case S_IFCHR:
            entry.type = "char"
            entry.device = UInt64(st.st_rdev)
        case S_IFBLK:
            entry.type = "block"
            entry.device = UInt64(st.st_rdev)
        default: break
        }
        if mtimes && (kind != S_IFDIR || directoryMtimes) && kind != S_IFLNK { entry.mtime = st.st_mtim.tv_sec }
        if !relative.isEmpty { result[relative] = entry }
        if kind == S_IFDIR {
            for name in try FileManager.default.contentsOfDirectory(atPath: path).sorted() {
                try visit(relative.isEmpty ? name : relative + "/" + name)
            }
        }
    }
    try visit("")
    return result
}

private func xattrs(_ path: String) -> [String: String] {
    var result: [String: String] = [:]
    var names = [CChar](repeating: 0, count: 65536)
    let length = gantry_llistxattr(path, &names, names.count)
    guard length > 0 else { return result }
    let raw = names[..<length].split(separator: 0).map { String(decoding: $0.map { UInt8(bitPattern: $0) }, as: UTF8.self) }
    // overlayfs and SELinux attributes belong to the host; umoci records
    // rootless owners in user.rootlesscontainers.
    for name in raw where !name.contains("overlay.") && !name.hasPrefix("security.selinux") && name != "user.rootlesscontainers" {
        var value = [UInt8](repeating: 0, count: 65536)
        let size = gantry_lgetxattr(path, name, &value, value.count)
        if size >= 0 { result[name] = value[..<size].map { String(format: "%02x", $0) }.joined() }
    }
    return result
}

/// A readable list of differences between two trees; empty when equal.
func differences(_ expected: [String: TreeEntry], _ actual: [String: TreeEntry]) -> [String] {
    var lines: [String] = []
    for path in Set(expected.keys).union(actual.keys).sorted() {
        switch (expected[path], actual[path]) {
        case let (e?, a?) where e != a: lines.append("\(path): expected \(e), got \(a)")
        case (_?, nil): lines.append("\(path): missing")
        case (nil, let a?): lines.append("\(path): unexpected \(a)")
        default: break
        }
    }
    return lines
}
