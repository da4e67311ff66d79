import Foundation
import GantryTestSupport
import Testing
@testable import Runtime

@Suite(.requiresRoot) struct ContainerTests {
    @Test func reportsOutputAndExitCodes() async throws {
        try await withRuntime("ctr-output") { runtime, _ in
            let (exit, output) = try await runCollecting(runtime, shell("echo out; echo err >&2; exit 7"))
            #expect(exit == ContainerExit(status: .exited(7), reason: .exited))
            #expect(output.split(separator: "\n").sorted() == ["err", "out"])
            let (success, _) = try await runCollecting(runtime, ContainerSpec(image: "busybox:test", command: ["true"]))
            #expect(success.code == 0)
        }
    }

    @Test func appliesEnvironmentWorkingDirectoryAndUser() async throws {
        try await withRuntime("ctr-env") { runtime, _ in
            var spec = shell("echo $GREETING; pwd; id -u; id -g; echo $HOME")
            spec.environment = ["GREETING=hello"]
            spec.workingDirectory = "/work/dir"
            spec.user = "nobody"
            let (exit, output) = try await runCollecting(runtime, spec)
            #expect(exit.code == 0)
            #expect(output == "hello\n/work/dir\n65534\n65534\n/var/empty\n")
            spec.user = "1234:4321"
            let (_, numeric) = try await runCollecting(runtime, spec)
            #expect(numeric.hasSuffix("1234\n4321\n/\n"))
            spec.user = "nosuchuser"
            await #expect { _ = try await runtime.create(spec) } throws: {
                ($0 as? RuntimeError)?.message.contains("nosuchuser") == true
            }
        }
    }

    @Test func isolatesProcessesAndHostName() async throws {
        try await withRuntime("ctr-isolation") { runtime, _ in
            var spec = shell("echo $$; hostname; ls /proc | grep -c '^[0-9]'; test -d /proc/\(getpid()) || echo host-hidden")
            spec.hostname = "sandbox"
            let (_, output) = try await runCollecting(runtime, spec)
            let lines = output.split(separator: "\n")
            #expect(lines.first == "1")
            #expect(lines.dropFirst().first == "sandbox")
            #expect(lines.contains("host-hidden"))
            // Only the shell and ls (and grep) are there.
            #expect((Int(lines[2]) ?? 99) <= 3)
        }
    }

    @Test func hasAnEmptyNetworkNamespaceOfItsOwn() async throws {
        try await withRuntime("ctr-netns") { runtime, _ in
            // Until one launch has taken a namespace made ahead of need
            // (the first starts the thread that makes them; other tests
            // may take them meanwhile), and each must look like a new one.
            let taken = NetworkNamespaceReserve.shared.handedOut
            let hostForwarding = try readText("/proc/sys/net/ipv4/ip_forward")
            var namespaces: Set<String> = []
            // Each stays until the end: the kernel gives a freed namespace's
            // number to the next one made, so only namespaces alive at once
            // are told apart by it. (The runtime's clean-up removes them.)
            for _ in 0 ..< 40 where NetworkNamespaceReserve.shared.handedOut == taken || namespaces.count < 2 {
                var spec = shell("ls -l /proc/self/ns/net; cat /proc/net/dev; cat /sys/class/net/lo/flags; cat /proc/sys/net/ipv4/ip_forward; echo END; exec sleep 60")
                spec.sysctls = ["net.ipv4.ip_forward": "1"]
                let container = try await runtime.create(spec)
                try await container.start()
                try await waitForOutput(container, "END")
                let output = try await container.logs.text()
                let lines = output.split(separator: "\n").map(String.init).dropLast()
                let namespace = String(lines.first?.split(separator: " ").last ?? "")
                #expect(namespace.hasPrefix("net:["))
                #expect(!namespaces.contains(namespace), "two containers shared the network namespace \(namespace)")
                namespaces.insert(namespace)
                // /proc/net/dev: two header lines, then only lo, which is up (0x9).
                let devices = lines.dropFirst(3).prefix { $0.contains(":") }.map { $0.split(separator: ":")[0].trimmingCharacters(in: .whitespaces) }
                #expect(devices == ["lo"])
                #expect(lines.suffix(2) == ["0x9", "1"])
                try await Task.sleep(for: .milliseconds(5))
            }
            #expect(NetworkNamespaceReserve.shared.handedOut > taken, "no launch took a network namespace made ahead of need")
            let host = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/net")
            #expect(!namespaces.contains(host))
            #expect(try readText("/proc/sys/net/ipv4/ip_forward") == hostForwarding, "the container's sysctl reached the host")
        }
    }

    /// A removal racing a start: one of them wins, the other says why, and
    /// nothing is left running or half removed.
    @Test func removingWhileStartingIsOneOrTheOther() async throws {
        try await withRuntime("ctr-race") { runtime, _ in
            var outcomes: Set<String> = []
            for _ in 0 ..< 12 {
                let container = try await runtime.create(shell("sleep 30"))
                async let started: Error? = { do { try await container.start(); return nil } catch { return error } }()
                async let removed: Error? = { do { try await container.remove(); return nil } catch { return error } }()
                let (startError, removeError) = await (started, removed)
                switch (startError, removeError) {
                case (nil, let error?):
                    // Started first: the removal refused, naming why.
                    #expect((error as? RuntimeError)?.code == .invalidState, "\(error)")
                    #expect(try container.status == .running)
                    try await container.remove(force: true)
                    outcomes.insert("started")
                case (let error?, nil):
                    #expect((error as? RuntimeError)?.code == .invalidState, "\(error)")
                    outcomes.insert("removed")
                default:
                    Issue.record("start: \(String(describing: startError)), remove: \(String(describing: removeError))")
                }
                #expect(throws: RuntimeError.self) { try runtime.container(container.id) }
            }
            print("start and removal racing: \(outcomes.sorted().joined(separator: " and ")) won")
        }
    }

    // A hang detector: under the whole suite's load on two cores, its
    // creations alone have taken most of a minute.
    @Test(.timeLimit(.minutes(3))) func aWaitDuringAStartThatFailsThrows() async throws {
        try await withRuntime("ctr-failwait") { runtime, _ in
            var duringStart = 0
            for _ in 0 ..< 10 {
                var spec = shell("true")
                spec.command = ["/no/such/program"]
                let container = try await runtime.create(spec)
                let start = Task { try await container.start() }
                // Waits from the moment the start is under way (a `where`
                // clause would not end the loop: it would read the status
                // ten thousand times, which a loaded machine takes minutes for).
                let deadline = ContinuousClock.now + .seconds(1)
                while (try? container.status) != .running, ContinuousClock.now < deadline { await Task.yield() }
                do {
                    _ = try await container.wait()
                    Issue.record("a wait for a container whose start fails returned")
                } catch let error as RuntimeError {
                    #expect(error.code == .invalidState, "\(error)")
                    if error.underlying != nil { duringStart += 1 }
                }
                await #expect(throws: RuntimeError.self) { try await start.value }
                try await container.remove()
            }
            print("waits begun during a failing start: \(duringStart) of 10")
        }
    }

    @Test func holdsTheMountNamespaceUntilTheEndAndReclaimsInTheBackground() async throws {
        try await withRuntime("ctr-mntns") { runtime, _ in
            // The descriptors of this process that hold a mount namespace, by
            // number. (Other tests' containers hold theirs too, and a freed
            // namespace's number is soon another's: the descriptors that held
            // this one are what is checked.)
            func heldNamespaces() -> [String: String] {
                let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
                var held: [String: String] = [:]
                for fd in fds {
                    if let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(fd)"), target.hasPrefix("mnt:[") { held[fd] = target }
                }
                return held
            }
            let container = try await runtime.create(shell("echo started; sleep 30"))
            try await container.start()
            let pid = try #require(try container.record.pid)
            let namespace = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/ns/mnt")
            let holders = heldNamespaces().filter { $0.value == namespace }.map(\.key)
            #expect(!holders.isEmpty, "the launcher does not hold the container's mount namespace")
            _ = try await container.stop(grace: .milliseconds(100))
            await ContainerRuntime.settle()
            let after = heldNamespaces()
            #expect(!holders.contains { after[$0] == namespace }, "the mount namespace is still held after the container ended")
            // Removal takes the directory out of the state root at once; its
            // files go in the background.
            let directory = runtime.containerDirectory(container.id)
            try await container.remove()
            #expect(!FileManager.default.fileExists(atPath: directory))
            #expect(throws: RuntimeError.self) { try runtime.container(container.name) }
            await ContainerRuntime.settle()
            #expect(!FileManager.default.fileExists(atPath: runtime.removedDirectory + "/" + container.id))
        }
    }

    @Test func removesADeepTreeTheContainerLeft() async throws {
        try await withRuntime("ctr-deep") { runtime, _ in
            // 1500 levels: a path of 3000 bytes, within PATH_MAX.
            let container = try await runtime.create(shell("i=0; while [ $i -lt 1500 ]; do mkdir d && cd d || exit 1; i=$((i+1)); done"))
            try await container.start()
            #expect(try await container.wait().code == 0)
            try await container.remove()
            await ContainerRuntime.settle()
            #expect(!FileManager.default.fileExists(atPath: runtime.removedDirectory + "/" + container.id))
        }
    }

    @Test func hidesAndProtectsKernelInterfaces() async throws {
        try await withRuntime("ctr-kernel") { runtime, _ in
            let script = """
            touch /sys/kernel/x 2>/dev/null || echo sys-read-only
            cat /proc/kcore 2>/dev/null | wc -c
            ls /sys/firmware | wc -l
            { echo 1 > /proc/sys/kernel/domainname; } 2>/dev/null || echo proc-sys-read-only
            grep -E '^(CapEff|NoNewPrivs)' /proc/self/status
            """
            let (_, output) = try await runCollecting(runtime, shell(script))
            let lines = output.split(separator: "\n").map(String.init)
            #expect(lines == ["sys-read-only", "0", "0", "proc-sys-read-only", "CapEff:\t00000000a80425fb", "NoNewPrivs:\t1"])
            var dropped = shell("grep CapEff /proc/self/status")
            dropped.capabilitiesDropped = ["ALL"]
            let droppedOutput = try await runCollecting(runtime, dropped).1
            #expect(droppedOutput == "CapEff:\t0000000000000000\n")
            var added = dropped
            added.capabilitiesAdded = ["NET_ADMIN"]
            let addedOutput = try await runCollecting(runtime, added).1
            #expect(addedOutput == "CapEff:\t0000000000001000\n")
        }
    }

    @Test func filtersSystemCallsWithTheDefaultProfile() async throws {
        try await withRuntime("ctr-seccomp", probe: true) { runtime, _ in
            let spec = ContainerSpec(image: "busybox:test", command: ["/bin/syscall-probe"])
            let (_, output) = try await runCollecting(runtime, spec)
            #expect(output == "unshare EPERM\nmount EPERM\nkeyctl EPERM\nkexec_load EPERM\nbpf EPERM\ngetpid ok\n")
            // Unconfined, keyctl reaches the kernel (which answers for itself).
            var unconfined = spec
            unconfined.seccomp = .unconfined
            let (_, open) = try await runCollecting(runtime, unconfined)
            #expect(!open.contains("keyctl EPERM"))
            // A custom profile in Docker's format.
            let profile = try SeccompProfile.decode(Data("""
            {"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["getpid"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}
            """.utf8))
            var custom = spec
            custom.seccomp = .profile(profile)
            let output1 = try await runCollecting(runtime, custom).1
            #expect(output1.contains("getpid EPERM"))
            // Ordinary programs run.
            let output2 = try await runCollecting(runtime, shell("seq 3 | sort -r | head -1")).1
            #expect(output2 == "3\n")
        }
    }

    @Test func refusesWritesToAReadOnlyRoot() async throws {
        try await withRuntime("ctr-readonly") { runtime, _ in
            var spec = shell("touch /file 2>/dev/null && echo wrote || echo refused; touch /tmp/x && echo tmp-ok")
            spec.mounts = [.tmpfs(target: "/tmp", size: 1 << 20)]
            let output3 = try await runCollecting(runtime, spec).1
            #expect(output3 == "wrote\ntmp-ok\n")
            let output4 = try await runCollecting(runtime, spec.readOnlyRootfs()).1
            #expect(output4 == "refused\ntmp-ok\n")
        }
    }

    @Test func reportsAnOOMKill() async throws {
        try await withRuntime("ctr-oom") { runtime, _ in
            // tail buffers a line without end until the limit stops it.
            var spec = ContainerSpec(image: "busybox:test", command: ["tail", "/dev/zero"]).resources(memory: 32 << 20)
            spec.resources.memorySwap = 32 << 20
            let exit = try await runtime.run(spec)
            #expect(exit.reason == .oomKilled)
            #expect(exit.code == 137)
        }
    }

    @Test func holdsAForkBombWithThePidsLimit() async throws {
        try await withRuntime("ctr-forkbomb") { runtime, _ in
            let spec = shell("bomb() { bomb | bomb & }; bomb; sleep 30").resources(pids: 32).timeout(.seconds(20))
            try await runtime.withContainer(spec) { container in
                try await container.start()
                try await Task.sleep(for: .milliseconds(500))
                let usage = try container.usage()
                #expect(usage.pids <= 32)
                #expect(usage.pidsLimit == 32)
                // The host still forks.
                #expect(try await run("/bin/true", []) == "")
                // (The shell may have ended already, unable to fork its sleep.)
                try? container.kill()
                _ = try await container.wait()
            }
        }
    }

    @Test func throttlesWithACPUQuota() async throws {
        try await withRuntime("ctr-cpu") { runtime, _ in
            let spec = shell("timeout 1 sh -c 'while :; do :; done'; true").resources(cpus: 0.2)
            let (usage, exit) = try await runtime.run(spec) { container in
                try await Task.sleep(for: .milliseconds(900))
                return try container.usage()
            }
            #expect(exit.code == 0)
            // 0.2 CPU for ~0.9 s is ~0.18 s; without the quota it would be ~0.9 s.
            #expect(usage.cpuNanoseconds < 400_000_000, "used \(usage.cpuNanoseconds) ns")
            #expect(usage.cpuNanoseconds > 0)
        }
    }

    @Test func killsAtTheTimeout() async throws {
        try await withRuntime("ctr-timeout") { runtime, _ in
            let exit = try await runtime.run(ContainerSpec(image: "busybox:test", command: ["sleep", "600"]).timeout(.milliseconds(300)))
            #expect(exit == ContainerExit(status: .signaled(.kill), reason: .timedOut))
            // A container that ends first is not marked as timed out.
            let quick = try await runtime.run(ContainerSpec(image: "busybox:test", command: ["true"]).timeout(.seconds(30)))
            #expect(quick == ContainerExit(status: .exited(0), reason: .exited))
        }
    }

    @Test func stopEscalatesToSIGKILL() async throws {
        try await withRuntime("ctr-stop") { runtime, _ in
            // As PID 1 without a handler, sleep ignores SIGTERM.
            try await runtime.withContainer(ContainerSpec(image: "busybox:test", command: ["sleep", "600"])) { container in
                try await container.start()
                let exit = try await container.stop(grace: .milliseconds(200))
                #expect(exit == ContainerExit(status: .signaled(.kill), reason: .stopped))
                #expect(try container.status == .stopped)
                // A shell that handles SIGTERM ends on it.
                let polite = try await runtime.create(shell("trap 'exit 3' TERM; echo trapped; while :; do sleep 0.05; done"))
                try await polite.start()
                try await waitForOutput(polite, "trapped")
                #expect(try await polite.stop(grace: .seconds(10)) == ContainerExit(status: .exited(3), reason: .stopped))
                try await polite.remove()
            }
        }
    }

    @Test func pausesAndResumes() async throws {
        try await withRuntime("ctr-pause") { runtime, _ in
            let spec = shell("i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.02; done")
            try await runtime.withContainer(spec) { container in
                try await container.start()
                try await Task.sleep(for: .milliseconds(200))
                try await container.pause()
                #expect(try container.status == .paused)
                await #expect(throws: RuntimeError.self) { try await container.pause() }
                let before = try container.usage().cpuNanoseconds
                try await Task.sleep(for: .milliseconds(300))
                #expect(try container.usage().cpuNanoseconds == before)
                try await container.resume()
                #expect(try container.status == .running)
                // It runs again (given a moment, however busy the machine is).
                for _ in 0 ..< 500 where try container.usage().cpuNanoseconds == before {
                    try await Task.sleep(for: .milliseconds(10))
                }
                #expect(try container.usage().cpuNanoseconds > before)
            }
        }
    }

    @Test func readsStandardInput() async throws {
        try await withRuntime("ctr-stdin") { runtime, _ in
            var spec = ContainerSpec(image: "busybox:test", command: ["sh", "-c", "tr a-z A-Z"])
            spec.openStdin = true
            let (output, exit) = try await runtime.run(spec) { container in
                try container.write(Array("hello\nworld\n".utf8))
                container.closeStdin()
                return try await container.stdout.text()
            }
            #expect(exit.code == 0)
            #expect(output == "HELLO\nWORLD\n")
        }
    }

    @Test func runsOnAPseudoTerminal() async throws {
        try await withRuntime("ctr-tty") { runtime, _ in
            var spec = shell("test -t 0 && test -t 1 && test -t 2 && echo on-a-tty; tty; read line; echo got $line")
            spec.terminal = true
            let (output, exit) = try await runtime.run(spec) { container in
                try container.write(Array("typed\n".utf8))
                return try await container.output.text()
            }
            #expect(exit.code == 0)
            // The terminal echoes input and ends lines with CR LF.
            #expect(output.contains("on-a-tty\r\n"))
            // A terminal of the container's own /dev/pts.
            #expect(output.contains("/dev/pts/0\r\n"))
            #expect(output.contains("got typed\r\n"))
        }
    }

    @Test func keepsTheLogAfterTheFact() async throws {
        try await withRuntime("ctr-log") { runtime, _ in
            var spec = shell("for i in $(seq 1 2000); do echo line-$i; done; printf partial")
            spec.log = .init(maxSize: 16 << 10, maxFiles: 3)
            let container = try await runtime.create(spec)
            try await container.start()
            _ = try await container.wait()
            var lines: [String] = []
            for try await line in container.logs.lines { lines.append(line) }
            // Rotation kept the newest entries, in order, up to the partial line.
            #expect(lines.last == "partial")
            #expect(lines.dropLast().last == "line-2000")
            let numbers = lines.dropLast().compactMap { Int($0.dropFirst(5)) }
            #expect(numbers == Array((numbers.first ?? 0)...2000))
            let files = try FileManager.default.contentsOfDirectory(atPath: runtime.containerDirectory(container.id)).filter { $0.hasPrefix("container.log") }
            #expect(files.count == 3)
            try await container.remove()
        }
    }

    @Test func scopedUseRemovesEverythingOnThrowAndCancellation() async throws {
        try await withRuntime("ctr-scoped") { runtime, _ in
            struct Failure: Error {}
            await #expect(throws: Failure.self) {
                try await runtime.run(ContainerSpec(image: "busybox:test", command: ["sleep", "600"])) { _ in throw Failure() }
            }
            #expect(try runtime.list().isEmpty)
            let task = Task {
                try await runtime.run(ContainerSpec(image: "busybox:test", command: ["sleep", "600"])) { container in
                    try await container.output.text()
                }
            }
            for _ in 0 ..< 200 where (try? runtime.list().first?.status) != .running {
                try await Task.sleep(for: .milliseconds(10))
            }
            task.cancel()
            _ = await task.result
            #expect(try runtime.list().isEmpty)
        }
    }

    @Test func rejectsInvalidTransitionsAndSpecs() async throws {
        try await withRuntime("ctr-states") { runtime, _ in
            let container = try await runtime.create(ContainerSpec(image: "busybox:test", command: ["sleep", "600"]).named("states"))
            #expect(try container.status == .created)
            await #expect(throws: RuntimeError.self) { try await container.pause() }
            await #expect(throws: RuntimeError.self) { _ = try await runtime.create(shell("true").named("states")) }
            try await container.start()
            await #expect(throws: RuntimeError.self) { try await container.start() }
            await #expect(throws: RuntimeError.self) { try await container.remove() }
            // Another handle, as another process would have, sees the same state.
            #expect(try runtime.list().first { $0.name == "states" }?.status == .running)
            try await container.remove(force: true)
            #expect(throws: RuntimeError.self) { try runtime.container("states") }
            await #expect { _ = try await runtime.create(ContainerSpec(image: "busybox:test", command: ["true"]).resources(memory: 10)) } throws: {
                ($0 as? RuntimeError)?.message.contains("memory limit") == true
            }
            await #expect { _ = try await runtime.create(ContainerSpec(image: "no-such-image:1")) } throws: { error in
                "\(error)".contains("no-such-image")
            }
        }
    }
}

@Suite(.requiresRoot) struct ContainerExecTests {
    @Test func execJoinsTheRunningContainer() async throws {
        try await withRuntime("ctr-exec") { runtime, _ in
            var spec = ContainerSpec(image: "busybox:test", command: ["sh", "-c", "echo ready > /tmp/marker; echo started; sleep 600"])
            spec.hostname = "inside"
            try await runtime.withContainer(spec) { container in
                try await container.start()
                try await waitForOutput(container, "started")
                let process = try await container.exec(ExecSpec(
                    ["sh", "-c", "cat /tmp/marker; hostname; echo $$; ps -o pid,comm | grep -c sleep; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; echo $EXTRA"],
                    environment: ["EXTRA=yes"]))
                var output = ""
                for try await chunk in process.output { output += chunk.text }
                #expect(await process.wait().status == .exited(0))
                let lines = output.split(separator: "\n").map(String.init)
                #expect(lines.first == "ready")
                #expect(lines.dropFirst().first == "inside")
                // A pid inside the container's namespace, where sleep is visible.
                #expect((Int(lines[2]) ?? 0) > 1)
                #expect(lines[3] == "1")
                #expect(lines.contains("CapEff:\t00000000a80425fb"))
                #expect(lines.contains("NoNewPrivs:\t1"))
                #expect(lines.last == "yes")
                // In the container's cgroup while it runs.
                let interactive = try await container.exec(ExecSpec(["sh", "-c", "read line; echo got $line; id -u"], user: "nobody", openStdin: true))
                #expect(try container.usage().pids >= 2)
                try interactive.write(Array("hello\n".utf8))
                interactive.closeStdin()
                var reply = ""
                for try await chunk in interactive.output { reply += chunk.text }
                #expect(reply == "got hello\n65534\n")
                #expect(await interactive.wait().status == .exited(0))
                await #expect(throws: RuntimeError.self) { _ = try await container.exec(ExecSpec(["/no/such/program"])) }
                // On a terminal of its own.
                let onTTY = try await container.exec(ExecSpec(["sh", "-c", "test -t 0 && test -t 1 && tty"], terminal: true))
                var ttyOutput = ""
                for try await chunk in onTTY.output { ttyOutput += chunk.text }
                #expect(ttyOutput.hasPrefix("/dev/pts/") && ttyOutput.hasSuffix("\r\n"))
                #expect(await onTTY.wait().status == .exited(0))
            }
        }
    }

    @Test func sayWhyAnExecdProcessEnded() async throws {
        try await withRuntime("ctr-execend") { runtime, _ in
            var spec = shell("echo started; sleep 600").resources(memory: 32 << 20)
            spec.resources.memorySwap = 32 << 20
            try await runtime.withContainer(spec) { container in
                try await container.start()
                try await waitForOutput(container, "started")
                let signalled = try await container.exec(ExecSpec(["sleep", "600"]))
                try signalled.kill(.terminate)
                #expect(await signalled.wait() == ContainerExit(status: .signaled(.terminate), reason: .exited))
                // tail buffers a line without end until the limit stops it.
                let greedy = try await container.exec(ExecSpec(["tail", "/dev/zero"]))
                let greedyEnd = await greedy.wait()
                #expect(greedyEnd == ContainerExit(status: .signaled(.kill), reason: .oomKilled), "\(greedyEnd)")
                let stopped = try await container.exec(ExecSpec(["sleep", "600"]))
                _ = try await container.stop(grace: .milliseconds(100))
                #expect(await stopped.wait() == ContainerExit(status: .signaled(.kill), reason: .stopped))
            }
        }
    }

    @Test func initReapsAndForwardsSignals() async throws {
        try await withRuntime("ctr-init") { runtime, _ in
            var spec = shell("trap 'echo got-term; exit 5' TERM; (sleep 0.1 &); echo $$; while :; do sleep 0.05; done")
            spec.initProcess = true
            try await runtime.withContainer(spec) { container in
                try await container.start()
                try await waitForOutput(container, "2\n")
                // The shell is not PID 1; the init forwards SIGTERM to it.
                let exit = try await container.stop(grace: .seconds(10))
                #expect(exit == ContainerExit(status: .exited(5), reason: .stopped))
                let output = try await container.logs.text()
                #expect(output.hasPrefix("2\n"))
                #expect(output.contains("got-term"))
            }
        }
    }

    @Test func runsManyContainersAtOnce() async throws {
        try await withRuntime("ctr-many") { runtime, _ in
            let exits = try await withThrowingTaskGroup(of: ContainerExit.self) { group in
                for index in 0 ..< 50 {
                    group.addTask { try await runtime.run(shell("sleep 0.5; exit \(index % 7)")) }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(exits.count == 50)
            #expect(exits.map(\.code).sorted() == (0 ..< 50).map { Int32($0 % 7) }.sorted())
        }
    }

    @Test func leavesNothingBehindAfterManyCycles() async throws {
        try await withRuntime("ctr-cycles") { runtime, dir in
            // Mounts of other tests' directories (and of their state roots'
            // run-time directories: secrets' tmpfs) come and go meanwhile.
            let runDirectory = runtime.images.root.runtime
            func mountTable() throws -> [Substring] {
                try readText("/proc/self/mountinfo").split(separator: "\n").filter { line in
                    let point = line.split(separator: " ").dropFirst(4).first ?? ""
                    return !(point.hasPrefix("/tmp/gantry-") || point.hasPrefix(StateRoot.runtimeBase + "/")) || point.hasPrefix(dir) || point.hasPrefix(runDirectory)
                }
            }
            // Warm up: the supervisor and launch threads, cached filters.
            try await runtime.run(ContainerSpec(image: "busybox:test", command: ["true"]))
            let descriptors = leftDescriptors(runtime)
            let mounts = try mountTable()
            let cgroups = cgroupDirectories(runtime.cgroupParent, runtime: runtime).map { (try? FileManager.default.contentsOfDirectory(atPath: $0))?.count ?? 0 }
            for _ in 0 ..< 200 {
                let container = try await runtime.create(ContainerSpec(image: "busybox:test", command: ["true"]))
                try await container.start()
                #expect(try await container.wait().code == 0)
                try await container.remove()
            }
            // Mounts and files of the ended containers are reclaimed in the background.
            await ContainerRuntime.settle()
            #expect(try FileManager.default.contentsOfDirectory(atPath: runtime.removedDirectory).isEmpty)
            // Other tests run alongside and open descriptors of their own:
            // count those this runtime could have left — files of its state
            // root and cgroups, pidfds of processes already reaped, and
            // mount namespaces. (A concurrent test may hold a reaped pidfd
            // or a container's namespace for a moment; a leak per cycle
            // would show 200.)
            let left = leftDescriptors(runtime)
            #expect(left.count <= descriptors.count + 4, "left open: \(left)")
            let mountsAfter = try mountTable()
            #expect(mountsAfter == mounts, "mounts gained: \(mountsAfter.filter { !mounts.contains($0) }), lost: \(mounts.filter { !mountsAfter.contains($0) })")
            let after = cgroupDirectories(runtime.cgroupParent, runtime: runtime).map { (try? FileManager.default.contentsOfDirectory(atPath: $0))?.count ?? 0 }
            #expect(after == cgroups)
            #expect(try runtime.list().isEmpty)
        }
    }
}

/// Descriptors that would betray a leak by `runtime`: its files (but the
/// metadata database), its cgroups' files, pidfds of reaped processes, and
/// mount namespaces (the launcher holds each container's until it ended).
func leftDescriptors(_ runtime: ContainerRuntime) -> [String] {
    let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
    let cgroups = cgroupDirectories(runtime.cgroupParent, runtime: runtime)
    return fds.compactMap { fd -> String? in
        guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(fd)") else { return nil }
        if target.hasPrefix(runtime.images.root.path + "/") && !target.contains("gantry.sqlite") { return target }
        if cgroups.contains(where: { target.hasPrefix($0 + "/") }) { return target }
        if target == "anon_inode:[pidfd]", let info = try? String(contentsOfFile: "/proc/self/fdinfo/\(fd)", encoding: .utf8),
           info.contains("Pid:\t-1") {
            return "pidfd of a reaped process"
        }
        if target.hasPrefix("mnt:[") { return target }
        return nil
    }.sorted()
}

/// Root's containers in a user namespace with a range it chooses (as
/// Podman's `--uidmap` gives): from a directory the range owns, or from an
/// image, whose layers are mapped into the namespace, so that every file
/// shows the owner the image gave it, while the container's processes and
/// what they write are the range's IDs on the host.
@Suite(.requiresRoot) struct UserNamespaceTests {
    @Test func mapsRootToAnUnprivilegedHostUser() async throws {
        try await withRuntime("ctr-userns") { runtime, dir in
            // A root file system of its own, owned by the mapped root.
            let rootfs = dir + "/userns-rootfs"
            try makeBusyboxRootfs(rootfs)
            _ = try await run("chown", ["-R", "100000:100000", rootfs])
            var spec = ContainerSpec(root: .directory(rootfs), command: ["sh", "-c", "id -u; cat /proc/self/uid_map; echo > /ok && echo wrote"])
            spec.namespaces.insert(.user)
            spec.uidMappings = [.init(containerID: 0, hostID: 100_000, size: 65536)]
            spec.gidMappings = [.init(containerID: 0, hostID: 100_000, size: 65536)]
            let (exit, output) = try await runCollecting(runtime, spec)
            #expect(exit.code == 0, "\(output)")
            let lines = output.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ") }
            #expect(lines == ["0", "0 100000 65536", "wrote"])
            var owner = stat()
            #expect(stat(rootfs + "/ok", &owner) == 0 && owner.st_uid == 100_000)
        }
    }

    static let range = ContainerSpec.IDMapping(hostID: 300_000, size: 65536)

    @Test func rootRunsAnImageInAChosenRange() async throws {
        try await withRuntime("ctr-userns") { runtime, _ in
            var spec = ContainerSpec(image: "busybox:test", command: ["sh", "-c", "echo made > /made; mkdir -p /tmp/by-user && chown 1234:1234 /tmp/by-user; echo kept > /data/kept; echo started; exec httpd -f -p 80 -h /"])
            spec.namespaces.insert(.user)
            spec.uidMappings = [Self.range]
            spec.gidMappings = [Self.range]
            spec.network = .bridge(Networks.defaultName)
            // A new volume is the container root's; a port below 1024 is its to bind.
            spec.mounts = [.volume(name: "userns-data", target: "/data")]
            try await runtime.withContainer(spec) { container in
                try await container.start()
                try await waitForOutput(container, "started")
                let process = try await container.exec(ExecSpec(["sh", "-c", "id -u; cat /proc/self/uid_map; stat -c '%u:%g %a' / /bin/busybox /etc/passwd /made /tmp/by-user; grep -c . /etc/hosts"]))
                var output = ""
                for try await chunk in process.output { output += chunk.text }
                #expect(await process.wait().status == .exited(0))
                let lines = output.split(separator: "\n").map { $0.split(whereSeparator: \.isWhitespace).joined(separator: " ") }
                #expect(lines == ["0", "0 300000 65536", "0:0 755", "0:0 755", "0:0 644", "0:0 644", "1234:1234 755", "3"], "\(output)")
                // On the host, the container's processes and files are the range's.
                let pid = try #require(container.record.pid)
                let status = try readText("/proc/\(pid)/status")
                #expect(status.contains("Uid:\t300000\t300000\t300000\t300000"), "\(status)")
                let upper = runtime.containerDirectory(container.id) + "/upper"
                var info = stat()
                #expect(stat(upper + "/made", &info) == 0 && info.st_uid == 300_000 && info.st_gid == 300_000)
                #expect(stat(upper + "/tmp/by-user", &info) == 0 && info.st_uid == 301_234)
                // The layers themselves are untouched: root's.
                let layer = try #require(container.record.layers.last)
                #expect(stat(layer + "/bin/busybox", &info) == 0 && info.st_uid == 0)
                let data = try runtime.volumes.dataDirectory("userns-data")
                #expect(stat(data + "/kept", &info) == 0 && info.st_uid == 300_000)
                let listening = try readText("/proc/\(pid)/net/tcp") + readText("/proc/\(pid)/net/tcp6")
                #expect(listening.contains(":0050 00000000:0000 0A") || listening.contains(":0050 00000000000000000000000000000000:0000 0A"), "nothing listens on port 80: \(listening)")
            }
        }
    }

    @Test func aRangeWithoutContainerRootIsRefused() async throws {
        try await withRuntime("ctr-userns-refused") { runtime, _ in
            var spec = ContainerSpec(image: "busybox:test", command: ["true"])
            spec.namespaces.insert(.user)
            spec.uidMappings = [ContainerSpec.IDMapping(containerID: 1, hostID: 300_001, size: 65535)]
            spec.gidMappings = [Self.range]
            await #expect { _ = try await runtime.create(spec) } throws: {
                ($0 as? RuntimeError)?.message.contains("map container root 0") == true
            }
        }
    }
}
