import Foundation
import OCIImage
import Runtime

extension ImageStore {
    /// The image `name` for `platform`, pulled first when the store lacks
    /// it and this build of Gantry can pull.
    ///
    /// - Throws: `OCIImageError` (`imageNotFound`) saying why it is not here.
    func resolveOrPull(_ name: String, platform: Platform) async throws -> ResolvedImage {
        do {
            return try await resolve(name, platform: platform)
        } catch let error as OCIImageError where error.code == .imageNotFound {
            #if Registry
            try await pull(name, platform: platform)
            return try await resolve(name, platform: platform)
            #else
            throw OCIImageError(.imageNotFound, "the image \(name) is not in the store, and this build of Gantry cannot pull", underlying: error)
            #endif
        }
    }
}

extension Container {
    /// Starts a build step's container, passes its output to `output` as
    /// it comes, and waits for its end.
    ///
    /// - Throws: ``BuildError`` (`stepFailed`) naming `description`, the
    ///   exit and the last lines written, unless it exits 0.
    func runStep(_ description: String, output: (@Sendable ([UInt8]) -> Void)?) async throws {
        try await start()
        let reader = Task {
            var tail: [UInt8] = []
            for try await chunk in self.output {
                output?(chunk.bytes)
                tail += chunk.bytes
                if tail.count > 4096 { tail.removeFirst(tail.count - 4096) }
            }
            return tail
        }
        let exit = try await wait()
        let tail = (try? await reader.value) ?? []
        guard exit.code == 0 else {
            let lines = String(decoding: tail, as: UTF8.self).split(separator: "\n").suffix(10).joined(separator: "\n")
            throw BuildError(.stepFailed, "\(description) failed: \(exit)\(lines.isEmpty ? "" : "; its last output:\n" + lines)")
        }
    }
}
