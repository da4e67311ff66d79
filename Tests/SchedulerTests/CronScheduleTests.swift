import Foundation
import Testing
@testable import Scheduler

private let utc = TimeZone(identifier: "UTC")!
private let berlin = TimeZone(identifier: "Europe/Berlin")!

/// A wall time in a zone, as an instant.
private func date(_ year: Int, _ month: Int, _ day: Int, _ hour: Int = 0, _ minute: Int = 0, in zone: TimeZone = utc) -> Date {
    var calendar = Calendar(identifier: .gregorian)
    calendar.timeZone = zone
    return calendar.date(from: DateComponents(year: year, month: month, day: day, hour: hour, minute: minute))!
}

/// The wall time of an instant in a zone, written `yyyy-MM-dd HH:mm ±hh`.
private func wall(_ date: Date?, in zone: TimeZone = utc) -> String {
    guard let date else { return "never" }
    let formatter = DateFormatter()
    formatter.locale = Locale(identifier: "en_US_POSIX")
    formatter.timeZone = zone
    formatter.dateFormat = "yyyy-MM-dd HH:mm xx"
    return formatter.string(from: date)
}

private func fires(_ text: String, after start: Date, count: Int, in zone: TimeZone = utc) throws -> [String] {
    let schedule = try CronSchedule(text, timeZone: zone)
    return schedule.fireTimes(after: start, through: start.addingTimeInterval(20 * 366 * 86_400), limit: count).map { wall($0, in: zone) }
}

@Suite struct CronScheduleTests {
    @Test func fieldsTakeNumbersNamesRangesStepsAndLists() throws {
        let start = date(2026, 1, 1)
        #expect(try fires("*/20 * * * *", after: start, count: 4) == [
            "2026-01-01 00:20 +0000", "2026-01-01 00:40 +0000", "2026-01-01 01:00 +0000", "2026-01-01 01:20 +0000"])
        #expect(try fires("5 9-17/4 * * *", after: start, count: 4) == [
            "2026-01-01 09:05 +0000", "2026-01-01 13:05 +0000", "2026-01-01 17:05 +0000", "2026-01-02 09:05 +0000"])
        #expect(try fires("0 0 1 jan,Jul *", after: start, count: 2) == ["2026-07-01 00:00 +0000", "2027-01-01 00:00 +0000"])
        // 2026-01-01 is a Thursday.
        #expect(try fires("30 8 * * MON-FRI", after: start, count: 3) == [
            "2026-01-01 08:30 +0000", "2026-01-02 08:30 +0000", "2026-01-05 08:30 +0000"])
        #expect(try fires("0 12 * * 7", after: start, count: 1) == ["2026-01-04 12:00 +0000"])
        #expect(try fires("50/5 23 * * *", after: start, count: 3) == [
            "2026-01-01 23:50 +0000", "2026-01-01 23:55 +0000", "2026-01-02 23:50 +0000"])
        #expect(try fires("0 0 ? * 1,3", after: start, count: 2) == ["2026-01-05 00:00 +0000", "2026-01-07 00:00 +0000"])
    }

    @Test func descriptorsStandForTheirFields() throws {
        let start = date(2026, 5, 17, 13, 40)
        #expect(try fires("@hourly", after: start, count: 1) == ["2026-05-17 14:00 +0000"])
        #expect(try fires("@daily", after: start, count: 1) == ["2026-05-18 00:00 +0000"])
        #expect(try fires("@midnight", after: start, count: 1) == ["2026-05-18 00:00 +0000"])
        #expect(try fires("@weekly", after: start, count: 1) == ["2026-05-24 00:00 +0000"])
        #expect(try fires("@monthly", after: start, count: 1) == ["2026-06-01 00:00 +0000"])
        #expect(try fires("@yearly", after: start, count: 1) == ["2027-01-01 00:00 +0000"])
        #expect(try fires("@annually", after: start, count: 1) == ["2027-01-01 00:00 +0000"])
    }

    @Test(arguments: [
        ("61 * * * *", "minute 61 is outside 0-59"),
        ("* 24 * * *", "hour 24 is outside 0-23"),
        ("* * 0 * *", "day-of-month 0 is outside 1-31"),
        ("* * * 13 *", "month 13 is outside 1-12"),
        ("* * * * 8", "day-of-week 8 is outside 0-7"),
        ("* * * *", "expected 5 fields"),
        ("* * * * * *", "found 6"),
        ("*/0 * * * *", "minute step in \"*/0\" is 0"),
        ("30-10 * * * *", "minute range \"30-10\" starts after it ends"),
        ("1,,2 * * * *", "has an empty item"),
        ("* * * FOO *", "month \"FOO\" is not a number or a name"),
        ("0 12 L * *", "day-of-month \"L\" is not a number"),
        ("@every 5m", "interval schedules"),
        ("@fortnightly", "unknown descriptor"),
        ("CRON_TZ=Mars/Olympus 0 0 * * *", "unknown time zone \"Mars/Olympus\""),
        ("", "empty"),
    ])
    func errorsNameTheField(text: String, message: String) {
        #expect {
            try CronSchedule(text)
        } throws: { error in
            guard let error = error as? SchedulerError else { return false }
            return error.code == .invalidSchedule && error.message.contains(message) && error.message.contains("\"\(text)\"")
        }
    }

    @Test func monthEndsAndLeapDays() throws {
        #expect(try fires("0 0 31 * *", after: date(2026, 1, 31, 1), count: 3) == [
            "2026-03-31 00:00 +0000", "2026-05-31 00:00 +0000", "2026-07-31 00:00 +0000"])
        #expect(try fires("0 0 29 2 *", after: date(2025, 1, 1), count: 2) == ["2028-02-29 00:00 +0000", "2032-02-29 00:00 +0000"])
        #expect(try fires("59 23 28-31 2 *", after: date(2026, 2, 27), count: 2) == ["2026-02-28 23:59 +0000", "2027-02-28 23:59 +0000"])
        #expect(try fires("0 0 1 * *", after: date(2026, 12, 31, 23, 59), count: 1) == ["2027-01-01 00:00 +0000"])
    }

    @Test func aScheduleThatNeverFiresEndsQuickly() throws {
        let schedule = try CronSchedule("0 0 30 2 *", timeZone: utc)
        let clock = ContinuousClock()
        let elapsed = clock.measure { #expect(schedule.next(after: date(2026, 1, 1)) == nil) }
        #expect(elapsed < .seconds(1))
        #expect(try CronSchedule("0 0 31 4,6,9,11 *").next(after: Date()) == nil)
    }

    @Test func restrictedDayOfMonthAndDayOfWeekMatchEither() throws {
        // The 13th, and every Friday; 2026-02-01 is a Sunday.
        #expect(try fires("0 0 13 * 5", after: date(2026, 2, 1), count: 4) == [
            "2026-02-06 00:00 +0000", "2026-02-13 00:00 +0000", "2026-02-20 00:00 +0000", "2026-02-27 00:00 +0000"])
        #expect(try fires("0 0 12 * 5", after: date(2026, 2, 1), count: 3) == [
            "2026-02-06 00:00 +0000", "2026-02-12 00:00 +0000", "2026-02-13 00:00 +0000"])
        // An unrestricted day-of-month leaves the weekday alone.
        #expect(try fires("0 0 * * 5", after: date(2026, 2, 1), count: 2) == ["2026-02-06 00:00 +0000", "2026-02-13 00:00 +0000"])
    }

    @Test func timeZonesPrefixesAndCoding() throws {
        let newYork = TimeZone(identifier: "America/New_York")!
        let schedule = try CronSchedule("CRON_TZ=America/New_York 0 9 * * *", timeZone: utc)
        #expect(schedule.timeZone.identifier == "America/New_York")
        #expect(wall(schedule.next(after: date(2026, 1, 10)), in: utc) == "2026-01-10 14:00 +0000")
        #expect(wall(schedule.next(after: date(2026, 7, 10)), in: utc) == "2026-07-10 13:00 +0000")
        #expect(wall(schedule.next(after: date(2026, 7, 10)), in: newYork) == "2026-07-10 09:00 -0400")
        let named = try CronSchedule("0 9 * * *", timeZoneIdentifier: "Asia/Tokyo")
        #expect(wall(named.next(after: date(2026, 1, 9, 12)), in: utc) == "2026-01-10 00:00 +0000")
        #expect(throws: SchedulerError.self) { try CronSchedule("0 9 * * *", timeZoneIdentifier: "Nowhere/Else") }
        let encoded = try JSONEncoder().encode(named)
        #expect(String(decoding: encoded, as: UTF8.self) == "\"CRON_TZ=Asia\\/Tokyo 0 9 * * *\"")
        #expect(try JSONDecoder().decode(CronSchedule.self, from: encoded) == named)
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(CronSchedule.self, from: Data("\"61 * * * *\"".utf8)) }
    }

    @Test func aSkippedWallTimeFiresOnceAfterTheGap() throws {
        // 2026-03-29: Berlin's clocks go from 02:00 to 03:00.
        let start = date(2026, 3, 28, 12, in: berlin)
        #expect(try fires("30 2 * * *", after: start, count: 3, in: berlin) == [
            "2026-03-29 03:00 +0200", "2026-03-30 02:30 +0200", "2026-03-31 02:30 +0200"])
        #expect(try fires("*/15 2-3 * * *", after: date(2026, 3, 29, 1, 50, in: berlin), count: 3, in: berlin) == [
            "2026-03-29 03:00 +0200", "2026-03-29 03:15 +0200", "2026-03-29 03:30 +0200"])
        // A schedule that matches nothing in the gap is not moved.
        #expect(try fires("0 1,4 * * *", after: start, count: 2, in: berlin) == ["2026-03-29 01:00 +0100", "2026-03-29 04:00 +0200"])
    }

    @Test func aRepeatedWallTimeFiresOnce() throws {
        // 2026-10-25: Berlin's clocks go from 03:00 back to 02:00.
        let start = date(2026, 10, 24, 12, in: berlin)
        #expect(try fires("30 2 * * *", after: start, count: 2, in: berlin) == ["2026-10-25 02:30 +0200", "2026-10-26 02:30 +0100"])
        #expect(try fires("0 * * * *", after: date(2026, 10, 25, 1, 30, in: berlin), count: 3, in: berlin) == [
            "2026-10-25 02:00 +0200", "2026-10-25 03:00 +0100", "2026-10-25 04:00 +0100"])
        // Asked from inside the repeated hour's second run, the repeated minutes are over.
        let secondRun = date(2026, 10, 25, 1, 10, in: utc)  // 02:10 +0100
        #expect(wall(try CronSchedule("*/20 * * * *", timeZone: berlin).next(after: secondRun), in: berlin) == "2026-10-25 03:00 +0100")
    }

    @Test func fireTimesStopAtTheLimitAndTheEnd() throws {
        let schedule = try CronSchedule("* * * * *", timeZone: utc)
        let start = date(2026, 1, 1)
        #expect(schedule.fireTimes(after: start, through: start.addingTimeInterval(3600), limit: 5).count == 5)
        #expect(schedule.fireTimes(after: start, through: start.addingTimeInterval(180), limit: 100).count == 3)
        #expect(schedule.fireTimes(after: start, through: start.addingTimeInterval(180), limit: 0).isEmpty)
    }
}
