import CGantrySystem
import CSeccomp
import Foundation
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Compiles a ``SeccompProfile`` with libseccomp into the classic BPF
/// program the launcher installs right before `execve`.
enum SeccompCompiler {
    /// Compiles `profile` for a container holding `capabilities`; rules for
    /// other capabilities, architectures or newer kernels are left out, as
    /// are calls this libseccomp does not know.
    ///
    /// - Returns: the program as `struct sock_filter` records (8 bytes each).
    static func compile(_ profile: SeccompProfile, capabilities: Set<Capability>) throws -> [UInt8] {
        guard let context = seccomp_init(try action(profile.defaultAction, errno: profile.defaultErrnoRet)) else {
            throw RuntimeError(.seccomp, "libseccomp cannot create a filter")
        }
        defer { seccomp_release(context) }
        // A binary tree of syscall numbers rather than a linear list: fewer
        // instructions run per call.
        _ = seccomp_attr_set(context, SCMP_FLTATR_CTL_OPTIMIZE, 2)
        for name in architectures(profile) {
            let token = seccomp_arch_resolve_name(name)
            guard token != 0 else { throw RuntimeError(.seccomp, "the seccomp profile names an unknown architecture \(name)") }
            let result = seccomp_arch_add(context, token)
            guard result == 0 || result == -EEXIST else {
                throw RuntimeError(.seccomp, "libseccomp cannot add the architecture \(name)", underlying: Errno(rawValue: -result))
            }
        }
        let host = Host.current
        let capabilityNames = Set(capabilities.map(\.description))
        for (index, rule) in profile.syscalls.enumerated() where applies(rule, capabilities: capabilityNames, host: host) {
            let action = try action(rule.action, errno: rule.errnoRet)
            for name in rule.names {
                let number = seccomp_syscall_resolve_name(name)
                guard number != __NR_SCMP_ERROR else { continue }
                try add(rule, action: action, syscall: number, to: context, describing: "rule \(index) (\(name))")
            }
        }
        return try export(context)
    }

    private static func add(_ rule: SeccompProfile.Rule, action: UInt32, syscall: Int32, to context: scmp_filter_ctx,
                            describing what: String) throws {
        let arguments = (rule.args ?? []).map { argument in
            scmp_arg_cmp(arg: argument.index, op: comparison(argument.op), datum_a: argument.value, datum_b: argument.valueTwo)
        }
        // Conditions on one argument are alternatives (any may match); on
        // different arguments they must all hold.
        let indices = (rule.args ?? []).map(\.index)
        let groups: [[scmp_arg_cmp]] = Set(indices).count < indices.count ? arguments.map { [$0] } : [arguments]
        for group in groups {
            let result = group.withUnsafeBufferPointer { buffer in
                seccomp_rule_add_array(context, action, syscall, UInt32(buffer.count), buffer.baseAddress)
            }
            // -EACCES: the action is the default one; nothing to add.
            guard result == 0 || result == -EACCES || result == -EEXIST else {
                throw RuntimeError(.seccomp, "libseccomp refuses the seccomp \(what)", underlying: Errno(rawValue: -result))
            }
        }
    }

    private static func export(_ context: scmp_filter_ctx) throws -> [UInt8] {
        let fd = gantry_memfd("gantry-seccomp")
        guard fd >= 0 else { throw RuntimeError(.seccomp, "cannot create a memory file for the seccomp filter", underlying: Sys.errno) }
        defer { close(fd) }
        let result = seccomp_export_bpf(context, fd)
        guard result == 0 else { throw RuntimeError(.seccomp, "libseccomp cannot export the filter", underlying: Errno(rawValue: -result)) }
        let size = Int(lseek(fd, 0, SEEK_END))
        var bytes = [UInt8](repeating: 0, count: size)
        let read = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, size, 0) }
        guard read == size, size % 8 == 0, size > 0 else { throw RuntimeError(.seccomp, "the exported seccomp filter is truncated") }
        return bytes
    }

    private static func action(_ action: SeccompProfile.Action, errno: UInt32?) throws -> UInt32 {
        switch action {
        case .allow: return 0x7fff_0000
        case .errno: return 0x0005_0000 | ((errno ?? UInt32(EPERM)) & 0xffff)
        case .kill, .killThread: return 0
        case .killProcess: return 0x8000_0000
        case .trap: return 0x0003_0000
        case .trace: return 0x7ff0_0000 | ((errno ?? 0) & 0xffff)
        case .log: return 0x7ffc_0000
        }
    }

    private static func comparison(_ op: SeccompProfile.Operator) -> scmp_compare {
        switch op {
        case .notEqual: SCMP_CMP_NE
        case .lessThan: SCMP_CMP_LT
        case .lessOrEqual: SCMP_CMP_LE
        case .equal: SCMP_CMP_EQ
        case .greaterOrEqual: SCMP_CMP_GE
        case .greaterThan: SCMP_CMP_GT
        case .maskedEqual: SCMP_CMP_MASKED_EQ
        }
    }

    /// libseccomp's names of the extra architectures the profile covers on this host.
    private static func architectures(_ profile: SeccompProfile) -> [String] {
        let native = "SCMP_ARCH_" + Host.current.libseccompArchitecture.uppercased()
        var names = profile.architectures ?? []
        for map in profile.archMap ?? [] where map.architecture == native {
            names += map.subArchitectures ?? []
        }
        return names.filter { $0 != native }.map { $0.replacingOccurrences(of: "SCMP_ARCH_", with: "").lowercased() }
    }

    private static func applies(_ rule: SeccompProfile.Rule, capabilities: Set<String>, host: Host) -> Bool {
        if let includes = rule.includes {
            if let caps = includes.caps, !caps.allSatisfy(capabilities.contains) { return false }
            if let arches = includes.arches, !arches.isEmpty, !arches.contains(host.goArchitecture) { return false }
            if let minimum = includes.minKernel, !host.kernelAtLeast(minimum) { return false }
        }
        if let excludes = rule.excludes {
            if let caps = excludes.caps, caps.contains(where: capabilities.contains) { return false }
            if let arches = excludes.arches, arches.contains(host.goArchitecture) { return false }
            if let minimum = excludes.minKernel, host.kernelAtLeast(minimum) { return false }
        }
        return true
    }

    /// Facts about the host that rules can depend on.
    struct Host {
        var machine: String
        var kernel: [Int]

        static let current: Host = {
            var name = utsname()
            uname(&name)
            func field<T>(_ value: T) -> String {
                withUnsafeBytes(of: value) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            }
            let release = field(name.release)
            let numbers = release.split(whereSeparator: { !$0.isNumber }).prefix(2).compactMap { Int($0) }
            return Host(machine: field(name.machine), kernel: numbers)
        }()

        /// The architecture as Docker profiles name it (Go's names).
        var goArchitecture: String {
            ["x86_64": "amd64", "aarch64": "arm64", "i686": "386", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x",
             "riscv64": "riscv64"][machine] ?? machine
        }

        /// The architecture as libseccomp names it.
        var libseccompArchitecture: String {
            machine == "i686" ? "x86" : machine
        }

        func kernelAtLeast(_ version: String) -> Bool {
            let wanted = version.split(separator: ".").compactMap { Int($0) }
            return kernel.lexicographicallyPrecedes(wanted) == false
        }
    }
}
