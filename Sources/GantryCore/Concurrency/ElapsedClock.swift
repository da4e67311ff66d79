/// A clock as the scheduler and the reconciler use it: the time since an
/// origin, and sleeping until a time since it.
package struct ElapsedClock: Sendable {
    /// The time since the clock was wrapped.
    package let now: @Sendable () -> Duration
    /// Sleeps until a time since the origin.
    package let sleepUntil: @Sendable (Duration) async throws -> Void

    package init<C: Clock & Sendable>(_ clock: C) where C.Duration == Duration, C.Instant: Sendable {
        let origin = clock.now
        now = { origin.duration(to: clock.now) }
        sleepUntil = { try await clock.sleep(until: origin.advanced(by: $0), tolerance: nil) }
    }

    /// Sleeps for `duration` from now.
    package func sleep(_ duration: Duration) async throws {
        try await sleepUntil(now() + duration)
    }
}

extension Duration {
    /// The duration in seconds, for arithmetic on dates.
    package var timeInterval: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}
