extension ContainerSpec {
    /// A device node of the host given to the container, as `docker run
    /// --device` gives one: the node appears at `containerPath`, and the
    /// container's device allow list lets it be used with `access`.
    public struct Device: Hashable, Sendable, Codable {
        /// The node on the host (`/dev/fuse`, `/dev/nvidia0`); a symlink
        /// such as `/dev/disk/by-id/…` is followed.
        public var hostPath: String
        /// Where it appears in the container.
        public var containerPath: String
        /// What the container may do with it.
        public var access: DeviceRule.Access

        /// The host's node `hostPath`, at the same path in the container
        /// unless `containerPath` says otherwise.
        public init(_ hostPath: String, at containerPath: String? = nil, access: DeviceRule.Access = .all) {
            self.hostPath = hostPath
            self.containerPath = containerPath ?? hostPath
            self.access = access
        }

        /// Parses Docker's `--device` syntax: `HOST[:CONTAINER][:ACCESS]`,
        /// such as `/dev/fuse`, `/dev/sdb:/dev/xvdb` or `/dev/sdb:/dev/xvdb:r`.
        ///
        /// - Throws: ``RuntimeError`` with code `invalidSpec` naming what is wrong.
        public init(parsing text: String) throws {
            let parts = text.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            func fail(_ why: String) -> RuntimeError {
                RuntimeError(.invalidSpec, "device \"\(text)\" \(why); write it as HOST[:CONTAINER][:ACCESS], such as /dev/sdb:/dev/xvdb:rw")
            }
            guard (1 ... 3).contains(parts.count), parts.allSatisfy({ !$0.isEmpty }) else { throw fail("has an empty or extra part") }
            guard parts[0].hasPrefix("/") else { throw fail("names \(parts[0]), not an absolute path") }
            switch parts.count {
            case 1:
                self.init(parts[0])
            case 2 where !parts[1].hasPrefix("/"):
                self.init(parts[0], access: try DeviceRule.Access(parsing: parts[1]))
            case 2:
                self.init(parts[0], at: parts[1])
            default:
                guard parts[1].hasPrefix("/") else { throw fail("names \(parts[1]), not an absolute path") }
                self.init(parts[0], at: parts[1], access: try DeviceRule.Access(parsing: parts[2]))
            }
        }
    }

    /// With the host's device node `hostPath` given to the container (at
    /// `containerPath`, by default the same path), usable with `access`.
    public func device(_ hostPath: String, at containerPath: String? = nil, access: DeviceRule.Access = .all) -> ContainerSpec {
        var copy = self
        copy.devices.append(Device(hostPath, at: containerPath, access: access))
        return copy
    }

    /// With `rules` added to the device allow list, as Docker's
    /// `--device-cgroup-rule` does (for nodes the container makes, or
    /// devices bound in some other way).
    public func allowingDevices(_ rules: DeviceRule...) -> ContainerSpec {
        var copy = self
        copy.deviceRules += rules
        return copy
    }
}
