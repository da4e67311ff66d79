import CoreMetrics

/// The image store's metrics, through the bootstrapped swift-metrics factory.
enum ImageTelemetry {
    /// Bytes downloaded from registries.
    static func pulled(bytes: Int64) {
        guard bytes > 0 else { return }
        Counter(label: "gantry_image_pull_bytes_total").increment(by: bytes)
    }

    /// Uncompressed bytes written by unpacking layers.
    static func unpacked(bytes: Int64) {
        guard bytes > 0 else { return }
        Counter(label: "gantry_image_unpack_bytes_total").increment(by: bytes)
    }
}
