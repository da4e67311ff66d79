import CGantrySystem
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Resolves a container's user (`uid[:gid]` or `name[:group]`) against the
/// `/etc/passwd` and `/etc/group` of its root file system, read without
/// following any symlink out of it.
struct UserDatabase {
    /// Root directories to look in, top-most first (an overlay's layers).
    let roots: [String]

    struct Resolved: Hashable {
        var uid: UInt32
        var gid: UInt32
        var groups: [UInt32]
        var home: String
    }

    func resolve(_ user: String?) throws -> Resolved {
        let spec = user ?? ""
        let parts = spec.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        let userPart = parts.first ?? ""
        let groupPart = parts.count > 1 ? parts[1] : nil
        let passwd = file("etc/passwd").map(Self.parse) ?? []
        let groupFile = file("etc/group").map(Self.parse) ?? []

        var uid: UInt32 = 0
        var gid: UInt32 = 0
        var home = "/"
        var name: String?
        if userPart.isEmpty {
            if let entry = passwd.first(where: { $0.count > 2 && $0[2] == "0" }) {
                name = entry[0]
                home = entry.count > 5 ? entry[5] : "/root"
            } else {
                home = "/root"
            }
        } else if let number = UInt32(userPart) {
            uid = number
            if let entry = passwd.first(where: { $0.count > 3 && $0[2] == userPart }) {
                name = entry[0]
                gid = UInt32(entry[3]) ?? 0
                home = entry.count > 5 ? entry[5] : "/"
            }
        } else {
            guard let entry = passwd.first(where: { $0.first == userPart }), entry.count > 3,
                  let number = UInt32(entry[2]), let group = UInt32(entry[3])
            else { throw RuntimeError(.invalidSpec, "user \"\(userPart)\" is not in the image's /etc/passwd") }
            uid = number
            gid = group
            name = userPart
            home = entry.count > 5 ? entry[5] : "/"
        }
        if let groupPart, !groupPart.isEmpty {
            if let number = UInt32(groupPart) {
                gid = number
            } else {
                guard let entry = groupFile.first(where: { $0.first == groupPart }), entry.count > 2, let number = UInt32(entry[2]) else {
                    throw RuntimeError(.invalidSpec, "group \"\(groupPart)\" is not in the image's /etc/group")
                }
                gid = number
            }
        }
        // Supplementary groups: those listing the user as a member.
        var groups: [UInt32] = []
        if let name {
            for entry in groupFile where entry.count > 3 && entry[3].split(separator: ",").contains(Substring(name)) {
                if let number = UInt32(entry[2]), number != gid, !groups.contains(number) { groups.append(number) }
            }
        }
        return Resolved(uid: uid, gid: gid, groups: groups, home: home.isEmpty ? "/" : home)
    }

    /// The colon-separated fields of each line.
    static func parse(_ text: String) -> [[String]] {
        text.split(separator: "\n").filter { !$0.hasPrefix("#") }.map {
            $0.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        }
    }

    /// Reads `path` from the top-most root that has it, resolving inside that root.
    private func file(_ path: String) -> String? {
        for root in roots {
            guard let rootFD = OwnedDescriptor(opening: root, O_RDONLY | O_DIRECTORY | O_CLOEXEC) else { continue }
            // RESOLVE_IN_ROOT (0x10) | RESOLVE_NO_MAGICLINKS (0x02)
            // Looked at before it is opened: a FIFO or device node in an
            // image must neither hang nor be opened by the host.
            let handle = gantry_openat2(rootFD.raw, path, UInt64(0o10000000 /* O_PATH */ | O_CLOEXEC), 0, 0x10 | 0x02)
            guard handle >= 0 else { continue }
            defer { close(handle) }
            var info = stat()
            guard fstat(handle, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG, info.st_size < 4 << 20 else { return nil }
            guard let fd = OwnedDescriptor(opening: "/proc/self/fd/\(handle)", O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK) else { return nil }
            var bytes = [UInt8](repeating: 0, count: Int(info.st_size))
            let count = bytes.withUnsafeMutableBytes { read(fd.raw, $0.baseAddress, $0.count) }
            guard count >= 0 else { return nil }
            return String(decoding: bytes[..<count], as: UTF8.self)
        }
        return nil
    }
}

extension ContainerRuntime {
    /// The user and group IDs that `user` (`uid[:gid]` or `name[:group]`)
    /// names in the image's `/etc/passwd` and `/etc/group`, as a
    /// container's user is resolved; a user given by number alone has its
    /// number as its group, as Docker's `--chown` gives it.
    ///
    /// - Throws: ``RuntimeError`` (`invalidSpec`) naming the user or group
    ///   the image does not have.
    package func resolveOwner(_ user: String, image reference: String?) async throws -> (uid: UInt32, gid: UInt32) {
        let parts = user.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        if let uid = UInt32(parts[0]), parts.count == 1 { return (uid, uid) }
        if let uid = UInt32(parts[0]), let gid = UInt32(parts[1]) { return (uid, gid) }
        var roots: [String] = []
        // Held under a name that recovery releases when this process dies first.
        let holder = (0 ..< 4).map { _ in String(format: "%016llx", UInt64.random(in: .min ... .max)) }.joined()
        if let reference {
            roots = try await images.prepareRoot(reference, holder: holder).layers.reversed()
        }
        defer { if reference != nil { try? images.releaseSnapshots(holder: holder) } }
        let resolved = try UserDatabase(roots: roots).resolve(user)
        return (resolved.uid, parts.count == 1 && UInt32(parts[0]) != nil ? resolved.uid : resolved.gid)
    }
}
