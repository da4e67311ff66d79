import Foundation
import GantryCore
#if canImport(Glibc)
import Glibc
#endif

extension PublishedPort {
    /// The port as an ordinary user's network host publishes it for
    /// slirp4netns, which forwards the host's port to the namespace's own
    /// address: on any of its addresses.
    var onNetworkHost: PublishedPort {
        var port = self
        port.hostIP = nil
        return port
    }
}

extension UserModeNetwork {
    /// The program that connects an ordinary user's network namespaces to
    /// the host's network.
    enum Stack: Equatable, Sendable {
        /// pasta (Debian's passt): preferred, it binds published ports on
        /// the host itself and needs no request after it starts.
        case pasta(String)
        /// slirp4netns: the fallback. It stays in the foreground (a shell
        /// waits for its ready signal and records its pid) and forwards
        /// ports when asked through its API socket.
        case slirp4netns(String)
    }

    /// pasta where it is installed, slirp4netns otherwise, nil with
    /// neither. The environment variable `GANTRY_USER_MODE_NETWORK`
    /// (`pasta` or `slirp4netns`) picks one where both are.
    static let stack: Stack? = {
        let asked = ProcessInfo.processInfo.environment["GANTRY_USER_MODE_NETWORK"]
        if asked != "slirp4netns", let pasta = Sys.findProgram("pasta") { return .pasta(pasta) }
        if asked != "pasta", let slirp = Sys.findProgram("slirp4netns") { return .slirp4netns(slirp) }
        return nil
    }()

    /// What to say when there is no ``stack``.
    static let missingStack = "neither pasta (Debian's passt) nor slirp4netns is installed"

    /// slirp4netns, when it is the ``stack``.
    static var slirp4netns: String? {
        if case .slirp4netns(let path) = stack { return path }
        return nil
    }

    /// The API socket of the slirp4netns whose pid is in `pidFile`: beside
    /// it, named for a hash of its name (a socket's path has at most 107
    /// bytes, too few for a container's ID in a run-time directory).
    static func apiSocket(_ pidFile: String) -> String {
        let slash = pidFile.lastIndex(of: "/").map { pidFile.index(after: $0) } ?? pidFile.startIndex
        return String(pidFile[..<slash]) + "slirp-" + String(stableHash(pidFile[slash...].utf8), radix: 16) + ".sock"
    }

    /// slirp4netns's arguments, run through a shell that waits until it is
    /// ready, records its pid in `pidFile` and, when it fails, says why; the
    /// namespace (a pid, or a path after `target`'s `--netns-type=path`)
    /// follows them. It configures the tap with pasta's fixed addresses
    /// (10.0.2.100/24, gateway 10.0.2.2, DNS at 10.0.2.3, the gateway
    /// leading to the host's loopback) and filters its own system calls.
    static func slirpArguments(_ slirp: String, pidFile: String, target: [String] = []) -> [String] {
        ["/bin/sh", "-c", slirpScript, "gantry-slirp4netns", pidFile, slirp, "--configure", "--mtu=65520", "--enable-seccomp",
         "--api-socket", apiSocket(pidFile), "--ready-fd=3"] + target
    }

    /// `sh -c` script: `$1` the pid file, then slirp4netns's command line
    /// with the namespace last; the device name (`tap0`) goes after it.
    /// (A socket left at the API's path makes slirp4netns fail; ``stop(pidFile:)``
    /// removes it.)
    private static let slirpScript = #"""
        pidfile=$1; shift
        count=$#; index=0
        for argument; do
            index=$((index + 1))
            if [ "$index" -lt "$count" ]; then set -- "$@" "$argument"; else namespace=$argument; fi
        done
        shift "$count"
        ready=$( { "$@" "$namespace" tap0 3>&1 >/dev/null 2>"$pidfile.log" & echo $! >"$pidfile"; } | head -c 1 )
        if [ "$ready" = 1 ]; then rm -f "$pidfile.log"; exit 0; fi
        cat "$pidfile.log" >&2; rm -f "$pidfile.log" "$pidfile"
        exit 1
        """#

    /// Forwards `ports` through the slirp4netns listening on `api`, to
    /// `guest` (its own address when nil); returns the forwards' IDs. What
    /// was forwarded before a failure is removed again.
    static func forward(_ ports: [PublishedPort], api: String, to guest: IPv4Address?) throws -> [Int] {
        var made: [Int] = []
        do {
            for port in ports {
                var arguments: [String: Any] = ["proto": port.protocol == .udp ? "udp" : "tcp", "host_addr": port.hostIP?.description ?? "0.0.0.0",
                                                "host_port": Int(port.hostPort), "guest_port": Int(port.containerPort)]
                if let guest { arguments["guest_addr"] = guest.description }
                let reply = try request(api, ["execute": "add_hostfwd", "arguments": arguments])
                guard let id = (reply["return"] as? [String: Any])?["id"] as? Int else {
                    let said = (reply["error"] as? [String: Any])?["desc"] as? String ?? "\(reply)"
                    throw RuntimeError(.network, "slirp4netns could not publish port \(port.hostPort): \(said)")
                }
                made.append(id)
            }
        } catch {
            for id in made { _ = try? request(api, ["execute": "remove_hostfwd", "arguments": ["id": id]]) }
            throw error
        }
        return made
    }

    /// One request to the slirp4netns API socket at `path`, and its reply.
    private static func request(_ path: String, _ body: [String: Any]) throws -> [String: Any] {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw RuntimeError(.network, "cannot open a socket to slirp4netns", underlying: Sys.errno) }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { throw RuntimeError(.network, "the socket path \(path) is too long") }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0 }
        }
        guard connected else { throw RuntimeError(.network, "cannot reach slirp4netns at \(path)", underlying: Sys.errno) }
        let data = try JSONSerialization.data(withJSONObject: body)
        guard data.withUnsafeBytes({ Glibc.write(fd, $0.baseAddress, $0.count) }) == data.count else {
            throw RuntimeError(.network, "cannot send a request to slirp4netns at \(path)", underlying: Sys.errno)
        }
        var reply = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { break }
            reply += buffer[..<count]
            // One JSON object, then slirp4netns closes the connection.
            if (try? JSONSerialization.jsonObject(with: Data(reply))) != nil { break }
        }
        guard let object = try? JSONSerialization.jsonObject(with: Data(reply)) as? [String: Any] else {
            throw RuntimeError(.network, "slirp4netns at \(path) gave no answer one can read: \(String(decoding: reply, as: UTF8.self))")
        }
        return object
    }

    /// The forwards that the slirp4netns of an ordinary user's network host
    /// made for a container's or pod's published ports, as written in the
    /// file where a pasta of its own would keep its pid:
    /// `forwards SOCKET ID…`.
    struct HostForwards {
        var api: String
        var ids: [Int]

        init(api: String, ids: [Int]) {
            self.api = api
            self.ids = ids
        }

        init?(_ text: String) {
            let fields = text.split(whereSeparator: \.isWhitespace).map(String.init)
            guard fields.count >= 2, fields[0] == "forwards" else { return nil }
            api = fields[1]
            ids = fields.dropFirst(2).compactMap { Int($0) }
        }

        var text: String { (["forwards", api] + ids.map(String.init)).joined(separator: " ") + "\n" }

        /// Removes the forwards (those that went with their slirp4netns
        /// are skipped).
        func remove() {
            for id in ids { _ = try? UserModeNetwork.request(api, ["execute": "remove_hostfwd", "arguments": ["id": id]]) }
        }
    }
}
