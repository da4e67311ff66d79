/// Any JSON value, used to carry fields that Gantry does not model so that
/// documents round-trip without losing them.
public enum JSONValue: Hashable, Sendable, Codable {
    case null
    case bool(Bool)
    case integer(Int64)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int64.self) {
            self = .integer(value)
        } else if let value = try? container.decode(Double.self) {
            self = .double(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .integer(let value): try container.encode(value)
        case .double(let value): try container.encode(value)
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }
}

/// A coding key for any string, used to read and write fields that a type
/// does not declare.
struct AnyCodingKey: CodingKey, Hashable {
    var stringValue: String
    var intValue: Int? { nil }
    init(_ string: String) { stringValue = string }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { return nil }
}

/// A type that keeps the JSON fields it does not model, so that decoding and
/// encoding it again preserves them.
protocol PreservesUnknownFields {
    associatedtype CodingKeys: CodingKey & CaseIterable
    var unknownFields: [String: JSONValue] { get }
}

extension PreservesUnknownFields {
    /// Reads every field of `decoder`'s object that `CodingKeys` does not name.
    static func decodeUnknownFields(from decoder: any Decoder) throws -> [String: JSONValue] {
        let known = Set(CodingKeys.allCases.map(\.stringValue))
        let container = try decoder.container(keyedBy: AnyCodingKey.self)
        var fields: [String: JSONValue] = [:]
        for key in container.allKeys where !known.contains(key.stringValue) {
            fields[key.stringValue] = try container.decode(JSONValue.self, forKey: key)
        }
        return fields
    }

    /// Writes the unknown fields back into `encoder`'s object.
    func encodeUnknownFields(to encoder: any Encoder) throws {
        guard !unknownFields.isEmpty else { return }
        var container = encoder.container(keyedBy: AnyCodingKey.self)
        for (key, value) in unknownFields {
            try container.encode(value, forKey: AnyCodingKey(key))
        }
    }
}
