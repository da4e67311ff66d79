public import Foundation

/// A seccomp profile in the JSON format Docker, Podman and containerd
/// read (`--security-opt seccomp=profile.json`): a default action and rules
/// that allow, refuse or log system calls, optionally only for some
/// argument values, capabilities, architectures or kernel versions.
public struct SeccompProfile: Hashable, Sendable, Codable {
    /// What a rule does to a matching call.
    public enum Action: String, Hashable, Sendable, Codable {
        case allow = "SCMP_ACT_ALLOW"
        case errno = "SCMP_ACT_ERRNO"
        case kill = "SCMP_ACT_KILL"
        case killThread = "SCMP_ACT_KILL_THREAD"
        case killProcess = "SCMP_ACT_KILL_PROCESS"
        case trap = "SCMP_ACT_TRAP"
        case trace = "SCMP_ACT_TRACE"
        case log = "SCMP_ACT_LOG"
    }

    /// How an argument is compared.
    public enum Operator: String, Hashable, Sendable, Codable {
        case notEqual = "SCMP_CMP_NE"
        case lessThan = "SCMP_CMP_LT"
        case lessOrEqual = "SCMP_CMP_LE"
        case equal = "SCMP_CMP_EQ"
        case greaterOrEqual = "SCMP_CMP_GE"
        case greaterThan = "SCMP_CMP_GT"
        /// `(arg & value) == valueTwo`.
        case maskedEqual = "SCMP_CMP_MASKED_EQ"
    }

    /// A condition on one argument of a call.
    public struct Argument: Hashable, Sendable, Codable {
        public var index: UInt32
        public var value: UInt64
        public var valueTwo: UInt64
        public var op: Operator

        public init(index: UInt32, value: UInt64, valueTwo: UInt64 = 0, op: Operator) {
            self.index = index
            self.value = value
            self.valueTwo = valueTwo
            self.op = op
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            index = try container.decode(UInt32.self, forKey: .index)
            value = try container.decode(UInt64.self, forKey: .value)
            valueTwo = try container.decodeIfPresent(UInt64.self, forKey: .valueTwo) ?? 0
            op = try container.decode(Operator.self, forKey: .op)
        }
    }

    /// When a rule applies: capabilities the container holds, architectures,
    /// a minimum kernel version.
    public struct Filter: Hashable, Sendable, Codable {
        public var caps: [String]?
        public var arches: [String]?
        public var minKernel: String?

        public init(caps: [String]? = nil, arches: [String]? = nil, minKernel: String? = nil) {
            self.caps = caps
            self.arches = arches
            self.minKernel = minKernel
        }

        var isEmpty: Bool { (caps ?? []).isEmpty && (arches ?? []).isEmpty && minKernel == nil }
    }

    /// One rule: calls by name, the action, and its conditions.
    public struct Rule: Hashable, Sendable, Codable {
        public var names: [String]
        public var action: Action
        /// The errno for ``Action/errno`` (default EPERM) or the value for ``Action/trace``.
        public var errnoRet: UInt32?
        public var args: [Argument]?
        /// The rule applies only if all of these hold.
        public var includes: Filter?
        /// The rule does not apply if any of these holds.
        public var excludes: Filter?

        public init(names: [String], action: Action, errnoRet: UInt32? = nil, args: [Argument]? = nil,
                    includes: Filter? = nil, excludes: Filter? = nil) {
            self.names = names
            self.action = action
            self.errnoRet = errnoRet
            self.args = args
            self.includes = includes
            self.excludes = excludes
        }

        private enum CodingKeys: String, CodingKey { case names, name, action, errnoRet, args, includes, excludes }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            // Older profiles name one call per rule.
            if let names = try container.decodeIfPresent([String].self, forKey: .names) {
                self.names = names
            } else {
                self.names = [try container.decode(String.self, forKey: .name)]
            }
            action = try container.decode(Action.self, forKey: .action)
            errnoRet = try container.decodeIfPresent(UInt32.self, forKey: .errnoRet)
            args = try container.decodeIfPresent([Argument].self, forKey: .args)
            includes = try container.decodeIfPresent(Filter.self, forKey: .includes)
            excludes = try container.decodeIfPresent(Filter.self, forKey: .excludes)
        }

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(names, forKey: .names)
            try container.encode(action, forKey: .action)
            try container.encodeIfPresent(errnoRet, forKey: .errnoRet)
            try container.encodeIfPresent(args, forKey: .args)
            if let includes, !includes.isEmpty { try container.encode(includes, forKey: .includes) }
            if let excludes, !excludes.isEmpty { try container.encode(excludes, forKey: .excludes) }
        }
    }

    /// An architecture and the ones whose calls it can also make.
    public struct ArchitectureMap: Hashable, Sendable, Codable {
        public var architecture: String
        public var subArchitectures: [String]?
    }

    /// What happens to a call no rule matches.
    public var defaultAction: Action
    /// The errno of an ``Action/errno`` default action (EPERM when absent).
    public var defaultErrnoRet: UInt32?
    /// Architectures the filter covers besides the native one.
    public var architectures: [String]?
    /// Architectures by native architecture (Docker's `archMap`).
    public var archMap: [ArchitectureMap]?
    /// The rules, in order.
    public var syscalls: [Rule]

    public init(defaultAction: Action, defaultErrnoRet: UInt32? = nil, architectures: [String]? = nil,
                archMap: [ArchitectureMap]? = nil, syscalls: [Rule]) {
        self.defaultAction = defaultAction
        self.defaultErrnoRet = defaultErrnoRet
        self.architectures = architectures
        self.archMap = archMap
        self.syscalls = syscalls
    }

    /// Reads a profile from JSON.
    ///
    /// - Throws: ``RuntimeError`` with code `seccomp`, naming `source` and
    ///   what in it is wrong.
    public static func decode(_ data: Data, source: String = "the seccomp profile") throws -> SeccompProfile {
        do {
            return try JSONDecoder().decode(SeccompProfile.self, from: data)
        } catch let DecodingError.dataCorrupted(context) {
            throw RuntimeError(.seccomp, "\(source) is not valid JSON: \(context.debugDescription)")
        } catch let DecodingError.keyNotFound(key, context) {
            throw RuntimeError(.seccomp, "\(source) lacks \"\(key.stringValue)\" at \(Self.path(context.codingPath))")
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context) {
            throw RuntimeError(.seccomp, "\(source) has a wrong value at \(Self.path(context.codingPath)): \(context.debugDescription)")
        } catch {
            throw RuntimeError(.seccomp, "\(source) cannot be read: \(error)")
        }
    }

    /// Reads a profile from a file.
    public static func load(contentsOf path: String) throws -> SeccompProfile {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw RuntimeError(.seccomp, "the seccomp profile \(path) cannot be read")
        }
        return try decode(data, source: "the seccomp profile \(path)")
    }

    private static func path(_ keys: [any CodingKey]) -> String {
        keys.isEmpty ? "the top level" : keys.map { $0.intValue.map { "[\($0)]" } ?? "." + $0.stringValue }.joined()
    }
}
