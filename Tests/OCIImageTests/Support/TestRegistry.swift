import Foundation
import GantryTestSupport
import Testing
@testable import OCIImage

extension TestRegistry {
    /// How a test's registry checks clients.
    enum Authentication {
        case none
        case htpasswd(user: String, password: String)
        case token(TokenServer)
    }

    /// A registry with `authentication`.
    convenience init(directory: String, authentication: Authentication, schema1: Bool = false, tls: (certificate: String, key: String)? = nil) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var config = ""
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
        try self.init(directory: directory, authentication: config, schema1: schema1, tls: tls)
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
