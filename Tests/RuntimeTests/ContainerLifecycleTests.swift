import Testing
@testable import Runtime

/// The container's life as a state machine: each transition checked on
/// its own, without root and without a process (descriptors here are
/// numbers no one opens; nothing is closed or signalled).
@Suite struct ContainerLifecycleTests {
    /// A running container holding a mount namespace (7), an overlay lock (8)
    /// and `streams` output pipes.
    func running(streams: Int) -> Container.Lifecycle {
        var lifecycle = Container.Lifecycle.starting
        let running = Container.Running(process: ProcessHandle(pid: 1, pidfd: -1, input: -1), mountNamespace: 7, overlayLock: 8,
                                        openStreams: streams)
        let adopted1 = lifecycle.started(running)
        #expect(adopted1)
        return lifecycle
    }

    @Test func startsOnlyOnceFromCreated() {
        var lifecycle = Container.Lifecycle.created
        let began1 = lifecycle.beginStart()
        #expect(began1)
        let began2 = lifecycle.beginStart()
        #expect(!began2)
        lifecycle.startFailed()
        guard case .created = lifecycle else { Issue.record("a failed launch leaves \(lifecycle)"); return }
        var foreign = Container.Lifecycle.foreign
        let began3 = foreign.beginStart()
        #expect(!began3)
        #expect(!foreign.isOwned)
    }

    @Test func theEndWaitsForTheLastOutputPipe() {
        var lifecycle = running(streams: 2)
        let closed1 = lifecycle.outputClosed()
        #expect(!closed1)
        let step = lifecycle.processExited(.exited(3))
        // The namespace and lock are handed over once, at the exit.
        #expect(step == Container.ExitStep(mountNamespace: 7, overlayLock: 8, record: false))
        #expect(lifecycle.endToRecord == nil)
        let closed2 = lifecycle.outputClosed()
        #expect(closed2)
        #expect(lifecycle.endToRecord?.status == .exited(3))
        // Recording starts once: a stray close does not start it again.
        let closed3 = lifecycle.outputClosed()
        #expect(!closed3)
    }

    @Test func anExitAfterTheOutputIsRecordedAtOnce() {
        var lifecycle = running(streams: 1)
        let closed4 = lifecycle.outputClosed()
        #expect(!closed4)
        let step1 = lifecycle.processExited(.signaled(.terminate))
        #expect(step1?.record == true)
        // A second report of the same end changes nothing.
        let step2 = lifecycle.processExited(.exited(0))
        #expect(step2 == nil)
        #expect(lifecycle.endToRecord?.status == .signaled(.terminate))
    }

    @Test func theTimeoutKillsOnlyWhatRuns() {
        var lifecycle = running(streams: 0)
        let armed1 = lifecycle.timerArmed(9)
        #expect(armed1)
        let killed1 = lifecycle.timerFired()
        #expect(killed1 != nil)
        let step3 = lifecycle.processExited(.signaled(.kill))
        #expect(step3?.record == true)
        #expect(lifecycle.endToRecord?.timedOut == true)

        var late = running(streams: 0)
        let armed2 = late.timerArmed(9)
        #expect(armed2)
        _ = late.processExited(.exited(0))
        // It ended as the timer fired: not killed by it, and the timer is forgotten.
        let killed2 = late.timerFired()
        #expect(killed2 == nil)
        #expect(late.endToRecord?.timedOut == false)
        let held1 = late.endRecorded(ContainerExit(status: .exited(0), reason: .exited))
        #expect(held1?.timer == -1)
    }

    @Test func recordingTheEndHandsBackWhatWasHeld() {
        var lifecycle = running(streams: 0)
        let armed3 = lifecycle.timerArmed(9)
        #expect(armed3)
        let exit = ContainerExit(status: .exited(0), reason: .exited)
        // Not before the end is being recorded.
        let held2 = lifecycle.endRecorded(exit)
        #expect(held2 == nil)
        _ = lifecycle.processExited(.exited(0))
        let held = lifecycle.endRecorded(exit)
        #expect(held?.timer == 9)
        #expect(held?.mountNamespace == -1)
        #expect(lifecycle.exit == exit)
        #expect(lifecycle.process == nil)
        // A timer armed after the end must be fired by its owner.
        let armed4 = lifecycle.timerArmed(10)
        #expect(!armed4)
        let held3 = lifecycle.endRecorded(exit)
        #expect(held3 == nil)
    }

    @Test func adoptionStartsWatchingAForeignContainer() {
        var lifecycle = Container.Lifecycle.foreign
        let adopted2 = lifecycle.started(Container.Running(process: ProcessHandle(pid: 1, pidfd: -1, input: -1)))
        #expect(adopted2)
        #expect(lifecycle.isOwned)
        #expect(lifecycle.process?.pid == 1)
        var finished = Container.Lifecycle.finished(ContainerExit(status: .exited(0), reason: .exited))
        let adopted3 = finished.started(Container.Running(process: ProcessHandle(pid: 1, pidfd: -1, input: -1)))
        #expect(!adopted3)
    }
}

