import Testing
@testable import Scheduler

@Suite struct ResourceQuantityTests {
    @Test(arguments: [
        ("1", 1000), ("0.5", 500), ("500m", 500), ("2.25", 2250), (".5", 500),
        ("1Ki", 1024 * 1000), ("256Mi", 256 * 1_048_576 * 1000), ("1.5Gi", 1_610_612_736 * 1000),
        ("1k", 1_000_000), ("2G", 2_000_000_000_000),
    ] as [(String, Int64)])
    func parses(text: String, millis: Int64) throws {
        #expect(try ResourceQuantity(parsing: text).milliValue == millis)
    }

    @Test(arguments: ["", "-1", "abc", "1.2.3", "1X", "0.0001", "m", "99999999999999999999", "9Ei"])
    func rejects(text: String) {
        #expect(throws: SchedulerError.self) { try ResourceQuantity(parsing: text) }
    }

    @Test func roundsUpToWholeUnits() throws {
        #expect(try ResourceQuantity(parsing: "1500m").value == 2)
        #expect(try ResourceQuantity(parsing: "64Mi").value == 67_108_864)
        #expect(try ResourceQuantity(parsing: "1500m").description == "1500m")
        #expect(try ResourceQuantity(parsing: "2").description == "2")
    }
}
