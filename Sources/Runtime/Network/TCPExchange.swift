import Dispatch
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// One blocking TCP exchange on a socket the caller opened (on the host or
/// in a container's network namespace), bounded by one deadline: connect,
/// send a request, read the answer. It blocks its thread: run it off the
/// cooperative pool.
package struct TCPExchange {
    /// How much of the answer to read.
    package enum Reading: Sendable {
        /// Nothing: connecting is the check.
        case nothing
        /// Up to the end of the first line.
        case firstLine
        /// Until the peer closes, `limit` bytes at most.
        case untilClosed(limit: Int)
    }

    private let fd: Int32
    /// The deadline's length in milliseconds, for messages.
    private let timeout: Int32
    private let deadline: UInt64
    private let isCancelled: (() -> Bool)?

    /// An exchange on `fd`, which it does not close, ending within
    /// `timeout` milliseconds, or soon after `isCancelled` says so.
    package init(fd: Int32, timeout: Int32, isCancelled: (() -> Bool)? = nil) {
        self.fd = fd
        self.timeout = timeout
        self.isCancelled = isCancelled
        deadline = DispatchTime.now().uptimeNanoseconds + UInt64(max(timeout, 0)) * 1_000_000
    }

    private func remaining() -> Int32 {
        let now = DispatchTime.now().uptimeNanoseconds
        return now >= deadline ? 0 : Int32((deadline - now) / 1_000_000) + 1
    }

    private func wait(for events: Int16) -> Bool {
        var entry = pollfd(fd: fd, events: events, revents: 0)
        while true {
            let left = remaining()
            if left == 0 || isCancelled?() == true { return false }
            // In slices, when a cancellation is to be noticed.
            let ready = poll(&entry, 1, isCancelled == nil ? left : min(left, 20))
            if ready > 0 { return true }
            if ready == 0, isCancelled == nil { return false }
            if ready < 0, errno != EINTR { return false }
        }
    }

    /// Connects to `address:port`, sends `request` and reads as `reading`
    /// says; the bytes read, or why it failed (naming `target`).
    package func run(address: IPv4Address, port: UInt16, target: String, request: [UInt8], reading: Reading) -> Result<[UInt8], TCPExchangeFailure> {
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        var socketAddress = sockaddr_in()
        socketAddress.sin_family = sa_family_t(AF_INET)
        socketAddress.sin_port = port.bigEndian
        socketAddress.sin_addr.s_addr = address.value.bigEndian
        let connected = withUnsafePointer(to: &socketAddress) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if connected != 0 {
            guard errno == EINPROGRESS else { return .failure(TCPExchangeFailure("connecting to \(target): \(Errno(rawValue: errno))")) }
            guard wait(for: Int16(POLLOUT)) else { return .failure(TCPExchangeFailure("connecting to \(target) timed out after \(timeout) ms")) }
            var error: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length)
            guard error == 0 else { return .failure(TCPExchangeFailure("connecting to \(target): \(Errno(rawValue: error))")) }
        }
        var sent = 0
        while sent < request.count {
            let count = request[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if count > 0 { sent += count; continue }
            guard count < 0, errno == EAGAIN, wait(for: Int16(POLLOUT)) else {
                return .failure(TCPExchangeFailure("sending to \(target) failed or timed out"))
            }
        }
        let limit: Int
        switch reading {
        case .nothing: return .success([])
        case .firstLine: limit = 4096
        case .untilClosed(let bytes): limit = bytes
        }
        var answer: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while answer.count < limit {
            if case .firstLine = reading, answer.contains(UInt8(ascii: "\n")) { break }
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, min($0.count, limit - answer.count), 0) }
            if count > 0 { answer += buffer[..<count]; continue }
            if count == 0 { break }
            guard errno == EAGAIN || errno == EINTR, wait(for: Int16(POLLIN)) else {
                return .failure(TCPExchangeFailure("no complete answer from \(target) within \(timeout) ms"))
            }
        }
        return .success(answer)
    }
}

/// Why a `TCPExchange` failed, in words.
package struct TCPExchangeFailure: Error, CustomStringConvertible {
    package var description: String

    package init(_ description: String) { self.description = description }
}
