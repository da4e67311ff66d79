public import Foundation
import GRDB
import OCIImage
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A job as a ``JobStore`` records it: what it runs and where it stands.
public struct JobRecord: Codable, Hashable, Sendable {
    /// The job's name, unique in the store.
    public var name: String
    /// The cron job that started it, if one did.
    public var cronJob: String?
    /// The image its runs start from; `nil` when they have no container or
    /// a directory as their root.
    public var image: String?
    /// The entrypoint and command its container spec gives; empty when it
    /// gives none (the image's run).
    public var command: [String]
    /// Successful runs needed.
    public var completions: Int
    /// Runs at once, at most.
    public var parallelism: Int
    /// How completions are counted.
    public var completionMode: JobSpec.CompletionMode
    /// Failed runs tolerated.
    public var backoffLimit: Int
    /// How long the record is kept once the job has ended; `nil`: until removed.
    public var ttlAfterFinished: Duration?
    /// Where the job stands.
    public var status: JobStatus
    /// When it was started.
    public var createdAt: Date
    /// When it completed or failed.
    public var finishedAt: Date?
    /// The process id of the process running it.
    public var owner: Int32
    /// What its runs are and how it runs and retries (secrets' values
    /// withheld), when it was recorded with it; `nil` for a job whose runs
    /// have no container.
    public var template: JobTemplate?

    /// A record of every field.
    public init(name: String, cronJob: String? = nil, image: String? = nil, command: [String] = [], completions: Int = 1,
                parallelism: Int = 1, completionMode: JobSpec.CompletionMode = .nonIndexed, backoffLimit: Int = 6,
                ttlAfterFinished: Duration? = nil, status: JobStatus = JobStatus(), createdAt: Date = Date(),
                finishedAt: Date? = nil, owner: Int32 = getpid()) {
        self.name = name
        self.cronJob = cronJob
        self.image = image
        self.command = command
        self.completions = completions
        self.parallelism = parallelism
        self.completionMode = completionMode
        self.backoffLimit = backoffLimit
        self.ttlAfterFinished = ttlAfterFinished
        self.status = status
        self.createdAt = createdAt
        self.finishedAt = finishedAt
        self.owner = owner
    }

    /// The record of `job` starting now in this process.
    ///
    /// - Parameters:
    ///   - job: the job.
    ///   - cronJob: the cron job that started it, if one did.
    ///   - createdAt: when it starts.
    public init(_ job: JobSpec, cronJob: String? = nil, createdAt: Date = Date()) {
        let container = job.template.container
        var image: String?
        if case .image(let reference) = container?.root { image = reference }
        self.init(name: job.name, cronJob: cronJob, image: image,
                  command: (container?.entrypoint ?? []) + (container?.command ?? []), completions: job.completions,
                  parallelism: job.parallelism, completionMode: job.completionMode, backoffLimit: job.backoffLimit,
                  ttlAfterFinished: job.ttlAfterFinished, createdAt: createdAt)
        template = container.map { container in
            JobTemplate(container: container, resources: job.template.resources, priority: job.template.priority, queue: job.template.queue,
                        completions: job.completions, parallelism: job.parallelism, completionMode: job.completionMode,
                        backoffLimit: job.backoffLimit, backoffBase: job.backoffBase, backoffCap: job.backoffCap,
                        activeDeadline: job.activeDeadline, ttlAfterFinished: job.ttlAfterFinished)
        }
    }

    /// When the store forgets the record: its ttl after it finished, if both are set.
    var expiresAt: Date? {
        guard let finishedAt, let ttlAfterFinished else { return nil }
        return finishedAt.addingTimeInterval(ttlAfterFinished.timeInterval)
    }
}

/// A cron job as a ``JobStore`` holds it.
public struct CronJobRecord: Codable, Hashable, Sendable {
    /// What is wanted.
    public var spec: CronJobSpec
    /// What the controller last did.
    public var status: CronJobStatus
    /// When it was first saved; its first run is the first fire time after it.
    public var createdAt: Date
}

/// What a ``CronJobController`` last did for a cron job.
public struct CronJobStatus: Codable, Hashable, Sendable {
    /// The fire time the latest job was started for.
    public var lastScheduleTime: Date?
    /// When a job last completed.
    public var lastSuccessfulTime: Date?
    /// The jobs running now, by name.
    public var active: [String]

    /// A status; nothing done yet by default.
    public init(lastScheduleTime: Date? = nil, lastSuccessfulTime: Date? = nil, active: [String] = []) {
        self.lastScheduleTime = lastScheduleTime
        self.lastSuccessfulTime = lastSuccessfulTime
        self.active = active
    }
}

/// The SQLite database (WAL mode) of jobs and cron jobs, in the state root
/// (`scheduler.sqlite`). Any process opening the same root sees the same
/// records.
///
/// A job stays recorded until it is removed or, when it has a
/// ``JobSpec/ttlAfterFinished``, until that long after it ended. A job
/// recorded as running whose process is gone is read as failed with reason
/// `RunnerExited`.
public final class JobStore: Sendable {
    let pool: DatabasePool
    /// Writes through this store; see ``changeCounter()``.
    private let writes = Atomic<Int>(0)
    private static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }()

    /// Opens (or creates) the store in `root`.
    ///
    /// - Parameter root: the state root.
    /// - Throws: ``SchedulerError`` with code `store` when it cannot be opened.
    public init(root: StateRoot) throws {
        let path = root.path + "/scheduler.sqlite"
        do {
            try FileManager.default.createDirectory(atPath: root.path, withIntermediateDirectories: true)
            pool = try openSharedDatabase(path: path, label: "gantry.scheduler", migrator: Self.migrator)
        } catch let error as DatabaseError {
            throw SchedulerError(.store, "the job store \(path) cannot be opened: \(error.message ?? error.description)")
        } catch {
            throw SchedulerError(.store, "the job store \(path) cannot be opened: \(error)")
        }
    }

    private static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE job (
                    name TEXT PRIMARY KEY, cron_job TEXT, created_at REAL NOT NULL,
                    finished_at REAL, expires_at REAL, record BLOB NOT NULL);
                CREATE INDEX job_cron_job ON job (cron_job, created_at);
                CREATE TABLE cron_job (name TEXT PRIMARY KEY, record BLOB NOT NULL);
                """)
        }
        return migrator
    }

    private func perform<T>(_ what: String, _ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as SchedulerError {
            throw error
        } catch let error as DatabaseError {
            throw SchedulerError(.store, "cannot \(what): \(error.message ?? error.description)")
        } catch {
            throw SchedulerError(.store, "cannot \(what): \(error)")
        }
    }

    /// Runs `body` in a write transaction and counts the write.
    private func write<T>(_ what: String, _ body: (Database) throws -> T) throws -> T {
        try perform(what) {
            defer { writes.add(1, ordering: .relaxed) }
            return try pool.write(body)
        }
    }

    private static func decode<T: Decodable>(_ type: T.Type, _ data: Data, _ what: String) throws -> T {
        do {
            return try JSONDecoder().decode(type, from: data)
        } catch {
            throw SchedulerError(.store, "the stored \(what) cannot be read: \(error)")
        }
    }

    /// A number that changes whenever another connection to the database
    /// commits a change (SQLite's `data_version`) or this store writes, so
    /// that a long-running process can notice what others did.
    public func changeCounter() throws -> Int {
        let version = try perform("read the store's version") {
            try pool.write { db in try Int.fetchOne(db, sql: "PRAGMA data_version") ?? 0 }
        }
        // Both only grow, so their sum changes whenever either does.
        return version &+ writes.load(ordering: .relaxed)
    }

    // MARK: - Jobs

    /// Records a job that starts, replacing a finished record of the same name.
    ///
    /// - Parameter record: the job's record.
    /// - Throws: ``SchedulerError`` with code `exists` when a job of that
    ///   name is recorded as running in a process that is still there.
    public func begin(_ record: JobRecord) throws {
        try write("record job \(record.name)") { db in
            if let existing = try Self.job(db, record.name), existing.status.condition == .running,
               Self.isRunning(existing.owner) {
                throw SchedulerError(.exists, "job \"\(record.name)\" is running already, in process \(existing.owner)")
            }
            try Self.write(db, record)
        }
    }

    /// Sets the status of a recorded job, and its end time when the status
    /// is the first to say it completed or failed.
    ///
    /// - Parameters:
    ///   - name: the job.
    ///   - status: where it stands now.
    ///   - now: the time it is.
    /// - Returns: the record written.
    /// - Throws: ``SchedulerError`` with code `notFound` when no such job is recorded.
    @discardableResult
    public func update(_ name: String, status: JobStatus, now: Date = Date()) throws -> JobRecord {
        try write("update job \(name)") { db in
            guard var record = try Self.job(db, name) else {
                throw SchedulerError(.notFound, "no job \"\(name)\" is recorded")
            }
            record.status = status
            if status.condition == .running {
                record.finishedAt = nil
            } else if record.finishedAt == nil {
                record.finishedAt = now
            }
            try Self.write(db, record)
            return record
        }
    }

    /// The job `name`, if it is recorded; failed with reason `RunnerExited`
    /// (and so recorded) when it was running in a process that is gone.
    ///
    /// - Parameters:
    ///   - name: the job.
    ///   - now: the time it is, the end time of a job found orphaned.
    public func job(_ name: String, now: Date = Date()) throws -> JobRecord? {
        try write("read job \(name)") { db in
            guard let record = try Self.job(db, name) else { return nil }
            return try Self.reapIfOrphaned(db, record, now: now)
        }
    }

    /// The recorded jobs, newest first, after forgetting those whose
    /// ttl has passed (``pruneExpired(now:)``). Jobs running in a process
    /// that is gone are failed with reason `RunnerExited`, and so recorded.
    ///
    /// - Parameters:
    ///   - cronJob: only the jobs of this cron job; all when `nil`.
    ///   - now: the time it is.
    public func jobs(cronJob: String? = nil, now: Date = Date()) throws -> [JobRecord] {
        try write("list jobs") { db in
            let running = try Data.fetchAll(db, sql: "SELECT record FROM job WHERE finished_at IS NULL")
            for data in running { _ = try Self.reapIfOrphaned(db, try Self.decode(JobRecord.self, data, "job"), now: now) }
            _ = try Self.pruneExpired(db, now: now)
            let rows = if let cronJob {
                try Data.fetchAll(db, sql: "SELECT record FROM job WHERE cron_job = ? ORDER BY created_at DESC, name DESC",
                                  arguments: [cronJob])
            } else {
                try Data.fetchAll(db, sql: "SELECT record FROM job ORDER BY created_at DESC, name DESC")
            }
            return try rows.map { try Self.decode(JobRecord.self, $0, "job") }
        }
    }

    /// Forgets a job.
    ///
    /// - Parameter name: the job.
    /// - Returns: whether it was recorded.
    @discardableResult
    public func remove(_ name: String) throws -> Bool {
        try write("remove job \(name)") { db in
            try db.execute(sql: "DELETE FROM job WHERE name = ?", arguments: [name])
            return db.changesCount > 0
        }
    }

    /// Forgets the finished jobs whose ``JobRecord/ttlAfterFinished`` has
    /// passed since they ended.
    ///
    /// - Parameter now: the time it is.
    /// - Returns: the names of the jobs forgotten.
    @discardableResult
    public func pruneExpired(now: Date = Date()) throws -> [String] {
        try write("remove expired jobs") { db in try Self.pruneExpired(db, now: now) }
    }

    private static func pruneExpired(_ db: Database, now: Date) throws -> [String] {
        let names = try String.fetchAll(db, sql: "SELECT name FROM job WHERE expires_at <= ? ORDER BY name",
                                        arguments: [now.timeIntervalSince1970])
        try db.execute(sql: "DELETE FROM job WHERE expires_at <= ?", arguments: [now.timeIntervalSince1970])
        return names
    }

    private static func job(_ db: Database, _ name: String) throws -> JobRecord? {
        guard let data = try Data.fetchOne(db, sql: "SELECT record FROM job WHERE name = ?", arguments: [name]) else { return nil }
        return try decode(JobRecord.self, data, "job \(name)")
    }

    private static func write(_ db: Database, _ record: JobRecord) throws {
        try db.execute(sql: """
            INSERT OR REPLACE INTO job (name, cron_job, created_at, finished_at, expires_at, record)
            VALUES (?, ?, ?, ?, ?, ?)
            """, arguments: [record.name, record.cronJob, record.createdAt.timeIntervalSince1970,
                             record.finishedAt?.timeIntervalSince1970, record.expiresAt?.timeIntervalSince1970,
                             try encoder.encode(record)])
    }

    /// The record, failed with reason `RunnerExited` and written so when it
    /// is running in a process that is gone.
    private static func reapIfOrphaned(_ db: Database, _ record: JobRecord, now: Date) throws -> JobRecord {
        guard record.status.condition == .running, !isRunning(record.owner) else { return record }
        var reaped = record
        reaped.status.condition = .failed
        reaped.status.reason = "RunnerExited"
        reaped.status.message = "process \(record.owner), which ran the job, is gone"
        reaped.status.active = 0
        reaped.finishedAt = now
        try write(db, reaped)
        return reaped
    }

    /// Whether process `pid` exists (it may belong to another user).
    static func isRunning(_ pid: Int32) -> Bool {
        guard pid > 0 else { return false }
        return kill(pid, 0) == 0 || errno != ESRCH
    }

    // MARK: - Cron jobs

    /// Creates a cron job, or replaces the spec of one, keeping its status
    /// and creation time.
    ///
    /// - Parameters:
    ///   - spec: the cron job.
    ///   - now: the time it is, the creation time of a new cron job.
    /// - Returns: the record written.
    /// - Throws: ``SchedulerError`` with code `invalidSpec` for an invalid spec.
    @discardableResult
    public func saveCronJob(_ spec: CronJobSpec, now: Date = Date()) throws -> CronJobRecord {
        try spec.validate()
        return try write("save cron job \(spec.name)") { db in
            var record = try Self.cronJob(db, spec.name) ?? CronJobRecord(spec: spec, status: CronJobStatus(), createdAt: now)
            record.spec = spec
            try Self.write(db, record)
            return record
        }
    }

    /// The cron job `name`, if there is one.
    ///
    /// - Parameter name: the cron job.
    public func cronJob(_ name: String) throws -> CronJobRecord? {
        try perform("read cron job \(name)") {
            try pool.read { db in try Self.cronJob(db, name) }
        }
    }

    /// Every cron job, by name.
    public func cronJobs() throws -> [CronJobRecord] {
        try perform("list cron jobs") {
            try pool.read { db in
                try Data.fetchAll(db, sql: "SELECT record FROM cron_job ORDER BY name")
                    .map { try Self.decode(CronJobRecord.self, $0, "cron job") }
            }
        }
    }

    /// Removes a cron job. The records of its jobs stay, and jobs of it
    /// that run go on.
    ///
    /// - Parameter name: the cron job.
    /// - Returns: whether there was one.
    @discardableResult
    public func removeCronJob(_ name: String) throws -> Bool {
        try write("remove cron job \(name)") { db in
            try db.execute(sql: "DELETE FROM cron_job WHERE name = ?", arguments: [name])
            return db.changesCount > 0
        }
    }

    /// Sets what the controller last did for a cron job.
    ///
    /// - Parameters:
    ///   - name: the cron job.
    ///   - status: its status.
    /// - Throws: ``SchedulerError`` with code `notFound` when there is no such cron job.
    public func setCronStatus(_ name: String, _ status: CronJobStatus) throws {
        try write("update cron job \(name)") { db in
            guard var record = try Self.cronJob(db, name) else {
                throw SchedulerError(.notFound, "no cron job \"\(name)\"")
            }
            record.status = status
            try Self.write(db, record)
        }
    }

    private static func cronJob(_ db: Database, _ name: String) throws -> CronJobRecord? {
        guard let data = try Data.fetchOne(db, sql: "SELECT record FROM cron_job WHERE name = ?", arguments: [name]) else {
            return nil
        }
        return try decode(CronJobRecord.self, data, "cron job \(name)")
    }

    private static func write(_ db: Database, _ record: CronJobRecord) throws {
        try db.execute(sql: "INSERT OR REPLACE INTO cron_job (name, record) VALUES (?, ?)",
                       arguments: [record.spec.name, try encoder.encode(record)])
    }
}

extension JobRunner {
    /// Runs `job` as ``run(_:update:)`` does, and records it in `store`:
    /// begun before its first run, its status written after every change,
    /// and failed (reason `Cancelled`, or `Error` with the error as its
    /// message) when the run throws.
    ///
    /// Writes after the job began are best effort: when one fails the job
    /// goes on and its record lags behind.
    ///
    /// - Parameters:
    ///   - job: the job.
    ///   - store: where it is recorded.
    ///   - cronJob: the cron job that starts it, if one does.
    ///   - wallClock: the time it is, for the record's times.
    ///   - update: called with the job's status after every change.
    /// - Returns: the final status; its condition is `complete` or `failed`.
    /// - Throws: ``SchedulerError`` for an invalid job, one whose runs can
    ///   never be placed, or one of that name running already (code
    ///   `exists`); `CancellationError` when cancelled (its runs are stopped).
    public func run(_ job: JobSpec, recordingIn store: JobStore, cronJob: String? = nil,
                    wallClock: @escaping @Sendable () -> Date = Date.init,
                    update: @escaping @Sendable (JobStatus) -> Void = { _ in }) async throws -> JobStatus {
        try job.validate()
        try store.begin(JobRecord(job, cronJob: cronJob, createdAt: wallClock()))
        let latest = Mutex(JobStatus())
        do {
            return try await run(job) { status in
                latest.withLock { $0 = status }
                _ = try? store.update(job.name, status: status, now: wallClock())
                update(status)
            }
        } catch {
            let status = JobStatus(endedBy: error, after: latest.withLock { $0 })
            _ = try? store.update(job.name, status: status, now: wallClock())
            update(status)
            throw error
        }
    }
}

extension JobStatus {
    /// The status of a job whose runner threw `error` when it stood at `status`.
    init(endedBy error: any Error, after status: JobStatus) {
        self = status
        condition = .failed
        active = 0
        if error is CancellationError {
            reason = "Cancelled"
        } else {
            reason = "Error"
            message = "\(error)"
        }
    }
}
