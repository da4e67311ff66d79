import Synchronization

/// Delivers every value sent to it to each of its current subscribers, as
/// separate `AsyncStream`s. A subscriber that falls behind keeps the newest
/// `bufferLimit` values and loses older ones, so a slow reader never blocks
/// the sender.
public final class EventBroadcast<Element: Sendable>: Sendable {
    private struct State {
        var next = 0
        var continuations: [Int: AsyncStream<Element>.Continuation] = [:]
        var finished = false
    }

    private let state = Mutex(State())
    private let bufferLimit: Int

    /// Creates a broadcast that buffers up to `bufferLimit` values per subscriber.
    public init(bufferLimit: Int = 1024) {
        self.bufferLimit = bufferLimit
    }

    /// A new subscription that receives every value sent from now on.
    /// It ends when the broadcast finishes or the consumer stops iterating.
    public func subscribe() -> AsyncStream<Element> {
        let (stream, continuation) = AsyncStream<Element>.makeStream(bufferingPolicy: .bufferingNewest(bufferLimit))
        let id: Int? = state.withLock { state in
            guard !state.finished else { return nil }
            defer { state.next += 1 }
            state.continuations[state.next] = continuation
            return state.next
        }
        guard let id else {
            continuation.finish()
            return stream
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.state.withLock { $0.continuations.removeValue(forKey: id) }
        }
        return stream
    }

    /// The number of current subscribers.
    public var subscriberCount: Int { state.withLock { $0.continuations.count } }

    /// Sends a value to every subscriber.
    public func send(_ value: Element) {
        let continuations = state.withLock { Array($0.continuations.values) }
        for continuation in continuations { continuation.yield(value) }
    }

    /// Ends every subscription; later subscriptions end at once.
    public func finish() {
        let continuations = state.withLock { state in
            state.finished = true
            defer { state.continuations.removeAll() }
            return Array(state.continuations.values)
        }
        for continuation in continuations { continuation.finish() }
    }
}
