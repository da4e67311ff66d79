/// The delay before restarting a container that keeps exiting, as
/// Kubernetes computes it for crash loops: the first restart after `initial`,
/// each next one twice as late, never later than `maximum`, and back to the
/// start once the container has run for `resetAfter` without exiting.
public struct RestartBackoff: Hashable, Sendable {
    /// The first delay.
    public var initial: Duration
    /// The longest delay.
    public var maximum: Duration
    /// How long a container must run for the back-off to start over.
    public var resetAfter: Duration

    /// How many restarts in a row the back-off has counted.
    public private(set) var consecutiveRestarts = 0

    /// Kubernetes' defaults: 10 s doubling to 300 s, reset after 10 minutes.
    public init(initial: Duration = .seconds(10), maximum: Duration = .seconds(300), resetAfter: Duration = .seconds(600)) {
        self.initial = initial
        self.maximum = maximum
        self.resetAfter = resetAfter
    }

    /// Records an exit after the container ran for `runTime`; returns how
    /// long to wait before the restart.
    public mutating func delayAfterExit(runTime: Duration) -> Duration {
        if runTime >= resetAfter { consecutiveRestarts = 0 }
        var delay = initial
        for _ in 0..<consecutiveRestarts {
            delay = delay * 2
            if delay >= maximum {
                delay = maximum
                break
            }
        }
        consecutiveRestarts += 1
        return min(delay, maximum)
    }
}
