import CGantrySystem
import Foundation
import Testing
@testable import Runtime
@testable import OCIImage

extension Trait where Self == ConditionTrait {
    /// For tests that set owners, create device nodes or mount file systems.
    public static var requiresRoot: Self {
        .enabled(if: geteuid() == 0, "needs root: it sets file owners, creates device nodes or mounts (CI runs as root)")
    }
}

extension Trait where Self == ConditionTrait {
    /// For tests of what only a pure cgroup v2 host has (every controller on
    /// cgroup2): `scripts/test-cgroup-v2.sh` runs them in a virtual machine.
    public static var requiresCgroupV2: Self {
        .enabled(if: geteuid() == 0 && (try? CgroupHierarchy.current().mode) == .unified,
                 "needs root on a pure cgroup v2 host (scripts/test-cgroup-v2.sh boots one)")
    }
}

/// Runs `body` with a fresh directory under /tmp, then checks that nothing
/// is left open or mounted inside it and removes it.
public func withTemporaryDirectory<T>(_ label: String = "test", _ body: (String) async throws -> T) async throws -> T {
    let path = "/tmp/gantry-\(label)-\(UUID().uuidString.prefix(8).lowercased())"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
    func cleanUp() {
        for mount in mounts(under: path).reversed() { _ = try? run("umount", ["-l", mount]) }
        try? Sys.removeTree(path)
    }
    do {
        let result = try await body(path)
        // Work offloaded to other threads may release its last references
        // (and so close its files) a moment after the caller resumes. The
        // scan reads every descriptor of the process (thousands, while a
        // test holds many), so it runs off the cooperative pool.
        var open = await onOwnThread { openDescriptors(under: path) }
        for _ in 0..<200 where !open.isEmpty {
            try await Task.sleep(for: .milliseconds(10))
            open = await onOwnThread { openDescriptors(under: path) }
        }
        #expect(open.isEmpty, "file descriptors left open under \(path): \(open)")
        #expect(mounts(under: path).isEmpty, "mounts left under \(path)")
        cleanUp()
        return result
    } catch {
        cleanUp()
        throw error
    }
}

/// The targets of this process's open descriptors that lie under `path`.
public func openDescriptors(under path: String) -> [String] {
    let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    return fds.compactMap { fd -> String? in
        let length = readlink("/proc/self/fd/" + fd, &buffer, buffer.count - 1)
        guard length > 0 else { return nil }
        let target = String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return target == path || target.hasPrefix(path + "/") ? target : nil
    }
}

/// Runs `body` on a thread of its own and returns what it returns: for
/// blocking work in async tests, which must leave the cooperative pool's
/// few threads to the tasks of every other test running at once.
public func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        Thread.detachNewThread { continuation.resume(returning: body()) }
    }
}

/// Mount points under `path`.
public func mounts(under path: String) -> [String] {
    guard let text = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return [] }
    return text.split(separator: "\n").compactMap { line in
        let fields = line.split(separator: " ")
        guard fields.count > 4 else { return nil }
        let point = String(fields[4])
        return point == path || point.hasPrefix(path + "/") ? point : nil
    }
}

public struct ToolError: Error, CustomStringConvertible {
    public var description: String
    public init(description: String) { self.description = description }
}

/// Runs a program found on PATH; returns its standard output.
/// Throws with its standard error when it exits non-zero.
@discardableResult
public func run(_ program: String, _ arguments: [String], input: Data? = nil, environment: [String: String]? = nil) throws -> String {
    try runWithStatus(program, arguments, input: input, environment: environment, check: true).output
}

public func runWithStatus(_ program: String, _ arguments: [String], input: Data? = nil, environment: [String: String]? = nil, check: Bool = false)
    throws -> (status: Int32, output: String, error: String)
{
    var stdin: [Int32] = [-1, -1]
    var stdout: [Int32] = [-1, -1]
    var stderr: [Int32] = [-1, -1]
    defer { for fd in stdin + stdout + stderr where fd >= 0 { close(fd) } }
    guard gantry_pipe(&stdin) == 0, gantry_pipe(&stdout) == 0, gantry_pipe(&stderr) == 0 else {
        throw ToolError(description: "cannot make pipes: \(String(cString: strerror(errno)))")
    }
    let child = try ChildProcess(program, arguments, environment: environment,
                                 stdin: .descriptor(stdin[0]), stdout: .descriptor(stdout[1]), stderr: .descriptor(stderr[1]))
    // The child has its own copies of its ends.
    for fd in [stdin[0], stdout[1], stderr[1]] { close(fd) }
    stdin[0] = -1
    stdout[1] = -1
    stderr[1] = -1
    // Feed the input and drain both outputs together, so that no pipe can
    // fill up and block the child.
    var pending = [UInt8](input ?? Data())
    if pending.isEmpty { close(stdin[1]); stdin[1] = -1 }
    var collected: [[UInt8]] = [[], []]
    var buffer = [UInt8](repeating: 0, count: 65536)
    while stdout[0] >= 0 || stderr[0] >= 0 {
        var polled = [stdout[0], stderr[0], stdin[1]].enumerated().filter { $0.element >= 0 }.map { index, fd in
            pollfd(fd: fd, events: Int16(index == 2 ? POLLOUT : POLLIN), revents: 0)
        }
        guard poll(&polled, nfds_t(polled.count), -1) >= 0 || errno == EINTR else { break }
        for entry in polled where entry.revents != 0 {
            if entry.fd == stdin[1] {
                // A child that stops reading is EPIPE here, not a SIGPIPE that ends the tests.
                let written = withoutSIGPIPE { pending.withUnsafeBytes { write(entry.fd, $0.baseAddress, $0.count) } }
                if written > 0 { pending.removeFirst(written) }
                if written < 0 && errno != EINTR && errno != EAGAIN || pending.isEmpty { close(stdin[1]); stdin[1] = -1 }
                continue
            }
            let slot = entry.fd == stdout[0] ? 0 : 1
            let count = read(entry.fd, &buffer, buffer.count)
            if count > 0 {
                collected[slot] += buffer[..<count]
            } else if count == 0 || errno != EINTR && errno != EAGAIN {
                close(entry.fd)
                if slot == 0 { stdout[0] = -1 } else { stderr[0] = -1 }
            }
        }
    }
    let termination = child.wait()
    let output = String(decoding: collected[0], as: UTF8.self)
    let error = String(decoding: collected[1], as: UTF8.self)
    if check && termination.status != 0 {
        throw ToolError(description: "\(program) \(arguments.joined(separator: " ")) exited with \(termination.status): \(error)")
    }
    return (termination.status, output, error)
}

/// ``run(_:_:input:environment:)`` for async code: the program is waited
/// for on a thread of its own, not on one of the few threads of the
/// cooperative pool, which every other test running at once needs for its
/// tasks (a reconciler's, a container's supervision).
@discardableResult
public func run(_ program: String, _ arguments: [String], input: Data? = nil, environment: [String: String]? = nil) async throws -> String {
    try await runWithStatus(program, arguments, input: input, environment: environment, check: true).output
}

/// ``runWithStatus(_:_:input:environment:check:)`` for async code, waiting
/// off the cooperative pool.
public func runWithStatus(_ program: String, _ arguments: [String], input: Data? = nil, environment: [String: String]? = nil, check: Bool = false)
    async throws -> (status: Int32, output: String, error: String)
{
    try await onOwnThread {
        Result { try runWithStatus(program, arguments, input: input, environment: environment, check: check) as (status: Int32, output: String, error: String) }
    }.get()
}

public func write(_ text: String, to path: String) throws {
    try FileManager.default.createDirectory(atPath: Sys.parentDirectory(of: path), withIntermediateDirectories: true)
    try Data(text.utf8).write(to: URL(fileURLWithPath: path))
}

public func readText(_ path: String) throws -> String {
    try String(contentsOfFile: path, encoding: .utf8)
}

/// A small root filesystem around the static busybox: a shell and common
/// applets, /etc/passwd and /etc/group with root and nobody, /tmp (1777).
public func makeBusyboxRootfs(_ directory: String, applets: [String] = []) throws {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"].first { FileManager.default.isExecutableFile(atPath: $0) }
    guard let binary = busybox else { throw ToolError(description: "busybox-static is not installed") }
    for sub in ["bin", "etc", "tmp", "root", "var/empty"] {
        try FileManager.default.createDirectory(atPath: directory + "/" + sub, withIntermediateDirectories: true)
    }
    try FileManager.default.copyItem(atPath: binary, toPath: directory + "/bin/busybox")
    let standard = ["sh", "ls", "cat", "echo", "true", "false", "sleep", "wget", "httpd", "id", "env"]
    for applet in Set(standard + applets) {
        try FileManager.default.createSymbolicLink(atPath: directory + "/bin/" + applet, withDestinationPath: "busybox")
    }
    try write("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/var/empty:/bin/false\n", to: directory + "/etc/passwd")
    try write("root:x:0:\nnogroup:x:65534:\n", to: directory + "/etc/group")
    chmod(directory + "/tmp", 0o1777)
}

/// Removes the (empty) cgroup parent the CLI tests use, in every hierarchy;
/// with `children`, the empty cgroups below it first (only for a parent no
/// other test is using: another's container may be about to join one).
public func removeCLICgroupParent(_ parent: String, children: Bool = false) {
    for hierarchy in ["memory", "pids", "cpu", "cpuacct", "freezer", "cpuset", "blkio", "devices", "systemd", "unified", ""] {
        let directory = "/sys/fs/cgroup/\(hierarchy)/\(parent)"
        if children {
            let below = ((try? FileManager.default.subpathsOfDirectory(atPath: directory)) ?? [])
                .filter { (try? FileManager.default.attributesOfItem(atPath: directory + "/" + $0)[.type] as? FileAttributeType) == .typeDirectory }
            for child in below.sorted(by: { $0.count > $1.count }) { rmdir(directory + "/" + child) }
        }
        rmdir(directory)
    }
}

/// Sends `GET /` to host:port and returns the response, retrying while
/// the server starts.
public func httpGet(port: UInt16, host: String = "127.0.0.1", attempts: Int = 50) async -> String? {
    for attempt in 0 ..< attempts {
        if attempt > 0 { try? await Task.sleep(for: .milliseconds(100)) }
        if let response = exchange(SOCK_STREAM, host: host, port: port, Array("GET / HTTP/1.0\r\n\r\n".utf8)) { return response }
    }
    return nil
}

/// Sends `GET /` to host:port once, on the calling thread (blocking: for
/// threads of a test's own, never the cooperative pool); the response, or
/// nil when it failed.
public func httpGetBlocking(port: UInt16, host: String = "127.0.0.1") -> String? {
    exchange(SOCK_STREAM, host: host, port: port, Array("GET / HTTP/1.0\r\n\r\n".utf8))
}

/// Sends a datagram to 127.0.0.1:port and returns the answer, retrying while the server starts.
public func udpExchange(port: UInt16, _ message: String) async -> String? {
    for attempt in 0 ..< 50 {
        if attempt > 0 { try? await Task.sleep(for: .milliseconds(100)) }
        if let answer = exchange(SOCK_DGRAM, host: "127.0.0.1", port: port, Array(message.utf8)) { return answer }
    }
    return nil
}

private func exchange(_ type: __socket_type, host: String, port: UInt16, _ request: [UInt8]) -> String? {
    let fd = socket(AF_INET, Int32(type.rawValue), 0)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var timeout = timeval(tv_sec: 0, tv_usec: 500_000)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = port.bigEndian
    address.sin_addr.s_addr = (IPv4Address(host)?.value ?? 0).bigEndian
    let connected = withUnsafePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
    }
    guard connected, send(fd, request, request.count, 0) == request.count else { return nil }
    var response: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let count = recv(fd, &buffer, buffer.count, 0)
        if count <= 0 { break }
        response += buffer[..<count]
        if type == SOCK_DGRAM { break }
    }
    return response.isEmpty ? nil : String(decoding: response, as: UTF8.self)
}

/// Every regular file under `path` (relative paths) that holds `needle`:
/// where a value that must be written nowhere would have been written.
public func filesHolding(_ needle: String, under path: String) -> [String] {
    guard let enumerator = FileManager.default.enumerator(atPath: path) else { return [] }
    var found: [String] = []
    while let entry = enumerator.nextObject() as? String {
        var info = stat()
        guard lstat(path + "/" + entry, &info) == 0, info.st_mode & S_IFMT == S_IFREG,
              let data = FileManager.default.contents(atPath: path + "/" + entry) else { continue }
        if data.range(of: Data(needle.utf8)) != nil { found.append(entry) }
    }
    return found
}

/// The MD5 checksum `md5sum` prints for `text`: what a container prints in
/// place of a secret, so that its log may be searched for the secret.
public func md5Hex(_ text: String) async throws -> String {
    String(try await run("md5sum", [], input: Data(text.utf8)).prefix(32))
}

/// Runs this test binary's tests matching `filter` as the ordinary `user`,
/// with `home` as its home, `home/data` as `XDG_DATA_HOME` and `home/run`
/// as `XDG_RUNTIME_DIR`, and `environment` besides; returns the exit
/// status and the runner's report.
public func runTests(asUser user: String, home: String, filter: String, environment: [String: String] = [:]) async throws -> (status: Int32, report: String) {
    let variables = ["PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + home, "TMPDIR=/tmp", "XDG_DATA_HOME=" + home + "/data",
                     "XDG_RUNTIME_DIR=" + home + "/run"] + environment.sorted { $0.key < $1.key }.map { $0.key + "=" + $0.value }
    let (status, output, error) = try await runWithStatus("/usr/sbin/runuser", ["-u", user, "--", "env", "-i"] + variables + [
        CommandLine.arguments[0], "--testing-library", "swift-testing", "--filter", filter,
    ])
    // The test runner reports on its standard error.
    return (status, output + error)
}

/// The processes `user` still has once they had 2 s to end (an init whose
/// launcher ended is reaped by the host's init a moment later), as `ps`
/// lists them; empty when none.
public func processesLeft(of user: String) async throws -> String {
    var left = ""
    for _ in 0 ..< 100 {
        left = try await runWithStatus("/bin/ps", ["-o", "pid=,args=", "-u", user]).output
        if left.isEmpty { break }
        try await Task.sleep(for: .milliseconds(20))
    }
    return left
}
