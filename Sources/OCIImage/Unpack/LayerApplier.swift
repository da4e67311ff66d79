import CArchive
import CGantrySystem
import Foundation
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Applies the entries of one tar stream to a directory tree, resolving
/// every path beneath the tree's root. Used by ``LayerUnpacker``.
final class LayerApplier {
    typealias Path = [UInt8]

    enum Lookup {
        case found(Int32)
        case missing
        case refused
    }

    /// A directory's identity, which stays the same whatever path leads to it.
    struct FileID: Hashable {
        var device: UInt64
        var inode: UInt64

        init(_ st: stat) {
            device = UInt64(st.st_dev)
            inode = UInt64(st.st_ino)
        }
    }

    struct DirectoryMetadata {
        /// A path that led to the directory, to find it again.
        var path: Path
        var mode: mode_t
        var times: (timespec, timespec)?
    }

    /// The most refused entries an error lists; the rest are counted.
    static let refusalLimit = 1000

    let rootFD: Int32
    let target: String
    let layer: String
    let options: LayerUnpackOptions
    let lowerFDs: [Int32]
    let stream: LayerStream
    let opaqueAttribute: String

    /// O_PATH descriptors of directories already resolved, by path. Emptied
    /// whenever something is removed, since a path may then lead elsewhere.
    var directoryCache: [Path: Int32] = [:]
    /// Descriptors dropped from the cache while an entry may still use them;
    /// closed once the entry is done, so that no number is reused under it.
    var retiredDescriptors: [Int32] = []
    /// Every path this layer created and their ancestors, for whiteouts that
    /// must only hide lower layers.
    var written: Set<Path> = []
    /// Directory modes and times are set last, deepest first, so that adding
    /// children does not change them and read-only directories can be filled.
    var deferred: [FileID: DirectoryMetadata] = [:]

    var refused: [OCIImageError.RefusedEntry] = []
    var refusedCount = 0
    var skippedAttributes: Set<String> = []
    var skippedDeviceNodes = 0
    /// With a user namespace: the owners files are to get, by path.
    var owners: [Path: FileOwner] = [:]
    /// The root's path as the kernel names it, for the paths of owners.
    lazy var rootPath: Path = Sys.descriptorPath(rootFD) ?? Array(target.utf8)

    init(rootFD: Int32, target: String, layer: String, options: LayerUnpackOptions, lowerFDs: [Int32], stream: LayerStream) {
        self.rootFD = rootFD
        self.target = target
        self.layer = layer
        self.options = options
        self.lowerFDs = lowerFDs
        self.stream = stream
        opaqueAttribute = options.privileged ? "trusted.overlay.opaque" : "user.overlay.opaque"
    }

    /// Forgets every cached directory; their descriptors close after the
    /// current entry.
    func invalidateCache() {
        retiredDescriptors.append(contentsOf: directoryCache.values)
        directoryCache.removeAll()
    }

    func closeRetiredDescriptors() {
        retiredDescriptors.forEach(Sys.close)
        retiredDescriptors.removeAll()
    }

    func closeCachedDirectories() {
        invalidateCache()
        closeRetiredDescriptors()
    }

    // MARK: The entry loop

    /// Applies every entry; returns how many there were.
    func applyAll(_ reader: OpaquePointer) throws -> Int {
        var count = 0
        var entry: OpaquePointer?
        while true {
            let status = archive_read_next_header(reader, &entry)
            if status == ARCHIVE_EOF { break }
            // ARCHIVE_RETRY is a damaged header that libarchive would skip;
            // other tools would read the stream differently from there on.
            guard status == ARCHIVE_OK || status == ARCHIVE_WARN, let entry else { throw corrupt(reader) }
            try apply(entry, reader)
            closeRetiredDescriptors()
            count += 1
            if count & 63 == 0 {
                if options.isCancelled?() == true {
                    throw OCIImageError(.cancelled, "unpacking layer \(layer) was cancelled")
                }
                options.progress?(stream.bytesRead)
            }
        }
        // A layer with refused entries is discarded, so its directories are
        // left writable for the clean-up.
        if refused.isEmpty { try finishDirectories() }
        options.progress?(stream.bytesRead)
        return count
    }

    func corrupt(_ reader: OpaquePointer) -> OCIImageError {
        stream.consumerError ?? OCIImageError(.corruptLayer, "layer \(layer) is corrupt or truncated: \(archiveMessage(reader))")
    }

    func refuse(_ display: String, _ reason: String) {
        refusedCount += 1
        if refused.count < Self.refusalLimit {
            refused.append(OCIImageError.RefusedEntry(path: display, reason: reason))
        }
    }

    func apply(_ entry: OpaquePointer, _ reader: OpaquePointer) throws {
        guard let rawPath = archive_entry_pathname(entry) ?? archive_entry_pathname_utf8(entry) else {
            refuse("<unnamed>", "the entry has no path")
            return
        }
        let raw = bytes(rawPath)
        let display = String(decoding: raw, as: UTF8.self)
        let components: [Path]
        switch normalize(raw) {
        case .success(let value): components = value
        case .failure(let reason):
            refuse(display, reason.message)
            return
        }
        let type = UInt32(archive_entry_filetype(entry)) & GANTRY_AE_IFMT
        let hardlink = archive_entry_hardlink(entry) ?? archive_entry_hardlink_utf8(entry)

        guard let name = components.last else {
            // The layer's root directory ("./").
            guard hardlink == nil && type == GANTRY_AE_IFDIR else {
                refuse(display, "the root of a layer can only be a directory")
                return
            }
            try clearAttributes(fd: rootFD, display: target)
            try setOwnerAndAttributes(fd: rootFD, entry, display: target)
            deferDirectoryMetadata(fd: rootFD, path: Path(), entry)
            return
        }
        let parent = components.dropLast()

        if options.plainArchive == nil, name.starts(with: whiteoutPrefix) {
            try applyWhiteout(name: name, parent: parent, display: display)
            return
        }

        guard case .found(let parentFD) = try directory(parent, create: true, display: display) else { return }
        preserveTimes(of: join(parent), fd: parentFD)
        let path = join(components)
        markWritten(components)

        if let hardlink {
            try link(entry, to: bytes(hardlink), parentFD: parentFD, name: name, display: display)
            return
        }
        switch type {
        case GANTRY_AE_IFREG:
            try createFile(entry, reader, parentFD: parentFD, name: name, display: display)
        case GANTRY_AE_IFDIR:
            try createDirectory(entry, parentFD: parentFD, name: name, path: path, display: display)
        case GANTRY_AE_IFLNK:
            guard let linkTarget = archive_entry_symlink(entry) ?? archive_entry_symlink_utf8(entry) else {
                refuse(display, "the symlink has no target")
                return
            }
            try replacing(parentFD, name, display) { symlinkat(linkTarget, parentFD, $0) }
            try setOwnerAndTimes(parentFD: parentFD, name: name, entry, display: display)
        case GANTRY_AE_IFIFO:
            try replacing(parentFD, name, display) { mknodat(parentFD, $0, S_IFIFO | 0o600, 0) }
            try setSpecialFileMetadata(parentFD: parentFD, name: name, entry, display: display)
        case GANTRY_AE_IFCHR, GANTRY_AE_IFBLK:
            if !options.privileged, options.userNamespace != nil, options.plainArchive == nil {
                // No user namespace may make device nodes: an image's are
                // skipped and counted (a container gets the standard ones).
                skippedDeviceNodes += 1
                written.remove(path)
                return
            }
            guard options.privileged else {
                refuse(display, "device nodes can only be created with root privileges")
                return
            }
            guard options.plainArchive?.allowsDevices ?? true else {
                refuse(display, "device nodes are not created from this archive")
                return
            }
            guard options.createsDeviceNodes else {
                skippedDeviceNodes += 1
                written.remove(path)
                return
            }
            let kind: mode_t = type == GANTRY_AE_IFCHR ? S_IFCHR : S_IFBLK
            let device = archive_entry_rdev(entry)
            do {
                try replacing(parentFD, name, display) { mknodat(parentFD, $0, kind | 0o600, device) }
            } catch let error as SystemCallError where error.errno == .notPermitted {
                // Root in a user namespace has CAP_MKNOD but may not use it.
                refuse(display, "device nodes cannot be created here (\(error.errno))")
                return
            }
            try setSpecialFileMetadata(parentFD: parentFD, name: name, entry, display: display)
        case GANTRY_AE_IFSOCK:
            // Sockets cannot be carried by an archive; like tar, skip them.
            written.remove(path)
        default:
            refuse(display, "unknown entry type \(type)")
        }
    }

    // MARK: Paths

    struct Refusal: Error { var message: String }

    let whiteoutPrefix: Path = Array(".wh.".utf8)
    let opaqueMarker: Path = Array(".wh..wh..opq".utf8)
    let metadataPrefix: Path = Array(".wh..wh.".utf8)

    /// Splits a path into components, dropping `.` and empty ones; refuses
    /// absolute paths, `..`, and names or paths longer than Linux allows.
    func normalize(_ raw: Path) -> Result<[Path], Refusal> {
        if raw.first == 0x2f { return .failure(Refusal(message: "absolute path")) }
        guard raw.count < Int(PATH_MAX) else { return .failure(Refusal(message: "path longer than \(PATH_MAX - 1) bytes")) }
        var components: [Path] = []
        for component in raw.split(separator: 0x2f, omittingEmptySubsequences: true) {
            if component.count == 1 && component[component.startIndex] == 0x2e { continue }
            if component.count == 2 && component.allSatisfy({ $0 == 0x2e }) {
                return .failure(Refusal(message: "path has a '..' component"))
            }
            guard component.count <= Int(NAME_MAX) else { return .failure(Refusal(message: "a name longer than \(NAME_MAX) bytes")) }
            components.append(Array(component))
        }
        return .success(components)
    }

    /// Records that this layer wrote `components`, and so also every
    /// directory above it (stopping at the first one already recorded).
    func markWritten(_ components: some Collection<Path>) {
        var path = join(components)
        while written.insert(path).inserted, let slash = path.lastIndex(of: 0x2f) {
            path.removeSubrange(slash...)
        }
    }

    func join(_ components: some Collection<Path>) -> Path {
        var path = Path()
        for component in components {
            if !path.isEmpty { path.append(0x2f) }
            path.append(contentsOf: component)
        }
        return path
    }

    func bytes(_ string: UnsafePointer<CChar>) -> Path {
        Array(UnsafeRawBufferPointer(start: string, count: strlen(string)))
    }

    func text(_ path: Path) -> String {
        path.isEmpty ? "." : String(decoding: path, as: UTF8.self)
    }

    /// Opens `path` beneath the root, never leaving it.
    func openBeneath(_ path: Path, flags: Int32, noSymlinks: Bool = false) -> Result<Int32, Errno> {
        let resolve = UInt64(GANTRY_RESOLVE_BENEATH | GANTRY_RESOLVE_NO_MAGICLINKS | (noSymlinks ? GANTRY_RESOLVE_NO_SYMLINKS : 0))
        let fd = withCString(path.isEmpty ? [0x2e] : path) {
            gantry_openat2(rootFD, $0, UInt64(flags | O_CLOEXEC), 0, resolve)
        }
        return fd >= 0 ? .success(fd) : .failure(Sys.errno)
    }

    /// Finds (and, with `create`, makes) the directory `components` beneath
    /// the root, returning a cached O_PATH descriptor. Records a refusal for
    /// `display` when the path leads outside the root or through a non-directory.
    func directory(_ components: ArraySlice<Path>, create: Bool, display: String) throws -> Lookup {
        if components.isEmpty { return .found(rootFD) }
        let path = join(components)
        if let fd = directoryCache[path] { return .found(fd) }
        let existing = openBeneath(path, flags: GANTRY_O_PATH | O_DIRECTORY)
        var needsCreation = false
        switch existing {
        case .failure(.noSuchFileOrDirectory): needsCreation = create
        // In overlay mode a whiteout this layer made may stand where a directory goes.
        case .failure(.notDirectory): needsCreation = create && isOverlay
        default: break
        }
        switch existing {
        case .success(let fd):
            return .found(cache(path, fd))
        case .failure where needsCreation:
            var components = components
            if !lowerFDs.isEmpty {
                // A missing parent may be a symlink in a lower layer; resolve
                // it as the merged tree would, so that the entry lands where
                // applying the layers in order would put it.
                switch resolveThroughLowers(Array(components)) {
                case .success(let resolved):
                    components = resolved[...]
                    if components.isEmpty { return .found(rootFD) }
                case .failure(let refusal):
                    refuse(display, refusal.message)
                    return .refused
                }
            }
            // Create the missing components one by one, each beneath the root.
            var parentFD = rootFD
            for length in 1...components.count {
                let prefix = join(components.prefix(length))
                if let fd = directoryCache[prefix] {
                    parentFD = fd
                    continue
                }
                let name = components[components.startIndex + length - 1]
                var result = openBeneath(prefix, flags: GANTRY_O_PATH | O_DIRECTORY)
                if case .failure(.noSuchFileOrDirectory) = result {
                    try makeImplicitDirectory(parentFD: parentFD, name: name, path: prefix, opaque: false)
                    result = openBeneath(prefix, flags: GANTRY_O_PATH | O_DIRECTORY)
                } else if case .failure(.notDirectory) = result, isOverlay, let st = statBeneath(rootFD, prefix), isWhiteout(st) {
                    // This layer deleted the lower directory and now fills a new one.
                    try removeExisting(parentFD, name, display: display)
                    try makeImplicitDirectory(parentFD: parentFD, name: name, path: prefix, opaque: true)
                    result = openBeneath(prefix, flags: GANTRY_O_PATH | O_DIRECTORY)
                }
                switch result {
                case .success(let fd): parentFD = cache(prefix, fd)
                case .failure(let error): return try refuseLookup(error, display: display, path: prefix)
                }
            }
            return .found(parentFD)
        case .failure(.noSuchFileOrDirectory):
            return .missing
        case .failure(let error):
            return try refuseLookup(error, display: display, path: path)
        }
    }

    func refuseLookup(_ error: Errno, display: String, path: Path) throws -> Lookup {
        switch error {
        case .improperLink:
            refuse(display, "\(text(path)) goes through a symlink that leads outside the root")
        case .tooManySymbolicLinkLevels:
            refuse(display, "\(text(path)) has too many levels of symlinks")
        case .notDirectory:
            refuse(display, "\(text(path)) is not a directory")
        default:
            throw SystemCallError("open", target + "/" + text(path), error)
        }
        return .refused
    }

    func cache(_ path: Path, _ fd: Int32) -> Int32 {
        if directoryCache.count >= 512 { invalidateCache() }
        directoryCache[path] = fd
        return fd
    }

    var isOverlay: Bool {
        if case .overlay = options.whiteouts { return true }
        return false
    }
}
