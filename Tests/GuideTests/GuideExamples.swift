import Build
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Gantry
import GantryTesting
import Testing

// The code of README.md and of the guides in Documentation/Gantry.docc,
// each block as the text shows it (GuideTests checks that every block is
// here, line for line), inside a function that gives it what the text
// around it has made. Compiled with the tests, never run: what they would
// do is run by the other suites. Lines after a block only use what it made.

func readme() async throws {
    let gantry = try Gantry(root: StateRoot("/var/lib/gantry"))
    try await gantry.images.pull("127.0.0.1:5000/team/tools:1")
    try await gantry.images.importLayout(at: "/tmp/layout", tag: "1", name: "tools:1")

    // Run a sandboxed worker to its end; everything is removed afterwards,
    // also on a throw or a cancellation.
    let (lines, exit) = try await gantry.run(
        ContainerSpec(image: "tools:1", command: ["sh", "-c", "echo working; exit 3"])
            .resources(cpus: 0.5, memory: 64 << 20, pids: 64)
            .readOnlyRootfs()
            .timeout(.seconds(30))
    ) { container in
        var lines: [String] = []
        for try await line in container.output.lines { lines.append(line) }
        return lines
    }
    print(lines, exit)   // ["working"] exited with 3

    // Or step by step, with exec, stop, pause and stats.
    let runtime = try gantry.containers
    let worker = try await runtime.create(ContainerSpec(image: "tools:1", command: ["sleep", "60"]).named("worker"))
    try await worker.start()
    let ps = try await worker.exec(ExecSpec(["ps"]))
    for try await chunk in ps.output { print(chunk.text, terminator: "") }
    print(try worker.usage())
    try await worker.stop(grace: .seconds(5))
    try await worker.remove()

    // Networks, ports, volumes and pods.
    try await runtime.networks.create("backend")
    let web = try await runtime.create(
        ContainerSpec(image: "tools:1", command: ["httpd", "-f", "-p", "80"])
            .named("web")
            .network(.bridge("backend"), aliases: ["www"])
            .publishing(PublishedPort(containerPort: 80))          // a free host port
            .mounting(.volume(name: "site", target: "/www")))
    try await web.start()
    print(try web.record.network!.address, try web.record.network!.ports)
    try await runtime.pods.create(PodSpec(name: "duo", network: .bridge("backend")))
    let member = try await runtime.create(ContainerSpec(image: "tools:1", command: ["sleep", "60"]).inPod("duo"))

    // One call: input in; output, errors and exit out.
    let result = try await runtime.run(ContainerSpec(image: "tools:1", command: ["wc", "-l"]), input: Array("a\nb\n".utf8))
    print(result.standardOutput, result.exit)   // "2\n" exited with 0

    // Remove everything this state root holds (containers, networks and their
    // firewall rules, volumes, images, the cgroup parent), and the root itself.
    try await gantry.destroy()
    _ = member
}

func containersGuide(images: ImageStore) async throws {
    let runtime = try ContainerRuntime(images: images)

    // Scoped: everything is removed on return, on a throw and on cancellation.
    let (lines, exit) = try await runtime.run(ContainerSpec(image: "busybox", command: ["sh", "-c", "echo hi; exit 3"])) { container in
        var lines: [String] = []
        for try await line in container.output.lines { lines.append(line) }
        return lines
    }
    // exit == ContainerExit(status: .exited(3), reason: .exited)

    // Step by step.
    let container = try await runtime.create(ContainerSpec(image: "busybox", command: ["sleep", "60"]).named("worker"))
    try await container.start()
    let process = try await container.exec(ExecSpec(["ps"]))
    try await container.pause()
    try await container.resume()
    try await container.stop(grace: .seconds(5))   // stop signal, then SIGKILL
    try await container.remove()
    _ = (lines, exit, process)

    let result = try await runtime.run(ContainerSpec(image: "busybox", command: ["wc", "-l"]), input: Array("a\nb\n".utf8))
    // result.exit.code == 0, result.standardOutput == "2\n", result.inputError == nil
    _ = result

    try await container.copyIn(from: "config/", to: "/etc/app")
    try await container.copyOut("/var/log/app/.", to: "logs")

    let secretive = ContainerSpec(image: "postgres")
        .secret(.init(name: "db_password", source: .file(path: "/etc/app/db_password")))
        .secret(.init(name: "api_key", source: .environment(variable: "API_KEY"), environmentVariable: "API_KEY", mounted: false))
        .config(.init(name: "app.conf", source: .content("max_connections = 20\n"), target: "/etc/app/app.conf"))
    let database = try await runtime.create(secretive)
    _ = database
}

func gantryOverview() async throws {
    let gantry = try Gantry(root: StateRoot("/var/lib/gantry"))
    try await gantry.images.pull("127.0.0.1:5000/tools:1")
    try await gantry.images.importRootfs(at: "/tmp/rootfs", name: "tools:1")
    try await gantry.images.unpack("tools:1", into: "/tmp/unpacked")
    let (output, exit) = try await gantry.run(
        ContainerSpec(image: "tools:1", command: ["sh", "-c", "echo hello"])
            .resources(cpus: 0.5, memory: 64 << 20, pids: 64)
            .readOnlyRootfs()
            .timeout(.seconds(30))
    ) { container in
        try await container.output.text()
    }
    _ = (output, exit)
}

func rootlessGuide() async throws {
    let images = try ImageStore(root: .default)       // ~/.local/share/gantry
    let runtime = try ContainerRuntime(images: images)
    print(images.userNamespace!)                       // uids 0-0→1000,1-65536→100000, gids …
    let exit = try await runtime.run(ContainerSpec(image: "busybox", command: ["id"]))
    _ = exit
}

func gettingStarted() async throws {
    let gantry = try Gantry(root: StateRoot("/tmp/gantry"))
    let images = gantry.images

    try await images.importLayout(at: "/tmp/layout", tag: "1", name: "tools:1")
    for record in try await images.list() {
        let details = try await images.inspect(record.reference.description)
        print(details.familiarName, details.platform, details.size)
    }
    let report = try await images.unpack("tools:1", into: "/tmp/unpacked") { progress in
        print(progress.phase, progress.completed, progress.total ?? 0)
    }
    _ = report
}

func networkingGuide(gantry: Gantry) async throws {
    let runtime = try gantry.containers
    try await runtime.networks.create("backend", subnet: IPv4Subnet("10.90.0.0/24"))
    let db = try await runtime.create(
        ContainerSpec(image: "tools:1", command: ["httpd", "-f", "-p", "80"])
            .named("db")
            .network(.bridge("backend"), aliases: ["database"]))
    try await db.start()
    print(try db.record.network!.address)     // 10.90.0.2

    try await runtime.pods.create(PodSpec(name: "web", network: .bridge(Networks.defaultName),
                                          publishing: [PublishedPort(hostPort: 8080, containerPort: 80)]))
    let server = try await runtime.create(ContainerSpec(image: "tools:1", command: ["httpd", "-f", "-p", "80"]).inPod("web"))
    let sidecar = try await runtime.create(ContainerSpec(image: "tools:1", command: ["wget", "-qO-", "http://127.0.0.1/"]).inPod("web"))
    _ = (server, sidecar)
}

func registriesGuide() async throws {
    let gantry = try Gantry(root: StateRoot("/var/lib/gantry"))
    let report = try await gantry.images.pull("ghcr.io/org/worker:1.2")
    try await gantry.images.push("worker:dev", to: "127.0.0.1:5000/team/worker:dev")
    _ = report
}

func schedulingGuide(runtime: ContainerRuntime) async throws {
    let cluster = try Cluster(nodes: [try LocalNode(runtime: runtime)])
    let status = try await JobRunner(cluster: cluster).run(JobSpec(
        name: "thumbnails",
        template: Workload(name: "thumbnails", container: ContainerSpec(image: "tools:1", command: ["sh", "-c", "resize $JOB_COMPLETION_INDEX"]),
                           resources: ResourceRequirements(limits: .cpus(1, memory: 256 << 20))),
        completions: 6, parallelism: 2, completionMode: .indexed))
    print(status.condition, status.succeeded, status.failed)

    let nightly = try CronSchedule("CRON_TZ=Europe/Berlin 30 2 * * *")
    let next = nightly.next(after: Date())
    _ = next

    let store = try JobStore(root: .default)
    try store.saveCronJob(CronJobSpec(name: "backup", schedule: try CronSchedule("0 3 * * *"),
        job: JobTemplate(container: ContainerSpec(image: "tools:1", command: ["backup"]))))
    try await CronJobController(cluster: cluster, store: store).run { event in print(event) }

    var autoscaler = HorizontalAutoscaler(spec: AutoscalerSpec(minReplicas: 2, maxReplicas: 10, metrics: [.cpu(percent: 60)]))
    let decision = autoscaler.decide(currentReplicas: 4, samples: [MetricSample(.cpuUtilization, values: [90, 85, 95, 80])],
                                     now: .seconds(30))
    print(decision.desiredReplicas, decision.reason)

    let reconciler = try Reconciler(runtime: runtime, options: Reconciler.Options(
        project: "shop", metricSource: CgroupMetricSource(runtime: runtime)))
    try reconciler.setAutoscaler(AutoscalerSpec(minReplicas: 2, maxReplicas: 10, metrics: [.cpu(percent: 60)]), service: "web")
}

func servicesGuide() async throws {
    let gantry = try Gantry(root: .default)
    let reconciler = try Reconciler(runtime: try gantry.containers,
                                    options: .init(project: "shop"))

    var web = ServiceSpec(name: "web", project: "shop", replicas: 3,
                          template: ContainerSpec(image: "shop/web:2", command: ["serve"])
                              .network(.bridge("shop")))
    web.probes.readiness = .httpGet("/healthz", port: 8080)
    web.probes.liveness = .tcpSocket(port: 8080)
    web.update = UpdateStrategy(maxSurge: .percent(25), maxUnavailable: .count(0))
    try reconciler.apply(web)

    // A ServiceLifecycle Service: run it in a ServiceGroup, or directly.
    try await reconciler.run()

    let service = web   // the closure may run elsewhere: it takes a copy
    try await reconciler.withRunning { reconciler in
        try reconciler.apply(service)
        try await reconciler.waitForRollout("web")
        // … talk to the service; kill a replica and watch it come back …
    }
}

func servicesGuideEndpoints(reconciler: Reconciler) throws {
    var api = ServiceSpec(name: "api", project: "shop", replicas: 3,
                          template: ContainerSpec(image: "shop/api:2")
                              .network(.bridge("shop"))
                              .publishing(PublishedPort(hostPort: 8080, containerPort: 80)))
    api.probes.readiness = .httpGet("/healthz", port: 80)
    api.sessionAffinity = .clientAddress   // optional: one replica per client address
    try reconciler.apply(api)
    // http://127.0.0.1:8080/ from the host, http://api/ from the network
}

func servicesGuideSimulated(simulated: any ReplicaRuntime, clock: ManualClock, spec: ServiceSpec) async throws {
    let reconciler = try Reconciler(runtime: simulated, clock: clock)
    try await reconciler.withRunning { reconciler in
        try reconciler.apply(spec)
        try await reconciler.waitForRollout("web")
        // end a simulated replica, then clock.advance(by: .seconds(10))
    }
}

func buildingGuide(gantry: Gantry) async throws {
    let builder = ImageBuilder(runtime: try gantry.containers)
    var options = BuildOptions(arguments: ["VERSION": "1.2"], tags: ["app:dev"])
    options.timestamp = Date(timeIntervalSince1970: 1_700_000_000)
    let result = try await builder.build(context: "./app", options: options) { event in
        if case .step(let step) = event { print(step) }
    }
    print(result.image.manifestDescriptor.digest, result.steps.filter(\.cached).count)
}

func buildingGuideStepByStep(gantry: Gantry) async throws {
    var image = try await WorkingImage(from: "busybox:1.36", runtime: try gantry.containers)
    try await image.run(["sh", "-c", "mkdir -p /srv && echo ready > /srv/state"])
    try await image.copy("./config.json", to: "/srv/config.json")
    image.configuration.cmd = ["cat", "/srv/state"]
    try await image.commit(as: "worker:1")
}

/// What the README's testing example stores.
struct Order: Sendable { var id: Int }
/// A store the README's testing example saves to.
struct OrderStore {
    init(url: String) throws {}
    func save(_ order: Order) async throws {}
}

@Suite(.disabled("the guides' examples are compiled, not run"))
struct ReadmeTestingExample {
    @Test func storesAnOrder() async throws {
        try await withTestContainer(.postgreSQL()) { db in
            let url = try db.postgreSQLURL            // postgresql://test:test@127.0.0.1:40213/test
            try await OrderStore(url: url).save(Order(id: 1))
        }
    }
}

func testingGuide() async throws {
    let web = TestContainer(image: "busybox:test", command: ["httpd", "-f", "-p", "80", "-h", "/www"])
        .copying(contents: "hello", to: "/www/index.html")
        .exposing(80)
        .waiting(for: .http("/", port: 80, body: { $0.contains("hello") }))
    try await withTestContainer(web) { server in
        let url = try server.url(80)                    // http://127.0.0.1:41873/
        let (body, _) = try await URLSession.shared.data(from: url)
        print(String(decoding: body, as: UTF8.self))
    }
}

/// The Testing guide's suite: compiled, never run (the GantryTesting
/// suites run what it does).
@Suite(.disabled("the guides' examples are compiled, not run"))
struct TestingGuideSuites {
    @Suite(.container("cache", TestContainer(image: "busybox:test", command: ["nc", "-ll", "-p", "6379", "-e", "cat"])
        .exposing(6379).waiting(for: .port(6379))))
    struct CacheTests {
        @Test func reachesTheCache() async throws {
            let cache = try RunningContainer.scoped("cache")
            print(try cache.endpoint(6379))             // 127.0.0.1:40117
        }
    }
}

func testingGuideForTheRun() async throws {
    let shared = try await TestSession.shared.containerForTheRun("db", .postgreSQL())
    print(try shared.postgreSQLURL)
}

func testingGuideCompose() async throws {
    let environment = TestCompose(file: "compose.yaml")
        .waiting(for: "web", .http("/", port: 80))
    try await TestSession.shared.withCompose(environment) { project in
        print(try project.endpoint("web", 80))       // 127.0.0.1:40551
    }
}

func testingGuideNetwork() async throws {
    let session = try TestSession.shared
    try await session.withNetwork { network in
        let db = TestContainer(image: "busybox:test", command: ["nc", "-ll", "-p", "5432", "-e", "cat"])
            .network(network, aliases: ["db"])
            .waiting(for: .port(5432))
        try await session.withContainer(db) { _ in
            let client = TestContainer(image: "busybox:test", command: ["sh", "-c", "echo ping | nc db 5432"])
                .network(network)
                .waiting(for: .exit(code: 0))
            try await session.withContainer(client) { done in
                print(try await done.logs())            // ping
            }
        }
    }
}
