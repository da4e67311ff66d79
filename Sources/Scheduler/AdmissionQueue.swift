/// The order in which waiting workloads are tried: by priority, then, among
/// equal priorities, the named queue using the least of its fair share
/// goes first (each queue's running requests as a dominant share of the
/// cluster, divided by its weight), then first come first served.
///
/// Workloads that could not be placed back off (1 s doubling to 10 s by
/// default, as the Kubernetes scheduler) before their timer retries them;
/// a change of capacity (a workload ending, a node added) retries them at once.
public struct AdmissionQueue: Sendable {
    /// The delays of retries after failed placements.
    public struct Backoff: Hashable, Sendable {
        public var initial: Duration
        public var maximum: Duration

        /// 1 s doubling to 10 s.
        public init(initial: Duration = .seconds(1), maximum: Duration = .seconds(10)) {
            self.initial = initial
            self.maximum = maximum
        }

        /// The delay after `attempts` failed placements.
        public func delay(after attempts: Int) -> Duration {
            guard attempts > 0 else { return .zero }
            var delay = initial
            for _ in 1..<attempts where delay < maximum { delay *= 2 }
            return min(delay, maximum)
        }
    }

    struct Key: Comparable {
        var priority: Int
        var sequence: Int
        static func < (lhs: Key, rhs: Key) -> Bool {
            lhs.priority != rhs.priority ? lhs.priority > rhs.priority : lhs.sequence < rhs.sequence
        }
    }

    struct Entry {
        var workload: Workload
        var key: Key
        var attempts = 0
        var retryAt: Duration = .zero
    }

    public var backoff: Backoff
    /// Relative weights of named queues (1 when not listed).
    public var weights: [String: Int]
    private var entries: [String: Entry] = [:]
    /// Ready workloads per queue, each a binary heap of keys.
    private var heaps: [String: Heap] = [:]
    private var backedOff: Set<String> = []
    private var sequence = 0

    /// A queue.
    public init(backoff: Backoff = Backoff(), weights: [String: Int] = [:]) {
        self.backoff = backoff
        self.weights = weights
    }

    /// How many workloads wait, ready or backing off.
    public var count: Int { entries.count }

    /// Whether `name` waits here.
    public func contains(_ name: String) -> Bool { entries[name] != nil }

    /// The names of waiting workloads, in the order they would be tried.
    public var names: [String] {
        entries.values.sorted { $0.key < $1.key }.map(\.workload.name)
    }

    /// A waiting workload.
    public func workload(_ name: String) -> Workload? { entries[name]?.workload }

    /// When a backed-off workload is retried by its timer.
    public func retryAt(of name: String) -> Duration? {
        backedOff.contains(name) ? entries[name]?.retryAt : nil
    }

    /// The failed placements of a waiting workload.
    public func attempts(of name: String) -> Int { entries[name]?.attempts ?? 0 }

    /// Adds a workload, ready to try.
    public mutating func push(_ workload: Workload) {
        sequence += 1
        let entry = Entry(workload: workload, key: Key(priority: workload.priority, sequence: sequence))
        entries[workload.name] = entry
        heaps[workload.queue, default: Heap()].push(entry.key, workload.name)
    }

    /// Removes a workload, ready or backing off.
    @discardableResult
    public mutating func remove(_ name: String) -> Workload? {
        guard let entry = entries.removeValue(forKey: name) else { return nil }
        backedOff.remove(name)
        heaps[entry.workload.queue]?.remove(name)
        return entry.workload
    }

    /// Takes the next ready workload.
    ///
    /// - Parameter share: a queue's fair-share usage, lower goes first.
    public mutating func pop(share: (String) -> Double) -> Workload? {
        var best: (queue: String, key: Key, share: Double)?
        for (queue, heap) in heaps {
            guard let top = heap.top else { continue }
            let used = share(queue) / Double(max(1, weights[queue] ?? 1))
            if let current = best {
                if top.key.priority < current.key.priority { continue }
                if top.key.priority == current.key.priority {
                    if used > current.share || (used == current.share && !(top.key < current.key)) { continue }
                }
            }
            best = (queue, top.key, used)
        }
        guard let best, let name = heaps[best.queue]?.pop() else { return nil }
        return entries[name]?.workload
    }

    /// Records a failed placement of a workload taken with ``pop(share:)``:
    /// it waits until `now` plus its back-off, or a capacity change.
    public mutating func backOff(_ name: String, now: Duration) {
        guard var entry = entries[name] else { return }
        entry.attempts += 1
        entry.retryAt = now + backoff.delay(after: entry.attempts)
        entries[name] = entry
        backedOff.insert(name)
    }

    /// Makes backed-off workloads ready again: all of them after a capacity
    /// change, otherwise those whose back-off ended by `now`.
    public mutating func retry(now: Duration, capacityChanged: Bool) {
        for name in backedOff {
            guard let entry = entries[name], capacityChanged || entry.retryAt <= now else { continue }
            backedOff.remove(name)
            heaps[entry.workload.queue, default: Heap()].push(entry.key, name)
        }
    }

    /// When the earliest back-off ends.
    public var nextRetry: Duration? {
        backedOff.compactMap { entries[$0]?.retryAt }.min()
    }

    /// A binary min-heap of keys (the most important first) with names.
    struct Heap {
        private var items: [(key: Key, name: String)] = []
        var top: (key: Key, name: String)? { items.first }

        mutating func push(_ key: Key, _ name: String) {
            items.append((key, name))
            var child = items.count - 1
            while child > 0 {
                let parent = (child - 1) / 2
                guard items[child].key < items[parent].key else { break }
                items.swapAt(child, parent)
                child = parent
            }
        }

        mutating func pop() -> String? {
            guard !items.isEmpty else { return nil }
            items.swapAt(0, items.count - 1)
            let top = items.removeLast()
            siftDown(0)
            return top.name
        }

        mutating func remove(_ name: String) {
            guard let at = items.firstIndex(where: { $0.name == name }) else { return }
            items.swapAt(at, items.count - 1)
            items.removeLast()
            if at < items.count {
                siftDown(at)
                var child = at
                while child > 0 {
                    let parent = (child - 1) / 2
                    guard items[child].key < items[parent].key else { break }
                    items.swapAt(child, parent)
                    child = parent
                }
            }
        }

        private mutating func siftDown(_ start: Int) {
            var parent = start
            while true {
                let left = 2 * parent + 1, right = left + 1
                var smallest = parent
                if left < items.count && items[left].key < items[smallest].key { smallest = left }
                if right < items.count && items[right].key < items[smallest].key { smallest = right }
                if smallest == parent { return }
                items.swapAt(parent, smallest)
                parent = smallest
            }
        }
    }
}
