#if canImport(Glibc)
import Glibc
#endif

/// A Linux signal, as a value with a name: what stops a container, what
/// `kill` sends, what ended a process.
///
/// ```swift
/// try container.kill(.terminate)
/// let stop = Signal(parsing: "SIGUSR1")   // also "USR1", "usr1" or "10"
/// ```
public struct Signal: RawRepresentable, Hashable, Sendable, Codable, CustomStringConvertible, ExpressibleByIntegerLiteral {
    /// The signal's number (1…64).
    public var rawValue: Int32

    /// The signal numbered `rawValue`.
    public init(rawValue: Int32) { self.rawValue = rawValue }

    /// The signal numbered `number`.
    public init(_ number: Int32) { rawValue = number }

    /// The signal numbered `value` (`let hangup: Signal = 1`).
    public init(integerLiteral value: Int32) { rawValue = value }

    /// The signal a name (`SIGTERM`, `TERM`, any case; `RTMIN+3`) or a
    /// number (1…64) gives; `nil` for anything else.
    public init?(parsing text: String) {
        if let number = Int32(text) {
            guard (1 ... 64).contains(number) else { return nil }
            self.init(number)
            return
        }
        var name = text.uppercased()
        if name.hasPrefix("SIG") { name.removeFirst(3) }
        if name.hasPrefix("RTMIN") || name.hasPrefix("RTMAX") {
            let base: Int32 = name.hasPrefix("RTMIN") ? 34 : 64
            let rest = name.dropFirst(5)
            let offset = rest.isEmpty ? 0 : Int32(rest) ?? 99
            let number = base + offset
            guard (34 ... 64).contains(number), rest.isEmpty || rest.first == (base == 34 ? "+" : "-") else { return nil }
            self.init(number)
            return
        }
        guard let number = Self.numbers[name] else { return nil }
        self.init(number)
    }

    /// SIGHUP: the terminal went away; many servers reload on it.
    public static let hangup = Signal(SIGHUP)
    /// SIGINT: an interrupt from the keyboard (Ctrl-C).
    public static let interrupt = Signal(SIGINT)
    /// SIGQUIT: quit from the keyboard, with a core dump.
    public static let quit = Signal(SIGQUIT)
    /// SIGABRT: the process aborted itself.
    public static let abort = Signal(SIGABRT)
    /// SIGKILL: ends the process at once; it cannot be handled.
    public static let kill = Signal(SIGKILL)
    /// SIGUSR1: for the program's own use.
    public static let user1 = Signal(SIGUSR1)
    /// SIGSEGV: an invalid memory access.
    public static let segmentationFault = Signal(SIGSEGV)
    /// SIGUSR2: for the program's own use.
    public static let user2 = Signal(SIGUSR2)
    /// SIGPIPE: a write to a pipe nobody reads.
    public static let brokenPipe = Signal(SIGPIPE)
    /// SIGALRM: a timer ran out.
    public static let alarm = Signal(SIGALRM)
    /// SIGTERM: asks the process to end (the default stop signal).
    public static let terminate = Signal(SIGTERM)
    /// SIGCHLD: a child ended.
    public static let child = Signal(SIGCHLD)
    /// SIGCONT: continue after a stop.
    public static let `continue` = Signal(SIGCONT)
    /// SIGSTOP: stops the process; it cannot be handled.
    public static let stop = Signal(SIGSTOP)
    /// SIGWINCH: the terminal's size changed.
    public static let windowChanged = Signal(SIGWINCH)

    /// The signal's name as the kernel's headers spell it (`SIGTERM`,
    /// `SIGRTMIN+3`), or its number when it has none.
    public var name: String {
        if let name = Self.names[rawValue] { return "SIG" + name }
        if (34 ... 64).contains(rawValue) { return rawValue == 34 ? "SIGRTMIN" : "SIGRTMIN+\(rawValue - 34)" }
        return "\(rawValue)"
    }

    public var description: String { name }

    public init(from decoder: any Decoder) throws {
        rawValue = try decoder.singleValueContainer().decode(Int32.self)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }

    private static let numbers: [String: Int32] = [
        "HUP": SIGHUP, "INT": SIGINT, "QUIT": SIGQUIT, "ILL": SIGILL, "TRAP": SIGTRAP, "ABRT": SIGABRT, "IOT": SIGABRT,
        "BUS": SIGBUS, "FPE": SIGFPE, "KILL": SIGKILL, "USR1": SIGUSR1, "SEGV": SIGSEGV, "USR2": SIGUSR2, "PIPE": SIGPIPE,
        "ALRM": SIGALRM, "TERM": SIGTERM, "STKFLT": SIGSTKFLT, "CHLD": SIGCHLD, "CONT": SIGCONT, "STOP": SIGSTOP, "TSTP": SIGTSTP,
        "TTIN": SIGTTIN, "TTOU": SIGTTOU, "URG": SIGURG, "XCPU": SIGXCPU, "XFSZ": SIGXFSZ, "VTALRM": SIGVTALRM,
        "PROF": SIGPROF, "WINCH": SIGWINCH, "IO": SIGIO, "POLL": SIGIO, "PWR": SIGPWR, "SYS": SIGSYS,
    ]

    private static let names: [Int32: String] = {
        var names: [Int32: String] = [:]
        for (name, number) in numbers where !["IOT", "POLL"].contains(name) { names[number] = name }
        return names
    }()
}
