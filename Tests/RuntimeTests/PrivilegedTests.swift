import Foundation
import GantryTestSupport
import Testing
@testable import Runtime

@Suite(.requiresRoot) struct PrivilegedTests {
    @Test func aPrivilegedContainerHasEveryCapabilityTheHostsDevicesAndNoFilter() async throws {
        try await withRuntime("privileged") { runtime, _ in
            let script = """
                grep -E '^(CapEff|Seccomp):' /proc/self/status | tr -s '\\t ' ' '
                (echo 1 > /proc/sys/net/ipv4/ip_forward) 2>/dev/null && echo proc-sys-writable || echo proc-sys-read-only
                grep ' /sys ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1
                test -e /dev/loop-control && echo loop-control || echo no-loop-control
                head -c 1 /dev/loop-control >/dev/null 2>&1; echo opened-$?
                """
            let (plain, plainOutput) = try await runCollecting(runtime, shell(script))
            #expect(plain.code == 0)
            let (exit, output) = try await runCollecting(runtime, shell(script).privileged())
            #expect(exit.code == 0, "\(output)")
            // Every capability this process holds (a host may withhold some).
            let status = try readText("/proc/self/status").split(separator: "\n")
            let held = status.first { $0.hasPrefix("CapBnd:") }.map { $0.dropFirst("CapBnd:".count).trimmingCharacters(in: .whitespaces) }
            let lines = output.split(separator: "\n").map(String.init)
            #expect(lines.first == "CapEff: " + (held ?? "?"), "\(lines)")
            #expect(Array(lines.dropFirst()) == ["Seccomp: 0", "proc-sys-writable", "rw", "loop-control", "opened-1"]
                    || Array(lines.dropFirst()) == ["Seccomp: 0", "proc-sys-writable", "rw", "loop-control", "opened-0"], "\(lines)")
            let plainLines = plainOutput.split(separator: "\n").map(String.init)
            #expect(Array(plainLines.dropFirst()) == ["Seccomp: 2", "proc-sys-read-only", "ro", "no-loop-control", "opened-1"], "\(plainLines)")
        }
    }
}
