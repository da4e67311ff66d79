/// The delay before restarting a replica that keeps ending, as Kubernetes
/// computes it for crash loops: the first restart at once, the next after
/// `initial`, each next one twice as late, never later than `maximum`, and
/// back to the start once the replica has run for `resetAfter` without ending.
public struct RestartBackoff: Hashable, Sendable {
    /// The delays.
    public var policy: CrashLoopBackoff

    /// How many restarts in a row the back-off has counted.
    public private(set) var consecutiveRestarts = 0

    /// A back-off that has counted no restarts.
    ///
    /// - Parameter policy: the delays; Kubernetes' by default.
    public init(_ policy: CrashLoopBackoff = CrashLoopBackoff()) {
        self.policy = policy
    }

    /// Records an exit after the replica ran for `runTime`; returns how
    /// long to wait before the restart.
    ///
    /// - Parameter runTime: how long the replica ran.
    public mutating func delayAfterExit(runTime: Duration) -> Duration {
        if runTime >= policy.resetAfter { consecutiveRestarts = 0 }
        defer { consecutiveRestarts += 1 }
        guard consecutiveRestarts > 0 else { return .zero }
        var delay = policy.initial
        for _ in 1 ..< consecutiveRestarts {
            delay = delay * 2
            if delay >= policy.maximum { break }
        }
        return min(delay, policy.maximum)
    }
}
