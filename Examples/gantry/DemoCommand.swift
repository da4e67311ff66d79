import ArgumentParser
import Foundation
import Gantry
import OCIImage
import Reconciler
import Runtime

/// `gantry demo`: what Gantry does, in one command and a few seconds, on a
/// state root of its own that it removes afterwards.
struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a self-healing web service from an image made of the host's busybox, kill a replica, show it healed, clean up.",
        discussion: """
            Makes an image from the host's busybox (Debian's busybox-static), runs a web service with a port \
            published on 127.0.0.1 and a worker service that reaches it by name on their bridge network, kills \
            the web replica with SIGKILL and measures how long the service takes to replace it and to serve again. \
            Everything it made (containers, network, firewall rules, image, state root) is removed at the end. \
            Needs root.
            """
    )
    @Option(help: "The host port to publish on 127.0.0.1 (default: a free one).") var port: UInt16?

    func run() async throws {
        guard geteuid() == 0 else { throw ValidationError("gantry demo runs containers, which needs root: sudo gantry demo") }
        guard let busybox = ["/bin/busybox", "/usr/bin/busybox"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw ValidationError("gantry demo makes its image from the host's busybox, and there is none: apt-get install busybox-static")
        }
        var template = Array("/tmp/gantry-demo-XXXXXX".utf8CString)
        guard mkdtemp(&template) != nil else { throw ValidationError("cannot make a temporary directory in /tmp") }
        let directory = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let clock = ContinuousClock()
        let started = clock.now
        func elapsed(since start: ContinuousClock.Instant) -> String { Self.milliseconds(clock.now - start) }

        // An image from the host's busybox.
        var step = clock.now
        try Self.makeRootfs(directory + "/rootfs", busybox: busybox)
        let gantry = try Gantry(root: StateRoot(directory + "/state"))
        try await gantry.images.importRootfs(at: directory + "/rootfs", name: "demo/web:1")
        print("image demo/web:1 made from \(busybox) in \(elapsed(since: step))")

        let runtime = try gantry.containers
        let network = try await runtime.networks.create("demo-\(getpid())")
        guard let hostPort = port ?? Self.freePort() else { throw ValidationError("no free TCP port on 127.0.0.1") }
        do {
            try await Self.heal(runtime: runtime, network: network.name, hostPort: hostPort, clock: clock)
        } catch {
            try? await Self.removeEverything(runtime: runtime, network: network.name)
            throw error
        }
        step = clock.now
        try await Self.removeEverything(runtime: runtime, network: network.name)
        print("removed the containers, network \(network.name) (bridge \(network.bridge) and its rules) and the state root in \(elapsed(since: step))")
        print("demo done in \(elapsed(since: started))")
    }

    /// Runs the service, kills its serving replica and measures the healing.
    private static func heal(runtime: ContainerRuntime, network: String, hostPort: UInt16, clock: ContinuousClock) async throws {
        let project = "demo"
        let reconciler = try Reconciler(runtime: runtime, options: Reconciler.Options(project: project))
        let page = "hello from a Gantry container"
        let serve = "mkdir -p /www && echo '\(page)' > /www/index.html && exec httpd -f -p 80 -h /www"
        let localhost = IPv4Address("127.0.0.1")
        // The web replica publishes the port; the worker, on the same network, reaches it by name.
        var web = ServiceSpec(name: "web", project: project, replicas: 1,
                              template: ContainerSpec(image: "demo/web:1", command: ["sh", "-c", serve])
                                  .network(.bridge(network))
                                  .publishing(PublishedPort(hostIP: localhost, hostPort: hostPort, containerPort: 80)))
        web.probes.readiness = .tcpSocket(port: 80)
        var worker = ServiceSpec(name: "worker", project: project, replicas: 1,
                                 template: ContainerSpec(image: "demo/web:1", command: ["sh", "-c", "exec sleep 3600"]).network(.bridge(network)))
        worker.stopGracePeriod = .milliseconds(100)
        web.stopGracePeriod = .milliseconds(100)

        let services = [web, worker]
        try await reconciler.withRunning { reconciler in
            var step = clock.now
            for service in services { try reconciler.apply(service) }
            try await reconciler.waitForRollout("web")
            try await reconciler.waitForRollout("worker")
            let body = try await Self.get(port: hostPort, until: clock.now + .seconds(60))
            print("services web and worker running on network \(network) in \(Self.milliseconds(clock.now - step)); http://127.0.0.1:\(hostPort)/ answers \"\(body)\"")
            let fetch = try await runtime.container(reconciler.replicas(of: "worker")[0].name)
                .exec(ExecSpec(["wget", "-qO-", "http://\(reconciler.replicas(of: "web")[0].name)/"]))
            let fetched = try await fetch.output.text()
            _ = await fetch.wait()
            print("worker reaches web by its name on the network: \"\(fetched.trimmingCharacters(in: .whitespacesAndNewlines))\"")

            // Kill the serving replica, as a crash would, and time the healing.
            let victim = reconciler.replicas(of: "web")[0]
            let events = reconciler.events()
            step = clock.now
            try runtime.container(victim.id).kill(.kill)
            var exited: Date?
            var replaced: (name: String, at: Date)?
            for await event in events where event.service == "web" {
                if case .exited = event.kind, event.container == victim.name { exited = event.time }
                if case .started = event.kind, let name = event.container, name != victim.name {
                    replaced = (name, event.time)
                    break
                }
            }
            let served = try await Self.get(port: hostPort, until: clock.now + .seconds(60))
            let serving = Self.milliseconds(clock.now - step)
            guard let exited, let replaced else { throw ValidationError("the killed replica was not replaced") }
            let healing = Duration.milliseconds(Int64(replaced.at.timeIntervalSince(exited) * 1000))
            print("killed \(victim.name) with SIGKILL; \(replaced.name) replaced it \(Self.milliseconds(healing)) after its exit, and the port answered \"\(served)\" again \(serving) after the kill")
            try reconciler.delete("web")
            try reconciler.delete("worker")
            try await reconciler.waitUntil("web") { record, replicas in record == nil && replicas.isEmpty }
            try await reconciler.waitUntil("worker") { record, replicas in record == nil && replicas.isEmpty }
        }
    }

    /// Removes every container of the state root, then the network.
    private static func removeEverything(runtime: ContainerRuntime, network: String) async throws {
        for record in try runtime.list() {
            try await runtime.container(record.id).remove(force: true)
        }
        try await runtime.networks.remove(network)
    }

    /// A root file system holding busybox, the applets the demo runs, and
    /// a passwd file.
    private static func makeRootfs(_ path: String, busybox: String) throws {
        for directory in ["bin", "etc", "tmp"] {
            try FileManager.default.createDirectory(atPath: path + "/" + directory, withIntermediateDirectories: true)
        }
        try FileManager.default.copyItem(atPath: busybox, toPath: path + "/bin/busybox")
        for applet in ["sh", "mkdir", "echo", "httpd", "sleep", "wget", "cat"] {
            try FileManager.default.createSymbolicLink(atPath: path + "/bin/" + applet, withDestinationPath: "busybox")
        }
        try Data("root:x:0:0:root:/root:/bin/sh\n".utf8).write(to: URL(fileURLWithPath: path + "/etc/passwd"))
    }

    /// The body of `GET /` on 127.0.0.1:`port`, tried every 10 ms until `deadline`.
    private static func get(port: UInt16, until deadline: ContinuousClock.Instant) async throws -> String {
        while true {
            if let body = httpGet(port: port) { return body }
            guard ContinuousClock.now < deadline else { throw ValidationError("nothing answered on 127.0.0.1:\(port)") }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    /// One `GET /` over HTTP/1.0: the body of a 200 answer, or nil.
    private static func httpGet(port: UInt16) -> String? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        // Linux bounds connect() by the send timeout: a SYN to an address that
        // just went away would otherwise be retried for a minute or more.
        var timeout = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { return nil }
        let request = Array("GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".utf8)
        guard write(fd, request, request.count) == request.count else { return nil }
        var answer: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while answer.count < 1 << 16 {
            let count = read(fd, &buffer, buffer.count)
            if count <= 0 { break }
            answer += buffer[..<count]
        }
        let text = String(decoding: answer, as: UTF8.self)
        guard text.hasPrefix("HTTP/1.0 200") || text.hasPrefix("HTTP/1.1 200"), let split = text.range(of: "\r\n\r\n") else { return nil }
        return text[split.upperBound...].trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// A TCP port of 127.0.0.1 nothing listens on now, as the kernel picks it.
    private static func freePort() -> UInt16? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        return bound ? UInt16(bigEndian: address.sin_port) : nil
    }

    static func milliseconds(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        return String(format: "%.1f ms", Double(seconds) * 1000 + Double(attoseconds) / 1e15)
    }
}
