import Foundation
// The fuzz targets: the libFuzzer binary (Fuzz/, run by scripts/fuzz.sh)
// and the corpus replay test share this file.
@testable import Compose
@testable import OCIImage
@testable import Reconciler
@testable import Runtime

/// One fuzz target: a name (the corpus directory's) and what it does with
/// one input. A target may throw any error Gantry reports to users; it must
/// never crash, hang or grow without bound.
struct FuzzTarget: Sendable {
    let name: String
    let run: @Sendable ([UInt8]) -> Void

    static let all: [FuzzTarget] = [
        FuzzTarget(name: "reference") { bytes in
            let text = String(decoding: bytes, as: UTF8.self)
            _ = try? ImageReference(parsing: text)
            _ = try? Digest(parsing: text)
            _ = try? Platform(parsing: text)
            _ = try? PublishedPort(parsing: text)
        },
        FuzzTarget(name: "manifest") { bytes in
            let data = Data(bytes)
            _ = try? Manifest.decode(data)
            _ = try? ImageIndex.decode(data)
            _ = try? ImageConfiguration.decode(data)
        },
        FuzzTarget(name: "compose") { bytes in
            _ = try? ComposeProject.parse(String(decoding: bytes, as: UTF8.self), environment: ["HOME": "/root"])
        },
        FuzzTarget(name: "seccomp") { bytes in
            guard let profile = try? SeccompProfile.decode(Data(bytes)) else { return }
            _ = try? SeccompCompiler.compile(profile, capabilities: [])
        },
        FuzzTarget(name: "dns") { bytes in
            guard let message = DNSMessage(bytes) else { return }
            _ = message.failure(code: DNSMessage.refused)
            _ = message.answer(type: DNSMessage.addressType, data: [10, 0, 0, 1])
        },
        FuzzTarget(name: "registry") { bytes in
            let text = String(decoding: bytes, as: UTF8.self)
            _ = AuthChallenge.parseAll(text)
            _ = AuthChallenge.preferred(text.split(separator: "\n").map(String.init))
            _ = RegistryClient.nextLink(text)
        },
        FuzzTarget(name: "state") { bytes in
            let data = Data(bytes)
            _ = try? ContainerRecord.decode(data)
            _ = try? ContainerRuntime.decoder.decode(VolumeRecord.self, from: data)
            _ = try? ContainerRuntime.decoder.decode(NetworkRecord.self, from: data)
            _ = try? ContainerRuntime.decoder.decode(NetworkLease.self, from: data)
            _ = Networks.BridgeAlias(parsing: String(decoding: bytes, as: UTF8.self))
        },
        FuzzTarget(name: "layer", run: LayerTarget.run),
    ]
}

/// Unpacks each input as a layer (tar, gzip, zstd or bzip2) into an empty
/// directory, with the limits a pull has.
enum LayerTarget {
    static let scratch: String = {
        let path = NSTemporaryDirectory() + "gantry-fuzz-layer-\(getpid())"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }()

    @Sendable static func run(_ bytes: [UInt8]) {
        let layer = scratch + "/layer"
        let target = scratch + "/rootfs"
        guard FileManager.default.createFile(atPath: layer, contents: Data(bytes)) else { return }
        try? FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
        let options = LayerUnpackOptions(expansionLimit: LayerExpansionLimit(maximumBytes: 64 << 20), keepsSetIDBits: false, createsDeviceNodes: false)
        _ = try? LayerUnpacker.unpack(layerAt: layer, into: target, options: options)
        try? FileManager.default.removeItem(atPath: target)
    }
}
