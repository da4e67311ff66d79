import Foundation
import GantryCore
import OCIImage
#if Registry
import AsyncHTTPClient
import NIOCore
#endif
#if canImport(Glibc)
import Glibc
#endif

/// A file `ADD` takes from a URL: downloaded (redirects followed), checked
/// against `--checksum` when given, mode 0600 and dated by the server's
/// `Last-Modified`, as Docker places it.
enum RemoteSource {
    /// Downloads `url` into the new file `path`.
    static func download(_ url: String, to path: String, checksum: Digest?, at location: SourceLocation) async throws {
        #if Registry
        let response: HTTPClientResponse
        do {
            response = try await HTTPClient.shared.execute(HTTPClientRequest(url: url), timeout: .seconds(600))
        } catch {
            throw BuildError(.instruction, "\(location): ADD cannot download \(url): \(error)", underlying: error)
        }
        guard response.status == .ok else {
            throw BuildError(.instruction, "\(location): ADD cannot download \(url): the server answered \(response.status)")
        }
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw BuildError(.context, "cannot write \(path)", underlying: Errno(rawValue: errno)) }
        defer { close(fd) }
        var hasher = DigestHasher()
        for try await buffer in response.body {
            try buffer.withUnsafeReadableBytes { bytes in
                hasher.update(bytes)
                var written = 0
                while written < bytes.count {
                    let count = write(fd, bytes.baseAddress! + written, bytes.count - written)
                    guard count > 0 else { throw BuildError(.context, "cannot write \(path)", underlying: Errno(rawValue: errno)) }
                    written += count
                }
            }
        }
        let digest = hasher.finalize()
        if let checksum, checksum != digest {
            throw BuildError(.instruction, "\(location): ADD \(url): its content hashes to \(digest), not the --checksum \(checksum)")
        }
        if let modified = response.headers.first(name: "last-modified").flatMap(Self.httpDate) {
            let seconds = modified.timeIntervalSince1970
            var times = [timespec(tv_sec: Int(seconds), tv_nsec: 0), timespec(tv_sec: Int(seconds), tv_nsec: 0)]
            futimens(fd, &times)
        }
        #else
        throw BuildError(.instruction, "\(location): ADD \(url): this build of Gantry has no HTTP client (its Registry trait is off)")
        #endif
    }

    /// An HTTP date (`Tue, 15 Nov 1994 08:12:31 GMT`).
    static func httpDate(_ text: String) -> Date? {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        return formatter.date(from: text)
    }
}
