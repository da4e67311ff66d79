public import Foundation
public import Reconciler
public import Runtime

/// A line of a service's output: which replica wrote it, when, on which stream.
public struct ServiceLogLine: Hashable, Sendable, Codable {
    /// When Gantry read it.
    public var time: Date
    /// The replica's container name.
    public var container: String
    /// stdout or stderr.
    public var stream: Runtime.StandardStream
    /// The text, without its newline.
    public var text: String
}

/// The output of every replica of a service, interleaved by time.
public struct ServiceLogs: Sendable {
    /// The runtime the replicas run in.
    public let runtime: ContainerRuntime
    /// The service's project.
    public let project: String
    /// The service.
    public let service: String

    /// The logs of `service` in `project`.
    ///
    /// - Parameters:
    ///   - runtime: the runtime the replicas run in.
    ///   - service: the service.
    ///   - project: its project.
    public init(runtime: ContainerRuntime, service: String, project: String = ServiceSpec.defaultProject) {
        self.runtime = runtime
        self.project = project
        self.service = service
    }

    /// The replicas' containers now, running or ended.
    public func containers() throws -> [ContainerRecord] {
        try runtime.list().filter { $0.spec.labels[ReplicaLabel.project] == project && $0.spec.labels[ReplicaLabel.service] == service }
    }

    /// Everything the replicas have written so far, oldest first.
    public func lines() async throws -> [ServiceLogLine] {
        try await snapshot().lines
    }

    /// The replicas, and the lines they had written when each was read.
    private func snapshot() async throws -> (records: [ContainerRecord], lines: [ServiceLogLine]) {
        var lines: [ServiceLogLine] = []
        let records = try containers()
        for record in records {
            guard let container = try? runtime.container(record.id) else { continue }
            for try await line in Self.lines(of: container, follow: false) { lines.append(line) }
        }
        return (records, lines.sorted { $0.time < $1.time })
    }

    /// The lines written so far, then new ones as they come, from replicas
    /// present now and those that start later (looked for every `interval`).
    /// Ends when the task is cancelled.
    ///
    /// - Parameter interval: how often new replicas are looked for.
    public func follow(interval: Duration = .milliseconds(250)) -> AsyncThrowingStream<ServiceLogLine, any Error> {
        AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    // Each replica's lines already sent are skipped when it is followed,
                    // so a line written in between is sent rather than lost.
                    let (records, initial) = try await snapshot()
                    var sent: [String: Int] = [:]
                    for line in initial {
                        sent[line.container, default: 0] += 1
                        continuation.yield(line)
                    }
                    var followed = Set(records.map(\.id))
                    try await withThrowingDiscardingTaskGroup { group in
                        for record in records {
                            let skip = sent[record.name] ?? 0
                            group.addTask { try await Self.forward(runtime, record.id, skip: skip, continuation) }
                        }
                        while !Task.isCancelled {
                            try await Task.sleep(for: interval)
                            for record in try containers() where !followed.contains(record.id) {
                                followed.insert(record.id)
                                group.addTask { try await Self.forward(runtime, record.id, skip: 0, continuation) }
                            }
                        }
                    }
                    continuation.finish()
                } catch is CancellationError {
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    private static func forward(_ runtime: ContainerRuntime, _ id: String, skip: Int,
                                _ continuation: AsyncThrowingStream<ServiceLogLine, any Error>.Continuation) async throws {
        guard let container = try? runtime.container(id) else { return }
        var index = 0
        for try await line in lines(of: container, follow: true) {
            index += 1
            if index > skip { continuation.yield(line) }
        }
    }

    /// A container's output as lines, each stream's partial lines joined.
    private static func lines(of container: Container, follow: Bool) -> AsyncThrowingStream<ServiceLogLine, any Error> {
        let output = follow ? container.output : container.logs
        let name = container.name
        return AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    var partial: [Runtime.StandardStream: (Date, [UInt8])] = [:]
                    for try await chunk in output {
                        var (time, bytes) = partial[chunk.stream] ?? (chunk.time, [])
                        bytes += chunk.bytes
                        while let newline = bytes.firstIndex(of: UInt8(ascii: "\n")) {
                            continuation.yield(ServiceLogLine(time: time, container: name, stream: chunk.stream,
                                                              text: String(decoding: bytes[..<newline], as: UTF8.self)))
                            bytes.removeSubrange(...newline)
                            time = chunk.time
                        }
                        partial[chunk.stream] = bytes.isEmpty ? nil : (time, bytes)
                    }
                    for (stream, (time, bytes)) in partial {
                        continuation.yield(ServiceLogLine(time: time, container: name, stream: stream, text: String(decoding: bytes, as: UTF8.self)))
                    }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }
}
