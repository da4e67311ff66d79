import CGantryLauncher
import Foundation
import SystemPackage

/// A process the launcher started: its pid and a pidfd owned by the
/// caller, and a descriptor of the mount namespace its clone made (or -1),
/// also the caller's.
struct LaunchedProcess: Sendable {
    var pid: Int32
    var pidfd: Int32
    var mountNamespace: Int32 = -1
}

enum Launcher {
    /// Starts the process a plan describes. Returns once the program has
    /// been executed (or the launch failed and the child was reaped).
    ///
    /// - Throws: ``RuntimeError`` with code `launch`, naming the step that
    ///   failed and the errno.
    static func launch(_ plan: LaunchPlan, what: String) throws -> LaunchedProcess {
        var pid: pid_t = 0
        var pidfd: Int32 = -1
        var mountNamespace: Int32 = -1
        var failure = gantry_launch_failure()
        let result = plan.withUnsafePlan { gantry_launch($0, &pid, &pidfd, &mountNamespace, &failure) }
        guard result == 0 else {
            let stage = String(cString: gantry_launch_stage_name(failure.stage))
            let said = withUnsafeBytes(of: failure.message) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                .trimmingCharacters(in: .whitespacesAndNewlines)
            if stage == "exec", failure.error == ENOENT, let program = plan.executables.count == 1 ? plan.executables.first : plan.arguments.first {
                // Which program, as a user asks first.
                throw RuntimeError(.launch, "\(what) could not be started: the exec step failed: it has no program \(program)"
                                   + (plan.executables.count > 1 ? " (looked for \(plan.executables.joined(separator: ", ")))" : ""),
                                   underlying: Errno(rawValue: failure.error))
            }
            throw RuntimeError(.launch, "\(what) could not be started: the \(stage) step failed" + (said.isEmpty ? "" : " (\(said))"),
                               underlying: Errno(rawValue: failure.error))
        }
        return LaunchedProcess(pid: pid, pidfd: pidfd, mountNamespace: mountNamespace)
    }
}
