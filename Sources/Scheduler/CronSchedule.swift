public import Foundation

/// A five-field cron schedule as Kubernetes CronJobs take it.
///
/// ## Syntax
///
/// A schedule is five fields separated by white space:
///
/// | field        | values                                              |
/// |--------------|-----------------------------------------------------|
/// | minute       | 0-59                                                |
/// | hour         | 0-23                                                |
/// | day-of-month | 1-31                                                |
/// | month        | 1-12 or `JAN`-`DEC`                                 |
/// | day-of-week  | 0-6 or `SUN`-`SAT`, where 7 also means Sunday        |
///
/// Names are case-insensitive. Each field is a comma-separated list of items,
/// and each item is one of:
///
/// - `*` or `?`: every value of the field;
/// - `n` or a name: that value;
/// - `a-b`: every value from `a` through `b` (`a` must not be after `b`);
/// - `*/n`, `a-b/n`: every `n`th value of the whole field or of the range,
///   starting at its beginning (`n` must be at least 1);
/// - `a/n`: every `n`th value from `a` through the end of the field.
///
/// Instead of five fields a schedule may be one of the descriptors
/// `@yearly` or `@annually` (`0 0 1 1 *`), `@monthly` (`0 0 1 * *`),
/// `@weekly` (`0 0 * * 0`), `@daily` or `@midnight` (`0 0 * * *`) and
/// `@hourly` (`0 * * * *`). Interval schedules (`@every 5m`) are rejected.
///
/// A schedule may start with `CRON_TZ=<zone>` or `TZ=<zone>`, naming an IANA
/// time zone that overrides the zone passed to the initializer.
///
/// ## Which days match
///
/// As in Vixie cron and the robfig/cron parser Kubernetes uses: when the
/// day-of-month or the day-of-week field is unrestricted (`*` or `?`, with no
/// step or a step of 1) a day must match both fields, so the unrestricted one
/// has no effect; when both are restricted a day matches when it matches
/// either. `0 0 13 * 5` fires on every 13th and on every Friday, while
/// `0 0 * * 5` fires on Fridays only. A stepped star such as `*/2` counts as
/// restricted, as it does for robfig/cron.
///
/// ## Time zones and daylight saving time
///
/// The fields are matched against the wall clock of ``timeZone``:
///
/// - A wall time that does not exist because clocks jump forward (02:30 on a
///   day they go from 02:00 to 03:00) fires once, at the first instant after
///   the gap (03:00 there), provided the schedule matches some wall time in
///   the gap. Several matches in the gap (`*/15 * * * *`) and a match at the
///   end of the gap itself all collapse into that one firing.
/// - A wall time that occurs twice because clocks fall back (01:30 on a day
///   they go from 02:00 back to 01:00) fires once, at its first occurrence.
///   While the repeated hour runs a second time nothing fires, so
///   `*/15 * * * *` fires once at each repeated wall-clock minute, not twice.
///
/// ## Limits
///
/// ``next(after:)`` skips whole months, days and hours that cannot match, so
/// it costs at most a few hundred cheap steps. It gives up and returns `nil`
/// when nothing matches within eight calendar years of its start, the
/// longest gap there can be between two February 29ths; a schedule such as
/// `0 0 30 2 *` never fires.
///
/// ## Equality and coding
///
/// Two schedules are equal when they are read in the same zone and their
/// fields are written the same, once any zone prefix and extra white space
/// are set aside. A schedule encodes as a single string: ``text`` when it
/// names its zone, otherwise ``text`` with a `CRON_TZ=` prefix naming
/// ``timeZone``, so that decoding gives back an equal schedule. A decoded
/// string without a prefix is read in the current zone.
public struct CronSchedule: Hashable, Sendable, CustomStringConvertible, Codable {
    /// The schedule as it was written, including any `CRON_TZ=` or `TZ=` prefix.
    public let text: String

    /// The zone whose wall clock the fields are matched against: the one
    /// named by a `CRON_TZ=` or `TZ=` prefix, otherwise the one given to the
    /// initializer.
    public let timeZone: TimeZone

    /// The schedule without its zone prefix, its words separated by one space.
    private let spec: String
    /// Whether ``text`` starts with a `CRON_TZ=` or `TZ=` prefix.
    private let namesItsZone: Bool
    /// The parsed fields.
    private let fields: CronFields

    /// How many calendar years past its start ``next(after:)`` searches.
    private static let searchYears = 8

    /// Parses a schedule read in `timeZone`, unless it starts with a
    /// `CRON_TZ=<zone>` or `TZ=<zone>` prefix, which wins.
    ///
    /// - Throws: ``SchedulerError`` with code `invalidSchedule` and a message
    ///   naming the field and the text at fault.
    public init(_ text: String, timeZone: TimeZone = .current) throws {
        func fail(_ why: String) -> SchedulerError {
            SchedulerError(.invalidSchedule, "cron schedule \"\(text)\": \(why)")
        }
        var rest = Substring(text).drop(while: \.isWhitespace)
        while let last = rest.last, last.isWhitespace { rest = rest.dropLast() }
        guard !rest.isEmpty else { throw fail("the schedule is empty") }

        var zone = timeZone
        var namesItsZone = false
        for key in ["CRON_TZ=", "TZ="] where rest.hasPrefix(key) {
            let afterKey = rest.dropFirst(key.count)
            let end = afterKey.firstIndex(where: \.isWhitespace) ?? afterKey.endIndex
            let identifier = String(afterKey[..<end])
            guard !identifier.isEmpty else { throw fail("\(key) names no time zone") }
            guard let named = TimeZone(identifier: identifier) else {
                throw fail("unknown time zone \"\(identifier)\" in \(key)\(identifier)")
            }
            rest = afterKey[end...].drop(while: \.isWhitespace)
            guard !rest.isEmpty else { throw fail("no schedule follows \(key)\(identifier)") }
            zone = named
            namesItsZone = true
            break
        }

        let words = rest.split(whereSeparator: \.isWhitespace)
        let fieldTexts: [Substring]
        if rest.hasPrefix("@") {
            fieldTexts = try Self.expand(descriptor: words, fail)
        } else {
            guard words.count == 5 else {
                throw fail("expected 5 fields (minute hour day-of-month month day-of-week), found \(words.count)")
            }
            fieldTexts = words
        }

        var fields = CronFields()
        (fields.minutes, _) = try Self.parse(fieldTexts[0], as: .minute, fail)
        (fields.hours, _) = try Self.parse(fieldTexts[1], as: .hour, fail)
        (fields.days, fields.daysIsStar) = try Self.parse(fieldTexts[2], as: .dayOfMonth, fail)
        (fields.months, _) = try Self.parse(fieldTexts[3], as: .month, fail)
        (fields.weekdays, fields.weekdaysIsStar) = try Self.parse(fieldTexts[4], as: .dayOfWeek, fail)
        // 7 is another name for Sunday.
        if fields.weekdays & (1 << 7) != 0 { fields.weekdays = fields.weekdays & ~(1 << 7) | 1 }

        self.text = text
        self.timeZone = zone
        self.spec = words.joined(separator: " ")
        self.namesItsZone = namesItsZone
        self.fields = fields
    }

    /// Parses a schedule read in the zone with the IANA identifier given
    /// (such as `Europe/Berlin`), unless it starts with a `CRON_TZ=<zone>` or
    /// `TZ=<zone>` prefix, which wins.
    ///
    /// - Throws: ``SchedulerError`` with code `invalidSchedule` naming an
    ///   unknown zone, or the field and the text at fault.
    public init(_ text: String, timeZoneIdentifier: String) throws {
        guard let zone = TimeZone(identifier: timeZoneIdentifier) else {
            throw SchedulerError(.invalidSchedule, "cron schedule \"\(text)\": unknown time zone \"\(timeZoneIdentifier)\"")
        }
        try self.init(text, timeZone: zone)
    }

    /// The schedule as it was written.
    public var description: String { text }

    // MARK: - Evaluation

    /// The first time strictly after `date` at which the schedule fires, or
    /// `nil` when it fires at no time within eight calendar years of `date`.
    ///
    /// Wall times are read in ``timeZone``; a matching wall time skipped by a
    /// clock change fires at the end of the gap, and one that occurs twice
    /// fires at its first occurrence only (see the type's documentation).
    public func next(after date: Date) -> Date? {
        let instant = date.timeIntervalSince1970
        guard instant.isFinite, abs(instant) < 1e12 else { return nil }
        let second = Int(instant.rounded(.down))
        let wall = second + offset(at: second)
        // The minute after the one the wall clock shows: no earlier wall
        // minute can fire after `date`.
        var candidate = Self.floorDivide(wall, 60) * 60 + 60
        let lastYear = Self.civil(fromDay: Self.floorDivide(candidate, 86_400)).year + Self.searchYears
        while let match = firstMatch(atOrAfter: candidate, lastYear: lastYear) {
            let fire = fireInstant(ofWall: match)
            if Double(fire) > instant { return Date(timeIntervalSince1970: TimeInterval(fire)) }
            // Only a wall minute of a repeated hour whose first occurrence
            // lies before `date` lands here.
            candidate = match + 60
        }
        return nil
    }

    /// The times the schedule fires strictly after `start` and no later than
    /// `end`, ascending, at most `limit` of them (none when `limit` is not
    /// positive).
    public func fireTimes(after start: Date, through end: Date, limit: Int) -> [Date] {
        var times: [Date] = []
        var last = start
        while times.count < limit, let fire = next(after: last), fire <= end {
            times.append(fire)
            last = fire
        }
        return times
    }

    /// The first minute-aligned wall time at or after `wall` (in seconds
    /// since 1970-01-01 00:00 on the wall clock) whose month, day, hour and
    /// minute all match, or `nil` once the search passes `lastYear`.
    private func firstMatch(atOrAfter wall: Int, lastYear: Int) -> Int? {
        let startDay = Self.floorDivide(wall, 86_400)
        var (year, month, day) = Self.civil(fromDay: startDay)
        let secondOfDay = wall - startDay * 86_400
        var hour = secondOfDay / 3600
        var minute = secondOfDay % 3600 / 60

        while year <= lastYear {
            guard let matchingMonth = Self.firstBit(of: fields.months, from: month) else {
                (year, month, day, hour, minute) = (year + 1, 1, 1, 0, 0)
                continue
            }
            if matchingMonth != month { (month, day, hour, minute) = (matchingMonth, 1, 0, 0) }

            let length = Self.daysIn(month: month, of: year)
            var matchingDay = day
            while matchingDay <= length, !dayMatches(year: year, month: month, day: matchingDay) { matchingDay += 1 }
            guard matchingDay <= length else {
                (month, day, hour, minute) = (month + 1, 1, 0, 0)
                if month > 12 { (year, month) = (year + 1, 1) }
                continue
            }
            if matchingDay != day { (day, hour, minute) = (matchingDay, 0, 0) }

            guard let matchingHour = Self.firstBit(of: fields.hours, from: hour) else {
                (day, hour, minute) = (day + 1, 0, 0)
                continue
            }
            if matchingHour != hour { (hour, minute) = (matchingHour, 0) }

            guard let matchingMinute = Self.firstBit(of: fields.minutes, from: minute) else {
                (hour, minute) = (hour + 1, 0)
                continue
            }
            return Self.day(year: year, month: month, day: day) * 86_400 + hour * 3600 + matchingMinute * 60
        }
        return nil
    }

    /// Whether a calendar day matches the day-of-month and day-of-week fields,
    /// both when either is unrestricted, either when both are restricted.
    private func dayMatches(year: Int, month: Int, day: Int) -> Bool {
        let weekday = Self.floorModulo(Self.day(year: year, month: month, day: day) + 4, 7)  // 1970-01-01 was a Thursday.
        let dayOfMonth = fields.days & (1 << UInt64(day)) != 0
        let dayOfWeek = fields.weekdays & (1 << UInt64(weekday)) != 0
        if fields.daysIsStar || fields.weekdaysIsStar { return dayOfMonth && dayOfWeek }
        return dayOfMonth || dayOfWeek
    }

    /// The instant (seconds since 1970) a wall time fires at: its first
    /// occurrence, or, when clocks skip it, the first instant after the gap.
    private func fireInstant(ofWall wall: Int) -> Int {
        // Every offset in force near the wall time; a real zone changes its
        // offset at most once in a couple of days.
        var offsets: [Int] = []
        for probe in [wall - 86_400, wall, wall + 86_400] {
            let found = offset(at: probe)
            if !offsets.contains(found) { offsets.append(found) }
        }
        for guess in offsets {
            let found = offset(at: wall - guess)
            if !offsets.contains(found) { offsets.append(found) }
        }
        let occurrences = offsets.filter { offset(at: wall - $0) == $0 }.map { wall - $0 }
        if let first = occurrences.min() { return first }

        // A gap: before the change the wall clock reads earlier than `wall`,
        // from the change on it reads later. Find the change to the second.
        guard let largest = offsets.max(), let smallest = offsets.min() else { return wall }
        var before = wall - largest
        var after = wall - smallest
        guard after + offset(at: after) > wall, before + offset(at: before) < wall else { return after }
        while after - before > 1 {
            let middle = before + (after - before) / 2
            if middle + offset(at: middle) > wall { after = middle } else { before = middle }
        }
        return after
    }

    /// The zone's offset from UTC, in seconds, at an instant.
    private func offset(at second: Int) -> Int {
        timeZone.secondsFromGMT(for: Date(timeIntervalSince1970: TimeInterval(second)))
    }

    // MARK: - Equality and coding

    /// Whether two schedules are read in the same zone and written the same,
    /// setting aside any zone prefix and extra white space.
    public static func == (lhs: CronSchedule, rhs: CronSchedule) -> Bool {
        lhs.spec == rhs.spec && lhs.timeZone.identifier == rhs.timeZone.identifier
    }

    /// Hashes what `==` compares.
    public func hash(into hasher: inout Hasher) {
        hasher.combine(spec)
        hasher.combine(timeZone.identifier)
    }

    /// Decodes a schedule from a single string, read in the current zone
    /// unless it starts with a `CRON_TZ=` or `TZ=` prefix.
    ///
    /// - Throws: `DecodingError.dataCorrupted` carrying the parse error's message.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let string = try container.decode(String.self)
        let parsed: CronSchedule
        do {
            parsed = try CronSchedule(string)
        } catch let error as SchedulerError {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: error.message)
        }
        self = parsed
    }

    /// Encodes the schedule as a single string: ``text`` when it names its
    /// zone, otherwise the schedule behind a `CRON_TZ=` prefix naming
    /// ``timeZone``.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(namesItsZone ? text : "CRON_TZ=\(timeZone.identifier) \(spec)")
    }
}

// MARK: - Parsing

/// The values a schedule's fields allow, one bit per value.
private struct CronFields: Sendable {
    /// Bits 0-59.
    var minutes: UInt64 = 0
    /// Bits 0-23.
    var hours: UInt64 = 0
    /// Bits 1-31.
    var days: UInt64 = 0
    /// Bits 1-12.
    var months: UInt64 = 0
    /// Bits 0-6, Sunday first.
    var weekdays: UInt64 = 0
    /// Whether the day-of-month field is unrestricted (`*` or `?`).
    var daysIsStar = false
    /// Whether the day-of-week field is unrestricted (`*` or `?`).
    var weekdaysIsStar = false
}

/// One of the five fields: its name in messages and the values it takes.
private struct CronField: Sendable {
    /// The name used in error messages.
    let name: String
    /// The smallest value.
    let low: Int
    /// The largest value `*` and `a/n` reach.
    let high: Int
    /// The largest number accepted (7, Sunday again, for the day of the week).
    let highest: Int
    /// Names for `low`, `low + 1`, … in upper case; empty when there are none.
    let names: [String]

    static let minute = CronField(name: "minute", low: 0, high: 59, highest: 59, names: [])
    static let hour = CronField(name: "hour", low: 0, high: 23, highest: 23, names: [])
    static let dayOfMonth = CronField(name: "day-of-month", low: 1, high: 31, highest: 31, names: [])
    static let month = CronField(
        name: "month", low: 1, high: 12, highest: 12,
        names: ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"])
    static let dayOfWeek = CronField(
        name: "day-of-week", low: 0, high: 6, highest: 7,
        names: ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])
}

extension CronSchedule {
    /// The five fields a descriptor stands for.
    private static func expand(
        descriptor words: [Substring], _ fail: (String) -> SchedulerError
    ) throws -> [Substring] {
        let whole = words.joined(separator: " ")
        let fields: String
        switch whole {
        case "@yearly", "@annually": fields = "0 0 1 1 *"
        case "@monthly": fields = "0 0 1 * *"
        case "@weekly": fields = "0 0 * * 0"
        case "@daily", "@midnight": fields = "0 0 * * *"
        case "@hourly": fields = "0 * * * *"
        default:
            if words[0].hasPrefix("@every") {
                throw fail("interval schedules (\(words[0])) are not supported: the documented Kubernetes CronJob schedule syntax is five fields or one of @yearly, @annually, @monthly, @weekly, @daily, @midnight and @hourly; write the interval as fields, such as \"*/5 * * * *\"")
            }
            throw fail("unknown descriptor \"\(whole)\"; use @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly")
        }
        return fields.split(separator: " ")
    }

    /// The values one field allows, and whether it is unrestricted: only a
    /// bare `*` or `?` (or one stepped by 1) counts as unrestricted, as in
    /// robfig/cron.
    private static func parse(
        _ text: Substring, as field: CronField, _ fail: (String) -> SchedulerError
    ) throws -> (bits: UInt64, isStar: Bool) {
        var bits: UInt64 = 0
        var isStar = false
        for item in text.split(separator: ",", omittingEmptySubsequences: false) {
            guard !item.isEmpty else { throw fail("\(field.name) list \"\(text)\" has an empty item") }
            let rangeAndStep = item.split(separator: "/", omittingEmptySubsequences: false)
            guard rangeAndStep.count <= 2 else { throw fail("\(field.name) \"\(item)\" has more than one \"/\"") }
            let range = rangeAndStep[0]

            let low: Int
            var high: Int
            var itemIsStar = false
            var single = false
            if range == "*" || range == "?" {
                low = field.low
                high = field.high
                itemIsStar = true
            } else {
                let ends = range.split(separator: "-", omittingEmptySubsequences: false)
                guard ends.count <= 2 else { throw fail("\(field.name) \"\(item)\" has more than one \"-\"") }
                low = try value(ends[0], in: item, of: field, fail)
                if ends.count == 2 {
                    high = try value(ends[1], in: item, of: field, fail)
                    guard low <= high else { throw fail("\(field.name) range \"\(range)\" starts after it ends") }
                } else {
                    high = low
                    single = true
                }
            }

            var step = 1
            if rangeAndStep.count == 2 {
                let stepText = rangeAndStep[1]
                guard !stepText.isEmpty, stepText.allSatisfy({ $0.isASCII && $0.isNumber }) else {
                    throw fail("\(field.name) step \"\(stepText)\" in \"\(item)\" is not a number")
                }
                step = min(Int(stepText) ?? Int.max, 64)  // Any step past the field's width picks its first value only.
                guard step >= 1 else { throw fail("\(field.name) step in \"\(item)\" is 0; it must be at least 1") }
                if step > 1 { itemIsStar = false }
                if single { high = max(low, field.high) }  // `a/n` runs to the end of the field.
            }

            for number in stride(from: low, through: high, by: step) { bits |= 1 << UInt64(number) }
            isStar = isStar || itemIsStar
        }
        return (bits, isStar)
    }

    /// One number or name of a field.
    private static func value(
        _ text: Substring, in item: Substring, of field: CronField, _ fail: (String) -> SchedulerError
    ) throws -> Int {
        guard !text.isEmpty else { throw fail("\(field.name) \"\(item)\" is missing a number") }
        if text.allSatisfy({ $0.isASCII && $0.isNumber }) {
            let number = Int(text) ?? Int.max
            guard number >= field.low, number <= field.highest else {
                throw fail("\(field.name) \(text) is outside \(field.low)-\(field.highest)")
            }
            return number
        }
        if let index = field.names.firstIndex(of: text.uppercased()) { return field.low + index }
        if field.names.isEmpty { throw fail("\(field.name) \"\(text)\" is not a number") }
        throw fail("\(field.name) \"\(text)\" is not a number or a name (\(field.names[0])-\(field.names[field.names.count - 1]))")
    }
}

// MARK: - Calendar arithmetic

extension CronSchedule {
    /// The lowest set bit of `mask` at or above `bit`.
    private static func firstBit(of mask: UInt64, from bit: Int) -> Int? {
        guard bit < 64 else { return nil }
        let rest = mask >> UInt64(bit)
        return rest == 0 ? nil : bit + rest.trailingZeroBitCount
    }

    /// Division rounding toward negative infinity.
    private static func floorDivide(_ value: Int, _ divisor: Int) -> Int {
        let quotient = value / divisor
        return value % divisor < 0 ? quotient - 1 : quotient
    }

    /// The non-negative remainder of a division.
    private static func floorModulo(_ value: Int, _ divisor: Int) -> Int {
        let remainder = value % divisor
        return remainder < 0 ? remainder + divisor : remainder
    }

    /// The number of days in a month of the proleptic Gregorian calendar.
    private static func daysIn(month: Int, of year: Int) -> Int {
        switch month {
        case 2: return year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date.
    private static func day(year: Int, month: Int, day: Int) -> Int {
        // Count years from March so that the leap day ends the year.
        let marchYear = month <= 2 ? year - 1 : year
        let era = floorDivide(marchYear, 400)
        let yearOfEra = marchYear - era * 400
        let dayOfYear = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }

    /// The proleptic Gregorian date of a day counted from 1970-01-01.
    private static func civil(fromDay dayNumber: Int) -> (year: Int, month: Int, day: Int) {
        let shifted = dayNumber + 719_468  // Days since 0000-03-01.
        let era = floorDivide(shifted, 146_097)
        let dayOfEra = shifted - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let marchMonth = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * marchMonth + 2) / 5 + 1
        let month = marchMonth < 10 ? marchMonth + 3 : marchMonth - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }
}
