import Foundation
#if canImport(Glibc)
import Glibc
#endif
@testable import OCIImage

/// Debian's `docker-registry` (the CNCF Distribution registry) on
/// 127.0.0.1 with a free port and its own storage, for one test.
public final class TestRegistry: @unchecked Sendable {
    /// Where its configuration, log and storage are.
    public let directory: String
    /// The port it listens on, on 127.0.0.1.
    public let port: Int
    private var process: ChildProcess?

    /// `127.0.0.1:PORT`.
    public var host: String { "127.0.0.1:\(port)" }
    /// Where the registry keeps blobs: `<storage>/docker/registry/v2/blobs/sha256/xx/HEX/data`.
    public var storage: String { directory + "/storage" }

    /// A registry keeping its storage in `directory`; `authentication` is
    /// the `auth:` section of its configuration, if any.
    public init(directory: String, authentication: String = "", schema1: Bool = false, tls: (certificate: String, key: String)? = nil) throws {
        self.directory = directory
        port = try freePort()
        try FileManager.default.createDirectory(atPath: storage, withIntermediateDirectories: true)
        var config = """
        version: 0.1
        log:
          level: warn
          accesslog:
            disabled: true
        storage:
          filesystem:
            rootdirectory: \(storage)
          delete:
            enabled: true
        http:
          addr: 127.0.0.1:\(port)

        """
        if let tls {
            config += "  tls:\n    certificate: \(tls.certificate)\n    key: \(tls.key)\n"
        }
        config += authentication
        if schema1 { config += "compatibility:\n  schema1:\n    enabled: true\n" }
        try write(config, to: directory + "/config.yml")
    }

    deinit { stop() }

    /// Starts the registry (again) and waits until it answers, blocking
    /// the thread: for restarts from a dispatch queue.
    public func start() throws {
        let process = try launch()
        let deadline = Date().addingTimeInterval(15)
        while try !answers(process, deadline: deadline) { usleep(20_000) }
    }

    /// Starts the registry and waits until it answers, off the cooperative pool's threads.
    public func start() async throws {
        let process = try launch()
        let deadline = Date().addingTimeInterval(15)
        while try !answers(process, deadline: deadline) { try await Task.sleep(for: .milliseconds(20)) }
    }

    private func launch() throws -> ChildProcess {
        let process = try ChildProcess("/usr/bin/docker-registry", ["serve", directory + "/config.yml"],
                                       stdout: .null, stderr: .file(directory + "/registry.log"))
        self.process = process
        return process
    }

    private func answers(_ process: ChildProcess, deadline: Date) throws -> Bool {
        if isListening(port) { return true }
        guard Date() < deadline, process.isRunning else {
            throw ToolError(description: "docker-registry did not start: \((try? readText(directory + "/registry.log")) ?? "")")
        }
        return false
    }

    /// Kills the registry at once, as a crash would.
    public func kill() {
        guard let process, process.isRunning else { return }
        Glibc.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    public func stop() {
        guard let process, process.isRunning else { return }
        process.terminate()
        process.waitUntilExit()
    }

    /// The file holding a blob in the registry's storage.
    public func blobFile(_ digest: Digest) -> String {
        "\(storage)/docker/registry/v2/blobs/sha256/\(digest.encoded.prefix(2))/\(digest.encoded)/data"
    }
}

/// Runs `body` with a registry (no authentication), stopping it afterwards whatever happens.
public func withLocalRegistry<T>(_ directory: String, _ body: (TestRegistry) async throws -> T) async throws -> T {
    let registry = try TestRegistry(directory: directory + "/registry")
    defer { registry.stop() }
    try await registry.start()
    return try await body(registry)
}

/// A port nothing listens on, as the kernel picks it.
public func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
    guard bound == 0 else { throw ToolError(description: "bind failed: \(errno)") }
    _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
    return Int(UInt16(bigEndian: address.sin_port))
}

public func isListening(_ port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = UInt16(port).bigEndian
    return withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } } == 0
}
