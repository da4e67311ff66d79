import Foundation
import OCIImage
import Runtime
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// A health check of a replica, as a Kubernetes probe, with the same defaults.
public struct Probe: Hashable, Sendable, Codable {
    /// What the check does.
    public enum Action: Hashable, Sendable, Codable {
        /// Runs a command in the replica; exit status 0 passes.
        case exec([String])
        /// Sends `GET path` to the port; a status of 200…399 passes.
        /// `host` is an IPv4 address to connect to instead of the replica's own.
        case httpGet(path: String, port: UInt16, host: String?)
        /// Opens a TCP connection to the port; connecting passes.
        case tcpSocket(port: UInt16, host: String?)
    }

    /// What the check does.
    public var action: Action
    /// How long after the replica starts the first check runs (Kubernetes' `initialDelaySeconds`, 0).
    public var initialDelay: Duration
    /// How often it runs (`periodSeconds`, 10 s).
    public var period: Duration
    /// How long one check may take before it counts as failed (`timeoutSeconds`, 1 s).
    public var timeout: Duration
    /// Passes in a row that make a failing replica pass (`successThreshold`, 1).
    public var successThreshold: Int
    /// Failures in a row that make a passing replica fail (`failureThreshold`, 3).
    public var failureThreshold: Int

    /// A probe with Kubernetes' defaults.
    ///
    /// - Parameters:
    ///   - action: what the check does.
    ///   - initialDelay: the wait before the first check.
    ///   - period: the time between checks.
    ///   - timeout: how long one check may take.
    ///   - successThreshold: passes in a row needed to pass.
    ///   - failureThreshold: failures in a row needed to fail.
    public init(_ action: Action, initialDelay: Duration = .zero, period: Duration = .seconds(10), timeout: Duration = .seconds(1),
                successThreshold: Int = 1, failureThreshold: Int = 3) {
        self.action = action
        self.initialDelay = initialDelay
        self.period = period
        self.timeout = timeout
        self.successThreshold = successThreshold
        self.failureThreshold = failureThreshold
    }

    /// A probe running `command` in the replica.
    ///
    /// - Parameter command: the program and its arguments.
    public static func exec(_ command: [String]) -> Probe { Probe(.exec(command)) }

    /// A probe sending `GET path` to `port`.
    ///
    /// - Parameters:
    ///   - path: the request path.
    ///   - port: the port in the replica.
    public static func httpGet(_ path: String = "/", port: UInt16) -> Probe { Probe(.httpGet(path: path, port: port, host: nil)) }

    /// A probe connecting to `port`.
    ///
    /// - Parameter port: the port in the replica.
    public static func tcpSocket(port: UInt16) -> Probe { Probe(.tcpSocket(port: port, host: nil)) }

    func validate(service: String, kind: ProbeKind) throws {
        guard initialDelay >= .zero, period > .zero, timeout > .zero, successThreshold >= 1, failureThreshold >= 1 else {
            throw ReconcilerError(.invalidSpec, "service \(service): the \(kind) probe needs period and timeout > 0, thresholds >= 1 and no negative delay")
        }
        if kind != .readiness, successThreshold != 1 {
            throw ReconcilerError(.invalidSpec, "service \(service): the \(kind) probe's successThreshold must be 1, as in Kubernetes")
        }
        switch action {
        case .exec(let command) where command.isEmpty:
            throw ReconcilerError(.invalidSpec, "service \(service): the \(kind) probe's command is empty")
        case .httpGet(let path, _, let host):
            guard path.hasPrefix("/"), !path.contains(where: { $0 == "\r" || $0 == "\n" || $0 == " " }) else {
                throw ReconcilerError(.invalidSpec, "service \(service): the \(kind) probe's path \"\(path)\" must start with / and hold no spaces or line breaks")
            }
            if let host, IPv4Address(host) == nil {
                throw ReconcilerError(.invalidSpec, "service \(service): the \(kind) probe's host \"\(host)\" is not an IPv4 address")
            }
        case .tcpSocket(_, let host?) where IPv4Address(host) == nil:
            throw ReconcilerError(.invalidSpec, "service \(service): the \(kind) probe's host \"\(host)\" is not an IPv4 address")
        default: break
        }
    }

    /// `exec`, `http-get` or `tcp-socket`, for metrics and events.
    var actionName: String {
        switch action {
        case .exec: "exec"
        case .httpGet: "http-get"
        case .tcpSocket: "tcp-socket"
        }
    }
}

/// Which of a replica's probes.
public enum ProbeKind: String, Hashable, Sendable, Codable, CaseIterable, CustomStringConvertible {
    /// Holds the other two back until it passes once; failing restarts the replica.
    case startup
    /// Failing restarts the replica.
    case liveness
    /// Failing takes the replica out of service and holds rollouts back.
    case readiness

    public var description: String { rawValue }
}

/// A service's probes, each optional.
public struct ServiceProbes: Hashable, Sendable, Codable {
    /// Passes once before the others start.
    public var startup: Probe?
    /// Restarts the replica when it fails.
    public var liveness: Probe?
    /// Gates traffic and rollouts.
    public var readiness: Probe?

    /// Probes as given; none by default.
    ///
    /// - Parameters:
    ///   - startup: the startup probe.
    ///   - liveness: the liveness probe.
    ///   - readiness: the readiness probe.
    public init(startup: Probe? = nil, liveness: Probe? = nil, readiness: Probe? = nil) {
        self.startup = startup
        self.liveness = liveness
        self.readiness = readiness
    }

    /// The probes that are set.
    var all: [(ProbeKind, Probe)] {
        [(.startup, startup), (.liveness, liveness), (.readiness, readiness)].compactMap { kind, probe in probe.map { (kind, $0) } }
    }
}

/// Runs single checks against a container.
enum Prober {
    static func check(_ probe: Probe, container: Container) async -> ProbeResult {
        switch probe.action {
        case .exec(let command):
            return await exec(command, timeout: probe.timeout, container: container)
        case .httpGet(let path, let port, let host):
            return await connect(container, host: host, port: port, timeout: probe.timeout, request: path)
        case .tcpSocket(let port, let host):
            return await connect(container, host: host, port: port, timeout: probe.timeout, request: nil)
        }
    }

    private static func exec(_ command: [String], timeout: Duration, container: Container) async -> ProbeResult {
        let process: ExecProcess
        do {
            process = try await container.exec(ExecSpec(command))
        } catch {
            return ProbeResult(passed: false, message: "cannot run \(command.joined(separator: " ")): \(error)")
        }
        // Keep a little of its output for the message.
        let output = Task {
            var kept: [UInt8] = []
            for try await chunk in process.output where kept.count < 1024 { kept += chunk.bytes.prefix(1024 - kept.count) }
            return String(decoding: kept, as: UTF8.self)
        }
        let exit: ContainerExit? = await withTaskGroup(of: ContainerExit?.self) { group in
            group.addTask { await process.wait() }
            group.addTask {
                // Past its time, it is killed: the group ends once it has.
                try? await Task.sleep(for: timeout)
                if !Task.isCancelled { try? process.kill(.kill) }
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
        guard let exit else {
            output.cancel()
            return ProbeResult(passed: false, message: "\(command.joined(separator: " ")) timed out after \(timeout)")
        }
        let status = exit.status
        let text = ((try? await output.value) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
        if status == .exited(0) { return ProbeResult(passed: true, message: "") }
        return ProbeResult(passed: false, message: "\(command.joined(separator: " ")) \(status)" + (text.isEmpty ? "" : ": \(text)"))
    }

    /// Connects from inside the container's network namespace, to its
    /// address on a bridge network (or loopback), and for HTTP sends `GET`.
    private static func connect(_ container: Container, host: String?, port: UInt16, timeout: Duration, request path: String?) async -> ProbeResult {
        let address: IPv4Address
        if let host, let parsed = IPv4Address(host) {
            address = parsed
        } else {
            address = ((try? container.record)?.network?.address) ?? IPv4Address(0x7F00_0001)
        }
        let target = "\(address):\(port)"
        let fd: Int32
        do {
            fd = try container.socket().rawValue
        } catch {
            return ProbeResult(passed: false, message: "cannot reach \(target): \(error)")
        }
        let milliseconds = Int32(clamping: timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
        do {
            return try await offload { _ in
                defer { close(fd) }
                return SocketCheck(fd: fd, timeout: max(1, milliseconds)).run(address: address, port: port, target: target, path: path)
            }
        } catch {
            return ProbeResult(passed: false, message: "\(target): \(error)")
        }
    }
}

/// One TCP or HTTP check on a socket, bounded by a deadline.
private struct SocketCheck {
    var fd: Int32
    var timeout: Int32

    func run(address: IPv4Address, port: UInt16, target: String, path: String?) -> ProbeResult {
        let request = path.map { Array("GET \($0) HTTP/1.1\r\nHost: \(target)\r\nUser-Agent: gantry-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n".utf8) } ?? []
        let response: [UInt8]
        switch TCPExchange(fd: fd, timeout: timeout).run(address: address, port: port, target: target, request: request,
                                                          reading: path == nil ? .nothing : .firstLine) {
        case .success(let bytes): response = bytes
        case .failure(let failure): return ProbeResult(passed: false, message: failure.description)
        }
        guard let path else { return ProbeResult(passed: true, message: "") }
        let line = String(decoding: response.prefix { $0 != UInt8(ascii: "\r") && $0 != UInt8(ascii: "\n") }, as: UTF8.self)
        let parts = line.split(separator: " ")
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/"), let status = Int(parts[1]) else {
            return ProbeResult(passed: false, message: "\(target)\(path) sent no HTTP status line")
        }
        guard (200..<400).contains(status) else { return ProbeResult(passed: false, message: "GET \(target)\(path): HTTP \(status)") }
        return ProbeResult(passed: true, message: "")
    }
}
