public import Foundation

/// Where a container is in its life.
public enum ContainerStatus: String, Hashable, Sendable, Codable, CustomStringConvertible {
    /// Prepared (cgroup, directories) but not started.
    case created
    /// Its process runs.
    case running
    /// Its processes are frozen.
    case paused
    /// Its process has ended.
    case stopped
    /// Gone: nothing of it is left.
    case removed

    public var description: String { rawValue }
}

/// Why a container's process ended.
public enum ExitReason: String, Hashable, Sendable, Codable, CustomStringConvertible {
    /// It ended by itself (or by a signal someone sent it).
    case exited
    /// The kernel's OOM killer killed a process of it (its memory limit was reached).
    case oomKilled
    /// Its timeout ran out and it was killed.
    case timedOut
    /// ``Container/stop(grace:)`` ended it.
    case stopped
    /// It ended while no Gantry process watched it, so its status is unknown.
    case unknown

    public var description: String { rawValue }
}

/// How a container's process ended, and why.
public struct ContainerExit: Hashable, Sendable, Codable, CustomStringConvertible {
    /// The exit code or signal.
    public var status: ProcessExit
    /// Why.
    public var reason: ExitReason

    public init(status: ProcessExit, reason: ExitReason) {
        self.status = status
        self.reason = reason
    }

    /// The code a shell would report: the exit code, or 128 + the signal
    /// (137 after SIGKILL or an OOM kill).
    public var code: Int32 { status.shellStatus }

    public var description: String {
        reason == .exited ? status.description : "\(status.description) (\(reason))"
    }
}

/// What a container run to its end by `ContainerRuntime.run(_:input:maximumOutputBytes:)`
/// wrote, and how it ended.
public struct RunOutput: Sendable {
    /// How it ended.
    public var exit: ContainerExit
    /// What it wrote to its standard output.
    public var stdout: [UInt8]
    /// What it wrote to its standard error.
    public var stderr: [UInt8]
    /// Why not all the input was read, when the container ended or closed
    /// its input first; `nil` when it read everything.
    public var inputError: RuntimeError?

    /// A result: how the container ended and what it wrote.
    public init(exit: ContainerExit, stdout: [UInt8], stderr: [UInt8], inputError: RuntimeError? = nil) {
        self.exit = exit
        self.stdout = stdout
        self.stderr = stderr
        self.inputError = inputError
    }

    /// The standard output as text (invalid UTF-8 replaced).
    public var standardOutput: String { String(decoding: stdout, as: UTF8.self) }
    /// The standard error as text (invalid UTF-8 replaced).
    public var standardError: String { String(decoding: stderr, as: UTF8.self) }
}

/// What opening a runtime does with what processes that ended left behind.
public enum LeftoverPolicy: Hashable, Sendable {
    /// Finish it at once (the default): remove the containers that were
    /// bound to a process that ended, adopt the independent ones that still
    /// run, record the end of those that ended. Only what belonged to
    /// processes that are gone is touched.
    case recover
    /// Leave everything as it is until `ContainerRuntime.recoverLeftovers()`.
    case leave
}

/// What `ContainerRuntime.recoverLeftovers()` did, by container name.
public struct RecoveryReport: Hashable, Sendable {
    /// Containers bound to a process that ended, removed with everything they had.
    public var removed: [String] = []
    /// Independent containers that still run, now watched by this process.
    public var adopted: [String] = []
    /// Independent containers that ended while no process watched them, now recorded as stopped.
    public var ended: [String] = []

    /// An empty report.
    public init() {}
}

/// A container whose record in the state root cannot be read.
public struct DamagedContainer: Hashable, Sendable {
    /// 64 hex digits (its directory's name).
    public var id: String
    /// The state file that cannot be read.
    public var stateFile: String
    /// Why it cannot be read.
    public var reason: String
    /// The names that still point at it.
    public var names: [String]
    /// Processes still running in its cgroup (under this runtime's parent).
    public var processes: [Int32]
}

/// A network's or a volume's record in the state root that cannot be
/// read (or is missing while its directory is there).
public struct DamagedRecord: Hashable, Sendable {
    /// The network's or volume's name (its directory's).
    public var name: String
    /// The record file that cannot be read.
    public var file: String
    /// Why it cannot be read.
    public var reason: String
    /// What a repair rebuilds the record from, or nil when nothing is left
    /// to rebuild it from (then only a forced removal helps).
    public var repairSource: String?
}

/// The process a container runs, as resolved from its spec and image.
public struct ResolvedProcess: Hashable, Sendable, Codable {
    /// argv, the program first.
    public var arguments: [String]
    /// `KEY=VALUE` pairs.
    public var environment: [String]
    /// The working directory.
    public var workingDirectory: String
    /// The user and group IDs it runs as.
    public var uid: UInt32
    public var gid: UInt32
    /// Supplementary groups.
    public var groups: [UInt32]
}

/// What the state root records about a container, as a read-only view:
/// the runtime writes it anew on every change (readers never see a partial
/// record), so that any process opening the root can list and manage it.
/// How it is stored is the runtime's own business and may change.
public struct ContainerRecord: Hashable, Sendable {
    /// 64 hex digits.
    public internal(set) var id: String
    /// The unique name.
    public internal(set) var name: String
    /// What was asked for.
    public internal(set) var spec: ContainerSpec
    /// The process, as resolved from the spec and the image.
    public internal(set) var process: ResolvedProcess
    /// The image's manifest digest, for image-based containers.
    public internal(set) var imageDigest: String?
    /// The container's cgroup, relative to the hierarchy's root.
    public internal(set) var cgroup: String
    /// Where things stand.
    public internal(set) var status: ContainerStatus
    /// The main process's pid on the host while it runs.
    public internal(set) var pid: Int32?
    /// That process's start time (clock ticks after boot), to recognise it
    /// after pid reuse.
    public internal(set) var pidStartTime: UInt64?
    /// The Gantry process that started the container, and its start time.
    public internal(set) var ownerPid: Int32?
    public internal(set) var ownerStartTime: UInt64?
    /// When it was created, started and finished.
    public internal(set) var createdAt: Date
    public internal(set) var startedAt: Date?
    public internal(set) var finishedAt: Date?
    /// How it ended.
    public internal(set) var exit: ContainerExit?
    /// Whether a stop was asked for, so that its end is reported as stopped.
    public internal(set) var stopRequested: Bool?
    /// The root file system's layers, top-most first (snapshot directories
    /// of the image), or the one directory it is.
    public internal(set) var layers: [String]
    /// Its place on a bridge network.
    public internal(set) var network: NetworkAttachment?

    /// Whether the root file system is an overlay of image layers.
    var usesOverlay: Bool {
        if case .image = spec.root { return true }
        return false
    }

    /// The short form of the ID (12 hex digits).
    public var shortID: String { String(id.prefix(12)) }

    init(id: String, name: String, spec: ContainerSpec, process: ResolvedProcess, imageDigest: String?, cgroup: String,
         status: ContainerStatus, ownerPid: Int32?, ownerStartTime: UInt64?, createdAt: Date, layers: [String]) {
        self.id = id
        self.name = name
        self.spec = spec
        self.process = process
        self.imageDigest = imageDigest
        self.cgroup = cgroup
        self.status = status
        self.ownerPid = ownerPid
        self.ownerStartTime = ownerStartTime
        self.createdAt = createdAt
        self.layers = layers
    }
}

extension ContainerRecord {
    /// The record as the state file holds it: the encoders below write
    /// its parts, and this reads them back as one.
    struct Stored: Codable {
        var id: String
        var name: String
        var spec: ContainerSpec
        var process: ResolvedProcess
        var imageDigest: String?
        var cgroup: String
        var status: ContainerStatus
        var pid: Int32?
        var pidStartTime: UInt64?
        var ownerPid: Int32?
        var ownerStartTime: UInt64?
        var createdAt: Date
        var startedAt: Date?
        var finishedAt: Date?
        var exit: ContainerExit?
        var stopRequested: Bool?
        var layers: [String]
        var network: NetworkAttachment?

        init(_ record: ContainerRecord) {
            (id, name, spec, process, imageDigest, cgroup) = (record.id, record.name, record.spec, record.process, record.imageDigest, record.cgroup)
            (status, pid, pidStartTime, ownerPid, ownerStartTime) = (record.status, record.pid, record.pidStartTime, record.ownerPid, record.ownerStartTime)
            (createdAt, startedAt, finishedAt, exit, stopRequested) = (record.createdAt, record.startedAt, record.finishedAt, record.exit, record.stopRequested)
            (layers, network) = (record.layers, record.network)
        }

        var record: ContainerRecord {
            var record = ContainerRecord(id: id, name: name, spec: spec, process: process, imageDigest: imageDigest, cgroup: cgroup,
                                         status: status, ownerPid: ownerPid, ownerStartTime: ownerStartTime, createdAt: createdAt, layers: layers)
            (record.pid, record.pidStartTime, record.startedAt, record.finishedAt) = (pid, pidStartTime, startedAt, finishedAt)
            (record.exit, record.stopRequested, record.network) = (exit, stopRequested, network)
            return record
        }
    }

    /// Reads a record from its state file's contents.
    static func decode(_ data: Data) throws -> ContainerRecord {
        try ContainerRuntime.decoder.decode(Stored.self, from: data).record
    }

    /// The fields fixed at creation but the spec, encoded once per
    /// container. Their keys are the record's own, so that the parts joined
    /// decode as a `ContainerRecord`.
    struct FixedFields: Encodable {
        var id: String
        var name: String
        var process: ResolvedProcess
        var imageDigest: String?
        var cgroup: String
        var createdAt: Date
        var layers: [String]
        var network: NetworkAttachment?

        init(_ record: ContainerRecord) {
            (id, name, process) = (record.id, record.name, record.process)
            (imageDigest, cgroup, createdAt, layers, network) = (record.imageDigest, record.cgroup, record.createdAt, record.layers, record.network)
        }
    }

    /// The spec alone, whose encoding is kept for the next containers made
    /// from the same spec.
    struct SpecField: Encodable {
        var spec: ContainerSpec
    }

    /// The fields that change over the container's life.
    struct ChangingFields: Encodable {
        var status: ContainerStatus
        var pid: Int32?
        var pidStartTime: UInt64?
        var ownerPid: Int32?
        var ownerStartTime: UInt64?
        var startedAt: Date?
        var finishedAt: Date?
        var exit: ContainerExit?
        var stopRequested: Bool?

        init(_ record: ContainerRecord) {
            (status, pid, pidStartTime, ownerPid, ownerStartTime) = (record.status, record.pid, record.pidStartTime, record.ownerPid, record.ownerStartTime)
            (startedAt, finishedAt, exit, stopRequested) = (record.startedAt, record.finishedAt, record.exit, record.stopRequested)
        }
    }

    /// Whether `other` has the same fixed fields (the cheap ones compared first).
    func fixedFieldsEqual(_ other: ContainerRecord) -> Bool {
        id == other.id && name == other.name && cgroup == other.cgroup && createdAt == other.createdAt
            && imageDigest == other.imageDigest && layers == other.layers && network == other.network && process == other.process
            && spec == other.spec
    }

    /// Two encoded JSON objects (`{…}`, neither empty) joined into one.
    static func joinObjects(_ first: Data, _ second: Data) -> Data {
        var joined = Data(capacity: first.count + second.count)
        joined.append(first.dropLast())
        joined.append(UInt8(ascii: ","))
        joined.append(second.dropFirst())
        return joined
    }
}

/// Reads a process's start time from `/proc/<pid>/stat` (field 22).
func processStartTime(_ pid: Int32) -> UInt64? {
    processStatus(pid)?.startTime
}

/// A process's state (field 3: `R`, `S`, `Z` for a zombie, …) and start
/// time (field 22) from `/proc/<pid>/stat`.
func processStatus(_ pid: Int32) -> (state: Character, startTime: UInt64)? {
    guard let text = try? FileIO.read("/proc/\(pid)/stat", code: .systemCall),
          let close = text.lastIndex(of: ")")
    else { return nil }
    // Fields after the command name, which may contain spaces and parentheses.
    let fields = text[text.index(after: close)...].split(separator: " ")
    guard fields.count > 19, let state = fields[0].first, let startTime = UInt64(fields[19]) else { return nil }
    return (state, startTime)
}
