#if canImport(Glibc)
import Glibc
#endif

/// The platform an image runs on: operating system, CPU architecture and
/// variant, as in `linux/arm64/v8`.
///
/// Architectures and variants are normalised the way container tools do:
/// `x86_64` is `amd64`, `aarch64` is `arm64` (whose default variant is `v8`),
/// `armhf` is `arm/v7`, and `i386` is `386`.
public struct Platform: Hashable, Sendable, Codable, CustomStringConvertible, PreservesUnknownFields {
    /// The operating system, such as `linux`.
    public var os: String
    /// The CPU architecture, such as `amd64` or `arm64`.
    public var architecture: String
    /// The CPU variant, such as `v7` for `arm`.
    public var variant: String?
    /// The operating system version (used by Windows images).
    public var osVersion: String?
    /// Required operating system features.
    public var osFeatures: [String]?
    /// Fields this type does not model, preserved when encoding.
    public var unknownFields: [String: JSONValue] = [:]

    enum CodingKeys: String, CodingKey, CaseIterable {
        case os, architecture, variant
        case osVersion = "os.version"
        case osFeatures = "os.features"
    }

    /// Creates a platform exactly as given (no normalisation).
    public init(os: String, architecture: String, variant: String? = nil) {
        self.os = os
        self.architecture = architecture
        self.variant = variant
    }

    /// Parses `os/arch[/variant]`, or `arch[/variant]` with `linux` assumed.
    ///
    /// - Throws: ``OCIImageError`` naming the part that is wrong.
    public init(parsing string: String) throws {
        let parts = string.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        func check(_ part: String, _ what: String) throws -> String {
            let lowered = part.lowercased()
            guard !lowered.isEmpty,
                  lowered.utf8.allSatisfy({ ($0 >= 0x61 && $0 <= 0x7a) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x5f || $0 == 0x2d || $0 == 0x2e })
            else {
                throw OCIImageError(.invalidPlatform, "invalid platform \"\(string)\": \(what) \"\(part)\" must be letters, digits, '_', '-' or '.'")
            }
            return lowered
        }
        switch parts.count {
        case 1:
            let architecture = try check(parts[0], "the architecture")
            if architecture == "linux" {
                self.init(os: "linux", architecture: Platform.host.architecture, variant: Platform.host.variant)
            } else {
                self.init(os: "linux", architecture: architecture)
            }
        case 2:
            let first = try check(parts[0], "the operating system")
            if Platform.knownOperatingSystems.contains(first) {
                self.init(os: first, architecture: try check(parts[1], "the architecture"))
            } else {
                self.init(os: "linux", architecture: first, variant: try check(parts[1], "the variant"))
            }
        case 3:
            self.init(os: try check(parts[0], "the operating system"), architecture: try check(parts[1], "the architecture"),
                      variant: try check(parts[2], "the variant"))
        default:
            throw OCIImageError(.invalidPlatform, "invalid platform \"\(string)\": expected os/arch[/variant]")
        }
        self = normalized
    }

    private static let knownOperatingSystems: Set<String> = [
        "linux", "windows", "darwin", "freebsd", "netbsd", "openbsd", "solaris", "illumos", "aix", "plan9", "android", "ios", "js", "wasip1",
    ]

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        os = try container.decode(String.self, forKey: .os)
        architecture = try container.decode(String.self, forKey: .architecture)
        variant = try container.decodeIfPresent(String.self, forKey: .variant)
        osVersion = try container.decodeIfPresent(String.self, forKey: .osVersion)
        osFeatures = try container.decodeIfPresent([String].self, forKey: .osFeatures)
        unknownFields = try Self.decodeUnknownFields(from: decoder)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(os, forKey: .os)
        try container.encode(architecture, forKey: .architecture)
        try container.encodeIfPresent(variant, forKey: .variant)
        try container.encodeIfPresent(osVersion, forKey: .osVersion)
        try container.encodeIfPresent(osFeatures, forKey: .osFeatures)
        try encodeUnknownFields(to: encoder)
    }

    /// `os/arch[/variant]`.
    public var description: String {
        [os, architecture, variant].compactMap { $0 }.filter { !$0.isEmpty }.joined(separator: "/")
    }

    /// The same platform with its architecture and variant normalised, and a
    /// default variant dropped (`arm64/v8` becomes `arm64`, `amd64/v1` becomes `amd64`).
    public var normalized: Platform {
        var result = self
        result.os = os.lowercased()
        let arch = architecture.lowercased()
        var variant = self.variant?.lowercased()
        switch arch {
        case "x86_64", "x86-64", "amd64":
            result.architecture = "amd64"
            if variant == "v1" { variant = nil }
        case "aarch64", "arm64":
            result.architecture = "arm64"
            if variant == "v8" || variant == "8" { variant = nil }
        case "armhf":
            result.architecture = "arm"
            variant = "v7"
        case "armel":
            result.architecture = "arm"
            variant = "v6"
        case "arm":
            result.architecture = "arm"
            switch variant {
            case nil, "7": variant = "v7"
            case "5", "6", "8": variant = "v" + (variant ?? "")
            default: break
            }
        case "i386", "i686", "x86", "386":
            result.architecture = "386"
        case "armv5tel", "armv5l":
            result.architecture = "arm"
            variant = "v5"
        case "armv6l":
            result.architecture = "arm"
            variant = "v6"
        case "armv7l", "armv8l":
            result.architecture = "arm"
            variant = "v7"
        default:
            result.architecture = arch
        }
        result.variant = (variant?.isEmpty ?? true) ? nil : variant
        return result
    }

    /// Whether an image built for `other` runs on this platform, comparing
    /// normalised values. A host with a newer variant runs older ones
    /// (`arm/v7` runs `arm/v6`, `amd64/v3` runs `amd64/v2`).
    public func canRun(_ other: Platform) -> Bool {
        compatibilityRank(of: other) != nil
    }

    /// A rank for choosing among manifests: 0 is an exact match, higher is a
    /// worse but still runnable match, `nil` is not runnable.
    func compatibilityRank(of other: Platform) -> Int? {
        let host = normalized
        let image = other.normalized
        guard host.os == image.os, host.architecture == image.architecture else { return nil }
        if host.variant == image.variant { return 0 }
        guard let hostLevel = Platform.variantLevel(host), let imageLevel = Platform.variantLevel(image),
              imageLevel <= hostLevel
        else { return nil }
        return hostLevel - imageLevel
    }

    private static func variantLevel(_ platform: Platform) -> Int? {
        let variant = platform.variant
        switch platform.architecture {
        case "amd64":
            guard let variant else { return 1 }
            return variant.hasPrefix("v") ? Int(variant.dropFirst()) : nil
        case "arm":
            guard let variant, variant.hasPrefix("v") else { return nil }
            return Int(variant.dropFirst())
        case "arm64":
            // arm64 variants are v8, v8.1, … v9; compare them as tenths.
            guard let variant else { return 80 }
            guard variant.hasPrefix("v") else { return nil }
            let parts = variant.dropFirst().split(separator: ".")
            guard let major = parts.first.flatMap({ Int($0) }) else { return nil }
            let minor = parts.count > 1 ? Int(parts[1]) ?? 0 : 0
            return major * 10 + minor
        default:
            return variant == nil ? 0 : nil
        }
    }

    /// The platform of the machine this process runs on.
    public static let host: Platform = {
        var name = utsname()
        uname(&name)
        let machine = withUnsafeBytes(of: &name.machine) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        return Platform(os: "linux", architecture: machine).normalized
    }()
}
