import Foundation

/// A container's output: chunks of bytes as they arrive, or ``lines``.
public struct ContainerOutput: AsyncSequence, Sendable {
    public typealias Element = OutputChunk

    enum Source: Sendable {
        case log(LogFollower)
        case raw(RawOutputFollower)
        /// An exec'd process's output, read as it arrives.
        case stream(AsyncStream<OutputChunk>)
    }

    let source: Source

    public struct AsyncIterator: AsyncIteratorProtocol {
        enum Base {
            case log(LogFollower.AsyncIterator)
            case raw(RawOutputFollower.AsyncIterator)
            case stream(AsyncStream<OutputChunk>.AsyncIterator)
        }

        var base: Base

        public mutating func next() async throws -> OutputChunk? {
            switch base {
            case .log(var iterator):
                let chunk = try await iterator.next()
                base = .log(iterator)
                return chunk
            case .raw(var iterator):
                let chunk = try await iterator.next()
                base = .raw(iterator)
                return chunk
            case .stream(var iterator):
                let chunk = await iterator.next()
                base = .stream(iterator)
                return chunk
            }
        }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        switch source {
        case .log(let follower): AsyncIterator(base: .log(follower.makeAsyncIterator()))
        case .raw(let follower): AsyncIterator(base: .raw(follower.makeAsyncIterator()))
        case .stream(let stream): AsyncIterator(base: .stream(stream.makeAsyncIterator()))
        }
    }

    /// The output as lines of text, without their newlines (each stream's
    /// partial lines joined).
    public var lines: AsyncThrowingStream<String, any Error> {
        let output = self
        return AsyncThrowingStream { continuation in
            let task = Task {
                var pending: [StandardStream: [UInt8]] = [:]
                do {
                    for try await chunk in output {
                        var bytes = pending[chunk.stream, default: []] + chunk.bytes
                        while let newline = bytes.firstIndex(of: 0x0a) {
                            continuation.yield(String(decoding: bytes[..<newline], as: UTF8.self))
                            bytes.removeSubrange(...newline)
                        }
                        pending[chunk.stream] = bytes
                    }
                    for stream in [StandardStream.stdout, .stderr] {
                        if let rest = pending[stream], !rest.isEmpty { continuation.yield(String(decoding: rest, as: UTF8.self)) }
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

extension AsyncSequence where Element == OutputChunk {
    /// Every byte, both streams in order of arrival: a container's output
    /// or an exec'd process's (``ContainerProcess/output``).
    ///
    /// - Parameter maximumBytes: how much is kept at most (64 MiB by
    ///   default): a process can print without end, and its output is
    ///   held in memory.
    /// - Throws: ``RuntimeError`` with code `invalidState` when the output
    ///   is longer than `maximumBytes`.
    public func collect(maximumBytes: Int = 64 << 20) async throws -> [UInt8] {
        var bytes: [UInt8] = []
        for try await chunk in self {
            guard bytes.count + chunk.bytes.count <= maximumBytes else {
                throw RuntimeError(.invalidState, "the output is longer than \(maximumBytes) bytes, the most collected; read it as it comes instead")
            }
            bytes += chunk.bytes
        }
        return bytes
    }

    /// Everything as text (invalid UTF-8 replaced); see ``collect(maximumBytes:)``.
    public func text(maximumBytes: Int = 64 << 20) async throws -> String {
        String(decoding: try await collect(maximumBytes: maximumBytes), as: UTF8.self)
    }
}
