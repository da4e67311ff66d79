import Foundation
import GantryTestSupport
import Testing
@testable import OCIImage

/// Debian's `docker-registry` (the CNCF Distribution registry) on
/// 127.0.0.1 with a free port and its own storage, for one test.
final class TestRegistry: @unchecked Sendable {
    enum Authentication {
        case none
        case htpasswd(user: String, password: String)
        case token(TokenServer)
    }

    let directory: String
    let port: Int
    private var process: ChildProcess?

    /// `127.0.0.1:PORT`.
    var host: String { "127.0.0.1:\(port)" }
    /// Where the registry keeps blobs: `<storage>/docker/registry/v2/blobs/sha256/xx/HEX/data`.
    var storage: String { directory + "/storage" }

    init(directory: String, authentication: Authentication = .none, schema1: Bool = false, tls: (certificate: String, key: String)? = nil) throws {
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
        switch authentication {
        case .none: break
        case .htpasswd(let user, let password):
            try run("htpasswd", ["-Bbc", directory + "/htpasswd", user, password])
            config += "auth:\n  htpasswd:\n    realm: gantry-test\n    path: \(directory)/htpasswd\n"
        case .token(let server):
            config += """
            auth:
              token:
                realm: http://127.0.0.1:\(server.port)/token
                service: \(TokenServer.service)
                issuer: \(TokenServer.issuer)
                rootcertbundle: \(server.certificatePath)

            """
        }
        if schema1 { config += "compatibility:\n  schema1:\n    enabled: true\n" }
        try write(config, to: directory + "/config.yml")
    }

    deinit { stop() }

    /// Starts the registry (again) and waits until it answers, blocking
    /// the thread: for restarts from a dispatch queue.
    func start() throws {
        let process = try launch()
        let deadline = Date().addingTimeInterval(15)
        while try !answers(process, deadline: deadline) { usleep(20_000) }
    }

    /// Starts the registry and waits until it answers, off the cooperative pool's threads.
    func start() async throws {
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
    func kill() {
        guard let process, process.isRunning else { return }
        Glibc.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    func stop() {
        guard let process, process.isRunning else { return }
        process.terminate()
        process.waitUntilExit()
    }

    /// The file holding a blob in the registry's storage.
    func blobFile(_ digest: Digest) -> String {
        "\(storage)/docker/registry/v2/blobs/sha256/\(digest.encoded.prefix(2))/\(digest.encoded)/data"
    }
}

/// Runs `body` with a registry, stopping it afterwards whatever happens.
func withTestRegistry<T>(_ directory: String, authentication: TestRegistry.Authentication = .none, schema1: Bool = false,
                         tls: (certificate: String, key: String)? = nil, _ body: (TestRegistry) async throws -> T) async throws -> T {
    let registry = try TestRegistry(directory: directory + "/registry", authentication: authentication, schema1: schema1, tls: tls)
    defer { registry.stop() }
    try await registry.start()
    return try await body(registry)
}

extension URL {
    func creatingIfNeeded() -> URL {
        if !FileManager.default.fileExists(atPath: path) { _ = FileManager.default.createFile(atPath: path, contents: nil) }
        return self
    }
}

/// A port nothing listens on, as the kernel picks it.
func freePort() throws -> Int {
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

func isListening(_ port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = UInt16(port).bigEndian
    return withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } } == 0
}

/// A certificate authority and a server certificate for 127.0.0.1 signed
/// by it, made with openssl. Returns the CA's PEM file and the server's
/// certificate and key.
func makeCertificates(_ directory: String) throws -> (authority: String, certificate: String, key: String) {
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    try run("openssl", ["req", "-x509"] + ec + ["-keyout", directory + "/ca.key", "-out", directory + "/ca.pem", "-days", "2", "-subj", "/CN=gantry-test-ca"])
    try run("openssl", ["req"] + ec + ["-keyout", directory + "/server.key", "-out", directory + "/server.csr", "-subj", "/CN=127.0.0.1"])
    try write("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n", to: directory + "/ext.cnf")
    try run("openssl", ["x509", "-req", "-in", directory + "/server.csr", "-CA", directory + "/ca.pem", "-CAkey", directory + "/ca.key",
                        "-CAcreateserial", "-out", directory + "/server.pem", "-days", "2", "-extfile", directory + "/ext.cnf"])
    return (directory + "/ca.pem", directory + "/server.pem", directory + "/server.key")
}
