import Testing
@testable import Reconciler

@Suite struct RestartBackoffTests {
    @Test func restartsAtOnceThenDoublesUpToTheCap() {
        var backoff = RestartBackoff()
        let delays = (0..<9).map { _ in backoff.delayAfterExit(runTime: .seconds(1)) }
        #expect(delays == [0, 10, 20, 40, 80, 160, 300, 300, 300].map { Duration.seconds($0) })
    }

    @Test func resetsAfterALongRun() {
        var backoff = RestartBackoff(CrashLoopBackoff(initial: .milliseconds(5), maximum: .seconds(1), resetAfter: .seconds(60)))
        _ = backoff.delayAfterExit(runTime: .zero)
        _ = backoff.delayAfterExit(runTime: .zero)
        #expect(backoff.delayAfterExit(runTime: .seconds(59)) == .milliseconds(10))
        #expect(backoff.delayAfterExit(runTime: .seconds(60)) == .zero)
        #expect(backoff.delayAfterExit(runTime: .zero) == .milliseconds(5))
        #expect(backoff.consecutiveRestarts == 2)
    }
}
