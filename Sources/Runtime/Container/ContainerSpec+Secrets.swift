import Foundation

extension ContainerSpec {
    /// A secret given to a container: a file (by default
    /// `/run/secrets/NAME`, mode 0400, owned by the container's user), an
    /// environment variable, or both.
    ///
    /// The value is read when the container is created and kept in memory
    /// only: in the state root's run-time directory, which must be a tmpfs,
    /// and bound read-only into the container from there. It is never
    /// written to the container's upper directory or to the state root. The
    /// container's record, and so `inspect`, holds where the value came
    /// from, never the value.
    public struct Secret: Hashable, Sendable, Codable {
        /// Where a secret's value comes from.
        public enum Source: Hashable, Sendable, Codable {
            /// A host file, read when the container is created.
            case file(path: String)
            /// An environment variable of the process that creates the container.
            case environment(variable: String)
            /// The value itself. It is written nowhere: a record read back
            /// holds ``withheld`` in its place.
            case value([UInt8])
            /// A value that was given and is not written anywhere: what a
            /// record read back holds in place of ``value(_:)``.
            case withheld

            private enum CodingKeys: String, CodingKey { case file, environment, withheld }

            public init(from decoder: any Decoder) throws {
                let container = try decoder.container(keyedBy: CodingKeys.self)
                if let path = try container.decodeIfPresent(String.self, forKey: .file) {
                    self = .file(path: path)
                } else if let variable = try container.decodeIfPresent(String.self, forKey: .environment) {
                    self = .environment(variable: variable)
                } else {
                    self = .withheld
                }
            }

            /// Encodes where the value comes from; a value itself is encoded
            /// as withheld.
            public func encode(to encoder: any Encoder) throws {
                var container = encoder.container(keyedBy: CodingKeys.self)
                switch self {
                case .file(let path): try container.encode(path, forKey: .file)
                case .environment(let variable): try container.encode(variable, forKey: .environment)
                case .value, .withheld: try container.encode(true, forKey: .withheld)
                }
            }
        }

        /// The secret's name: letters, digits, `_`, `.` and `-`.
        public var name: String
        /// Where its value comes from.
        public var source: Source
        /// The file's path inside the container: nil for
        /// `/run/secrets/NAME`; a relative path is under `/run/secrets`.
        public var target: String?
        /// The file's owner and group inside the container; nil for the
        /// container's user and group.
        public var uid: UInt32?
        /// The file's group inside the container; nil for the container's group.
        public var gid: UInt32?
        /// The file's permission bits.
        public var mode: UInt32
        /// Given to the container's processes as this environment variable
        /// too (the value must then be text without NUL bytes).
        public var environmentVariable: String?
        /// Whether it appears as a file; false gives it as
        /// ``environmentVariable`` only.
        public var mounted: Bool
        /// A keyed digest of the value when it was last read, which a
        /// reconciler sets when a service is applied, so that a changed
        /// value makes a new revision. It cannot be turned back into the value.
        public var digest: String?

        /// A secret named `name` whose value comes from `source`.
        public init(name: String, source: Source, target: String? = nil, uid: UInt32? = nil, gid: UInt32? = nil, mode: UInt32 = 0o400,
                    environmentVariable: String? = nil, mounted: Bool = true) {
            self.name = name
            self.source = source
            self.target = target
            self.uid = uid
            self.gid = gid
            self.mode = mode
            self.environmentVariable = environmentVariable
            self.mounted = mounted
        }

        /// The file's path inside the container.
        public var path: String {
            guard let target else { return "/run/secrets/" + name }
            return target.hasPrefix("/") ? target : "/run/secrets/" + target
        }
    }

    /// A configuration file given to a container (by default `/NAME`, mode
    /// 0444, owned by the container's user), read when the container is
    /// created. Unlike a ``Secret``, its content may be written in records.
    public struct Config: Hashable, Sendable, Codable {
        /// Where a config's content comes from.
        public enum Source: Hashable, Sendable, Codable {
            /// A host file, read when the container is created.
            case file(path: String)
            /// An environment variable of the process that creates the container.
            case environment(variable: String)
            /// The content itself.
            case content(String)
        }

        /// The config's name: letters, digits, `_`, `.` and `-`.
        public var name: String
        /// Where its content comes from.
        public var source: Source
        /// The file's path inside the container: nil for `/NAME`; a
        /// relative path is under `/`.
        public var target: String?
        /// The file's owner and group inside the container; nil for the
        /// container's user and group.
        public var uid: UInt32?
        /// The file's group inside the container; nil for the container's group.
        public var gid: UInt32?
        /// The file's permission bits.
        public var mode: UInt32
        /// A digest of the content when it was last read, which a reconciler
        /// sets when a service is applied, so that a changed content makes a
        /// new revision.
        public var digest: String?

        /// A config named `name` whose content comes from `source`.
        public init(name: String, source: Source, target: String? = nil, uid: UInt32? = nil, gid: UInt32? = nil, mode: UInt32 = 0o444) {
            self.name = name
            self.source = source
            self.target = target
            self.uid = uid
            self.gid = gid
            self.mode = mode
        }

        /// The file's path inside the container.
        public var path: String {
            guard let target else { return "/" + name }
            return target.hasPrefix("/") ? target : "/" + target
        }
    }

    /// With `secret` added.
    public func secret(_ secret: Secret) -> ContainerSpec {
        var copy = self
        copy.secrets.append(secret)
        return copy
    }

    /// With `config` added.
    public func config(_ config: Config) -> ContainerSpec {
        var copy = self
        copy.configs.append(config)
        return copy
    }
}

/// A secret or config as the runtime gives it: a file in the container's
/// directory of provided files, bound at `path`, and perhaps a variable.
package struct ProvidedFile: Sendable {
    package enum Kind: String, Sendable { case secret, config }
    package var kind: Kind
    package var name: String
    package var path: String
    package var uid: UInt32?
    package var gid: UInt32?
    package var mode: UInt32
    package var environmentVariable: String?
    package var mounted: Bool
    /// Where the value comes from, for messages and reading.
    package var origin: Origin

    package enum Origin: Sendable {
        case file(String)
        case environment(String)
        case value([UInt8])
        case withheld
    }

    /// The largest value given, as Docker limits its secrets and configs.
    package static let limit = 1 << 20

    /// The file's name in the directory of provided files.
    package var fileName: String { kind.rawValue + "-" + name }

    /// Reads the value from its source.
    package func read(container: String) throws -> [UInt8] {
        let what = "\(kind.rawValue) \(name) of \(container)"
        let bytes: [UInt8]
        switch origin {
        case .file(let path):
            guard let handle = FileHandle(forReadingAtPath: path) else {
                throw RuntimeError(.invalidSpec, "the \(what) is read from \(path), which cannot be read", underlying: Sys.errno)
            }
            defer { try? handle.close() }
            do {
                bytes = Array(try handle.read(upToCount: Self.limit + 1) ?? Data())
            } catch {
                throw RuntimeError(.invalidSpec, "the \(what) is read from \(path), which cannot be read: \(error)")
            }
        case .environment(let variable):
            guard let value = ProcessInfo.processInfo.environment[variable] else {
                throw RuntimeError(.invalidSpec, "the \(what) is read from the environment variable \(variable), which is not set")
            }
            bytes = Array(value.utf8)
        case .value(let value):
            bytes = value
        case .withheld:
            throw RuntimeError(.invalidSpec, "the \(what) was given as a value, which is kept in memory only and is gone (was the machine restarted?): create the container again with the value")
        }
        guard bytes.count <= Self.limit else {
            throw RuntimeError(.invalidSpec, "the \(what) is larger than \(Self.limit) bytes")
        }
        if environmentVariable != nil, bytes.contains(0) || String(validating: bytes, as: UTF8.self) == nil {
            throw RuntimeError(.invalidSpec, "the \(what) is given as the variable \(environmentVariable!), but it is not text without NUL bytes")
        }
        return bytes
    }
}

extension ContainerSpec {
    /// The secrets and configs as the runtime gives them.
    package var providedFiles: [ProvidedFile] {
        secrets.map { secret in
            let origin: ProvidedFile.Origin = switch secret.source {
            case .file(let path): .file(path)
            case .environment(let variable): .environment(variable)
            case .value(let bytes): .value(bytes)
            case .withheld: .withheld
            }
            return ProvidedFile(kind: .secret, name: secret.name, path: secret.path, uid: secret.uid, gid: secret.gid, mode: secret.mode,
                                environmentVariable: secret.environmentVariable, mounted: secret.mounted, origin: origin)
        } + configs.map { config in
            let origin: ProvidedFile.Origin = switch config.source {
            case .file(let path): .file(path)
            case .environment(let variable): .environment(variable)
            case .content(let text): .value(Array(text.utf8))
            }
            return ProvidedFile(kind: .config, name: config.name, path: config.path, uid: config.uid, gid: config.gid, mode: config.mode,
                                environmentVariable: nil, mounted: true, origin: origin)
        }
    }

    /// Checks the secrets and configs, naming what is wrong.
    func validateProvidedFiles(name container: String) throws {
        var names: Set<String> = []
        var paths: Set<String> = []
        var variables: Set<String> = []
        for file in providedFiles {
            try ContainerRuntime.validate(name: file.name, kind: "\(file.kind.rawValue) name")
            let what = "container \(container): \(file.kind.rawValue) \(file.name)"
            guard names.insert(file.fileName).inserted else { throw RuntimeError(.invalidSpec, "\(what) is given twice") }
            guard file.mode <= 0o777 else { throw RuntimeError(.invalidSpec, "\(what): the mode \(String(file.mode, radix: 8)) is not permission bits (at most 777)") }
            if file.mounted {
                let components = file.path.split(separator: "/")
                guard !components.isEmpty, !components.contains(".."), !components.contains(".") else {
                    throw RuntimeError(.invalidSpec, "\(what): the target \(file.path) is not a file path without . and ..")
                }
                guard paths.insert("/" + components.joined(separator: "/")).inserted else {
                    throw RuntimeError(.invalidSpec, "\(what): another secret or config is given at \(file.path) too")
                }
            } else if file.environmentVariable == nil {
                throw RuntimeError(.invalidSpec, "\(what) is neither mounted nor given as a variable")
            }
            if let variable = file.environmentVariable {
                guard !variable.isEmpty, !variable.contains("="), !variable.contains("\0") else {
                    throw RuntimeError(.invalidSpec, "\(what): \"\(variable)\" is not an environment variable name")
                }
                guard variables.insert(variable).inserted else { throw RuntimeError(.invalidSpec, "\(what): the variable \(variable) is given twice") }
            }
        }
    }
}
