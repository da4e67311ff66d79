/// A quantity of CPU or memory written as Kubernetes writes them:
/// `500m` CPU is half a core, `256Mi` is 256 × 2²⁰ bytes, `1G` is 10⁹ bytes.
public struct ResourceQuantity: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The value in thousandths of the unit (millicores for CPU, millibytes
    /// for memory), exact for every accepted input.
    public let milliValue: Int64

    /// A quantity from thousandths of a unit.
    public init(milliValue: Int64) { self.milliValue = milliValue }

    /// A whole number of units (cores, bytes).
    public init(_ value: Int64) { milliValue = value * 1000 }

    private static let binarySuffixes: [(String, Int64)] = [
        ("Ki", 1 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30), ("Ti", 1 << 40), ("Pi", 1 << 50), ("Ei", 1 << 60),
    ]
    private static let decimalSuffixes: [(String, Int64)] = [
        ("k", 1_000), ("M", 1_000_000), ("G", 1_000_000_000), ("T", 1_000_000_000_000), ("P", 1_000_000_000_000_000),
    ]

    /// Parses `123`, `0.5`, `500m`, `64Ki`, `1.5Gi`, `2G`.
    ///
    /// - Throws: ``SchedulerError`` naming the quantity when it is malformed,
    ///   negative or too large.
    public init(parsing text: String) throws {
        func fail(_ why: String) -> SchedulerError {
            SchedulerError(.invalidQuantity, "invalid quantity \"\(text)\": \(why)")
        }
        var number = Substring(text)
        var scale: Int64 = 1000
        if let (suffix, factor) = (Self.binarySuffixes + Self.decimalSuffixes).first(where: { text.hasSuffix($0.0) }) {
            number = number.dropLast(suffix.count)
            let (product, overflow) = factor.multipliedReportingOverflow(by: 1000)
            guard !overflow else { throw fail("it is too large") }
            scale = product
        } else if text.hasSuffix("m") {
            number = number.dropLast()
            scale = 1
        }
        let parts = number.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        guard !number.isEmpty, parts.allSatisfy({ $0.allSatisfy(\.isASCII) && $0.allSatisfy(\.isNumber) }),
              !(parts[0].isEmpty && (parts.count == 1 || parts[1].isEmpty))
        else { throw fail("expected a non-negative number with an optional suffix (m, k, M, G, T, P, Ki, Mi, Gi, Ti, Pi, Ei)") }
        guard let whole = parts[0].isEmpty ? 0 : Int64(parts[0]) else { throw fail("it is too large") }
        var (value, overflow) = whole.multipliedReportingOverflow(by: scale)
        if parts.count == 2 && !parts[1].isEmpty {
            // Each fractional digit is worth a tenth of the one before; digits
            // below one thousandth of the unit are rejected rather than rounded.
            var place = scale
            for digit in parts[1] {
                guard place % 10 == 0 else { throw fail("it is more precise than a thousandth") }
                place /= 10
                value += Int64(digit.wholeNumberValue ?? 0) * place
            }
        }
        guard !overflow else { throw fail("it is too large") }
        milliValue = value
    }

    /// The value in whole units, rounded up (a pod asking for 0.5 byte gets 1).
    public var value: Int64 { (milliValue + 999) / 1000 }

    /// The canonical text: whole units when exact, millis otherwise.
    public var description: String {
        milliValue % 1000 == 0 ? "\(milliValue / 1000)" : "\(milliValue)m"
    }

    public static func < (lhs: ResourceQuantity, rhs: ResourceQuantity) -> Bool { lhs.milliValue < rhs.milliValue }
}
