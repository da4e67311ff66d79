import Foundation
import Gantry
import Synchronization

/// Output helpers: tables, JSON, errors and a progress line.
enum Terminal {
    static func printError(_ message: String) {
        FileHandle.standardError.write(Data("gantry: error: \(message)\n".utf8))
    }

    static func printJSON(_ value: some Encodable) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        print(String(decoding: try encoder.encode(value), as: UTF8.self))
    }

    /// Prints rows under a header, each column as wide as its widest cell.
    static func printTable(_ header: [String], _ rows: [[String]]) {
        var widths = header.map(\.count)
        for row in rows {
            for (index, cell) in row.enumerated() where index < widths.count { widths[index] = max(widths[index], cell.count) }
        }
        for row in [header] + rows {
            let cells = row.enumerated().map { index, cell in
                index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
            }
            print(cells.joined(separator: "   "))
        }
    }

    static func bytes(_ count: Int64) -> String {
        let units = ["B", "kB", "MB", "GB", "TB"]
        var value = Double(count)
        var unit = 0
        while value >= 1000 && unit < units.count - 1 {
            value /= 1000
            unit += 1
        }
        return unit == 0 ? "\(count) B" : String(format: value < 10 ? "%.2f %@" : "%.1f %@", value, units[unit])
    }

    static func age(_ rfc3339: String?) -> String {
        guard let rfc3339, let date = ISO8601DateFormatter().date(from: rfc3339) else { return "-" }
        let seconds = Int(Date().timeIntervalSince(date))
        switch seconds {
        case ..<60: return "just now"
        case ..<3600: return "\(seconds / 60) minutes ago"
        case ..<86400: return "\(seconds / 3600) hours ago"
        case ..<(86400 * 60): return "\(seconds / 86400) days ago"
        default: return String(rfc3339.prefix(10))
        }
    }

    static var isInteractive: Bool { isatty(STDERR_FILENO) == 1 }
}

/// A one-line progress display on standard error, redrawn at most ten times
/// a second; silent when standard error is not a terminal.
final class ProgressLine: Sendable {
    private let last = Mutex<(time: UInt64, drawn: Bool)>((0, false))
    private let enabled: Bool

    init(enabled: Bool = Terminal.isInteractive) {
        self.enabled = enabled
    }

    var handler: ImageProgressHandler? {
        guard enabled else { return nil }
        return { [self] progress in update(progress) }
    }

    private func update(_ progress: ImageProgress) {
        let now = DispatchTime.now().uptimeNanoseconds
        let draw = last.withLock { state -> Bool in
            guard now - state.time > 100_000_000 || progress.completed == progress.total else { return false }
            state = (now, true)
            return true
        }
        guard draw else { return }
        var line = "\(progress.phase.rawValue) \(progress.index + 1)/\(progress.count)"
        if let digest = progress.digest { line += " \(digest.shortForm)" }
        if let total = progress.total, total > 0 {
            let percent = min(100, Int(progress.completed * 100 / total))
            let filled = percent / 5
            line += " [" + String(repeating: "#", count: filled) + String(repeating: " ", count: 20 - filled) + "] \(percent)%"
            line += " \(Terminal.bytes(progress.completed))/\(Terminal.bytes(total))"
        }
        FileHandle.standardError.write(Data("\r\u{1B}[K\(line)".utf8))
    }

    /// Clears the line.
    func finish() {
        let drawn = last.withLock { $0.drawn }
        if enabled && drawn { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
    }
}
