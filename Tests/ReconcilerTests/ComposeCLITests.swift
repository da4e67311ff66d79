import Foundation
import GantryTestSupport
import OCIImage
import Runtime
import Testing

/// Runs `gantry up` as its own process, as users do, and drives it from
/// other processes: service commands, ps, logs, events, metrics, SIGKILL.
@Suite(.requiresRoot, .serialized) struct ComposeCLITests {
    let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("gantry").path
    let parent = "gantry-compose-test"

    func gantry(_ root: String, _ arguments: [String]) async throws -> (status: Int32, output: String, error: String) {
        try #require(FileManager.default.isExecutableFile(atPath: binary), "build the gantry product first (swift build)")
        return try await runWithStatus(binary, ["--root", root] + arguments, environment: ["GANTRY_CGROUP_PARENT": parent])
    }

    func json(_ text: String) throws -> [[String: Any]] {
        try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[String: Any]], "not a JSON array: \(text)")
    }

    /// A temporary directory (passed to `body` with its state root) whose
    /// state root holds busybox as `bb:1`.
    func withImage(_ label: String, applets: [String] = [], _ body: (_ root: String, _ dir: String) async throws -> Void) async throws {
        try await withTemporaryDirectory(label) { dir in
            let root = dir + "/state"
            try makeBusyboxRootfs(dir + "/rootfs", applets: applets)
            #expect(try await gantry(root, ["image", "import-rootfs", dir + "/rootfs", "--name", "bb:1"]).status == 0)
            try await body(root, dir)
        }
    }

    /// Starts `gantry up` in the background; its output goes to `log`.
    func up(_ root: String, _ arguments: [String], log: String) throws -> ChildProcess {
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        return try ChildProcess(binary, ["--root", root, "up"] + arguments, environment: ["GANTRY_CGROUP_PARENT": parent],
                                stdout: .file(log), stderr: .file(log))
    }

    /// Waits (up to 30 s) for a process to end, without spinning as
    /// `waitUntilExit` does.
    func waitForExit(_ process: ChildProcess) async throws {
        for _ in 0 ..< 600 where process.isRunning { try await Task.sleep(for: .milliseconds(50)) }
        #expect(!process.isRunning, "gantry up did not end")
    }

    /// Waits (up to 60 s) until `condition` holds for `service ls --format json`.
    func waitForServices(_ root: String, log: String, _ condition: ([String: [String: Any]]) -> Bool) async throws {
        for _ in 0 ..< 1200 {
            let listed = try await gantry(root, ["service", "ls", "--format", "json"])
            if listed.status == 0, let services = try? json(listed.output) {
                let byName = Dictionary(services.map { ($0["name"] as? String ?? "", $0) }, uniquingKeysWith: { first, _ in first })
                if condition(byName) { return }
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        Issue.record("services did not converge; up printed: \(try readText(log))")
        throw ToolError(description: "timed out")
    }

    func running(_ root: String) async throws -> [[String: Any]] {
        try json(try await gantry(root, ["ps", "--format", "json"]).output)
    }

    /// A port nothing listens on now.
    func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    func cleanUp(_ root: String, compose: String, processes: [ChildProcess]) async throws {
        for process in processes where process.isRunning { kill(process.processIdentifier, SIGKILL) }
        for process in processes { try? await waitForExit(process) }
        _ = try? await gantry(root, ["down", "-f", compose, "-v"])
        for record in (try? json(try await gantry(root, ["ps", "-a", "--format", "json"]).output)) ?? [] {
            _ = try? await gantry(root, ["rm", "-f", record["id"] as? String ?? ""])
        }
        let runtime = try ContainerRuntime(images: try ImageStore(root: StateRoot(root)), cgroupParent: parent)
        try runtime.cgroups.remove(parent)
    }

    @Test func upServesHealsScalesAndComesBackAfterAKill() async throws {
        try await withImage("compose-up", applets: ["mkdir", "test"]) { root, dir in
            let compose = dir + "/compose.yaml"
            let webPort = try freePort()
            try write("""
                name: shop
                services:
                  web:
                    image: bb:1
                    command: ["sh", "-c", "mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p 8080 -h /www"]
                    ports: ["127.0.0.1:\(webPort):8080"]
                    deploy:
                      replicas: 2
                    healthcheck:
                      test: ["CMD", "test", "-f", "/www/index.html"]
                      interval: 200ms
                    stop_grace_period: 500ms
                  worker:
                    image: bb:1
                    command: sh -c 'echo worker up; exec sleep 600'
                    depends_on:
                      web:
                        condition: service_healthy
                    stop_grace_period: 500ms
                """, to: compose)
            var processes: [ChildProcess] = []
            do {
                let port = try freePort()
                let log = dir + "/up.log"
                processes.append(try up(root, ["-f", compose, "--metrics-port", "\(port)"], log: log))
                try await waitForServices(root, log: log) { services in
                    services["web"]?["available"] as? Int == 2 && services["worker"]?["available"] as? Int == 1
                }
                let replicas = try await running(root)
                #expect(replicas.count == 3)
                let web = replicas.compactMap { $0["name"] as? String }.filter { $0.hasPrefix("shop-web-") }
                #expect(web.count == 2)
                let network = try await gantry(root, ["network", "ls", "--format", "json"])
                #expect(network.output.contains("shop_default"))
                // Both replicas behind the service's one port.
                #expect(await httpGet(port: UInt16(webPort))?.contains("hello") == true)
                let listed = try await gantry(root, ["service", "ls"]).output
                #expect(listed.contains("127.0.0.1:\(webPort):8080/tcp") && !listed.contains("(not running)"), "\(listed)")
                let summaries = try json(try await gantry(root, ["service", "ls", "--format", "json"]).output)
                #expect(summaries.allSatisfy { $0["reconciled"] as? Bool == true }, "the up runs the project: \(summaries)")

                // Other processes: inspect, logs, service logs, scale.
                let worker = try #require(replicas.compactMap { $0["name"] as? String }.first { $0.hasPrefix("shop-worker-") })
                #expect(try await gantry(root, ["inspect", worker]).status == 0)
                #expect(try await gantry(root, ["logs", worker]).output == "worker up\n")
                #expect(try await gantry(root, ["service", "logs", "worker"]).output == "\(worker) | worker up\n")
                #expect(try await gantry(root, ["service", "scale", "web", "3"]).status == 0)
                try await waitForServices(root, log: log) { $0["web"]?["available"] as? Int == 3 }

                // A killed replica is replaced, and counted.
                #expect(try await gantry(root, ["kill", "-s", "KILL", web[0]]).status == 0)
                try await waitForServices(root, log: log) { $0["web"]?["restarts"] as? Int == 1 && $0["web"]?["available"] as? Int == 3 }
                let events = try await gantry(root, ["events", "--format", "json", "--object", "web"]).output
                #expect(events.contains("\"event\":\"restarted\""))
                #expect(events.contains("\"event\":\"exited\""))
                // The cgroups are sampled every 2 s.
                var metrics = ""
                for _ in 0 ..< 100 {
                    metrics = try await run("python3", ["-c", "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:\(port)/metrics').read().decode())"])
                    if metrics.contains("gantry_container_memory_bytes{service=\"web\"") { break }
                    try await Task.sleep(for: .milliseconds(100))
                }
                #expect(metrics.contains("gantry_service_restarts_total{service=\"web\"} 1"), "\(metrics)")
                #expect(metrics.contains("gantry_container_memory_bytes{service=\"web\""), "\(metrics)")
                #expect(metrics.contains("gantry_reconcile_duration_seconds"))
                #expect(try await gantry(root, ["service", "rollout", "status", "web", "--timeout", "30s"]).status == 0)

                // SIGKILL of the host process: its replicas die with it; the next up converges without duplicates.
                // The file says 2 web replicas again: up applies it anew.
                kill(processes[0].processIdentifier, SIGKILL)
                try await waitForExit(processes[0])
                processes.append(try up(root, ["-f", compose], log: dir + "/up2.log"))
                try await waitForServices(root, log: dir + "/up2.log") { services in
                    services.values.allSatisfy { $0["observedGeneration"] as? Int == $0["generation"] as? Int }
                        && services["web"]?["replicas"] as? Int == 2
                        && services["web"]?["available"] as? Int == 2 && services["worker"]?["available"] as? Int == 1
                }
                try await Task.sleep(for: .milliseconds(500))
                let after = try await running(root)
                #expect(after.count == 3, "\(after.map { $0["name"] as? String ?? "" })")
                #expect(Set(after.compactMap { $0["name"] as? String }).isDisjoint(with: Set(replicas.compactMap { $0["name"] as? String })))

                // down from another process ends the foreground up and leaves nothing.
                let down = try await gantry(root, ["down", "-f", compose])
                #expect(down.status == 0, "\(down.error)")
                try await waitForExit(processes[1])
                let printed = try readText(dir + "/up2.log")
                #expect(!processes[1].isRunning && processes[1].terminationStatus == 0, "\(printed)")
                #expect(try json(try await gantry(root, ["ps", "-a", "--format", "json"]).output).isEmpty)
                #expect(!(try await gantry(root, ["network", "ls"]).output.contains("shop_default")))
                #expect(await httpGet(port: UInt16(webPort), attempts: 1) == nil, "the service's port still answers after down")
                #expect(try json(try await gantry(root, ["service", "ls", "--format", "json"]).output).isEmpty)
                try await cleanUp(root, compose: compose, processes: processes)
            } catch {
                try? await cleanUp(root, compose: compose, processes: processes)
                throw error
            }
        }
    }

    @Test func composeConfigPrintsTheProjectAsRead() async throws {
        try await withTemporaryDirectory("compose-config") { dir in
            try write("services:\n  base:\n    image: busybox:${TAG:-1}\n    profiles: [tools]\n  web:\n    extends: base\n    profiles: [web]\n    runtime: runc\n",
                      to: dir + "/compose.yaml")
            let shown = try await runWithStatus(binary, ["compose", "config", "-f", dir + "/compose.yaml", "-p", "shop", "--profile", "web"],
                                                environment: ["TAG": "2"])
            #expect(shown.status == 0, "\(shown.error)")
            let project = try #require(try JSONSerialization.jsonObject(with: Data(shown.output.utf8)) as? [String: Any])
            #expect(project["name"] as? String == "shop")
            let services = try #require(project["services"] as? [[String: Any]])
            #expect(services.compactMap { $0["name"] as? String } == ["web"], "only the active profile's service")
            #expect(shown.output.contains("busybox:2"), "interpolated and extended: \(shown.output)")
            #expect(shown.error.contains("gantry: warning: ") && shown.error.contains("runtime \"runc\": ignored"), "\(shown.error)")
            let broken = try await runWithStatus(binary, ["compose", "config", "-f", dir + "/missing.yaml"])
            #expect(broken.status != 0 && broken.error.contains("missing.yaml"), "\(broken.error)")
        }
    }

    @Test func kubeGenerateWritesManifestsThatKubernetesAccepts() async throws {
        try await withTemporaryDirectory("kube-generate-cli") { dir in
            try write("""
                services:
                  web:
                    image: nginx
                    ports: ["8080:80"]
                    deploy: {replicas: 2, resources: {limits: {cpus: "0.5", memory: 64m}}}
                    healthcheck: {test: ["CMD", "curl", "-f", "http://localhost"], interval: 5s}
                    depends_on: [db]
                  db:
                    image: postgres:16
                    environment: {POSTGRES_DB: shop}
                    volumes: [data:/var/lib/postgresql/data]
                volumes:
                  data: {}
                """, to: dir + "/compose.yaml")
            let generated = try await runWithStatus(binary, ["kube", "generate", "-f", dir + "/compose.yaml"])
            #expect(generated.status == 0, "\(generated.error)")
            #expect(generated.error.contains("service web: depends_on has no Kubernetes equivalent"), "\(generated.error)")
            try write(generated.output, to: dir + "/manifests.yaml")
            let validated = try await runWithStatus("/usr/local/bin/kubernetes-validate", ["--strict", dir + "/manifests.yaml"])
            #expect(validated.status == 0, "\(validated.output) \(validated.error)")
            for kind in ["deployment/web", "service/web", "deployment/db", "persistentvolumeclaim/"] {
                #expect(validated.output.contains("passed for resource \(kind)") || validated.error.contains("passed for resource \(kind)"), "\(kind): \(validated.output) \(validated.error)")
            }
            let unknown = try await runWithStatus(binary, ["kube", "generate", "-f", dir + "/compose.yaml", "nowhere"])
            #expect(unknown.status != 0 && unknown.error.contains("there is no service nowhere"))
        }
    }

    @Test func replicasLeftRunningAreAdopted() async throws {
        try await withImage("compose-adopt") { root, dir in
            let compose = dir + "/compose.yaml"
            try write("""
                services:
                  keeper:
                    image: bb:1
                    command: ["sleep", "600"]
                    scale: 2
                    network_mode: none
                """, to: compose)
            var processes: [ChildProcess] = []
            do {
                processes.append(try up(root, ["-f", compose, "-p", "adopt", "--leave-running"], log: dir + "/up.log"))
                try await waitForServices(root, log: dir + "/up.log") { $0["keeper"]?["available"] as? Int == 2 }
                let before = Set(try await running(root).compactMap { $0["id"] as? String })
                #expect(before.count == 2)
                kill(processes[0].processIdentifier, SIGKILL)
                try await waitForExit(processes[0])
                // They survive their host, and the next up adopts them instead of starting more.
                #expect(Set(try await running(root).compactMap { $0["id"] as? String }) == before)
                processes.append(try up(root, ["-f", compose, "-p", "adopt", "--leave-running"], log: dir + "/up2.log"))
                try await Task.sleep(for: .seconds(1))
                try await waitForServices(root, log: dir + "/up2.log") { $0["keeper"]?["available"] as? Int == 2 }
                #expect(Set(try await running(root).compactMap { $0["id"] as? String }) == before)
                // A second up of the same project is refused.
                let second = try await gantry(root, ["up", "-f", compose, "-p", "adopt"])
                #expect(second.status != 0 && second.error.contains("project adopt is already up (pid "), "\(second.error)")
                #expect(try await gantry(root, ["down", "-f", compose, "-p", "adopt"]).status == 0)
                try await waitForExit(processes[1])
                #expect(try await running(root).isEmpty)
                try await cleanUp(root, compose: compose, processes: processes)
            } catch {
                try? await cleanUp(root, compose: compose, processes: processes)
                throw error
            }
        }
    }

    @Test func upDetachedRunsInTheBackgroundWithItsSecretsUntilDown() async throws {
        try await withImage("compose-detach", applets: ["stat", "cut", "md5sum"]) { root, dir in
            let compose = dir + "/compose.yaml"
            let value = "detached-\(UUID().uuidString)"
            try write(value, to: dir + "/token.txt")
            try write("""
                secrets:
                  token:
                    file: ./token.txt
                configs:
                  motd:
                    content: hello from ${GREETING:-nowhere}
                services:
                  worker:
                    image: bb:1
                    command: ["sh", "-c", "stat -c '%a %u' /run/secrets/token; md5sum /run/secrets/token | cut -c1-32; cat /motd; echo; exec sleep 600"]
                    scale: 2
                    network_mode: none
                    user: "1000"
                    secrets: [token]
                    configs: [motd]
                """, to: compose)
            do {
                let started = try await runWithStatus(binary, ["--root", root, "up", "-d", "-f", compose, "-p", "detach"],
                                                      environment: ["GANTRY_CGROUP_PARENT": parent, "GREETING": "the background"])
                #expect(started.status == 0, "\(started.output) \(started.error)")
                #expect(started.output.contains("project detach is up in the background"), "\(started.output)")
                // It returned, and the project runs on without it.
                try await waitForServices(root, log: root + "/reconciler/detach.log") { $0["worker"]?["available"] as? Int == 2 }
                let digest = try await md5Hex(value)
                for record in try await running(root) {
                    let logs = try await gantry(root, ["logs", record["id"] as? String ?? ""])
                    #expect(logs.output == "400 1000\n\(digest)\nhello from the background\n", "\(logs.output)")
                }
                // What inspect shows names the secret, never its value.
                let shown = try await gantry(root, ["inspect", try #require(try await running(root).first?["id"] as? String)])
                #expect(shown.output.contains("/run/secrets/token") && !shown.output.contains(value))
                // A second background up of the project is refused.
                let again = try await runWithStatus(binary, ["--root", root, "up", "-d", "-f", compose, "-p", "detach"],
                                                    environment: ["GANTRY_CGROUP_PARENT": parent])
                #expect(again.status != 0 && again.error.contains("project detach is already up"), "\(again.error)")
                let down = try await gantry(root, ["down", "-f", compose, "-p", "detach"])
                #expect(down.status == 0, "\(down.error)")
                #expect(try await running(root).isEmpty)
                #expect(!FileManager.default.fileExists(atPath: root + "/reconciler/detach.log"))
                // The background process is gone with it.
                let left = try await runWithStatus("/usr/bin/pgrep", ["-f", "--root \(root) up -f"])
                #expect(left.output.isEmpty, "\(left.output)")
                #expect(filesHolding(value, under: root).isEmpty)
                try await cleanUp(root, compose: compose, processes: [])
            } catch {
                try? await cleanUp(root, compose: compose, processes: [])
                throw error
            }
        }
    }

    @Test func kubePlayRunsManifestsInTheBackgroundUntilDown() async throws {
        try await withImage("kube-play-cli", applets: ["httpd", "mkdir", "wget"]) { root, dir in
            let manifest = dir + "/site.yaml"
            let port = UInt16(try freePort())
            try write("""
                apiVersion: v1
                kind: ConfigMap
                metadata: {name: page}
                data: {index.html: served}
                ---
                apiVersion: apps/v1
                kind: Deployment
                metadata: {name: site}
                spec:
                  replicas: 2
                  selector: {matchLabels: {app: site}}
                  template:
                    metadata: {labels: {app: site}}
                    spec:
                      containers:
                        - name: httpd
                          image: bb:1
                          command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
                          volumeMounts: [{name: page, mountPath: /www}]
                          readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
                      volumes: [{name: page, configMap: {name: page}}]
                ---
                apiVersion: v1
                kind: Service
                metadata: {name: site}
                spec:
                  type: LoadBalancer
                  selector: {app: site}
                  ports: [{port: \(port), targetPort: 8080}]
                ---
                apiVersion: batch/v1
                kind: Job
                metadata: {name: fetch}
                spec:
                  activeDeadlineSeconds: 60
                  template:
                    spec:
                      restartPolicy: Never
                      containers:
                        - name: fetch
                          image: bb:1
                          command: ["sh", "-c", "until wget -q -O - http://site:\(port)/; do sleep 0.2; done"]
                """, to: manifest)
            do {
                let played = try await runWithStatus(binary, ["kube", "play", "--root", root, "-d", manifest], environment: ["GANTRY_CGROUP_PARENT": parent])
                #expect(played.status == 0, "\(played.output) \(played.error)")
                #expect(played.output.contains("project site is up in the background"), "\(played.output)")
                try await waitForServices(root, log: root + "/reconciler/site.log") { $0["site"]?["available"] as? Int == 2 }
                var body: String?
                for _ in 0 ..< 100 where body == nil {
                    body = await onOwnThread { httpGetBlocking(port: port) }
                    if body?.hasSuffix("served") != true { body = nil; try await Task.sleep(for: .milliseconds(50)) }
                }
                #expect(body?.hasSuffix("served") == true, "\(String(describing: body))")
                // The Job reached the Service by its name on the project's network, and is listed.
                var jobs: [[String: Any]] = []
                for _ in 0 ..< 300 where jobs.first?["condition"] as? String != "Complete" {
                    let listed = try await runWithStatus(binary, ["job", "ls", "--root", root, "--format", "json"])
                    jobs = (try? JSONSerialization.jsonObject(with: Data(listed.output.utf8))) as? [[String: Any]] ?? []
                    try await Task.sleep(for: .milliseconds(100))
                }
                #expect(jobs.count == 1 && jobs.first?["name"] as? String == "fetch" && jobs.first?["condition"] as? String == "Complete", "\(jobs)")
                let down = try await runWithStatus(binary, ["kube", "play", "--root", root, "--down", manifest], environment: ["GANTRY_CGROUP_PARENT": parent])
                #expect(down.status == 0, "\(down.error)")
                let left = try await runWithStatus(binary, ["job", "ls", "--root", root, "--format", "json"]).output
                #expect((try? JSONSerialization.jsonObject(with: Data(left.utf8))) as? [Any] != nil && left.filter { !$0.isWhitespace } == "[]",
                        "the Job's record goes with the manifests: \(left)")
                #expect(try await running(root).isEmpty)
                #expect(try await runWithStatus("/usr/bin/pgrep", ["-f", "kube play --root \(root)"]).output.isEmpty)
                try await cleanUp(root, compose: manifest, processes: [])
            } catch {
                _ = try? await runWithStatus(binary, ["kube", "play", "--root", root, "--down", manifest], environment: ["GANTRY_CGROUP_PARENT": parent])
                try? await cleanUp(root, compose: manifest, processes: [])
                throw error
            }
        }
    }

    @Test func upKilledAtRandomMomentsLeavesNothingOnceTheNextUpIsTakenDown() async throws {
        try await withImage("compose-crash") { root, dir in
            let compose = dir + "/compose.yaml"
            let port = try freePort()
            try write("""
                name: crash
                services:
                  web:
                    image: bb:1
                    command: ["sleep", "600"]
                    ports: ["\(port):80"]
                    stop_grace_period: 200ms
                  worker:
                    image: bb:1
                    command: ["sleep", "600"]
                    scale: 2
                    volumes: ["data:/data"]
                    networks: [back]
                    stop_grace_period: 200ms
                    secrets: [token]
                networks:
                  back: {}
                volumes:
                  data: {}
                secrets:
                  token:
                    file: ./token.txt
                """, to: compose)
            // A secret's value: nowhere on the disk but its own file, whatever the kills leave.
            let secret = "crash-secret-\(UUID().uuidString)"
            try write(secret, to: dir + "/token.txt")
            var processes: [ChildProcess] = []
            do {
                // Every container that ever existed, to look for what the host may still hold of it.
                var seen: Set<String> = []
                // Kills land anywhere within the time an up takes here to
                // bring every replica up.
                let start = ContinuousClock.now
                processes.append(try up(root, ["-f", compose, "-q"], log: dir + "/up-first.log"))
                try await waitForServices(root, log: dir + "/up-first.log") { $0["web"]?["available"] as? Int == 1 && $0["worker"]?["available"] as? Int == 2 }
                let whole = ContinuousClock.now - start
                #expect(try await gantry(root, ["down", "-f", compose, "-v"]).status == 0)
                try await waitForExit(processes[0])
                let window = Int(whole.components.seconds * 1_000_000 + whole.components.attoseconds / 1_000_000_000_000)
                var generator = SystemRandomNumberGenerator()
                var killed = 0
                var ended: [String] = []
                let rounds = 25
                for round in 0 ..< rounds {
                    let process = try up(root, ["-f", compose, "-q"], log: dir + "/up-\(round).log")
                    processes.append(process)
                    try await Task.sleep(for: .microseconds(Int.random(in: 0 ..< window, using: &generator)))
                    if process.isRunning {
                        kill(process.processIdentifier, SIGKILL)
                        killed += 1
                    } else {
                        ended.append("round \(round) ended by itself (\(process.wait().status)): \((try? readText(dir + "/up-\(round).log").suffix(300)) ?? "")")
                    }
                    try await waitForExit(process)
                    // Before the next command, which removes what dies with its process.
                    seen.formUnion(((try? FileManager.default.contentsOfDirectory(atPath: root + "/containers")) ?? []).filter { $0.count == 64 })
                    _ = try await gantry(root, ["ps", "-a"])
                }
                #expect(killed > rounds / 3, "only \(killed) of \(rounds) ups were killed: \(ended.prefix(3))")
                print("crash recovery: \(killed) of \(rounds) compose ups killed with SIGKILL, \(seen.count) containers made (a whole up: \(whole))")

                // The next up reaches the declared state, without a replica too many.
                let log = dir + "/up.log"
                processes.append(try up(root, ["-f", compose], log: log))
                try await waitForServices(root, log: log) { $0["web"]?["available"] as? Int == 1 && $0["worker"]?["available"] as? Int == 2 }
                try await Task.sleep(for: .milliseconds(500))
                let replicas = try await running(root)
                #expect(replicas.count == 3, "\(replicas.compactMap { $0["name"] })")
                seen.formUnion(replicas.compactMap { $0["id"] as? String })

                // Taken down, nothing of the project is left.
                let down = try await gantry(root, ["down", "-f", compose, "-v"])
                #expect(down.status == 0, "\(down.error)")
                try await waitForExit(processes[processes.count - 1])
                let left = try json(try await gantry(root, ["ps", "-a", "--format", "json"]).output)
                #expect(left.isEmpty, "containers left: \(left.compactMap { $0["name"] })")
                #expect(!(try await gantry(root, ["network", "ls"]).output.contains("crash_")))
                #expect(!(try await gantry(root, ["volume", "ls"]).output.contains("crash_data")))
                let cgroups = ["memory", "pids", "cpu", "freezer", "devices", "unified"].flatMap { hierarchy in
                    ((try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup/\(hierarchy)/\(parent)")) ?? []).filter { $0.count == 64 }
                }
                #expect(cgroups.isEmpty, "cgroups left: \(cgroups)")
                try expectNoHostLeftovers(of: seen, root: root)
                #expect(filesHolding(secret, under: root).isEmpty, "a secret's value is in the state root")
                let runtimeDirectory = StateRoot(root).runtime
                #expect(((try? FileManager.default.contentsOfDirectory(atPath: runtimeDirectory + "/provided")) ?? []).isEmpty,
                        "secrets of containers that are gone are left in \(runtimeDirectory)/provided")
                #expect(filesHolding(secret, under: runtimeDirectory).isEmpty)
                let mounts = (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
                #expect(!mounts.contains(runtimeDirectory + "/provided/"), "a secret's tmpfs is left mounted")
                let checked = try await gantry(root, ["check"])
                #expect(checked.status == 0, "\(checked.output)")
                try await cleanUp(root, compose: compose, processes: processes)
            } catch {
                try? await cleanUp(root, compose: compose, processes: processes)
                throw error
            }
        }
    }
}
