import ArgumentParser
import Foundation
import Runtime
#if canImport(Glibc)
import Glibc
#endif

extension GantryBench {
    struct Port: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create and start a container running busybox httpd with a published port; time until a GET on 127.0.0.1 answers, then remove it.")
        @OptionGroup var options: BenchOptions
        @Option(help: "How many runs.") var runs = 20
        @Option(help: "Runs before measuring.") var warmup = 2
        @Option(help: "The bridge network to put the containers on (made when missing, removed when made); an ordinary user's go on the default network.") var network = "gantry-bench"
        @Option(help: "How long to wait for an answer, in seconds.") var timeout = 10.0

        func run() async throws {
            let (samples, removals) = try await options.withRuntime { runtime in
                // An ordinary user's containers use the default network, through pasta.
                let network = runtime.userNamespace == nil ? network : Networks.defaultName
                let made = runtime.userNamespace == nil && (try? runtime.networks.network(network)) == nil
                if made { try await runtime.networks.create(network) }
                do {
                    let spec = ContainerSpec(image: "busybox:bench", command: ["/bin/httpd", "-f", "-p", "80"])
                        .network(.bridge(network))
                        .publishing(PublishedPort(containerPort: 80))
                    var samples: [Double] = []
                    var removals: [Double] = []
                    var phases = [Double](repeating: 0, count: 3)
                    var attempts = 0
                    let clock = ContinuousClock()
                    for index in 0 ..< (warmup + runs) {
                        let start = clock.now
                        let container = try await runtime.create(spec)
                        let created = clock.now
                        let started: ContinuousClock.Instant
                        let reached: ContinuousClock.Instant
                        let tries: Int
                        do {
                            try await container.start()
                            started = clock.now
                            guard let port = try container.record.network?.ports.first?.hostPort else {
                                throw ValidationError("the container has no published port")
                            }
                            if index == 0, let address = try container.record.network?.address {
                                print("container address \(address), published on 127.0.0.1:\(port)")
                            }
                            tries = try awaitHTTP(port: port, deadline: clock.now + .seconds(timeout))
                            reached = clock.now
                        } catch {
                            try? await container.remove(force: true)
                            throw error
                        }
                        try await container.remove(force: true)
                        if index >= warmup {
                            samples.append(milliseconds(reached - start))
                            removals.append(milliseconds(clock.now - reached))
                            phases[0] += milliseconds(created - start) / Double(runs)
                            phases[1] += milliseconds(started - created) / Double(runs)
                            phases[2] += milliseconds(reached - started) / Double(runs)
                            attempts += tries
                        }
                    }
                    print(String(format: "phases (mean): create %.3f ms, start %.3f ms, then until a GET answers %.3f ms; %.1f connection attempts per run",
                                 phases[0], phases[1], phases[2], Double(attempts) / Double(runs)))
                    if made { try await runtime.networks.remove(network) }
                    return (samples.sorted(), removals.sorted())
                } catch {
                    if made { try? await runtime.networks.remove(network) }
                    throw error
                }
            }
            print("runs: \(samples.count)")
            print(String(format: "mean: %.3f ms", samples.reduce(0, +) / Double(samples.count)))
            print(String(format: "min: %.3f ms", samples[0]))
            print(String(format: "p99: %.3f ms", percentile(samples, 0.99)))
            print(String(format: "remove_median: %.3f ms", percentile(removals, 0.5)))
            print(String(format: "port_reachable_median: %.3f ms", percentile(samples, 0.5)))
        }
    }
}

/// Polls 127.0.0.1:`port` until an HTTP server answers a GET; returns how
/// many connections it took.
func awaitHTTP(port: UInt16, deadline: ContinuousClock.Instant) throws -> Int {
    var tries = 0
    while true {
        tries += 1
        if httpAnswers(port: port) { return tries }
        guard ContinuousClock.now < deadline else {
            throw ValidationError("nothing answered on 127.0.0.1:\(port) after \(tries) attempts")
        }
        usleep(500)
    }
}

/// Whether a GET on 127.0.0.1:`port` gets an HTTP status line back (any
/// status) within `timeout` milliseconds per step.
func httpAnswers(port: UInt16, timeout: Int32 = 1000) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = port.bigEndian
    address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
    let status = withUnsafePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    if status != 0 {
        guard errno == EINPROGRESS, ready(fd, Int16(POLLOUT), timeout) else { return false }
        var error: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) == 0, error == 0 else { return false }
    }
    let request = Array("GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".utf8)
    guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == request.count else { return false }
    var reply: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 256)
    while reply.count < 5 {
        guard ready(fd, Int16(POLLIN), timeout) else { return false }
        let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard count > 0 else { return false }
        reply += buffer[..<count]
    }
    return reply.starts(with: Array("HTTP/".utf8))
}

private func ready(_ fd: Int32, _ events: Int16, _ timeout: Int32) -> Bool {
    var entry = pollfd(fd: fd, events: events, revents: 0)
    return poll(&entry, 1, timeout) == 1 && entry.revents & events != 0
}
