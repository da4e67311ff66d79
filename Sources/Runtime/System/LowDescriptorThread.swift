import CGantrySystem
import Foundation
import Synchronization

/// A thread with a descriptor table of its own, for C libraries that
/// cannot take descriptor numbers of 1024 and above.
///
/// libnftables waits for netlink answers with `select(2)`, whose `fd_set`
/// holds descriptors below 1024 only; glibc aborts the whole process when
/// a larger one is put in it. A server that has more than a thousand
/// descriptors open (connections, containers' pipes and pidfds) would so
/// crash on its next firewall change. On this thread the socket the
/// library opens gets one of the lowest numbers whatever the rest of the
/// process holds: the thread unshares its descriptor table and keeps only
/// standard input, output and error in it.
final class LowDescriptorThread: Sendable {
    /// The thread libnftables runs on.
    static let nftables = LowDescriptorThread(name: "gantry-nftables")

    private let name: String
    private let queue = Mutex<(jobs: [@Sendable () -> Void], started: Bool)>(([], false))
    private let work = DispatchSemaphore(value: 0)

    private init(name: String) {
        self.name = name
    }

    /// Runs `body` on the thread and returns what it returns (or throws),
    /// waiting for it.
    func perform<T: Sendable>(_ body: @escaping @Sendable () throws -> T) throws -> T {
        let result = Mutex<Result<T, any Error>?>(nil)
        let done = DispatchSemaphore(value: 0)
        let start = queue.withLock { queue -> Bool in
            queue.jobs.append {
                let outcome = Result { try body() }
                result.withLock { $0 = outcome }
                done.signal()
            }
            defer { queue.started = true }
            return !queue.started
        }
        if start { startThread() }
        work.signal()
        done.wait()
        // Set before `done` was signalled.
        guard let outcome = result.withLock({ $0 }) else { throw RuntimeError(.systemCall, "the \(name) thread returned nothing") }
        return try outcome.get()
    }

    private func startThread() {
        let thread = Thread { [self] in
            // Should unsharing fail, the calls run here all the same, as
            // they would on the caller's thread.
            _ = gantry_unshare_descriptors()
            while true {
                work.wait()
                let job = queue.withLock { $0.jobs.isEmpty ? nil : $0.jobs.removeFirst() }
                job?()
            }
        }
        thread.name = name
        thread.start()
    }
}
