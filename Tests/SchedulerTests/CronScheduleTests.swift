import Testing
import Foundation
@testable import Scheduler

/// An instant given by its wall-clock reading in an explicit zone. Only used
/// for readings that occur exactly once in that zone.
private func date(_ year: Int, _ month: Int, _ day: Int, _ hour: Int = 0, _ minute: Int = 0, in zone: String = "UTC") -> Date {
    var calendar = Calendar(identifier: .gregorian)
    calendar.timeZone = TimeZone(identifier: zone)!
    return calendar.date(from: DateComponents(year: year, month: month, day: day, hour: hour, minute: minute))!
}

/// The first `count` fire times of `text` read in `zone`, after `start`.
private func fires(_ text: String, after start: Date, count: Int, zone: String = "UTC") throws -> [Date] {
    try CronSchedule(text, timeZoneIdentifier: zone).fireTimes(after: start, through: .distantFuture, limit: count)
}

/// The message of the error parsing `text` throws, checking its code.
private func message(_ text: String) -> String? {
    do {
        _ = try CronSchedule(text, timeZoneIdentifier: "UTC")
        return nil
    } catch let error as SchedulerError {
        #expect(error.code == .invalidSchedule)
        return error.message
    } catch {
        return "\(error)"
    }
}

@Suite struct CronScheduleTests {
    /// 2026-01-15, a Thursday, 10:00 UTC.
    let start = date(2026, 1, 15, 10, 0)

    @Test func parsesNumbersListsRangesAndSteps() throws {
        #expect(try fires("5 * * * *", after: start, count: 2) == [date(2026, 1, 15, 10, 5), date(2026, 1, 15, 11, 5)])
        #expect(try fires("*/20 * * * *", after: start, count: 3)
            == [date(2026, 1, 15, 10, 20), date(2026, 1, 15, 10, 40), date(2026, 1, 15, 11, 0)])
        #expect(try fires("10-12 * * * *", after: start, count: 4)
            == [date(2026, 1, 15, 10, 10), date(2026, 1, 15, 10, 11), date(2026, 1, 15, 10, 12), date(2026, 1, 15, 11, 10)])
        #expect(try fires("1,2,30 * * * *", after: start, count: 3)
            == [date(2026, 1, 15, 10, 1), date(2026, 1, 15, 10, 2), date(2026, 1, 15, 10, 30)])
        #expect(try fires("0,30 9-10/1 * * *", after: start, count: 2) == [date(2026, 1, 15, 10, 30), date(2026, 1, 16, 9, 0)])
        #expect(try fires("0 */6 * * *", after: start, count: 3)
            == [date(2026, 1, 15, 12), date(2026, 1, 15, 18), date(2026, 1, 16, 0)])
        #expect(try fires("? ? ? ? ?", after: start, count: 1) == [date(2026, 1, 15, 10, 1)])
    }

    @Test func stepsOverRangesAndFromAStart() throws {
        #expect(try fires("10-30/10 * * * *", after: start, count: 4)
            == [date(2026, 1, 15, 10, 10), date(2026, 1, 15, 10, 20), date(2026, 1, 15, 10, 30), date(2026, 1, 15, 11, 10)])
        // `a/n` runs from a through the end of the field.
        #expect(try fires("50/5 * * * *", after: start, count: 3)
            == [date(2026, 1, 15, 10, 50), date(2026, 1, 15, 10, 55), date(2026, 1, 15, 11, 50)])
        #expect(try fires("0 0 1 FEB/5 *", after: start, count: 4)
            == [date(2026, 2, 1), date(2026, 7, 1), date(2026, 12, 1), date(2027, 2, 1)])
    }

    @Test func acceptsMonthAndDayNamesInAnyCase() throws {
        #expect(try fires("0 0 1 jan,Jul *", after: start, count: 2) == [date(2026, 7, 1), date(2027, 1, 1)])
        // 2026-01-16 is a Friday.
        #expect(try fires("0 0 * * MON-fri", after: date(2026, 1, 16), count: 2) == [date(2026, 1, 19), date(2026, 1, 20)])
    }

    @Test func sevenIsSunday() throws {
        let sundays = [date(2026, 1, 18), date(2026, 1, 25)]
        #expect(try fires("0 0 * * 0", after: start, count: 2) == sundays)
        #expect(try fires("0 0 ? * 7", after: start, count: 2) == sundays)
        #expect(try fires("0 0 * * 5-7", after: start, count: 4)
            == [date(2026, 1, 16), date(2026, 1, 17), date(2026, 1, 18), date(2026, 1, 23)])
    }

    @Test func nextIsStrictlyAfter() throws {
        #expect(try fires("0 10 * * *", after: start, count: 1) == [date(2026, 1, 16, 10)])
        #expect(try fires("* * * * *", after: start + 0.5, count: 1) == [date(2026, 1, 15, 10, 1)])
    }

    @Test(arguments: [
        ("@yearly", "0 0 1 1 *"), ("@annually", "0 0 1 1 *"), ("@monthly", "0 0 1 * *"), ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"), ("@midnight", "0 0 * * *"), ("@hourly", "0 * * * *"),
    ])
    func descriptorsMatchTheirFields(descriptor: String, fields: String) throws {
        #expect(try fires(descriptor, after: start, count: 30) == fires(fields, after: start, count: 30))
    }

    @Test func monthsWithoutTheDayAreSkipped() throws {
        #expect(try fires("0 0 31 * *", after: date(2026, 1, 31), count: 5)
            == [date(2026, 3, 31), date(2026, 5, 31), date(2026, 7, 31), date(2026, 8, 31), date(2026, 10, 31)])
    }

    @Test func leapDays() throws {
        #expect(try fires("0 0 29 2 *", after: date(2025, 1, 1), count: 2) == [date(2028, 2, 29), date(2032, 2, 29)])
        // 2100 is not a leap year: eight years pass between leap days.
        #expect(try fires("0 0 29 2 *", after: date(2097, 1, 1), count: 1) == [date(2104, 2, 29)])
    }

    @Test func dayOfMonthOrDayOfWeekWhenBothAreRestricted() throws {
        // Every 13th and every Friday (2026-02-06, 13, 20, 27 are Fridays).
        #expect(try fires("0 0 13 * 5", after: date(2026, 2, 1), count: 6)
            == [date(2026, 2, 6), date(2026, 2, 13), date(2026, 2, 20), date(2026, 2, 27), date(2026, 3, 6), date(2026, 3, 13)])
        // A stepped star is restricted: odd days or Mondays (2026-02-02, 09).
        #expect(try fires("0 0 */2 * 1", after: date(2026, 2, 1), count: 5)
            == [date(2026, 2, 2), date(2026, 2, 3), date(2026, 2, 5), date(2026, 2, 7), date(2026, 2, 9)])
    }

    @Test func anUnrestrictedDayFieldHasNoEffect() throws {
        let fridays = [date(2026, 2, 6), date(2026, 2, 13)]
        #expect(try fires("0 0 * * 5", after: date(2026, 2, 1), count: 2) == fridays)
        #expect(try fires("0 0 ? * 5", after: date(2026, 2, 1), count: 2) == fridays)
        #expect(try fires("0 0 */1 * 5", after: date(2026, 2, 1), count: 2) == fridays)
        #expect(try fires("0 0 13 * *", after: date(2026, 2, 1), count: 2) == [date(2026, 2, 13), date(2026, 3, 13)])
        #expect(try fires("0 0 13 * ?", after: date(2026, 2, 1), count: 2) == [date(2026, 2, 13), date(2026, 3, 13)])
    }

    @Test func zonePrefixOverridesTheZoneGiven() throws {
        let schedule = try CronSchedule("CRON_TZ=America/New_York 0 9 * * *", timeZone: TimeZone(identifier: "UTC")!)
        #expect(schedule.timeZone.identifier == "America/New_York")
        #expect(schedule.text == "CRON_TZ=America/New_York 0 9 * * *")
        #expect(schedule.description == schedule.text)
        #expect(schedule.next(after: date(2026, 1, 15)) == date(2026, 1, 15, 9, in: "America/New_York"))
        #expect(schedule.next(after: date(2026, 1, 15)) == date(2026, 1, 15, 14))  // EST, UTC-5
        #expect(schedule.next(after: date(2026, 7, 15)) == date(2026, 7, 15, 13))  // EDT, UTC-4
        let tokyo = try CronSchedule("TZ=Asia/Tokyo 0 9 * * *", timeZoneIdentifier: "Europe/Berlin")
        #expect(tokyo.timeZone.identifier == "Asia/Tokyo")
        #expect(tokyo.next(after: date(2026, 1, 15)) == date(2026, 1, 16, 0))
    }

    @Test func equalityIgnoresThePrefixAndSpacing() throws {
        let prefixed = try CronSchedule("CRON_TZ=America/New_York 0 9 * * *")
        let plain = try CronSchedule("0  9 * * *", timeZoneIdentifier: "America/New_York")
        #expect(prefixed == plain)
        #expect(prefixed.hashValue == plain.hashValue)
        #expect(try prefixed != CronSchedule("0 9 * * *", timeZoneIdentifier: "Europe/Berlin"))
        #expect(try prefixed != CronSchedule("0 10 * * *", timeZoneIdentifier: "America/New_York"))
    }

    /// Europe/Berlin, 2026-03-29 01:00 UTC: clocks go from 02:00 CET to 03:00 CEST.
    @Test func springForwardFiresOnceAtTheEndOfTheGap() throws {
        let gapEnd = date(2026, 3, 29, 1, 0)
        #expect(gapEnd == date(2026, 3, 29, 3, 0, in: "Europe/Berlin"))
        #expect(try fires("30 2 * * *", after: date(2026, 3, 28, 12), count: 2, zone: "Europe/Berlin")
            == [gapEnd, date(2026, 3, 30, 0, 30)])
        // 02:00, 02:15, 02:30, 02:45 and 03:00 all fire as one, at 03:00.
        #expect(try fires("*/15 * * * *", after: date(2026, 3, 29, 0, 40), count: 3, zone: "Europe/Berlin")
            == [date(2026, 3, 29, 0, 45), gapEnd, date(2026, 3, 29, 1, 15)])
        #expect(try fires("0 * * * *", after: date(2026, 3, 28, 23, 30), count: 3, zone: "Europe/Berlin")
            == [date(2026, 3, 29, 0, 0), gapEnd, date(2026, 3, 29, 2, 0)])
        #expect(try fires("30 3 * * *", after: date(2026, 3, 28, 12), count: 1, zone: "Europe/Berlin") == [date(2026, 3, 29, 1, 30)])
        #expect(try CronSchedule("30 2 * * *", timeZoneIdentifier: "Europe/Berlin").next(after: gapEnd) == date(2026, 3, 30, 0, 30))
        // The local day has 23 hours, and the four quarters of the missing hour fire once.
        let day = try CronSchedule("*/15 * * * *", timeZoneIdentifier: "Europe/Berlin")
            .fireTimes(after: date(2026, 3, 28, 23, 0) - 1, through: date(2026, 3, 29, 22, 0) - 1, limit: 1000)
        #expect(day.count == 23 * 4)
    }

    @Test func springForwardInNewYork() throws {
        // 2026-03-08 07:00 UTC: 02:00 EST becomes 03:00 EDT.
        #expect(try fires("30 2 * * *", after: date(2026, 3, 7, 12), count: 2, zone: "America/New_York")
            == [date(2026, 3, 8, 7, 0), date(2026, 3, 9, 6, 30)])
    }

    /// Europe/Berlin, 2026-10-25 01:00 UTC: clocks go from 03:00 CEST back to
    /// 02:00 CET, so 02:00-02:59 is read first at 00:00-00:59 UTC, then again
    /// at 01:00-01:59 UTC.
    @Test func fallBackFiresOnlyAtTheFirstOccurrence() throws {
        #expect(try fires("30 2 * * *", after: date(2026, 10, 24, 12), count: 2, zone: "Europe/Berlin")
            == [date(2026, 10, 25, 0, 30), date(2026, 10, 26, 1, 30)])
        #expect(try fires("0 * * * *", after: date(2026, 10, 24, 23, 30), count: 3, zone: "Europe/Berlin")
            == [date(2026, 10, 25, 0, 0), date(2026, 10, 25, 2, 0), date(2026, 10, 25, 3, 0)])
        #expect(try fires("*/15 * * * *", after: date(2026, 10, 25, 0, 40), count: 3, zone: "Europe/Berlin")
            == [date(2026, 10, 25, 0, 45), date(2026, 10, 25, 2, 0), date(2026, 10, 25, 2, 15)])
        // Asked during the second pass, nothing more fires until 03:00 CET.
        #expect(try fires("*/15 * * * *", after: date(2026, 10, 25, 1, 10), count: 1, zone: "Europe/Berlin") == [date(2026, 10, 25, 2, 0)])
        #expect(try fires("30 2 * * *", after: date(2026, 10, 25, 1, 0), count: 1, zone: "Europe/Berlin") == [date(2026, 10, 26, 1, 30)])
        // The local day has 25 hours but fires at 24 × 4 wall-clock quarters.
        let day = try CronSchedule("*/15 * * * *", timeZoneIdentifier: "Europe/Berlin")
            .fireTimes(after: date(2026, 10, 24, 22, 0) - 1, through: date(2026, 10, 25, 23, 0) - 1, limit: 1000)
        #expect(day.count == 24 * 4)
    }

    @Test(arguments: ["0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 0 31 2 ?"])
    func neverMatchingGivesNilQuickly(text: String) throws {
        let schedule = try CronSchedule(text, timeZoneIdentifier: "Europe/Berlin")
        let clock = ContinuousClock()
        let began = clock.now
        #expect(schedule.next(after: date(2026, 1, 1)) == nil)
        #expect(schedule.fireTimes(after: date(2026, 1, 1), through: .distantFuture, limit: 5).isEmpty)
        #expect(clock.now - began < .seconds(1))
    }

    @Test func fireTimesStopsAtTheLimitAndTheEnd() throws {
        let hourly = try CronSchedule("0 * * * *", timeZoneIdentifier: "UTC")
        #expect(hourly.fireTimes(after: start, through: date(2026, 1, 15, 20), limit: 3)
            == [date(2026, 1, 15, 11), date(2026, 1, 15, 12), date(2026, 1, 15, 13)])
        #expect(hourly.fireTimes(after: start, through: date(2026, 1, 15, 12), limit: 10) == [date(2026, 1, 15, 11), date(2026, 1, 15, 12)])
        #expect(hourly.fireTimes(after: start, through: date(2026, 1, 15, 20), limit: 0).isEmpty)
        #expect(hourly.fireTimes(after: start, through: date(2026, 1, 14), limit: 5).isEmpty)
    }

    @Test func codesAsAStringThatKeepsTheZone() throws {
        let schedules = [
            try CronSchedule("CRON_TZ=America/New_York 0 9 * * *"),
            try CronSchedule("0 9 * * *", timeZoneIdentifier: "Asia/Tokyo"),
        ]
        let data = try JSONEncoder().encode(schedules)
        #expect(try JSONDecoder().decode([String].self, from: data) == ["CRON_TZ=America/New_York 0 9 * * *", "CRON_TZ=Asia/Tokyo 0 9 * * *"])
        let decoded = try JSONDecoder().decode([CronSchedule].self, from: data)
        #expect(decoded == schedules)
        #expect(decoded[1].timeZone.identifier == "Asia/Tokyo")
        #expect(throws: DecodingError.self) { try JSONDecoder().decode([CronSchedule].self, from: Data(#"["61 * * * *"]"#.utf8)) }
    }

    @Test(arguments: [
        ("61 * * * *", #"cron schedule "61 * * * *": minute 61 is outside 0-59"#),
        ("* 24 * * *", "hour 24 is outside 0-23"),
        ("* * 0 * *", "day-of-month 0 is outside 1-31"),
        ("* * 32 * *", "day-of-month 32 is outside 1-31"),
        ("* * * 13 *", "month 13 is outside 1-12"),
        ("* * * * 8", "day-of-week 8 is outside 0-7"),
        ("99999999999999999999 * * * *", "minute 99999999999999999999 is outside 0-59"),
        ("*/0 * * * *", #"minute step in "*/0" is 0"#),
        ("* 5-2 * * *", #"hour range "5-2" starts after it ends"#),
        ("0 0 * * 7-1", #"day-of-week range "7-1" starts after it ends"#),
        ("1,,2 * * * *", #"minute list "1,,2" has an empty item"#),
        ("1, * * * *", #"minute list "1," has an empty item"#),
        ("* * * FOO *", #"month "FOO" is not a number or a name (JAN-DEC)"#),
        ("* * * * FRIDAY", #"day-of-week "FRIDAY" is not a number or a name (SUN-SAT)"#),
        ("0 12 L * *", #"day-of-month "L" is not a number"#),
        ("JAN * * * *", #"minute "JAN" is not a number"#),
        ("+5 * * * *", #"minute "+5" is not a number"#),
        ("*-5 * * * *", #"minute "*" is not a number"#),
        ("-5 * * * *", #"minute "-5" is missing a number"#),
        ("/5 * * * *", #"minute "/5" is missing a number"#),
        ("1-2-3 * * * *", #"minute "1-2-3" has more than one "-""#),
        ("*/2/3 * * * *", #"minute "*/2/3" has more than one "/""#),
        ("*/x * * * *", #"minute step "x" in "*/x" is not a number"#),
        ("*/ * * * *", #"minute step "" in "*/" is not a number"#),
        ("0 12 L", "expected 5 fields (minute hour day-of-month month day-of-week), found 3"),
        ("* * * *", "found 4"),
        ("0 * * * * *", "found 6"),
        ("", "the schedule is empty"),
        ("   ", "the schedule is empty"),
        ("@every 5m", "interval schedules (@every) are not supported"),
        ("@reboot", #"unknown descriptor "@reboot""#),
        ("@Daily", #"unknown descriptor "@Daily""#),
        ("@daily 5", #"unknown descriptor "@daily 5""#),
        ("CRON_TZ=Mars/Olympus 0 3 * * *", #"unknown time zone "Mars/Olympus""#),
        ("CRON_TZ= 0 3 * * *", "CRON_TZ= names no time zone"),
        ("TZ=Europe/Berlin", "no schedule follows TZ=Europe/Berlin"),
    ])
    func rejectsNamingTheFieldAndText(text: String, expected: String) {
        let found = message(text)
        #expect(found?.hasPrefix("cron schedule \"\(text)\": ") == true)
        #expect(found?.contains(expected) == true, "\(found ?? "no error")")
    }

    @Test func everySaysWhyItIsRejected() {
        let found = message("@every 5m") ?? ""
        #expect(found.contains("Kubernetes CronJob"))
        #expect(found.contains("*/5 * * * *"))
    }

    @Test func rejectsAnUnknownZoneIdentifier() {
        let error = #expect(throws: SchedulerError.self) {
            try CronSchedule("0 3 * * *", timeZoneIdentifier: "Nowhere/Land")
        }
        #expect(error?.code == .invalidSchedule)
        #expect(error?.message == #"cron schedule "0 3 * * *": unknown time zone "Nowhere/Land""#)
    }
}
