import CGantrySystem
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A range of IDs mapped into a user namespace.
public struct IDMapping: Hashable, Sendable, Codable {
    /// The first ID inside the namespace.
    public var containerID: UInt32
    /// The ID it is on the host.
    public var hostID: UInt32
    /// How many IDs.
    public var size: UInt32

    /// `size` IDs from `containerID` inside, `hostID` outside.
    public init(containerID: UInt32 = 0, hostID: UInt32, size: UInt32 = 65536) {
        self.containerID = containerID
        self.hostID = hostID
        self.size = size
    }
}

/// The user namespace that containers of a process that is not root run
/// in, and that their image layers belong to: container root is the user,
/// and other IDs are the user's subordinate IDs (`/etc/subuid`,
/// `/etc/subgid`), mapped by the set-user-ID programs `newuidmap` and
/// `newgidmap` (Debian's `uidmap`). Without either, the namespace maps the
/// user alone, as its root: files of any other owner cannot exist there.
public struct UserNamespaceMapping: Hashable, Sendable, Codable, CustomStringConvertible {
    /// The user IDs, container root (the user) first.
    public var uids: [IDMapping]
    /// The group IDs, container root's group (the user's) first.
    public var gids: [IDMapping]
    /// `newuidmap` and `newgidmap`, which write maps of subordinate IDs;
    /// `nil` for a single mapping, which the process writes itself.
    public var helpers: Helpers?

    /// The programs that write maps of subordinate IDs.
    public struct Helpers: Hashable, Sendable, Codable {
        public var newuidmap: String
        public var newgidmap: String

        public init(newuidmap: String, newgidmap: String) {
            self.newuidmap = newuidmap
            self.newgidmap = newgidmap
        }
    }

    /// A mapping of `uids` and `gids`, written by `helpers` (or, without
    /// them, directly: then only the process's own IDs can be mapped).
    public init(uids: [IDMapping], gids: [IDMapping], helpers: Helpers?) {
        self.uids = uids
        self.gids = gids
        self.helpers = helpers
    }

    /// The user and group alone, each as the namespace's root.
    public static func single(uid: UInt32, gid: UInt32) -> UserNamespaceMapping {
        UserNamespaceMapping(uids: [IDMapping(hostID: uid, size: 1)], gids: [IDMapping(hostID: gid, size: 1)], helpers: nil)
    }

    /// The mapping for the calling process's user: its subordinate IDs as
    /// container IDs 1 and up, when `/etc/subuid` and `/etc/subgid` give it
    /// some and `newuidmap` and `newgidmap` are installed; otherwise the
    /// single mapping.
    public static func forCurrentUser(subuid: String = "/etc/subuid", subgid: String = "/etc/subgid") -> UserNamespaceMapping {
        let uid = geteuid(), gid = getegid()
        let name = getpwuid(uid).flatMap { $0.pointee.pw_name.map { String(cString: $0) } }
        let single = Self.single(uid: uid, gid: gid)
        guard let helpers = Self.installedHelpers(),
              let uidRanges = Self.subordinateRanges(in: subuid, id: uid, name: name),
              let gidRanges = Self.subordinateRanges(in: subgid, id: gid, name: name ?? getgrgid(gid).flatMap { $0.pointee.gr_name.map { String(cString: $0) } })
        else { return single }
        return UserNamespaceMapping(uids: Self.stack(own: uid, uidRanges), gids: Self.stack(own: gid, gidRanges), helpers: helpers)
    }

    /// `newuidmap` and `newgidmap` where Debian installs them, or on PATH.
    static func installedHelpers() -> Helpers? {
        guard let uidHelper = Sys.findProgram("newuidmap"), let gidHelper = Sys.findProgram("newgidmap") else { return nil }
        return Helpers(newuidmap: uidHelper, newgidmap: gidHelper)
    }

    /// The ranges `file` gives to the user (by name or number), in order;
    /// nil when it gives none.
    static func subordinateRanges(in file: String, id: UInt32, name: String?) -> [(start: UInt32, count: UInt32)]? {
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { return nil }
        var ranges: [(start: UInt32, count: UInt32)] = []
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            let fields = line.split(separator: ":", omittingEmptySubsequences: false)
            guard fields.count == 3, fields[0] == "\(id)" || (name.map { fields[0] == $0 } ?? false),
                  let start = UInt32(fields[1]), let count = UInt32(fields[2]), count > 0 else { continue }
            ranges.append((start, count))
        }
        return ranges.isEmpty ? nil : ranges
    }

    /// Container 0 is `own`; the ranges follow it, one after another.
    static func stack(own: UInt32, _ ranges: [(start: UInt32, count: UInt32)]) -> [IDMapping] {
        var mappings = [IDMapping(hostID: own, size: 1)]
        var next: UInt32 = 1
        for range in ranges {
            let (end, overflow) = next.addingReportingOverflow(range.count)
            guard !overflow, end < UInt32.max else { break }
            mappings.append(IDMapping(containerID: next, hostID: range.start, size: range.count))
            next = end
        }
        return mappings
    }

    public var description: String {
        func text(_ mappings: [IDMapping]) -> String {
            mappings.map { "\($0.containerID)-\(UInt64($0.containerID) + UInt64($0.size) - 1)→\($0.hostID)" }.joined(separator: ",")
        }
        return "uids \(text(uids)), gids \(text(gids))"
    }

    /// Whether the namespace has more than its root: files of other owners
    /// can exist in it.
    public var mapsSubordinateIDs: Bool { helpers != nil && (uids.count > 1 || gids.count > 1) }

    /// The host ID of container ID `id`, or nil when it is not mapped.
    public static func hostID(_ id: UInt32, in mappings: [IDMapping]) -> UInt32? {
        for mapping in mappings where id >= mapping.containerID && UInt64(id) < UInt64(mapping.containerID) + UInt64(mapping.size) {
            return mapping.hostID + (id - mapping.containerID)
        }
        return nil
    }

    /// The container ID of host ID `id`, or nil when it is not mapped.
    public static func containerID(_ id: UInt32, in mappings: [IDMapping]) -> UInt32? {
        for mapping in mappings where id >= mapping.hostID && UInt64(id) < UInt64(mapping.hostID) + UInt64(mapping.size) {
            return mapping.containerID + (id - mapping.hostID)
        }
        return nil
    }

    /// The highest container ID mapped, for messages.
    static func highest(_ mappings: [IDMapping]) -> UInt64 {
        mappings.map { UInt64($0.containerID) + UInt64($0.size) - 1 }.max() ?? 0
    }

    /// Why a file owned by `uid`:`gid` cannot exist in the namespace, or nil when it can.
    public func unmappedOwner(uid: UInt32, gid: UInt32) -> String? {
        let what: String
        if Self.hostID(uid, in: uids) == nil {
            what = "user ID \(uid), but this user's namespace maps user IDs 0–\(Self.highest(uids)) only"
        } else if Self.hostID(gid, in: gids) == nil {
            what = "group ID \(gid), but this user's namespace maps group IDs 0–\(Self.highest(gids)) only"
        } else {
            return nil
        }
        let remedy = helpers == nil
            ? "give the user subordinate IDs in /etc/subuid and /etc/subgid (usermod --add-subuids, --add-subgids) and install newuidmap and newgidmap (Debian's uidmap)"
            : "give the user more subordinate IDs in /etc/subuid and /etc/subgid"
        return what + "; " + remedy
    }

    /// `inside outside count` lines, as uid_map and gid_map take them.
    static func mapText(_ mappings: [IDMapping]) -> String {
        mappings.map { "\($0.containerID) \($0.hostID) \($0.size)\n" }.joined()
    }

    /// Calls `body` with the C description of the maps.
    func withIDMaps<T>(_ body: (UnsafePointer<gantry_id_maps>) throws -> T) rethrows -> T {
        try Self.mapText(uids).withCString { uidMap in
            try Self.mapText(gids).withCString { gidMap in
                try (helpers?.newuidmap ?? "").withCString { uidHelper in
                    try (helpers?.newgidmap ?? "").withCString { gidHelper in
                        var maps = gantry_id_maps(uid_map: uidMap, gid_map: gidMap, uid_helper: helpers == nil ? nil : uidHelper,
                                                  gid_helper: helpers == nil ? nil : gidHelper,
                                                  // (Root writes any map and keeps setgroups.)
                                                  deny_setgroups: helpers == nil && geteuid() != 0 ? 1 : 0)
                        return try body(&maps)
                    }
                }
            }
        }
    }
}

/// A failure to make or use a user namespace.
public struct UserNamespaceError: GantryError, Sendable {
    public var message: String
    public var underlying: (any Error)?

    public init(_ message: String, underlying: (any Error)? = nil) {
        self.message = message
        self.underlying = underlying
    }

    public var description: String {
        underlying.map { "\(message): \($0)" } ?? message
    }
}

/// An owner (and what changing it clears) to give a file beneath a directory.
package struct FileOwner: Hashable, Sendable {
    /// The path beneath the directory.
    package var path: [UInt8]
    package var uid: UInt32
    package var gid: UInt32
    /// Permission bits to set again afterwards (set-ID bits), or nil.
    package var mode: UInt32?
    /// A `security.capability` value to set again afterwards, or nil.
    package var capability: [UInt8]?

    package init(path: [UInt8], uid: UInt32, gid: UInt32, mode: UInt32? = nil, capability: [UInt8]? = nil) {
        self.path = path
        self.uid = uid
        self.gid = gid
        self.mode = mode
        self.capability = capability
    }
}

extension UserNamespaceMapping {
    /// Gives the files beneath `directory` their owners, as the root of a
    /// namespace with this mapping (a child process does it).
    package func setOwners(_ owners: [FileOwner], beneath directory: String) throws {
        guard !owners.isEmpty else { return }
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw SystemCallError("open", directory, Sys.errno) }
        defer { Sys.close(fd) }
        // One allocation for every path, NUL-terminated, and the capabilities.
        var storage: [UInt8] = []
        var offsets: [(path: Int, capability: Int?)] = []
        for owner in owners {
            let path = storage.count
            storage += owner.path + [0]
            var capability: Int?
            if let value = owner.capability { capability = storage.count; storage += value }
            offsets.append((path, capability))
        }
        var result = gantry_user_namespace_result()
        let status = storage.withUnsafeBufferPointer { buffer -> Int32 in
            let base = UnsafeRawPointer(buffer.baseAddress!)
            let entries = zip(owners, offsets).map { owner, offset in
                gantry_owner_entry(path: base.advanced(by: offset.path).assumingMemoryBound(to: CChar.self), uid: owner.uid, gid: owner.gid,
                                   mode: owner.mode.map { Int32($0) } ?? -1,
                                   capability: offset.capability.map { base.advanced(by: $0) }, capability_size: owner.capability?.count ?? 0)
            }
            return entries.withUnsafeBufferPointer { entries in
                var task = gantry_user_namespace_task(operation: GANTRY_USER_NAMESPACE_CHOWN, directory: fd, entries: entries.baseAddress,
                                                      entry_count: entries.count, name: nil, overlay_options: nil, mount_point: nil)
                return withIDMaps { gantry_in_user_namespace($0, &task, &result) }
            }
        }
        guard status != 0 else { return }
        let index = Int(result.failed_index)
        let what = owners.indices.contains(index)
            ? "cannot give \(directory)/\(String(decoding: owners[index].path, as: UTF8.self)) the owner \(owners[index].uid):\(owners[index].gid)"
            : "cannot give files in \(directory) their owners"
        throw failure(what, result)
    }

    /// Removes `path` and everything below it as the root of a namespace
    /// with this mapping, which may remove what the namespace's other IDs
    /// own (the user alone may not).
    package func removeTree(_ path: String) throws {
        let parent = Sys.parentDirectory(of: path)
        let fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else {
            if Sys.errno == .noSuchFileOrDirectory { return }
            throw SystemCallError("open", parent, Sys.errno)
        }
        defer { Sys.close(fd) }
        var result = gantry_user_namespace_result()
        let status = Sys.lastComponent(of: path).withCString { name in
            var task = gantry_user_namespace_task(operation: GANTRY_USER_NAMESPACE_REMOVE, directory: fd, entries: nil, entry_count: 0, name: name,
                                                  overlay_options: nil, mount_point: nil)
            return withIDMaps { gantry_in_user_namespace($0, &task, &result) }
        }
        if status != 0 { throw failure("cannot remove \(path)", result) }
    }

    /// Copies what the stacked `layers` (top-most first) hold at `path`
    /// into the directory `destination`, which takes the owner and mode of
    /// the directory there, as the root of a namespace with this mapping:
    /// it mounts the layers in a mount namespace of its own. Nothing at
    /// `path` copies nothing.
    package func copy(_ path: String, from layers: [String], into destination: String) throws {
        let fd = open(destination, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { throw SystemCallError("open", destination, Sys.errno) }
        defer { Sys.close(fd) }
        var result = gantry_user_namespace_result()
        // One layer is the root itself; more are stacked.
        let options = layers.count > 1 ? "lowerdir=" + layers.joined(separator: ":") + ",userxattr" : nil
        let status = path.withCString { name in
            (options ?? "").withCString { text in
                layers[0].withCString { point in
                    var task = gantry_user_namespace_task(operation: GANTRY_USER_NAMESPACE_SEED, directory: fd, entries: nil, entry_count: 0,
                                                          name: name, overlay_options: options == nil ? nil : text, mount_point: point)
                    return withIDMaps { gantry_in_user_namespace($0, &task, &result) }
                }
            }
        }
        if status != 0 { throw failure("cannot copy \(path) of the image into \(destination)", result) }
    }

    /// A descriptor of a new user namespace with this mapping, which the
    /// caller owns: processes started in it share its IDs.
    package func makeNamespace() throws -> Int32 {
        var message = [UInt8](repeating: 0, count: 512)
        let fd = withIDMaps { maps in
            message.withUnsafeMutableBufferPointer { buffer in
                buffer.withMemoryRebound(to: CChar.self) { gantry_make_user_namespace(maps, $0.baseAddress, $0.count) }
            }
        }
        guard fd >= 0 else {
            let said = String(decoding: message.prefix { $0 != 0 }, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            throw UserNamespaceError("cannot make a user namespace with \(self)" + (said.isEmpty ? "" : " (\(said))"), underlying: Sys.errno)
        }
        return fd
    }

    private func failure(_ what: String, _ result: gantry_user_namespace_result) -> UserNamespaceError {
        let errno = Errno(rawValue: result.error)
        let complaint = withUnsafeBytes(of: result.message) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            .trimmingCharacters(in: .whitespacesAndNewlines)
        switch result.stage {
        case GANTRY_USER_NAMESPACE_STAGE_UNSHARE:
            return UserNamespaceError("\(what): this process may not make a user namespace (is user.max_user_namespaces 0, or are user namespaces restricted?)", underlying: errno)
        case GANTRY_USER_NAMESPACE_STAGE_MAPS:
            let helper = helpers.map { " through \($0.newuidmap) and \($0.newgidmap)" } ?? ""
            let said = complaint.isEmpty ? "" : " (\(complaint))"
            return UserNamespaceError("\(what): the user namespace's ID maps (\(self)) could not be written\(helper)\(said)", underlying: errno)
        default:
            if errno == .invalidArgument {
                return UserNamespaceError("\(what): the owner is not mapped in this user's namespace (\(self))", underlying: errno)
            }
            return UserNamespaceError(what, underlying: errno)
        }
    }
}

/// Removes a tree, also as the root of `mapping`'s namespace when the user
/// alone may not (files a container's other users made).
package func removeTree(_ path: String, mapping: UserNamespaceMapping?) throws {
    do {
        try Sys.removeTree(path)
    } catch let error as SystemCallError where mapping != nil && (error.errno == .permissionDenied || error.errno == .notPermitted) {
        try mapping?.removeTree(path)
    }
}
