import Foundation
import GantryTestSupport
import Testing
@testable import OCIImage

@Suite struct DocumentTests {
    /// Decodes JSON into plain Foundation values, so that documents compare
    /// regardless of key order and formatting.
    func object(_ data: Data) throws -> NSDictionary {
        try #require(try JSONSerialization.jsonObject(with: data) as? NSDictionary)
    }

    let layer = "sha256:" + String(repeating: "a", count: 64)
    let config = "sha256:" + String(repeating: "c", count: 64)

    @Test func manifestRoundTripsUnknownFields() throws {
        let json = """
        {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
         "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "\(config)", "size": 7,
                    "x-config-extra": {"nested": [1, 2.5, "three", null, true]}},
         "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": "\(layer)", "size": 9,
                     "urls": ["https://example.com/blob"], "annotations": {"a": "b"}, "x-layer-extra": 42}],
         "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
         "x-top-extra": {"kept": "yes"}}
        """
        let manifest = try Manifest.decode(Data(json.utf8))
        #expect(manifest.layers[0].mediaType.layerCompression == .zstd)
        #expect(manifest.unknownFields["x-top-extra"] == .object(["kept": .string("yes")]))
        #expect(manifest.layers[0].unknownFields["x-layer-extra"] == .integer(42))
        let encoded = try JSONEncoder.canonical.encode(manifest)
        #expect(try object(encoded) == object(Data(json.utf8)))
    }

    @Test func dockerSchema2AndListDecode() throws {
        let manifest = """
        {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
         "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 1, "digest": "\(config)"},
         "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 2, "digest": "\(layer)"}]}
        """
        let decoded = try Manifest.decode(Data(manifest.utf8))
        #expect(decoded.layers[0].mediaType.layerCompression == .gzip)
        let list = """
        {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
         "manifests": [{"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "size": 3, "digest": "\(layer)",
                        "platform": {"architecture": "arm", "os": "linux", "variant": "v7", "features": ["sse4"]}}]}
        """
        let index = try ImageIndex.decode(Data(list.utf8))
        #expect(index.manifests[0].platform?.variant == "v7")
        #expect(index.manifests[0].platform?.unknownFields["features"] == .array([.string("sse4")]))
        #expect(try DocumentKind.detect(Data(list.utf8)) == .index)
        #expect(throws: OCIImageError.self) { try Manifest.decode(Data(list.utf8)) }
    }

    @Test(arguments: [
        #"{"schemaVersion": 1, "name": "library/busybox", "tag": "latest", "fsLayers": [{"blobSum": "sha256:aa"}]}"#,
        #"{"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v1+prettyjws", "config": {}}"#,
    ])
    func refusesSchema1(json: String) {
        #expect {
            try Manifest.decode(Data(json.utf8))
        } throws: { error in
            let error = error as? OCIImageError
            return error?.code == .unsupportedSchemaVersion && error?.message.contains("schema 1") == true
        }
    }

    @Test func refusesSchema1AnnouncedByTheCaller() {
        #expect { try DocumentKind.detect(Data("{}".utf8), announced: .dockerManifestV1Signed) } throws: {
            ($0 as? OCIImageError)?.code == .unsupportedSchemaVersion
        }
    }

    @Test func malformedManifestNamesTheField() {
        let json = #"{"schemaVersion": 2, "config": {"mediaType": "x", "digest": "sha256:12", "size": 1}, "layers": []}"#
        #expect {
            try Manifest.decode(Data(json.utf8))
        } throws: { error in
            let error = error as? OCIImageError
            return error?.code == .invalidManifest && error?.message.contains("64 hex characters") == true
        }
        #expect { try Manifest.decode(Data(#"{"schemaVersion": 2, "layers": []}"#.utf8)) } throws: { ($0 as? OCIImageError)?.code == .invalidManifest }
        #expect { try Manifest.decode(Data("not json".utf8)) } throws: { ($0 as? OCIImageError)?.code == .invalidManifest }
    }

    @Test func configurationCoversDockerFields() throws {
        let json = """
        {"architecture": "amd64", "os": "linux", "created": "2024-05-01T10:00:00Z", "author": "me",
         "config": {"User": "app:app", "ExposedPorts": {"80/tcp": {}, "53/udp": {}}, "Env": ["PATH=/bin", "A=b"],
                    "Entrypoint": ["/entry"], "Cmd": ["serve", "--port", "80"], "Volumes": {"/data": {}},
                    "WorkingDir": "/srv", "Labels": {"maintainer": "x"}, "StopSignal": "SIGQUIT",
                    "Healthcheck": {"Test": ["CMD-SHELL", "wget -q localhost"], "Interval": 30000000000, "Timeout": 5000000000,
                                    "StartPeriod": 1000000000, "StartInterval": 500000000, "Retries": 3},
                    "OnBuild": null, "Hostname": "legacy-field"},
         "rootfs": {"type": "layers", "diff_ids": ["\(layer)"]},
         "history": [{"created": "2024-05-01T10:00:00Z", "created_by": "/bin/sh -c #(nop) ADD file", "empty_layer": false},
                     {"created_by": "ENV A=b", "empty_layer": true}],
         "container_config": {"Image": "legacy"}}
        """
        let configuration = try ImageConfiguration.decode(Data(json.utf8))
        let config = try #require(configuration.config)
        #expect(config.user == "app:app")
        #expect(config.exposedPorts == ["53/udp", "80/tcp"])
        #expect(config.volumes == ["/data"])
        #expect(config.entrypoint == ["/entry"])
        #expect(config.cmd == ["serve", "--port", "80"])
        #expect(config.workingDir == "/srv")
        #expect(config.stopSignal == "SIGQUIT")
        #expect(config.healthcheck?.retries == 3)
        #expect(config.healthcheck?.interval == 30_000_000_000)
        #expect(config.unknownFields["Hostname"] == .string("legacy-field"))
        #expect(configuration.rootfs.diffIDs.map(\.description) == [layer])
        #expect(configuration.history?[1].emptyLayer == true)
        #expect(configuration.unknownFields["container_config"] != nil)
        let again = try ImageConfiguration.decode(try JSONEncoder.canonical.encode(configuration))
        #expect(again == configuration)
    }

    @Test func configurationWithoutRootfsIsRefused() {
        #expect {
            try ImageConfiguration.decode(Data(#"{"architecture": "amd64", "os": "linux"}"#.utf8))
        } throws: { error in
            let error = error as? OCIImageError
            return error?.code == .invalidConfiguration && error?.message.contains("rootfs") == true
        }
    }

    @Test func mediaTypesClassifyLayers() {
        #expect(MediaType.ociLayer.layerCompression == LayerCompression.none)
        #expect(MediaType.dockerLayerGzip.layerCompression == .gzip)
        #expect(MediaType.ociLayerNondistributableZstd.layerCompression == .zstd)
        #expect(MediaType.ociConfig.layerCompression == nil)
        #expect(MediaType.dockerManifestList.isIndex && MediaType.ociManifest.isManifest)
    }
}
