public import Foundation
import GRDB
import OCIImage
public import Runtime
import Synchronization

/// A service as the store holds it: what is wanted, which revision, and
/// what was last seen.
public struct ServiceRecord: Hashable, Sendable, Codable {
    /// What is wanted.
    public var spec: ServiceSpec
    /// Raised by every change of the spec.
    public var generation: Int
    /// The revision replicas should run.
    public var revision: Int
    /// What the reconciler last saw.
    public var status: ServiceStatus
    /// When it was first applied.
    public var createdAt: Date
    /// When it last changed.
    public var updatedAt: Date
}

/// Where a rollout stands.
public enum RolloutPhase: String, Hashable, Sendable, Codable {
    /// Every replica runs the current revision and is available.
    case complete
    /// Replicas are being replaced or started.
    case progressing
    /// No progress within the deadline; not rolled back.
    case failed
    /// No progress within the deadline; the previous revision was restored.
    case rolledBack
}

/// What the reconciler last saw of a service.
public struct ServiceStatus: Hashable, Sendable, Codable {
    /// The generation the status describes.
    public var observedGeneration: Int = 0
    /// Replicas running (of any revision).
    public var replicas: Int = 0
    /// Replicas whose readiness passes.
    public var readyReplicas: Int = 0
    /// Ready replicas that have been ready for the minimum time.
    public var availableReplicas: Int = 0
    /// Running replicas of the current revision.
    public var updatedReplicas: Int = 0
    /// Replicas replaced after they ended, since the service was applied.
    public var restarts: Int = 0
    /// Replicas that ended for good with status 0 (restart policies on-failure and never).
    public var succeeded: Int = 0
    /// Replicas that ended for good otherwise (restart policy never).
    public var failed: Int = 0
    /// Where the rollout stands.
    public var rollout: RolloutPhase = .progressing
    /// Why it waits or failed, when it does.
    public var message: String?
    /// The virtual address of its load-balanced endpoint, if it has one.
    public var virtualAddress: IPv4Address?
    /// The host ports of its load-balanced endpoint (with the ports chosen
    /// for those asked as 0), if it has one.
    public var publishedPorts: [PublishedPort]?

    /// An empty status.
    public init() {}
}

/// One revision of a service: a template it ran or runs.
public struct ServiceRevision: Hashable, Sendable, Codable {
    /// Counted up from 1 per service.
    public var number: Int
    /// The template's hash.
    public var hash: String
    /// What replicas of the revision run.
    public var template: RevisionTemplate
    /// When it was made.
    public var createdAt: Date
}

/// A stored event: its sequence number in the journal and the event.
public struct JournalEntry: Hashable, Sendable, Codable {
    /// Increasing with every event written.
    public var sequence: Int64
    /// The event.
    public var event: ServiceEvent
}

/// The SQLite database (WAL mode) of services, their revisions and the
/// event journal, in the state root (`reconciler.sqlite`). Any process
/// opening the same root sees the same services; changes from one are
/// picked up by a reconciler running in another.
public final class ServiceStore: Sendable {
    let pool: DatabasePool
    /// The state root's path, where the key of secrets' digests is kept.
    let rootPath: String
    /// Changes of specs made through this object, which `data_version`
    /// (counting other connections' commits only) does not see.
    private let specChanges = Atomic<Int>(0)
    /// The most events the journal keeps.
    public let journalLimit: Int
    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }()

    /// Opens (or creates) the store in `root`.
    ///
    /// - Parameters:
    ///   - root: the state root.
    ///   - journalLimit: the most events the journal keeps; older ones are dropped.
    public init(root: StateRoot, journalLimit: Int = 10_000) throws {
        let path = root.path + "/reconciler.sqlite"
        rootPath = root.path
        self.journalLimit = max(1, journalLimit)
        do {
            try FileManager.default.createDirectory(atPath: root.path, withIntermediateDirectories: true)
            pool = try openSharedDatabase(path: path, label: "gantry.reconciler", migrator: Self.migrator)
        } catch let error as DatabaseError {
            throw ReconcilerError(.store, "the service store \(path) cannot be opened: \(error.message ?? error.description)")
        } catch {
            throw ReconcilerError(.store, "the service store \(path) cannot be opened: \(error)")
        }
    }

    private static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE service (
                    project TEXT NOT NULL, name TEXT NOT NULL, record BLOB NOT NULL,
                    PRIMARY KEY (project, name));
                CREATE TABLE revision (
                    project TEXT NOT NULL, service TEXT NOT NULL, number INTEGER NOT NULL, revision BLOB NOT NULL,
                    PRIMARY KEY (project, service, number));
                CREATE TABLE event (
                    sequence INTEGER PRIMARY KEY AUTOINCREMENT, project TEXT NOT NULL, service TEXT NOT NULL,
                    object TEXT NOT NULL, event BLOB NOT NULL);
                CREATE INDEX event_object ON event (project, object);
                """)
        }
        migrator.registerMigration("v2") { db in
            try db.execute(sql: """
                CREATE TABLE autoscaler (
                    project TEXT NOT NULL, service TEXT NOT NULL, record BLOB NOT NULL,
                    PRIMARY KEY (project, service));
                """)
        }
        return migrator
    }

    func perform<T>(_ what: String, _ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as ReconcilerError {
            throw error
        } catch let error as DatabaseError {
            throw ReconcilerError(.store, "cannot \(what): \(error.message ?? error.description)")
        } catch {
            throw ReconcilerError(.store, "cannot \(what): \(error)")
        }
    }

    static func decode<T: Decodable>(_ type: T.Type, _ data: Data, _ what: String) throws -> T {
        do {
            return try JSONDecoder().decode(type, from: data)
        } catch {
            throw ReconcilerError(.store, "the stored \(what) cannot be read: \(error)")
        }
    }

    // MARK: - Services

    /// Every service of `project`, or of every project when nil, by name.
    ///
    /// - Parameter project: the project, or nil for all.
    public func services(project: String? = nil) throws -> [ServiceRecord] {
        try perform("list services") {
            try pool.read { db in
                let rows = if let project {
                    try Row.fetchAll(db, sql: "SELECT name, record FROM service WHERE project = ? ORDER BY name", arguments: [project])
                } else {
                    try Row.fetchAll(db, sql: "SELECT name, record FROM service ORDER BY project, name")
                }
                return try rows.map { try Self.decode(ServiceRecord.self, $0["record"], "service \($0["name"] as String)") }
            }
        }
    }

    /// The service `name` of `project`.
    ///
    /// - Parameters:
    ///   - name: the service.
    ///   - project: its project.
    /// - Throws: ``ReconcilerError`` with code `notFound` when there is none.
    public func service(_ name: String, project: String = ServiceSpec.defaultProject) throws -> ServiceRecord {
        try perform("read service \(name)") {
            try pool.read { db in try Self.service(db, project, name) }
        }
    }

    static func service(_ db: Database, _ project: String, _ name: String) throws -> ServiceRecord {
        guard let data = try Data.fetchOne(db, sql: "SELECT record FROM service WHERE project = ? AND name = ?", arguments: [project, name]) else {
            throw ReconcilerError(.notFound, "no service \(name) in project \(project)")
        }
        return try decode(ServiceRecord.self, data, "service \(name)")
    }

    private static func write(_ db: Database, _ record: ServiceRecord) throws {
        try db.execute(sql: "INSERT OR REPLACE INTO service (project, name, record) VALUES (?, ?, ?)",
                       arguments: [record.spec.project, record.spec.name, try encoder.encode(record)])
    }

    /// Creates or updates a service. A changed template or probe set makes
    /// a new revision (or makes an earlier revision with the same template
    /// the newest again, as Kubernetes does). Returns the stored record and
    /// whether anything changed.
    ///
    /// - Parameter spec: the service's spec.
    @discardableResult
    public func apply(_ spec: ServiceSpec) throws -> (record: ServiceRecord, changed: Bool) {
        defer { specChanges.add(1, ordering: .relaxed) }
        try spec.validate()
        // A changed secret or config makes a new revision.
        let spec = try spec.withValueDigests(key: try Self.secretDigestKey(root: rootPath))
        return try perform("apply service \(spec.name)") {
            try pool.write { db in
                let existing = try? Self.service(db, spec.project, spec.name)
                if let existing, existing.spec == spec { return (existing, false) }
                let now = Date()
                var record = existing ?? ServiceRecord(spec: spec, generation: 0, revision: 0, status: ServiceStatus(), createdAt: now, updatedAt: now)
                record.spec = spec
                record.generation += 1
                record.updatedAt = now
                try Self.setRevision(db, &record, template: spec.revisionTemplate)
                try Self.write(db, record)
                return (record, true)
            }
        }
    }

    /// Makes `template` the record's revision: the current one if its hash
    /// matches, an earlier one renumbered as the newest, or a new one.
    private static func setRevision(_ db: Database, _ record: inout ServiceRecord, template: RevisionTemplate) throws {
        let revisions = try revisions(db, record.spec.project, record.spec.name)
        let hash = template.hash
        if let current = revisions.first(where: { $0.number == record.revision }), current.hash == hash { return }
        let number = (revisions.map(\.number).max() ?? 0) + 1
        if let earlier = revisions.first(where: { $0.hash == hash }) {
            try db.execute(sql: "DELETE FROM revision WHERE project = ? AND service = ? AND number = ?",
                           arguments: [record.spec.project, record.spec.name, earlier.number])
        }
        let revision = ServiceRevision(number: number, hash: hash, template: template, createdAt: Date())
        try db.execute(sql: "INSERT INTO revision (project, service, number, revision) VALUES (?, ?, ?, ?)",
                       arguments: [record.spec.project, record.spec.name, number, try encoder.encode(revision)])
        record.revision = number
    }

    /// Changes the desired replica count of a service.
    ///
    /// - Parameters:
    ///   - name: the service.
    ///   - project: its project.
    ///   - replicas: the new count.
    @discardableResult
    public func scale(_ name: String, project: String = ServiceSpec.defaultProject, replicas: Int) throws -> ServiceRecord {
        defer { specChanges.add(1, ordering: .relaxed) }
        try ServiceSpec.validate(replicas: replicas, service: name)
        return try perform("scale service \(name)") {
            try pool.write { db in
                var record = try Self.service(db, project, name)
                guard record.spec.replicas != replicas else { return record }
                if let container = record.spec.template.name, replicas > 1 {
                    throw ReconcilerError(.invalidSpec, "service \(name) names its container \(container), so it runs one replica, not \(replicas)")
                }
                record.spec.replicas = replicas
                record.generation += 1
                record.updatedAt = Date()
                try Self.write(db, record)
                return record
            }
        }
    }

    /// Goes back to an earlier revision's template (the one before the
    /// current when `revision` is nil), which becomes the newest revision.
    ///
    /// - Parameters:
    ///   - name: the service.
    ///   - project: its project.
    ///   - revision: the revision to go back to, or nil for the previous one.
    ///   - avoiding: template hashes not to go back to when looking for the previous one.
    /// - Returns: the record, and the revision numbers from and to.
    @discardableResult
    public func rollBack(_ name: String, project: String = ServiceSpec.defaultProject, to revision: Int? = nil,
                         avoiding: Set<String> = []) throws
        -> (record: ServiceRecord, from: Int, to: Int) {
        defer { specChanges.add(1, ordering: .relaxed) }
        return try perform("roll back service \(name)") {
            try pool.write { db in
                var record = try Self.service(db, project, name)
                let revisions = try Self.revisions(db, project, name)
                let current = record.revision
                let target: ServiceRevision
                if let revision {
                    guard let found = revisions.first(where: { $0.number == revision }), revision != current else {
                        throw ReconcilerError(.notFound, "service \(name) has no revision \(revision) other than its current one")
                    }
                    target = found
                } else {
                    let currentHash = revisions.first { $0.number == current }?.hash
                    guard let previous = revisions.filter({ $0.number < current && $0.hash != currentHash && !avoiding.contains($0.hash) }).max(by: { $0.number < $1.number }) else {
                        throw ReconcilerError(.notFound, "service \(name) has no earlier revision to roll back to")
                    }
                    target = previous
                }
                record.spec.revisionTemplate = target.template
                record.generation += 1
                record.updatedAt = Date()
                try Self.setRevision(db, &record, template: target.template)
                try Self.write(db, record)
                return (record, current, record.revision)
            }
        }
    }

    /// Records what the reconciler saw, unless the service was deleted meanwhile.
    func setStatus(_ status: ServiceStatus, project: String, name: String) throws {
        try perform("record the status of service \(name)") {
            try pool.write { db in
                guard var record = try? Self.service(db, project, name), record.status != status else { return }
                record.status = status
                try Self.write(db, record)
            }
        }
    }

    /// Deletes a service and its revisions; its replicas are removed by the
    /// reconciler of its project. Returns whether it existed.
    ///
    /// - Parameters:
    ///   - name: the service.
    ///   - project: its project.
    @discardableResult
    public func delete(_ name: String, project: String = ServiceSpec.defaultProject) throws -> Bool {
        defer { specChanges.add(1, ordering: .relaxed) }
        return try perform("delete service \(name)") {
            try pool.write { db in
                try db.execute(sql: "DELETE FROM revision WHERE project = ? AND service = ?", arguments: [project, name])
                try db.execute(sql: "DELETE FROM autoscaler WHERE project = ? AND service = ?", arguments: [project, name])
                try db.execute(sql: "DELETE FROM service WHERE project = ? AND name = ?", arguments: [project, name])
                return db.changesCount > 0
            }
        }
    }

    /// A service's revisions, oldest first.
    ///
    /// - Parameters:
    ///   - name: the service.
    ///   - project: its project.
    public func revisions(_ name: String, project: String = ServiceSpec.defaultProject) throws -> [ServiceRevision] {
        try perform("list the revisions of service \(name)") {
            try pool.read { db in try Self.revisions(db, project, name) }
        }
    }

    private static func revisions(_ db: Database, _ project: String, _ name: String) throws -> [ServiceRevision] {
        try Data.fetchAll(db, sql: "SELECT revision FROM revision WHERE project = ? AND service = ? ORDER BY number", arguments: [project, name])
            .map { try decode(ServiceRevision.self, $0, "revision of service \(name)") }
    }

    /// Drops the oldest revisions beyond `limit`, never the current one.
    func pruneRevisions(_ name: String, project: String, keeping limit: Int, current: Int) throws {
        try perform("prune the revisions of service \(name)") {
            try pool.write { db in
                try db.execute(sql: """
                    DELETE FROM revision WHERE project = ? AND service = ? AND number != ? AND number NOT IN (
                        SELECT number FROM revision WHERE project = ? AND service = ? AND number != ? ORDER BY number DESC LIMIT ?)
                    """, arguments: [project, name, current, project, name, current, limit])
            }
        }
    }

    /// A number that changes whenever another connection (another process,
    /// or another store object) commits a change, or a spec is changed
    /// through this object (as `Reconciler.tearDown` does with a running
    /// reconciler's store).
    func changeCounter() throws -> Int {
        let version = try perform("read the store's version") {
            try pool.write { db in try Int.fetchOne(db, sql: "PRAGMA data_version") ?? 0 }
        }
        return version &* 1_000_003 &+ specChanges.load(ordering: .relaxed)
    }

    // MARK: - Journal

    /// Appends events to the journal, dropping the oldest beyond its limit.
    func append(_ events: [ServiceEvent]) throws {
        guard !events.isEmpty else { return }
        try perform("write the event journal") {
            try pool.write { db in
                for event in events {
                    try db.execute(sql: "INSERT INTO event (project, service, object, event) VALUES (?, ?, ?, ?)",
                                   arguments: [event.project, event.service, event.object, try Self.encoder.encode(event)])
                }
                let last = db.lastInsertedRowID
                if last % 64 < Int64(events.count) || events.count >= 64 {
                    try db.execute(sql: "DELETE FROM event WHERE sequence <= ?", arguments: [last - Int64(journalLimit)])
                }
            }
        }
    }

    /// Events from the journal, oldest first.
    ///
    /// - Parameters:
    ///   - project: only this project's, when given.
    ///   - object: only those of `service/NAME` or `container/NAME`, or of a service and its replicas when given a service name.
    ///   - after: only those after this sequence number.
    ///   - limit: at most so many (the newest).
    public func events(project: String? = nil, object: String? = nil, after: Int64 = 0, limit: Int = 1000) throws -> [JournalEntry] {
        try perform("read the event journal") {
            try pool.read { db in
                var conditions = ["sequence > ?"]
                var arguments: [any DatabaseValueConvertible] = [after]
                if let project {
                    conditions.append("project = ?")
                    arguments.append(project)
                }
                if let object {
                    if object.contains("/") {
                        conditions.append("object = ?")
                    } else {
                        conditions.append("service = ?")
                    }
                    arguments.append(object)
                }
                let sql = "SELECT * FROM (SELECT sequence, event FROM event WHERE \(conditions.joined(separator: " AND ")) ORDER BY sequence DESC LIMIT ?) ORDER BY sequence"
                arguments.append(limit)
                return try Row.fetchAll(db, sql: sql, arguments: StatementArguments(arguments)).map {
                    JournalEntry(sequence: $0["sequence"], event: try Self.decode(ServiceEvent.self, $0["event"], "event"))
                }
            }
        }
    }

    /// The journal's events as they are written, by any process, after
    /// `after`; polled every `interval`. Ends when the task is cancelled.
    ///
    /// - Parameters:
    ///   - project: only this project's, when given.
    ///   - object: only those of this object or service, when given.
    ///   - after: the sequence number to follow from (0 for the whole journal).
    ///   - interval: how often the journal is read.
    public func follow(project: String? = nil, object: String? = nil, after: Int64 = 0, interval: Duration = .milliseconds(100))
        -> AsyncThrowingStream<JournalEntry, any Error> {
        AsyncThrowingStream { continuation in
            let task = Task { [self] in
                var last = after
                do {
                    while !Task.isCancelled {
                        let entries = try events(project: project, object: object, after: last, limit: 10_000)
                        for entry in entries { continuation.yield(entry) }
                        last = entries.last?.sequence ?? last
                        try await Task.sleep(for: interval)
                    }
                    continuation.finish()
                } catch is CancellationError {
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }
}
