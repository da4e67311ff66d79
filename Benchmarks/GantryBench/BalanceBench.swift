import ArgumentParser
import Foundation
import Reconciler
import Runtime
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Requests per second through a service's load-balanced port against a
/// direct connection to one replica, and the requests that fail while the
/// service changes under load.
struct Balance: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Requests per second through a service's load-balanced port, against one replica directly; failed requests during scaling and a rolling update under load.")
    @OptionGroup var options: BenchOptions
    @Option(help: "The most replicas the service is measured with.") var replicas = 3
    @Option(help: "Seconds each load runs.") var seconds = 3.0
    @Option(help: "Client threads, each making one request after another on a new connection.") var clients = 4
    @Option(help: "Alternating rounds of direct and balanced load (medians are reported).") var rounds = 3
    @Option(help: "CPUs each replica may use (0: no limit); a limit below the machine's shows the scaling with replicas.") var cpus = 0.0

    func run() async throws {
        try await options.withRuntime { runtime in
            try await withReconciler(runtime) { reconciler in
                var spec = ServiceSpec(name: "web", project: "bench", replicas: 1, template: ContainerSpec(
                    image: "busybox:bench", command: ["sh", "-c", "mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 80 -h /www"]))
                spec.template = spec.template.network(.bridge(Networks.defaultName))
                    .publishing(PublishedPort(hostIP: IPv4Address("127.0.0.1"), hostPort: 0, containerPort: 80))
                if cpus > 0 { spec.template = spec.template.resources(cpus: cpus) }
                spec.probes.readiness = Probe(.httpGet(path: "/", port: 80, host: nil), period: .milliseconds(200))
                spec.stopGracePeriod = .seconds(2)
                try reconciler.apply(spec)
                let record = try await reconciler.waitForRollout("web", timeout: .seconds(120))
                guard let port = record.status.publishedPorts?.first?.hostPort else { throw ValidationError("the service has no published port") }
                let loopback = IPv4Address("127.0.0.1")!
                var direct: [Double] = []
                var balanced: [Int: [Double]] = [:]
                for count in 1 ... replicas {
                    try reconciler.scale("web", replicas: count)
                    try await reconciler.waitUntil("web", timeout: .seconds(120)) { _, replicas in
                        replicas.filter { $0.ready && !$0.terminating && $0.exit == nil }.count == count && replicas.count == count
                    }
                    // Let the endpoint take the last one in.
                    try await Task.sleep(for: .milliseconds(300))
                    let first = try requireReplicaAddress(reconciler, runtime)
                    for _ in 0 ..< rounds {
                        if count == 1 { direct.append(LoadClient.run(address: first, port: 80, clients: clients, seconds: seconds).rate) }
                        balanced[count, default: []].append(LoadClient.run(address: loopback, port: port, clients: clients, seconds: seconds).rate)
                    }
                }
                let directRate = median(direct)
                print(String(format: "direct to one replica: %.0f requests/s (median of %d, %d clients%@)", directRate, rounds, clients,
                             cpus > 0 ? String(format: ", %.2f CPUs per replica", cpus) : ""))
                for count in 1 ... replicas {
                    let rate = median(balanced[count] ?? [])
                    print(String(format: "through the service port, %d replica(s): %.0f requests/s = %.2fx direct", count, rate, rate / directRate))
                }
                print(String(format: "balanced_1_ratio: %.2f", median(balanced[1] ?? []) / directRate))
                print(String(format: "balanced_%d_ratio: %.2f", replicas, median(balanced[replicas] ?? []) / directRate))

                // Under load: a scale up and down, then a rolling update.
                let load = LoadClient.start(address: loopback, port: port, clients: clients)
                try reconciler.scale("web", replicas: replicas + 2)
                try await reconciler.waitUntil("web", timeout: .seconds(120)) { _, list in list.filter { $0.ready && $0.exit == nil }.count == replicas + 2 }
                try reconciler.scale("web", replicas: replicas)
                try await reconciler.waitUntil("web", timeout: .seconds(120)) { _, list in list.count == replicas }
                let scaled = load.stop()
                let update = LoadClient.start(address: loopback, port: port, clients: clients)
                spec.replicas = replicas
                spec.template.environment = ["REVISION=2"]
                try reconciler.apply(spec)
                try await reconciler.waitUntil("web", timeout: .seconds(120)) { record, list in
                    record?.revision == 2 && list.count == replicas && list.allSatisfy { $0.current && $0.ready && !$0.terminating }
                }
                let rolled = update.stop()
                print("scale \(replicas) → \(replicas + 2) → \(replicas) under load: \(scaled.failed) of \(scaled.done) requests failed")
                print("rolling update of \(replicas) replicas under load: \(rolled.failed) of \(rolled.done) requests failed")
                print("rollout_failed_requests: \(rolled.failed)")
                print("scale_failed_requests: \(scaled.failed)")
                try reconciler.delete("web")
                try await reconciler.waitUntil("web", timeout: .seconds(60)) { record, replicas in record == nil && replicas.isEmpty }
            }
        }
    }
}

/// The address of a ready replica of `web`.
private func requireReplicaAddress(_ reconciler: Reconciler, _ runtime: ContainerRuntime) throws -> IPv4Address {
    guard let replica = reconciler.replicas(of: "web").first(where: { $0.ready && $0.exit == nil && !$0.terminating }),
          let address = try runtime.container(replica.id).record.network?.address else {
        throw ValidationError("no ready replica of the service has an address")
    }
    return address
}

/// Threads making HTTP/1.0 requests, each on a new connection, one after
/// another, counting answers and failures.
final class LoadClient: Sendable {
    private let counts = Mutex((done: 0, failed: 0))
    private let stopped = Atomic(false)
    private let threads = Mutex<[Thread]>([])
    private let finished = DispatchGroup()

    static func start(address: IPv4Address, port: UInt16, clients: Int) -> LoadClient {
        let client = LoadClient()
        for _ in 0 ..< clients {
            client.finished.enter()
            let thread = Thread { [client] in
                while !client.stopped.load(ordering: .relaxed) {
                    let ok = request(address: address, port: port)
                    client.counts.withLock { counts in
                        counts.done += 1
                        if !ok { counts.failed += 1 }
                    }
                }
                client.finished.leave()
            }
            thread.start()
        }
        return client
    }

    /// Load for `seconds`; the rate of answered requests.
    static func run(address: IPv4Address, port: UInt16, clients: Int, seconds: Double) -> (rate: Double, failed: Int) {
        let began = ContinuousClock.now
        let client = start(address: address, port: port, clients: clients)
        Thread.sleep(forTimeInterval: seconds)
        let result = client.stop()
        let elapsed = ContinuousClock.now - began
        return (Double(result.done - result.failed) / (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18), result.failed)
    }

    func stop() -> (done: Int, failed: Int) {
        stopped.store(true, ordering: .relaxed)
        finished.wait()
        return counts.withLock { $0 }
    }

    /// One GET on a new connection; whether a 200 came back whole.
    private static func request(address: IPv4Address, port: UInt16) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        // Closed with a reset once the server has closed: otherwise the
        // server keeps each connection in TIME_WAIT for a minute, and one
        // client address reusing its ports within that minute has some
        // connections stall a second (direct ones as well as balanced).
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
        var target = sockaddr_in()
        target.sin_family = sa_family_t(AF_INET)
        target.sin_port = port.bigEndian
        target.sin_addr.s_addr = address.value.bigEndian
        let connected = withUnsafePointer(to: &target) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        let request = Array("GET / HTTP/1.0\r\n\r\n".utf8)
        guard connected, send(fd, request, request.count, Int32(MSG_NOSIGNAL)) == request.count else { return false }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 2048)
        while true {
            let count = recv(fd, &buffer, buffer.count, 0)
            if count < 0 { return false }
            if count == 0 { break }
            response += buffer[..<count]
        }
        return response.starts(with: Array("HTTP/1.0 200".utf8)) || response.starts(with: Array("HTTP/1.1 200".utf8))
    }
}
