import Foundation
import Testing
@testable import Runtime

/// Signals by name and number, one table for the command line, compose
/// files and the library; stored as the numbers they always were.
@Suite struct SignalTests {
    @Test(arguments: [
        ("TERM", Signal.terminate), ("SIGTERM", .terminate), ("sigterm", .terminate), ("15", .terminate),
        ("KILL", .kill), ("usr1", .user1), ("SIGHUP", .hangup), ("IOT", .abort), ("RTMIN", 34), ("SIGRTMIN+3", 37), ("RTMAX-1", 63),
    ])
    func namesAndNumbersParse(_ text: String, _ expected: Signal) {
        #expect(Signal(parsing: text) == expected)
    }

    @Test(arguments: ["", "0", "65", "-9", "SIGFOO", "RTMIN+40", "RTMIN-1", "RTMAX+1", "TERM "])
    func anythingElseIsRefused(_ text: String) {
        #expect(Signal(parsing: text) == nil)
    }

    @Test func namesAreTheKernelsAndExitsReadWell() {
        #expect(Signal.terminate.name == "SIGTERM")
        #expect(Signal.abort.name == "SIGABRT")
        #expect(Signal(37).name == "SIGRTMIN+3")
        #expect(ProcessExit.signaled(.kill).description == "killed by SIGKILL")
        #expect(ProcessExit.signaled(.kill).shellStatus == 137)
    }

    @Test func storedAsTheNumberRecordsAlwaysHeld() throws {
        let exit = ContainerExit(status: .signaled(.terminate), reason: .stopped)
        let json = String(decoding: try JSONEncoder().encode(exit), as: UTF8.self)
        #expect(json.contains("15"), "\(json)")
        let old = #"{"status":{"signaled":{"_0":9}},"reason":"oomKilled"}"#
        let decoded = try JSONDecoder().decode(ContainerExit.self, from: Data(old.utf8))
        #expect(decoded.status == .signaled(.kill))
    }
}
