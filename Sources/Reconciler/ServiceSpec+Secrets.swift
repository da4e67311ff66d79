import Crypto
import Foundation
import GantryCore
import Runtime
#if canImport(Glibc)
import Glibc
#endif

extension ServiceSpec {
    /// Checks that every secret of the template can be read again whenever
    /// a replica is made: a value given inline is kept nowhere.
    func validateSecrets() throws {
        for secret in template.secrets {
            switch secret.source {
            case .file, .environment: continue
            case .value, .withheld:
                throw ReconcilerError(.invalidSpec, "service \(name): secret \(secret.name) is given as a value, which a service cannot keep (it keeps its spec in the state root, where no secret's value is written): give it as a file or an environment variable")
            }
        }
    }

    /// The spec with the digests of its secrets' and configs' values as
    /// they are now, so that a changed value makes a new revision. Secrets'
    /// digests are keyed with `key`: they cannot be turned back into weak
    /// values by trying candidates.
    func withValueDigests(key: @autoclosure () throws -> SymmetricKey) throws -> ServiceSpec {
        guard !template.secrets.isEmpty || !template.configs.isEmpty else { return self }
        var copy = self
        let container = "service \(name)"
        do {
            let files = template.providedFiles
            let key = try key()
            for index in copy.template.secrets.indices {
                let value = try files[index].read(container: container)
                copy.template.secrets[index].digest = "hmac-sha256:" + hexString(Array(HMAC<SHA256>.authenticationCode(for: value, using: key)))
            }
            for index in copy.template.configs.indices {
                let value = try files[copy.template.secrets.count + index].read(container: container)
                copy.template.configs[index].digest = "sha256:" + hexString(Array(SHA256.hash(data: value)))
            }
        } catch let error as RuntimeError {
            throw ReconcilerError(.invalidSpec, error.message)
        }
        return copy
    }
}

extension ServiceStore {
    /// The key of secrets' digests: 32 random bytes in the state root
    /// (`secret-digest.key`, readable by its owner only), made on first use.
    static func secretDigestKey(root: String) throws -> SymmetricKey {
        let path = root + "/secret-digest.key"
        if let data = FileManager.default.contents(atPath: path), data.count == 32 { return SymmetricKey(data: data) }
        let key = SymmetricKey(size: .bits256)
        let temporary = path + ".\(getpid())"
        unlink(temporary)
        guard let descriptor = OwnedDescriptor(opening: temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode: 0o600) else {
            throw ReconcilerError(.store, "cannot make the key of secrets' digests \(path): \(Sys.errno)")
        }
        defer { unlink(temporary) }
        let bytes = key.withUnsafeBytes { Array($0) }
        guard write(descriptor.raw, bytes, bytes.count) == bytes.count, fsync(descriptor.raw) == 0 else {
            throw ReconcilerError(.store, "cannot write the key of secrets' digests \(path): \(Sys.errno)")
        }
        if link(temporary, path) == 0 { return key }
        // Another process made it first, or a damaged one is there.
        if let data = FileManager.default.contents(atPath: path), data.count == 32 { return SymmetricKey(data: data) }
        guard rename(temporary, path) == 0 else {
            throw ReconcilerError(.store, "cannot put the key of secrets' digests in place at \(path): \(Sys.errno)")
        }
        return key
    }
}
