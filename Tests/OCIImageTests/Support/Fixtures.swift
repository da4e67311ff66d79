import Foundation
import GantryTestSupport
import Testing
@testable import OCIImage

/// Test images, made with real tools at test time.
enum Fixtures {
    /// Writes the rich or malicious layer archives into `directory`.
    static func layers(_ set: String, into directory: String, outside: String? = nil) async throws {
        try await run("python3", [fixturesDirectory + "/layers.py", set, directory] + (outside.map { [$0] } ?? []))
    }

    /// Makes an OCI layout with umoci holding `layers` (uncompressed tars),
    /// each added as a gzip layer.
    static func umociLayout(_ layout: String, tag: String, layers: [String]) async throws {
        if !FileManager.default.fileExists(atPath: layout + "/oci-layout") {
            try await run("umoci", ["init", "--layout", layout])
        }
        try await run("umoci", ["new", "--image", "\(layout):\(tag)"])
        for layer in layers {
            try await run("umoci", ["raw", "add-layer", "--image", "\(layout):\(tag)", layer])
        }
    }

    /// A small root filesystem around the static busybox.
    static func busyboxRootfs(_ directory: String) throws {
        try makeBusyboxRootfs(directory)
    }

    /// Packs a root filesystem into an OCI layout with umoci, the way a
    /// user without Gantry would.
    static func busyboxLayout(_ layout: String, tag: String, scratch: String) async throws {
        let rootfs = scratch + "/busybox-rootfs"
        try busyboxRootfs(rootfs)
        let bundle = scratch + "/busybox-bundle"
        try await run("umoci", ["init", "--layout", layout])
        try await run("umoci", ["new", "--image", "\(layout):\(tag)"])
        try await run("umoci", ["unpack"] + (geteuid() == 0 ? [] : ["--rootless"]) + ["--image", "\(layout):\(tag)", bundle])
        try await run("cp", ["-a", rootfs + "/.", bundle + "/rootfs/"])
        try await run("umoci", ["repack", "--image", "\(layout):\(tag)", bundle])
        try await run("umoci", ["config", "--image", "\(layout):\(tag)", "--config.cmd", "/bin/sh"])
        try Sys.removeTree(bundle)
    }

    /// A gzip layer made by GNU tar from a small tree of `files` (path →
    /// content), with its DiffID.
    static func gzipLayer(in dir: String, files: [String: String]) async throws -> (Data, Digest) {
        let tree = dir + "/tree-" + UUID().uuidString.prefix(6)
        for (path, content) in files { try write(content, to: tree + "/" + path) }
        try await run("tar", ["--format=pax", "-C", tree, "-cf", tree + ".tar", "."])
        let diffID = Digest.compute(try Data(file: tree + ".tar"))
        try await run("gzip", ["-n", tree + ".tar"])
        return (try Data(file: tree + ".tar.gz"), diffID)
    }

    /// Writes an OCI layout by hand from layer blobs, for images no tool
    /// would make (truncated, mislabelled, multi-platform).
    struct HandmadeLayout {
        let directory: String
        private(set) var manifests: [Descriptor] = []

        init(_ directory: String) throws {
            self.directory = directory
            try FileManager.default.createDirectory(atPath: directory + "/blobs/sha256", withIntermediateDirectories: true)
            try write(#"{"imageLayoutVersion": "1.0.0"}"#, to: directory + "/oci-layout")
        }

        @discardableResult
        func blob(_ data: Data) throws -> Digest {
            let digest = Digest.compute(data)
            try data.write(to: URL(fileURLWithPath: "\(directory)/blobs/sha256/\(digest.encoded)"))
            return digest
        }

        /// Adds an image whose layers are `layers` (blob bytes, media type,
        /// and DiffID), tagged `tag`.
        @discardableResult
        mutating func image(tag: String?, layers: [(Data, MediaType, Digest)], platform: Platform = .host, addToIndex: Bool = true) throws -> Descriptor {
            let configuration = ImageConfiguration(platform: platform, config: RunConfiguration(cmd: ["/bin/sh"]), diffIDs: layers.map(\.2))
            let configData = try JSONEncoder.canonical.encode(configuration)
            let config = Descriptor(mediaType: .ociConfig, digest: try blob(configData), size: Int64(configData.count))
            var layerDescriptors: [Descriptor] = []
            for (data, mediaType, _) in layers {
                layerDescriptors.append(Descriptor(mediaType: mediaType, digest: try blob(data), size: Int64(data.count)))
            }
            let manifestData = try JSONEncoder.canonical.encode(Manifest(config: config, layers: layerDescriptors))
            var descriptor = Descriptor(mediaType: .ociManifest, digest: try blob(manifestData), size: Int64(manifestData.count))
            descriptor.platform = platform
            if let tag { descriptor.annotations = [AnnotationKey.refName: tag] }
            if addToIndex { manifests.append(descriptor) }
            try writeIndex()
            return descriptor
        }

        /// Adds an index over `entries`, tagged `tag`.
        mutating func index(tag: String, entries: [Descriptor]) throws {
            let data = try JSONEncoder.canonical.encode(ImageIndex(manifests: entries))
            manifests.append(Descriptor(mediaType: .ociIndex, digest: try blob(data), size: Int64(data.count), annotations: [AnnotationKey.refName: tag]))
            try writeIndex()
        }

        func writeIndex() throws {
            try JSONEncoder.canonical.encode(ImageIndex(manifests: manifests)).write(to: URL(fileURLWithPath: directory + "/index.json"))
        }
    }
}

extension Data {
    init(file path: String) throws {
        self = try Data(contentsOf: URL(fileURLWithPath: path))
    }
}

/// The directory holding test fixtures' scripts.
let fixturesDirectory: String = {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures").path
}()
