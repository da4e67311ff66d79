import Compose
import Foundation
import GantryTestSupport
import Runtime
import Testing
@testable import Reconciler

/// Compose files written to exhaust the host or crash the parser: each
/// must fail fast, with an error naming the file and what is wrong.
@Suite struct HostileComposeTests {
    func failure(_ yaml: String) -> String {
        let error = #expect(throws: ReconcilerError.self) { try ComposeProject.parse(yaml, directory: "/srv/demo") }
        #expect(error?.code == .compose)
        return error?.message ?? ""
    }

    @Test func aYAMLAliasBombIsStoppedAtItsBound() {
        // Nine levels of nine aliases each: 9^9 (387 million) values once expanded.
        var yaml = "x-a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
        for level in 1 ... 9 {
            let previous = Array(repeating: "*a\(level - 1)", count: 9).joined(separator: ", ")
            yaml += "x-a\(level): &a\(level) [\(previous)]\n"
        }
        yaml += "services:\n  web:\n    image: nginx\n    command: *a9\n"
        let clock = ContinuousClock()
        let started = clock.now
        let message = failure(yaml)
        #expect(message.contains("aliases are expanded"), "\(message)")
        #expect(clock.now - started < .seconds(20))
    }

    @Test func replicasBeyondWhatAHostCanRunAreRefused() {
        for key in ["deploy:\n      replicas: 100000000000", "scale: 100000000000", "deploy:\n      replicas: 10001"] {
            let message = failure("services:\n  web:\n    image: nginx\n    \(key)\n")
            #expect(message.contains("0…\(ServiceSpec.maximumReplicas)"), "\(message)")
        }
        var spec = ServiceSpec(name: "web", replicas: ServiceSpec.maximumReplicas + 1, template: ContainerSpec(image: "nginx"))
        #expect(throws: ReconcilerError.self) { try spec.validate() }
        spec.replicas = ServiceSpec.maximumReplicas
        #expect(throws: Never.self) { try spec.validate() }
    }

    @Test func deepNestingAndHugeFilesAreRefused() throws {
        let deep = "services:\n  web:\n    image: nginx\n    labels: " + String(repeating: "[", count: 200) + String(repeating: "]", count: 200) + "\n"
        #expect(failure(deep).contains("nest more than"))
        let huge = "services:\n  web:\n    image: nginx\n" + String(repeating: "# padding\n", count: ComposeProject.maximumFileSize / 10 + 1)
        #expect(failure(huge).contains("at most \(ComposeProject.maximumFileSize)"))
        try withTemporaryDirectorySync { dir in
            let path = dir + "/compose.yaml"
            try huge.write(toFile: path, atomically: true, encoding: .utf8)
            let error = #expect(throws: ReconcilerError.self) { try ComposeProject.load(path: path) }
            #expect(error?.message.contains(path) == true)
        }
    }
}

/// A fresh directory for a synchronous test body, removed afterwards.
private func withTemporaryDirectorySync(_ body: (String) throws -> Void) throws {
    let dir = NSTemporaryDirectory() + "gantry-compose-\(UUID().uuidString.prefix(8))"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    try body(dir)
}

extension HostileComposeTests {
    @Test func nestingPastTheParsersLimitIsAShortError() {
        let deep = "services:\n  web:\n    image: nginx\n    labels: " + String(repeating: "[", count: 100_000) + "\n"
        let message = failure(deep)
        #expect(message.contains("not valid YAML"))
        #expect(message.count < 1000, "the message quotes the whole line: \(message.count) characters")
    }
}
