import Foundation
import GantryTestSupport
import Testing
@testable import Runtime

/// A container's standard input from async code: given without holding the
/// cooperative pool, and a container that stops reading is reported with
/// how it ended.
@Suite(.requiresRoot) struct InputTests {
    @Test func oneCallRunGivesInputAndReturnsBothOutputs() async throws {
        try await withRuntime("run-input") { runtime, _ in
            // More than a pipe holds, both ways: the input is given while the output is read.
            let input = [UInt8](repeating: UInt8(ascii: "x"), count: 300_000) + Array("\n".utf8)
            let result = try await runtime.run(shell("cat; echo done >&2"), input: input)
            #expect(result.exit.code == 0)
            #expect(result.stdout == input)
            #expect(result.standardError == "done\n")
            #expect(result.inputError == nil)
            #expect(try runtime.list().isEmpty)
        }
    }

    @Test func aContainerThatStopsReadingSaysHowItEnded() async throws {
        try await withRuntime("run-input-early") { runtime, _ in
            let input = [UInt8](repeating: 0x61, count: 1 << 20)
            let early = try await runtime.run(shell("head -c 1 >/dev/null; exit 4"), input: input)
            #expect(early.exit.code == 4)
            let error = try #require(early.inputError)
            #expect(error.message.contains("exited with 4 before reading all its input"), "\(error)")
            #expect(error.systemError == .brokenPipe)
            // A time limit ends one that never reads: the error says so, not only "broken pipe".
            let limited = try await runtime.run(shell("sleep 600").timeout(.milliseconds(300)), input: input)
            #expect(limited.exit.reason == .timedOut)
            #expect(limited.inputError?.message.contains("timedOut") == true, "\(String(describing: limited.inputError))")
            #expect(try runtime.list().isEmpty)
        }
    }

    @Test func outputBeyondTheLimitIsRefusedAndTheContainerRemoved() async throws {
        try await withRuntime("run-output-limit") { runtime, _ in
            await #expect(throws: RuntimeError.self) {
                try await runtime.run(shell("yes"), input: [UInt8](), maximumOutputBytes: 1 << 16)
            }
            let left = try runtime.list()
            #expect(left.isEmpty)
        }
    }
}
