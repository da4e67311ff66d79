import ArgumentParser
import Foundation
import GantryTesting
import Runtime
#if canImport(Glibc)
import Glibc
#endif

/// A throwaway busybox web server through GantryTesting, as a test suite
/// starts one: from the call to ready (its port accepts connections
/// inside and through the mapped host port, and one GET through that port
/// answers), then to removed; and a sequence of such containers.
struct TestingBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "testing",
        abstract: "A throwaway web server through GantryTesting: call to ready (port wait and one GET), ready to removed, and a sequence of them.")
    @Option(help: ArgumentHelp("An OCI image layout holding the busybox image.", valueName: "dir")) var layout: String
    @Option(help: "The image's tag in the layout.") var tag = "bench"
    @Option(help: ArgumentHelp("The state root (made and removed when not given).", valueName: "dir")) var root: String?
    @Option(help: "The cgroup parent for the benchmark's containers.") var cgroupParent = "gantry-bench"
    @Option(help: "Rounds of one container (medians are reported).") var rounds = 10
    @Option(help: "Containers started one after another, each ready, fetched from and removed.") var sequence = 20
    @Option(help: ArgumentHelp("Where to write the figures as JSON.", valueName: "file")) var output: String?
    @Option(help: "Instead: start this many servers, print their process IDs, and wait to be killed (what a killed test process leaves).")
    var hold: Int?

    static let server = ["sh", "-c", "mkdir -p /www && echo ok > /www/index.html && exec httpd -f -v -p 80 -h /www"]

    func run() async throws {
        let path = root ?? NSTemporaryDirectory() + "gantry-bench-testing-\(getpid())"
        defer { if root == nil { try? FileManager.default.removeItem(atPath: path) } }
        let session = try TestSession(root: StateRoot(path), cgroupParent: cgroupParent)
        if (try? await session.gantry.images.image("busybox:bench")) == nil {
            try await session.gantry.images.importLayout(at: layout, tag: tag, name: "busybox:bench")
        }
        let container = TestContainer(image: "busybox:bench", command: Self.server).exposing(80).waiting(for: .port(80))
        if let hold {
            var pids: [String] = []
            for _ in 0 ..< hold { pids.append(String(try await session.start(container).container.record.pid ?? 0)) }
            print(pids.joined(separator: " "))
            fflush(nil)
            try await Task.sleep(for: .seconds(3600))
            return
        }
        // One start first, as a test run has had: the seccomp profile compiled, the default network made.
        _ = try await measure(session, container)
        var ready: [Double] = []
        var removed: [Double] = []
        for _ in 0 ..< rounds {
            let (toReady, toRemoved) = try await measure(session, container)
            ready.append(toReady)
            removed.append(toRemoved)
        }
        let clock = ContinuousClock()
        let started = clock.now
        for _ in 0 ..< sequence { _ = try await measure(session, container) }
        let total = milliseconds(clock.now - started)
        for network in try session.runtime.networks.list() { try await session.runtime.networks.remove(network.name) }
        try? session.runtime.cgroups.remove(cgroupParent)

        let figures: [String: Any] = [
            "tool": "GantryTesting (in-process)",
            "ready_ms": ready, "removed_ms": removed,
            "ready_median_ms": median(ready), "removed_median_ms": median(removed),
            "sequence_count": sequence, "sequence_total_ms": total,
        ]
        print(String(format: "ready: %.1f ms (median of %d)\nremoved: %.1f ms\nsequence of %d: %.0f ms", median(ready), rounds, median(removed), sequence, total))
        if let output {
            try JSONSerialization.data(withJSONObject: figures, options: [.prettyPrinted, .sortedKeys]).write(to: URL(fileURLWithPath: output))
        }
    }

    /// Starts the server, waits for it, fetches its page through the
    /// mapped port, removes it: milliseconds to ready, then to removed.
    private func measure(_ session: TestSession, _ container: TestContainer) async throws -> (Double, Double) {
        let clock = ContinuousClock()
        let started = clock.now
        let server = try await session.start(container)
        let page = try await fetch(port: server.mappedPort(80))
        guard page.hasSuffix("\r\n\r\nok\n") else { throw ValidationError("the server answered \(page)") }
        let ready = clock.now
        try await server.remove()
        return (milliseconds(ready - started), milliseconds(clock.now - ready))
    }

    private func fetch(port: UInt16) async throws -> String {
        try await Task.detached {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            defer { close(fd) }
            let request = Array("GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".utf8)
            switch TCPExchange(fd: fd, timeout: 5000).run(address: IPv4Address(0x7F00_0001), port: port, target: "127.0.0.1:\(port)",
                                                           request: request, reading: .untilClosed(limit: 1 << 16)) {
            case .success(let bytes): return String(decoding: bytes, as: UTF8.self)
            case .failure(let failure): throw ValidationError(failure.description)
            }
        }.value
    }
}
