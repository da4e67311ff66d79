/// An IPv4 address.
public struct IPv4Address: Hashable, Sendable, Comparable, Codable, CustomStringConvertible, LosslessStringConvertible {
    /// The address as a number (the first octet in the high byte).
    public var value: UInt32

    public init(_ value: UInt32) { self.value = value }

    /// Parses dotted-quad text (`10.88.0.2`).
    public init?(_ text: String) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var value: UInt32 = 0
        for part in parts {
            guard !part.isEmpty, part.count <= 3, part.allSatisfy(\.isASCII), let octet = UInt8(part) else { return nil }
            value = value << 8 | UInt32(octet)
        }
        self.value = value
    }

    /// The four octets, in network order.
    public var octets: [UInt8] { [UInt8(value >> 24), UInt8(value >> 16 & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)] }

    public var description: String { octets.map(String.init).joined(separator: ".") }

    public static func < (lhs: IPv4Address, rhs: IPv4Address) -> Bool { lhs.value < rhs.value }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let address = IPv4Address(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "\"\(text)\" is not an IPv4 address"))
        }
        self = address
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

/// An IPv4 subnet: a network address and a prefix length (`10.88.0.0/16`).
public struct IPv4Subnet: Hashable, Sendable, Codable, CustomStringConvertible, LosslessStringConvertible {
    /// The first address (host bits zero).
    public var network: IPv4Address
    /// How many leading bits name the network.
    public var prefixLength: Int

    /// The subnet holding `address`, with host bits cleared.
    public init(_ address: IPv4Address, prefixLength: Int) {
        precondition((0 ... 32).contains(prefixLength))
        self.prefixLength = prefixLength
        network = IPv4Address(address.value & Self.mask(prefixLength))
    }

    /// Parses CIDR text (`10.88.0.0/16`). Host bits must be zero.
    public init?(_ text: String) {
        let parts = text.split(separator: "/")
        guard parts.count == 2, let address = IPv4Address(String(parts[0])), let length = Int(parts[1]), (0 ... 32).contains(length),
              address.value & ~Self.mask(length) == 0 else { return nil }
        self.init(address, prefixLength: length)
    }

    static func mask(_ length: Int) -> UInt32 { length == 0 ? 0 : UInt32.max << (32 - length) }

    /// The netmask, as an address.
    public var netmask: IPv4Address { IPv4Address(Self.mask(prefixLength)) }
    /// The last address (the broadcast address).
    public var broadcast: IPv4Address { IPv4Address(network.value | ~Self.mask(prefixLength)) }
    /// How many addresses it spans.
    public var size: UInt64 { UInt64(1) << UInt64(32 - prefixLength) }

    /// Whether `address` lies in it.
    public func contains(_ address: IPv4Address) -> Bool { address.value & Self.mask(prefixLength) == network.value }

    /// Whether the two share any address.
    public func overlaps(_ other: IPv4Subnet) -> Bool {
        let length = min(prefixLength, other.prefixLength)
        return network.value & Self.mask(length) == other.network.value & Self.mask(length)
    }

    /// The `index`th address from the network address (nil outside the subnet).
    public func address(_ index: UInt32) -> IPv4Address? {
        UInt64(index) < size ? IPv4Address(network.value &+ index) : nil
    }

    public var description: String { "\(network)/\(prefixLength)" }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let subnet = IPv4Subnet(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "\"\(text)\" is not an IPv4 subnet in CIDR form"))
        }
        self = subnet
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}
