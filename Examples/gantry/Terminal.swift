import Foundation
import Gantry
import Synchronization

/// Output helpers: tables, JSON, errors and a progress line.
enum Terminal {
    static func printError(_ message: String) {
        FileHandle.standardError.write(Data("gantry: error: \(message)\n".utf8))
    }

    static func printWarning(_ message: String) {
        FileHandle.standardError.write(Data("gantry: warning: \(message)\n".utf8))
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

/// Progress on standard error. On a terminal: one line with a bar for the
/// whole operation, redrawn at most ten times a second. Otherwise: a plain
/// line as each blob completes.
final class ProgressLine: Sendable {
    private struct State {
        var lastDraw: UInt64 = 0
        var drawn = false
        var blobs: [Int: (completed: Int64, total: Int64?)] = [:]
        var finished: Set<Int> = []
    }

    private let state = Mutex(State())
    private let interactive: Bool
    private let plain: Bool

    /// - Parameters:
    ///   - enabled: Whether to report at all (not with `--format json`).
    init(enabled: Bool) {
        interactive = enabled && Terminal.isInteractive
        plain = enabled && !Terminal.isInteractive
    }

    var handler: ImageProgressHandler? {
        guard interactive || plain else { return nil }
        return { [self] progress in update(progress) }
    }

    private func update(_ progress: ImageProgress) {
        let now = DispatchTime.now().uptimeNanoseconds
        let line: String? = state.withLock { state in
            state.blobs[progress.index] = (progress.completed, progress.total)
            let done = progress.total.map { progress.completed >= $0 } ?? false
            if plain {
                guard done, state.finished.insert(progress.index).inserted else { return nil }
                var text = "\(progress.phase.rawValue) \(progress.index + 1)/\(progress.count)"
                if let digest = progress.digest { text += " \(digest)" }
                if let total = progress.total { text += " \(Terminal.bytes(total))" }
                return text + "\n"
            }
            if done { state.finished.insert(progress.index) }
            guard now - state.lastDraw > 100_000_000 || done else { return nil }
            state.lastDraw = now
            state.drawn = true
            let completed = state.blobs.values.reduce(Int64(0)) { $0 + $1.completed }
            let total = state.blobs.values.reduce(Int64(0)) { $0 + ($1.total ?? 0) }
            var text = "\r\u{1B}[K\(progress.phase.rawValue) \(state.finished.count)/\(progress.count)"
            if total > 0 {
                let percent = min(100, Int(completed * 100 / total))
                let filled = percent / 4
                text += " [" + String(repeating: "#", count: filled) + String(repeating: " ", count: 25 - filled) + "] \(percent)%"
                text += " \(Terminal.bytes(completed))/\(Terminal.bytes(total))"
            }
            return text
        }
        if let line { FileHandle.standardError.write(Data(line.utf8)) }
    }

    /// Clears the line.
    func finish() {
        let drawn = state.withLock { state in
            defer { state.drawn = false }
            return state.drawn
        }
        if interactive && drawn { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
    }
}
