import Foundation
import Testing
@testable import OCIImage

extension Trait where Self == ConditionTrait {
    /// For tests that set owners, create device nodes or mount file systems.
    static var requiresRoot: Self {
        .enabled(if: geteuid() == 0, "needs root: it sets file owners, creates device nodes or mounts (CI runs as root)")
    }
}

/// Runs `body` with a fresh directory under /tmp, then checks that nothing
/// is left open or mounted inside it and removes it.
func withTemporaryDirectory<T>(_ label: String = "test", _ body: (String) async throws -> T) async throws -> T {
    let path = "/tmp/gantry-\(label)-\(UUID().uuidString.prefix(8).lowercased())"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
    func cleanUp() {
        for mount in mounts(under: path).reversed() { _ = try? run("umount", ["-l", mount]) }
        try? Sys.removeTree(path)
    }
    do {
        let result = try await body(path)
        // Work offloaded to other threads may release its last references
        // (and so close its files) a moment after the caller resumes.
        for _ in 0..<200 where !openDescriptors(under: path).isEmpty {
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(openDescriptors(under: path).isEmpty, "file descriptors left open under \(path)")
        #expect(mounts(under: path).isEmpty, "mounts left under \(path)")
        cleanUp()
        return result
    } catch {
        cleanUp()
        throw error
    }
}

/// The targets of this process's open descriptors that lie under `path`.
func openDescriptors(under path: String) -> [String] {
    let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
    return fds.compactMap { try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\($0)") }
        .filter { $0 == path || $0.hasPrefix(path + "/") }
}

/// Mount points under `path`.
func mounts(under path: String) -> [String] {
    guard let text = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return [] }
    return text.split(separator: "\n").compactMap { line in
        let fields = line.split(separator: " ")
        guard fields.count > 4 else { return nil }
        let point = String(fields[4])
        return point == path || point.hasPrefix(path + "/") ? point : nil
    }
}

struct ToolError: Error, CustomStringConvertible {
    var description: String
}

/// Runs a program found on PATH; returns its standard output.
/// Throws with its standard error when it exits non-zero.
@discardableResult
func run(_ program: String, _ arguments: [String], input: Data? = nil, environment: [String: String]? = nil) throws -> String {
    try runWithStatus(program, arguments, input: input, environment: environment, check: true).output
}

func runWithStatus(_ program: String, _ arguments: [String], input: Data? = nil, environment: [String: String]? = nil, check: Bool = false)
    throws -> (status: Int32, output: String, error: String)
{
    let process = Process()
    process.executableURL = URL(fileURLWithPath: program.hasPrefix("/") ? program : "/usr/bin/env")
    process.arguments = program.hasPrefix("/") ? arguments : [program] + arguments
    if let environment { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
    let stdout = Pipe()
    let stderr = Pipe()
    let stdin = Pipe()
    process.standardOutput = stdout
    process.standardError = stderr
    process.standardInput = stdin
    try process.run()
    if let input { stdin.fileHandleForWriting.write(input) }
    try stdin.fileHandleForWriting.close()
    // Read both pipes concurrently so that neither can fill up and block the child.
    let errorData = LockedData()
    let group = DispatchGroup()
    group.enter()
    DispatchQueue.global().async {
        errorData.set(stderr.fileHandleForReading.readDataToEndOfFile())
        group.leave()
    }
    let outputData = stdout.fileHandleForReading.readDataToEndOfFile()
    group.wait()
    process.waitUntilExit()
    let output = String(decoding: outputData, as: UTF8.self)
    let error = String(decoding: errorData.get(), as: UTF8.self)
    if check && process.terminationStatus != 0 {
        throw ToolError(description: "\(program) \(arguments.joined(separator: " ")) exited with \(process.terminationStatus): \(error)")
    }
    return (process.terminationStatus, output, error)
}

final class LockedData: @unchecked Sendable {
    private let lock = NSLock()
    private var data = Data()
    func set(_ value: Data) { lock.withLock { data = value } }
    func get() -> Data { lock.withLock { data } }
}

/// The directory holding test fixtures' scripts.
let fixturesDirectory: String = {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures").path
}()

func write(_ text: String, to path: String) throws {
    try FileManager.default.createDirectory(atPath: Sys.parentDirectory(of: path), withIntermediateDirectories: true)
    try Data(text.utf8).write(to: URL(fileURLWithPath: path))
}

func readText(_ path: String) throws -> String {
    try String(contentsOfFile: path, encoding: .utf8)
}
