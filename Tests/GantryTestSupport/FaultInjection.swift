import Foundation
import Testing
@testable import Runtime
#if canImport(Glibc)
import Glibc
#endif

/// Starts `binary` with `arguments`, kills it with SIGKILL after a random
/// delay below `window` microseconds (unless it ended first), and returns
/// whether the kill landed. Returns as soon as the command ends.
public func killAtRandom(_ binary: String, _ arguments: [String], environment: [String: String]? = nil, window: UInt32,
                         using generator: inout SystemRandomNumberGenerator) throws -> Bool {
    let process = try ChildProcess(binary, arguments, environment: environment, stdout: .null, stderr: .null)
    // Sleeps in short steps, so that a command that ends first is not waited for.
    let deadline = ContinuousClock.now + .microseconds(Int(UInt32.random(in: 0 ..< max(window, 1), using: &generator)))
    while process.isRunning, ContinuousClock.now < deadline { usleep(1000) }
    let killed = process.isRunning
    if killed { process.kill(.kill) }
    process.waitUntilExit()
    return killed
}

/// Records an issue for each thing of the host that containers `ids` of the
/// state root `root` may have left once they are gone: the host ends of
/// their veth pairs, their firewall rules, and port claims of the root.
public func expectNoHostLeftovers(of ids: Set<String>, root: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let links = Set(try RouteNetlink().links().map(\.name))
    let rules = Set(try Firewall.listRules().compactMap(\.comment))
    for id in ids {
        #expect(!links.contains(Networks.hostInterface(id)), "the veth of \(id.prefix(12)) is left", sourceLocation: sourceLocation)
        #expect(!rules.contains(Firewall.containerTag(id)), "the rules of \(id.prefix(12)) are left", sourceLocation: sourceLocation)
    }
    for claim in (try? FileManager.default.contentsOfDirectory(atPath: Networks.portClaims)) ?? [] {
        let holder = (try? String(contentsOfFile: Networks.portClaims + "/" + claim, encoding: .utf8)) ?? ""
        #expect(!holder.hasPrefix(root), "the port claim \(claim) is left", sourceLocation: sourceLocation)
    }
}
