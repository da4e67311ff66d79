/// One entry of a container's device allow list: which device nodes its
/// processes may make, read and write. The cgroup v1 `devices` controller
/// or, on cgroup v2, a device program attached to the container's cgroup
/// enforces the list; an access no entry covers fails with `EPERM`, even
/// through a node the container made itself or was given.
public struct DeviceRule: Hashable, Sendable, Codable, CustomStringConvertible {
    /// The kind of device an entry covers.
    public enum Kind: String, Hashable, Sendable, Codable {
        /// Any device.
        case all = "a"
        /// Block devices (disks).
        case block = "b"
        /// Character devices (terminals, `/dev/null`, GPUs, …).
        case character = "c"
    }

    /// What an entry lets a process do with a device.
    public struct Access: OptionSet, Hashable, Sendable, Codable, CustomStringConvertible {
        public let rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        /// Make a node of it (`mknod`).
        public static let mknod = Access(rawValue: 1)
        /// Open it for reading.
        public static let read = Access(rawValue: 2)
        /// Open it for writing.
        public static let write = Access(rawValue: 4)
        /// Everything: `rwm`.
        public static let all: Access = [.read, .write, .mknod]

        /// Parses letters of `rwm`, in any order.
        ///
        /// - Throws: ``RuntimeError`` with code `invalidSpec` naming the text.
        public init(parsing text: some StringProtocol) throws {
            var access: Access = []
            for letter in text {
                switch letter {
                case "r": access.insert(.read)
                case "w": access.insert(.write)
                case "m": access.insert(.mknod)
                default:
                    throw RuntimeError(.invalidSpec, "device access \"\(text)\" is not made of the letters r (read), w (write) and m (mknod)")
                }
            }
            guard !access.isEmpty else { throw RuntimeError(.invalidSpec, "device access is empty: give some of r, w and m") }
            self = access
        }

        /// The letters, as `rwm`.
        public var description: String {
            (contains(.read) ? "r" : "") + (contains(.write) ? "w" : "") + (contains(.mknod) ? "m" : "")
        }
    }

    /// The kind of device.
    public var kind: Kind
    /// The major number, or `nil` for any.
    public var major: UInt32?
    /// The minor number, or `nil` for any.
    public var minor: UInt32?
    /// What it allows.
    public var access: Access

    /// An entry allowing `access` to devices of `kind` numbered
    /// `major:minor` (`nil` for any).
    public init(_ kind: Kind, major: UInt32?, minor: UInt32?, access: Access = .all) {
        self.kind = kind
        self.major = major
        self.minor = minor
        self.access = access
    }

    /// Parses an entry as Docker's `--device-cgroup-rule` and the kernel's
    /// `devices.allow` write it: `c 1:3 rwm`, `b *:* m`, `c 189:* rw`, or
    /// `a` (everything).
    ///
    /// - Throws: ``RuntimeError`` with code `invalidSpec` naming what is wrong.
    public init(parsing text: String) throws {
        let words = text.split(separator: " ", omittingEmptySubsequences: true)
        func fail(_ why: String) -> RuntimeError {
            RuntimeError(.invalidSpec, "device rule \"\(text)\" \(why); write it as TYPE MAJOR:MINOR ACCESS, such as \"c 1:3 rwm\" or \"b *:* m\"")
        }
        guard let first = words.first, let kind = Kind(rawValue: String(first)) else { throw fail("does not start with a, b or c") }
        if kind == .all {
            guard words.count == 1 || (words.count <= 3 && words.dropFirst().first == "*:*") else { throw fail("gives numbers to a") }
            self.init(.all, major: nil, minor: nil, access: words.count == 3 ? try Access(parsing: words[2]) : .all)
            return
        }
        guard words.count == 2 || words.count == 3 else { throw fail("has \(words.count) words") }
        let numbers = words[1].split(separator: ":", omittingEmptySubsequences: false)
        guard numbers.count == 2 else { throw fail("has no MAJOR:MINOR") }
        func number(_ text: Substring) throws -> UInt32? {
            if text == "*" { return nil }
            guard let value = UInt32(text) else { throw fail("has \"\(text)\", neither a number nor *") }
            return value
        }
        self.init(kind, major: try number(numbers[0]), minor: try number(numbers[1]),
                  access: words.count == 3 ? try Access(parsing: words[2]) : .all)
    }

    /// The entry as the kernel's `devices.allow` takes it: `c 1:3 rwm`.
    public var description: String {
        if kind == .all { return "a *:* \(access)" }
        return "\(kind.rawValue) \(major.map(String.init) ?? "*"):\(minor.map(String.init) ?? "*") \(access)"
    }

    /// What every container may use, as runc and the OCI runtime
    /// specification's defaults give: make nodes of any device (opening
    /// them is another matter), and use `/dev/null`, `/dev/zero`,
    /// `/dev/full`, `/dev/random`, `/dev/urandom`, `/dev/tty`,
    /// `/dev/console`, pseudo-terminals (`/dev/ptmx`, `/dev/pts/*`) and
    /// `/dev/net/tun`.
    public static let defaults: [DeviceRule] = [
        DeviceRule(.character, major: nil, minor: nil, access: .mknod),
        DeviceRule(.block, major: nil, minor: nil, access: .mknod),
        DeviceRule(.character, major: 1, minor: 3),    // null
        DeviceRule(.character, major: 1, minor: 5),    // zero
        DeviceRule(.character, major: 1, minor: 7),    // full
        DeviceRule(.character, major: 1, minor: 8),    // random
        DeviceRule(.character, major: 1, minor: 9),    // urandom
        DeviceRule(.character, major: 5, minor: 0),    // tty
        DeviceRule(.character, major: 5, minor: 1),    // console
        DeviceRule(.character, major: 5, minor: 2),    // ptmx
        DeviceRule(.character, major: 136, minor: nil),  // pts
        DeviceRule(.character, major: 10, minor: 200),  // net/tun
    ]

    /// The major and minor numbers of a device number (`st_rdev`), as
    /// glibc's `major` and `minor` split it.
    static func numbers(of device: UInt64) -> (major: UInt32, minor: UInt32) {
        let major = ((device >> 8) & 0xfff) | ((device >> 32) & ~UInt64(0xfff))
        let minor = (device & 0xff) | ((device >> 12) & ~UInt64(0xff))
        return (UInt32(truncatingIfNeeded: major), UInt32(truncatingIfNeeded: minor))
    }
}
