import Foundation
import GantryCore
import Runtime
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// How to tell that a test container is ready.
///
/// Strategies combine with `all` and `any` under the
/// container's one start-up deadline (``TestContainer/startupTimeout(_:)``).
/// Whatever the strategy, a container that ends before it is satisfied
/// fails the start at once (unless the strategy waits for that end, as
/// ``exit(code:)`` does), and the failure shows its exit and last lines.
public struct WaitStrategy: Sendable, CustomStringConvertible {
    /// What the strategy waits for, in words.
    public let description: String
    /// Whether the strategy is about the container's end, which then does
    /// not fail the start.
    let awaitsExit: Bool
    /// Returns once satisfied; throws when it never can be.
    let check: @Sendable (WaitContext) async throws -> Void

    /// A strategy of one's own: `isReady` is asked every `interval` until
    /// it returns true.
    public static func custom(_ description: String, interval: Duration = .milliseconds(25),
                              _ isReady: @escaping @Sendable (RunningContainer) async throws -> Bool) -> WaitStrategy {
        WaitStrategy(description: description, awaitsExit: false) { context in
            try await context.poll(interval) { try await isReady(context.running) ? .satisfied : .notYet(nil) }
        }
    }

    /// Ready once its process runs.
    public static let running = WaitStrategy(description: "its process runs", awaitsExit: false) { _ in }

    /// Ready once `times` lines of its output (either stream) contain `text`.
    public static func logLine(containing text: String, times: Int = 1) -> WaitStrategy {
        logLines("a line containing \"\(text)\"", times: times) { $0.contains(text) }
    }

    /// Ready once `times` lines of its output (either stream) match the
    /// regular expression `pattern`.
    ///
    /// - Throws: ``TestingError`` when `pattern` is not a regular expression.
    public static func logLine(matching pattern: String, times: Int = 1) throws -> WaitStrategy {
        do {
            _ = try Regex(pattern)
        } catch {
            throw TestingError(.invalidSpec, "\"\(pattern)\" is not a regular expression: \(error)")
        }
        return logLines("a line matching /\(pattern)/", times: times) { line in
            // Compiled again here: a Regex is not Sendable.
            (try? Regex(pattern)).map { line.contains($0) } ?? false
        }
    }

    private static func logLines(_ what: String, times: Int, _ matches: @escaping @Sendable (String) -> Bool) -> WaitStrategy {
        let description = times == 1 ? what : "\(times) of \(what)"
        return WaitStrategy(description: description, awaitsExit: false) { context in
            var seen = 0
            for try await line in context.running.container.output.lines where matches(line) {
                seen += 1
                if seen >= times { return }
            }
            throw WaitFailure("its output ended after \(seen) of \(times) such lines")
        }
    }

    /// Where a port is checked from.
    public enum Vantage: Hashable, Sendable {
        /// Inside the container's network namespace.
        case inside
        /// From the host, through the port's mapped host port.
        case host
        /// Both: inside, and from the host where the port is exposed.
        case both
    }

    /// Ready once something accepts connections on `port`.
    public static func port(_ port: UInt16, from vantage: Vantage = .both) -> WaitStrategy {
        WaitStrategy(description: "port \(port) to accept connections", awaitsExit: false) { context in
            try await context.poll(.milliseconds(25)) {
                for target in try context.targets(port, vantage) {
                    if case .failure(let failure) = await target.exchange(request: [], reading: .nothing) {
                        return .notYet(failure.description)
                    }
                }
                return .satisfied
            }
        }
    }

    /// Ready once `GET path` on `port` answers with a status `status`
    /// accepts and a body `body` accepts. The request goes through the
    /// mapped host port where the port is exposed, else from inside.
    ///
    /// - Parameters:
    ///   - path: The request's path.
    ///   - port: The container's port.
    ///   - status: Which statuses count (by default 200).
    ///   - body: Which bodies count (by default any).
    public static func http(_ path: String = "/", port: UInt16, status: @escaping @Sendable (Int) -> Bool = { $0 == 200 },
                            body: (@Sendable (String) -> Bool)? = nil) -> WaitStrategy {
        WaitStrategy(description: "GET \(path) on port \(port)", awaitsExit: false) { context in
            try await context.poll(.milliseconds(50)) {
                guard let target = try context.targets(port, .host).first else { return .notYet(nil) }
                let response: HTTPResponse
                switch await target.get(path) {
                case .failure(let failure): return .notYet(failure.description)
                case .success(let answer): response = answer
                }
                guard status(response.status) else { return .notYet("it answered HTTP \(response.status)") }
                if let body, !body(response.body) {
                    return .notYet("its body did not match: \(response.body.prefix(200).trimmingCharacters(in: .whitespacesAndNewlines))")
                }
                return .satisfied
            }
        }
    }

    /// Ready once `command` run in the container exits with 0.
    public static func command(_ command: [String], interval: Duration = .milliseconds(100)) -> WaitStrategy {
        WaitStrategy(description: "\(command.joined(separator: " ")) to succeed", awaitsExit: false) { context in
            try await context.poll(interval) {
                let output = try await context.running.exec(command, timeout: .seconds(10))
                if output.exit.code == 0 { return .satisfied }
                let said = (output.standardError + output.standardOutput).trimmingCharacters(in: .whitespacesAndNewlines)
                return .notYet("it \(output.exit)" + (said.isEmpty ? "" : ": \(said.prefix(200))"))
            }
        }
    }

    /// Ready once the image's health check (its `HEALTHCHECK`) passes.
    public static let healthCheck = WaitStrategy(description: "its image's health check to pass", awaitsExit: false) { context in
        guard let test = context.healthCheck, let first = test.first, first != "NONE" else {
            throw WaitFailure("its image has no health check")
        }
        let command = first == "CMD-SHELL" ? ["/bin/sh", "-c", test.dropFirst().joined(separator: " ")] : Array(test.dropFirst())
        try await WaitStrategy.command(command, interval: .milliseconds(100)).check(context)
    }

    /// For a one-shot container: ready once it has ended with `code`; an
    /// end with another code fails at once.
    public static func exit(code: Int32 = 0) -> WaitStrategy {
        WaitStrategy(description: "it to end with \(code)", awaitsExit: true) { context in
            try await context.poll(.milliseconds(10)) {
                guard let exit = context.exit() else { return .notYet(nil) }
                if exit.code == code { return .satisfied }
                throw WaitFailure("it \(exit) instead")
            }
        }
    }

    /// Ready once `path` exists in the container's file system.
    public static func file(_ path: String) -> WaitStrategy {
        WaitStrategy(description: "\(path) to appear", awaitsExit: false) { context in
            try await context.poll(.milliseconds(25)) {
                try await context.running.container.fileExists(path) ? .satisfied : .notYet(nil)
            }
        }
    }

    /// Ready once every one of `strategies` is, checked side by side.
    public static func all(_ strategies: WaitStrategy...) -> WaitStrategy { all(strategies) }

    /// Ready once every one of `strategies` is, checked side by side.
    public static func all(_ strategies: [WaitStrategy]) -> WaitStrategy {
        WaitStrategy(description: strategies.map(\.description).joined(separator: " and "), awaitsExit: strategies.contains { $0.awaitsExit }) { context in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for strategy in strategies { group.addTask { try await strategy.check(context) } }
                try await group.waitForAll()
            }
        }
    }

    /// Ready once one of `strategies` is; fails only when all of them fail.
    public static func any(_ strategies: WaitStrategy...) -> WaitStrategy { any(strategies) }

    /// Ready once one of `strategies` is; fails only when all of them fail.
    public static func any(_ strategies: [WaitStrategy]) -> WaitStrategy {
        WaitStrategy(description: strategies.map(\.description).joined(separator: " or "), awaitsExit: strategies.allSatisfy { $0.awaitsExit }) { context in
            try await withThrowingTaskGroup(of: (index: Int, failure: String)?.self) { group in
                for (index, strategy) in strategies.enumerated() {
                    group.addTask {
                        do {
                            try await strategy.check(context)
                            return nil
                        } catch is CancellationError {
                            throw CancellationError()
                        } catch {
                            context.note("\(strategy.description): \(error)")
                            return (index, "\(strategy.description): \(error)")
                        }
                    }
                }
                var failures: [(index: Int, failure: String)] = []
                for try await failure in group {
                    guard let failure else {
                        group.cancelAll()
                        return
                    }
                    failures.append(failure)
                }
                // In the order the strategies were given, whichever failed first.
                let reasons = failures.sorted { $0.index < $1.index }.map(\.failure)
                throw WaitFailure("none of them can be satisfied (\(reasons.joined(separator: "; ")))")
            }
        }
    }
}

extension RunningContainer {
    /// Waits for the strategy, the container's end or the deadline,
    /// whichever comes first.
    func awaitReady(_ strategy: WaitStrategy, timeout: Duration, healthCheck: [String]?, image: String, reportedTimeout: Duration? = nil) async throws {
        let running = self
        let ending = Latest<ContainerExit>()
        // A reused container started by an earlier run is followed
        // through its record instead.
        let owned = (try? running.container.onExit { ending.set($0) }) != nil
        let note = Latest<String>()
        let context = WaitContext(running: running, healthCheck: healthCheck, ending: ending, lastNote: note)
        enum Outcome: Sendable {
            case ready
            case failed(String)
            case ended(ContainerExit)
            case timedOut
        }
        let outcome = await withTaskGroup(of: Outcome?.self) { group in
            group.addTask {
                do {
                    try await strategy.check(context)
                    return .ready
                } catch is CancellationError {
                    return nil
                } catch {
                    return .failed("\(error)")
                }
            }
            group.addTask {
                let clock = ContinuousClock()
                let deadline = clock.now.advanced(by: timeout)
                while clock.now < deadline {
                    if !owned, let record = try? running.container.record, record.status == .stopped {
                        ending.set(record.exit ?? ContainerExit(status: .exited(0), reason: .exited))
                    }
                    if !strategy.awaitsExit, let exit = ending.current {
                        // What it wrote last reaches its log a moment after its end.
                        try? await Task.sleep(for: .milliseconds(20))
                        return .ended(exit)
                    }
                    do { try await Task.sleep(for: .milliseconds(10)) } catch { return nil }
                }
                return .timedOut
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first ?? .timedOut
        }
        let what = "container \(running.name) (\(image))"
        let reason: String
        let code: TestingErrorCode
        switch outcome {
        case .ready: return
        case .failed(let why):
            (code, reason) = (.exited, "\(what) can never be ready (waiting for \(strategy)): \(why)")
        case .ended(let exit):
            (code, reason) = (.exited, "\(what) \(exit) before it was ready (waiting for \(strategy))")
        case .timedOut:
            (code, reason) = (.timedOut, "\(what) was not ready within \(reportedTimeout ?? timeout) (waiting for \(strategy))" + (note.current.map { "; last: \($0)" } ?? ""))
        }
        var message = reason
        if case .timedOut = outcome, let exit = ending.current { message += "; it \(exit)" }
        let lines = await running.lastLines(20)
        message += lines.isEmpty ? "\nit wrote nothing" : "\nits last lines:\n" + lines.map { "  | " + $0 }.joined(separator: "\n")
        throw TestingError(code, message)
    }
}

/// Why a wait can never be satisfied.
struct WaitFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// What a strategy's check sees.
struct WaitContext: Sendable {
    let running: RunningContainer
    /// The image's `HEALTHCHECK` test, if it has one.
    let healthCheck: [String]?
    private let ending: Latest<ContainerExit>
    private let lastNote: Latest<String>

    init(running: RunningContainer, healthCheck: [String]?, ending: Latest<ContainerExit>, lastNote: Latest<String>) {
        self.running = running
        self.healthCheck = healthCheck
        self.ending = ending
        self.lastNote = lastNote
    }

    /// How the container ended, once it has.
    func exit() -> ContainerExit? { ending.current }

    /// Keeps why the wait is not yet satisfied, for the failure's message.
    func note(_ text: String) { lastNote.set(text) }

    enum Attempt {
        case satisfied
        case notYet(String?)
    }

    /// Tries `attempt` until it is satisfied: soon again at first, since
    /// most servers are ready within milliseconds, then every `interval`.
    func poll(_ interval: Duration, _ attempt: () async throws -> Attempt) async throws {
        var pause = min(.milliseconds(1), interval)
        while true {
            try Task.checkCancellation()
            switch try await attempt() {
            case .satisfied: return
            case .notYet(let why): if let why { note(why) }
            }
            try await Task.sleep(for: pause)
            pause = min(pause * 2, interval)
        }
    }

    /// Where `port` is reached from `vantage`.
    func targets(_ port: UInt16, _ vantage: Vantage) throws -> [SocketTarget] {
        let mapped = try? running.mappedPort(port)
        var targets: [SocketTarget] = []
        if vantage != .host || mapped == nil {
            let address = (try? running.container.record)?.network?.address ?? IPv4Address(0x7F00_0001)
            targets.append(SocketTarget(address: address, port: port, container: running.container))
        }
        if vantage != .inside, let mapped {
            targets.append(SocketTarget(address: IPv4Address(0x7F00_0001), port: mapped, container: nil))
        }
        return targets
    }

    typealias Vantage = WaitStrategy.Vantage
}

/// The latest value one task set for others to read: how the container
/// ended (set by the runtime's exit handler), the last reason a wait gave
/// for not being satisfied.
final class Latest<Value: Sendable>: Sendable {
    private let value = Mutex<Value?>(nil)
    var current: Value? { value.withLock { $0 } }
    func set(_ new: Value) { value.withLock { $0 = new } }
}

/// An HTTP response, as much as a wait needs.
struct HTTPResponse: Sendable {
    var status: Int
    var body: String
}

/// An address and port, reached from the host or from inside a container.
struct SocketTarget: Sendable {
    let address: IPv4Address
    let port: UInt16
    /// The container whose network namespace the socket is opened in; nil: the host's.
    let container: Container?

    var name: String { "\(address):\(port)" + (container.map { " in container \($0.name)" } ?? "") }

    func exchange(request: [UInt8], reading: TCPExchange.Reading) async -> Result<[UInt8], TCPExchangeFailure> {
        let fd: Int32
        if let container {
            do { fd = try container.socket().rawValue } catch { return .failure(TCPExchangeFailure("\(name): \(error)")) }
        } else {
            fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { return .failure(TCPExchangeFailure("\(name): cannot open a socket: \(Errno(rawValue: errno))")) }
        }
        let (address, port, name) = (address, port, name)
        do {
            return try await offload { isCancelled in
                defer { close(fd) }
                return TCPExchange(fd: fd, timeout: 2000, isCancelled: isCancelled)
                    .run(address: address, port: port, target: name, request: request, reading: reading)
            }
        } catch {
            return .failure(TCPExchangeFailure("\(name): \(error)"))
        }
    }

    /// `GET path` over HTTP/1.0, so that the answer ends with the connection.
    func get(_ path: String) async -> Result<HTTPResponse, TCPExchangeFailure> {
        let request = Array("GET \(path) HTTP/1.0\r\nHost: \(address):\(port)\r\nUser-Agent: gantry-testing\r\nAccept: */*\r\n\r\n".utf8)
        switch await exchange(request: request, reading: .untilClosed(limit: 1 << 20)) {
        case .failure(let failure): return .failure(failure)
        case .success(let bytes):
            let text = String(decoding: bytes, as: UTF8.self)
            let head = String(decoding: bytes.prefix { $0 != UInt8(ascii: "\r") && $0 != UInt8(ascii: "\n") }, as: UTF8.self).split(separator: " ")
            guard head.count >= 2, head[0].hasPrefix("HTTP/"), let status = Int(head[1]) else {
                return .failure(TCPExchangeFailure("\(name)\(path) sent no HTTP status line"))
            }
            let body = text.range(of: "\r\n\r\n").map { String(text[$0.upperBound...]) } ?? ""
            return .success(HTTPResponse(status: status, body: body))
        }
    }
}
