public import Foundation
public import Logging
public import OCIImage
import Reconciler
public import Scheduler

extension KubePlay {
    /// What running the manifests' Jobs and CronJobs does.
    public enum JobEvent: Sendable {
        /// A Job's status after a change.
        case job(String, JobStatus)
        /// A Job of that name ended in an earlier play: it is not run again
        /// until `kube play --down` (``forgetJobs(in:)``) forgets it, as a
        /// cluster keeps a finished Job.
        case alreadyEnded(String, JobStatus)
        /// A Job could not be run at all.
        case error(job: String, message: String)
        /// What the CronJobs' controller did.
        case cron(CronJobEvent)
    }

    /// Pulls the images of the Jobs and CronJobs that the image store lacks
    /// (or all, where their `imagePullPolicy` is `Always`).
    ///
    /// - Returns: the images pulled.
    /// - Throws: `ReconcilerError` naming the Job when an image cannot be had.
    @discardableResult
    public func pullJobImages(_ images: ImageStore) async throws -> [String] {
        var wanted: [(user: String, reference: String, policy: PullPolicy)] = []
        let templates = jobs.sorted { $0.key < $1.key }.map { ("Job \($0.key)", $0.key, $0.value) }
            + cronJobs.map { ("CronJob \($0.name)", $0.name, $0.job) }
        for (user, name, template) in templates {
            guard case .image(let reference) = template.container.root else { continue }
            wanted.append((user, reference, jobPullPolicies[name] ?? .missing))
        }
        return try await Reconciler.pullImages(wanted, images: images)
    }

    /// Runs the Jobs to their ends, and the CronJobs' jobs on their
    /// schedules until cancelled; then stops what still runs. Jobs are
    /// recorded in `store` (`gantry job ls` lists them); one that completed
    /// or failed in an earlier play is not run again, one whose play ended
    /// before it did is.
    ///
    /// - Parameters:
    ///   - cluster: where the runs are placed.
    ///   - store: where jobs are recorded.
    ///   - logger: where the CronJobs' controller logs.
    ///   - wallClock: the time it is, which the CronJobs' schedules are matched against.
    ///   - events: called with each change.
    /// - Throws: `CancellationError` when cancelled with CronJobs, or
    ///   `SchedulerError` for an invalid CronJob.
    public func runJobs(on cluster: Cluster, store: JobStore, logger: Logger = Logger(label: "gantry.kube"),
                        wallClock: @escaping @Sendable () -> Date = Date.init,
                        events: @escaping @Sendable (JobEvent) -> Void = { _ in }) async throws {
        let runner = JobRunner(cluster: cluster)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (name, template) in jobs.sorted(by: { $0.key < $1.key }) {
                // Ended by itself, not by the end of the process that ran it.
                if let record = try store.job(name), record.status.condition == .complete
                    || ["BackoffLimitExceeded", "DeadlineExceeded"].contains(record.status.reason ?? "") {
                    events(.alreadyEnded(name, record.status))
                    continue
                }
                group.addTask {
                    do {
                        _ = try await runner.run(template.jobSpec(named: name), recordingIn: store, update: { events(.job(name, $0)) })
                    } catch is CancellationError {
                        return
                    } catch {
                        events(.error(job: name, message: "\(error)"))
                    }
                }
            }
            if !cronJobs.isEmpty {
                let controller = CronJobController(cluster: cluster, store: store, wallClock: wallClock, logger: logger)
                group.addTask { try await controller.run(cronJobs) { events(.cron($0)) } }
            }
            try await group.waitForAll()
        }
    }

    /// Forgets the records of the Jobs and of the CronJobs' jobs, once they
    /// run no more, as taking the manifests down does.
    ///
    /// - Returns: the jobs forgotten.
    @discardableResult
    public func forgetJobs(in store: JobStore) throws -> [String] {
        var forgotten: [String] = []
        for name in jobs.keys.sorted() where try store.job(name).map({ $0.status.condition != .running }) == true {
            try store.remove(name)
            forgotten.append(name)
        }
        for cron in cronJobs {
            for record in try store.jobs(cronJob: cron.name) where record.status.condition != .running {
                try store.remove(record.name)
                forgotten.append(record.name)
            }
        }
        return forgotten
    }
}
