@testable import Compose
import Foundation
import GantryTestSupport
import Runtime
import Testing
@testable import Reconciler

/// Parses `yaml` as `compose.yaml` in `/srv/demo` (project `demo`).
private func parse(_ yaml: String, environment: [String: String] = [:], directory: String = "/srv/demo",
                   projectName: String? = nil) throws -> ComposeProject {
    try ComposeProject.parse(yaml, directory: directory, environment: environment, projectName: projectName)
}

/// The message of the compose error that parsing `yaml` throws.
private func failure(_ yaml: String, environment: [String: String] = [:], sourceLocation: SourceLocation = #_sourceLocation) -> String {
    let error = #expect(throws: ReconcilerError.self, sourceLocation: sourceLocation) { try parse(yaml, environment: environment) }
    #expect(error?.code == .compose, sourceLocation: sourceLocation)
    return error?.message ?? ""
}

/// The one service of a file holding `web:` with `body` (indented by four).
private func web(_ body: String, top: String = "", environment: [String: String] = [:]) throws -> ServiceSpec {
    let project = try parse(webFile(body, top: top), environment: environment)
    return try #require(project.services.first { $0.name == "web" })
}

private func webFile(_ body: String, top: String = "") -> String {
    let indented = body.split(separator: "\n", omittingEmptySubsequences: false).map { "    " + $0 }.joined(separator: "\n")
    return "services:\n  web:\n    image: nginx\n" + indented + "\n" + top
}

@Suite struct ComposeTests {
    @Test func aRealisticFileMapsOntoServices() throws {
        let yaml = """
            name: shop
            services:
              web:
                image: ghcr.io/acme/web:${TAG:-latest}
                entrypoint: /docker-entrypoint.sh --verbose 'two words'
                command: ["serve", "--port", "8080"]
                environment:
                  DATABASE_URL: postgres://db/shop
                  DEBUG: true
                ports:
                  - "8080:80"
                  - target: 443
                    published: 8443
                    host_ip: 127.0.0.1
                    protocol: tcp
                volumes:
                  - static:/srv/static:ro
                  - ./config:/etc/web
                depends_on:
                  db:
                    condition: service_healthy
                healthcheck:
                  test: ["CMD", "wget", "-q", "-O-", "http://localhost/health"]
                  interval: 5s
                  timeout: 2s
                  retries: 5
                  start_period: 10s
                deploy:
                  replicas: 3
                  resources:
                    limits:
                      cpus: "0.5"
                      memory: 256m
                      pids: 100
                  update_config:
                    parallelism: 2
                    order: start-first
                    failure_action: rollback
                    monitor: 2m
                restart: always
                stop_signal: SIGINT
                stop_grace_period: 1m30s
                labels:
                  tier: frontend
              db:
                image: postgres:16
                environment:
                  - POSTGRES_DB=shop
                  - POSTGRES_PASSWORD
                  - UNSET_ONE
                volumes:
                  - dbdata:/var/lib/postgresql/data
                healthcheck:
                  test: ["CMD-SHELL", "pg_isready -U postgres"]
                restart: unless-stopped
            volumes:
              dbdata:
              static:
            """
        let project = try ComposeProject.parse(yaml, directory: "/srv/shop", environment: ["POSTGRES_PASSWORD": "s3cret"])
        #expect(project.name == "shop")
        #expect(project.services.map(\.name) == ["db", "web"])
        #expect(project.services.allSatisfy { $0.project == "shop" })
        #expect(project.networks == [ComposeNetwork(key: "default", name: "shop_default")])
        #expect(project.volumes == [ComposeVolume(key: "dbdata", name: "shop_dbdata"), ComposeVolume(key: "static", name: "shop_static")])
        #expect(project.warnings.isEmpty)

        let web = try #require(project.services.last)
        #expect(web.template.root == .image("ghcr.io/acme/web:latest"))
        #expect(web.template.entrypoint == ["/docker-entrypoint.sh", "--verbose", "two words"])
        #expect(web.template.command == ["serve", "--port", "8080"])
        #expect(web.template.environment == ["DATABASE_URL=postgres://db/shop", "DEBUG=true"])
        #expect(web.template.publishedPorts == [
            PublishedPort(hostPort: 8080, containerPort: 80),
            PublishedPort(hostIP: IPv4Address("127.0.0.1"), hostPort: 8443, containerPort: 443, protocol: .tcp),
        ])
        #expect(web.template.mounts == [
            .volume(name: "shop_static", target: "/srv/static", readOnly: true),
            .bind(source: "/srv/shop/config", target: "/etc/web", readOnly: false, propagation: nil),
        ])
        #expect(web.template.network == .bridge("shop_default"))
        #expect(web.template.networkAliases.isEmpty)
        #expect(web.dependsOn == [ServiceDependency("db", condition: .healthy)])
        #expect(web.probes.readiness == Probe(.exec(["wget", "-q", "-O-", "http://localhost/health"]), initialDelay: .seconds(10),
                                              period: .seconds(5), timeout: .seconds(2), failureThreshold: 5))
        #expect(web.probes.liveness == nil && web.probes.startup == nil)
        #expect(web.replicas == 3)
        #expect(web.template.resources.cpuQuota == 50_000 && web.template.resources.cpuPeriod == 100_000)
        #expect(web.template.resources.memory == 256 << 20)
        #expect(web.template.resources.pids == 100)
        #expect(web.update.maxSurge == .count(2) && web.update.maxUnavailable == .count(0))
        #expect(web.update.rollbackOnFailure)
        #expect(web.update.progressDeadline == .seconds(120))
        #expect(web.restartPolicy == .always)
        #expect(web.template.stopSignal == 2)
        #expect(web.stopGracePeriod == .seconds(90))
        #expect(web.template.labels == ["tier": "frontend"])
        #expect(web.template.name == nil)

        let db = try #require(project.services.first)
        #expect(db.template.environment == ["POSTGRES_DB=shop", "POSTGRES_PASSWORD=s3cret"])
        #expect(db.template.mounts == [.volume(name: "shop_dbdata", target: "/var/lib/postgresql/data", readOnly: false)])
        #expect(db.probes.readiness == Probe(.exec(["/bin/sh", "-c", "pg_isready -U postgres"]), period: .seconds(30), timeout: .seconds(30)))
        #expect(db.restartPolicy == .always)
        #expect(db.stopGracePeriod == .seconds(10))
        #expect(db.replicas == 1)
        #expect(db.dependsOn.isEmpty)
    }

    @Test func theProjectIsNamedByTheCallerTheFileOrTheDirectory() throws {
        let plain = "services:\n  web:\n    image: nginx\n"
        #expect(try parse(plain, directory: "/srv/My Shop.v2").name == "myshopv2")
        #expect(try parse(plain, directory: "/srv/__site").name == "site")
        #expect(try parse(plain, directory: "/").name == "default")
        #expect(try parse("name: fromfile\n" + plain, directory: "/srv/other").name == "fromfile")
        #expect(try parse("name: fromfile\n" + plain, projectName: "given").name == "given")
        #expect(try parse("name: ${PROJECT}\n" + plain, environment: ["PROJECT": "env-named"]).name == "env-named")
        #expect(try parse(plain, projectName: "given").services.first?.project == "given")
        #expect(failure("name: Bad Name\n" + plain).contains("\"Bad Name\" is not a project name"))
    }

    @Test func servicesJoinTheDefaultNetworkNamedAfterTheProject() throws {
        let project = try parse("""
            services:
              web:
                image: nginx
              tool:
                image: busybox
                network_mode: host
              sealed:
                image: busybox
                network_mode: none
              legacy:
                image: busybox
                network_mode: bridge
            """)
        let byName = Dictionary(uniqueKeysWithValues: project.services.map { ($0.name, $0) })
        #expect(byName["web"]?.template.network == .bridge("demo_default"))
        #expect(byName["legacy"]?.template.network == .bridge("demo_default"))
        #expect(byName["tool"]?.template.network == .host)
        #expect(byName["sealed"]?.template.network == ContainerSpec.NetworkMode.none)
        #expect(project.networks == [ComposeNetwork(key: "default", name: "demo_default")])

        let hostOnly = try parse("services:\n  tool:\n    image: busybox\n    network_mode: host\n")
        #expect(hostOnly.networks.isEmpty)
    }

    @Test func declaredNetworksCarryTheirSettingsAndAliases() throws {
        let project = try parse("""
            services:
              api:
                image: nginx
                networks:
                  front:
                    aliases: [api.internal, backend]
              worker:
                image: busybox
                networks: [back]
            networks:
              front:
                driver: bridge
                internal: true
                labels: [team=web]
                ipam:
                  config:
                    - subnet: 10.89.0.0/24
              back:
                name: shared-back
              default:
                name: custom-default
            """)
        #expect(project.networks == [
            ComposeNetwork(key: "back", name: "shared-back"),
            ComposeNetwork(key: "default", name: "custom-default"),
            ComposeNetwork(key: "front", name: "demo_front", internal: true, subnet: "10.89.0.0/24", labels: ["team": "web"]),
        ])
        let api = try #require(project.services.first)
        #expect(api.template.network == .bridge("demo_front"))
        #expect(api.template.networkAliases == ["api.internal", "backend"])
        #expect(project.services.last?.template.network == .bridge("shared-back"))

        #expect(failure("services: {}\nnetworks:\n  n:\n    driver: overlay\n").contains("network n: driver \"overlay\""))
        #expect(failure("services: {}\nnetworks:\n  n:\n    ipam:\n      config:\n        - subnet: 10.89.0.1/33\n").contains("is not an IPv4 subnet"))
    }

    @Test func externalNetworksAndVolumesKeepTheirNames() throws {
        let project = try parse("""
            services:
              web:
                image: nginx
                networks: [edge]
                volumes:
                  - certs:/certs:ro
                  - cache:/cache
            networks:
              edge:
                external: true
              old:
                external:
                  name: legacy-net
            volumes:
              certs:
                external: true
                name: shared-certs
              cache:
                external: true
              data:
                name: exact-data
                labels:
                  backup: daily
            """)
        #expect(project.networks == [ComposeNetwork(key: "edge", name: "edge", external: true), ComposeNetwork(key: "old", name: "legacy-net", external: true)])
        #expect(project.volumes == [
            ComposeVolume(key: "cache", name: "cache", external: true),
            ComposeVolume(key: "certs", name: "shared-certs", external: true),
            ComposeVolume(key: "data", name: "exact-data", labels: ["backup": "daily"]),
        ])
        #expect(project.services.first?.template.mounts == [
            .volume(name: "shared-certs", target: "/certs", readOnly: true), .volume(name: "cache", target: "/cache", readOnly: false),
        ])
        #expect(failure("services: {}\nnetworks:\n  e:\n    external: true\n    internal: true\n").contains("network e: internal: an external network"))
        #expect(failure("services: {}\nvolumes:\n  v:\n    driver: nfs\n").contains("volume v: driver \"nfs\""))
    }

    @Test func aServiceJoinsDeclaredNetworksTheFirstByPriority() throws {
        // Several: the first by name, with the aliases of each.
        let two = try web("networks:\n  front:\n  back:\n    aliases: [api]", top: "networks:\n  front:\n  back:\n")
        #expect(two.template.network == .bridge("demo_back") && two.template.networkAliases == ["api"])
        #expect(two.template.additionalNetworks == [.init("demo_front")])
        // gw_priority (then priority) chooses the first: the route out and the published ports.
        let chosen = try web("networks:\n  back:\n  front:\n    gw_priority: 10\n    aliases: [www]\n  default:", top: "networks:\n  front:\n  back:\n")
        #expect(chosen.template.network == .bridge("demo_front") && chosen.template.networkAliases == ["www"])
        #expect(chosen.template.additionalNetworks == [.init("demo_back"), .init("demo_default")])
        let listed = try parse(webFile("networks: [front, default]", top: "networks:\n  front:\n"))
        #expect(listed.networks.map(\.key) == ["default", "front"], "the default network is made when a service lists it among others")
        #expect(failure(webFile("networks: [nowhere]")).contains("service web: networks[0]: the network nowhere is not declared"))
        #expect(failure(webFile("network_mode: host\nnetworks: [default]")).contains("network_mode and networks cannot both be given"))
        let shared = try parse(webFile("network_mode: service:vpn") + "  vpn:\n    image: vpn\n")
        let joined = try #require(shared.services.first { $0.name == "web" })
        #expect(joined.networkService == "vpn" && joined.template.network == .none && joined.dependsOn == [ServiceDependency("vpn")])
        #expect(try web("network_mode: container:edge").template.network == .container("edge"))
        #expect(failure(webFile("network_mode: \"service:\"")).contains("must be none, host, bridge, service:NAME or container:NAME"))
        #expect(failure(webFile("networks:\n  default:\n    ipv4_address: 10.0.0.5")).contains("networks.default.ipv4_address: not supported"))
    }

    @Test func portsInShortAndLongSyntax() throws {
        let service = try web("""
            ports:
              - "80"
              - 9000
              - "8080:80"
              - "127.0.0.1:5353:53/udp"
              - ":81"
              - target: 443
                published: "8443"
                host_ip: 0.0.0.0
                protocol: UDP
              - target: 22
            """)
        #expect(service.template.publishedPorts == [
            PublishedPort(containerPort: 80),
            PublishedPort(containerPort: 9000),
            PublishedPort(hostPort: 8080, containerPort: 80),
            PublishedPort(hostIP: IPv4Address("127.0.0.1"), hostPort: 5353, containerPort: 53, protocol: .udp),
            PublishedPort(hostPort: 0, containerPort: 81),
            PublishedPort(hostIP: IPv4Address("0.0.0.0"), hostPort: 8443, containerPort: 443, protocol: .udp),
            PublishedPort(containerPort: 22),
        ])
        let dropped = try parse(webFile("network_mode: host\nports: [\"80:80\"]"))
        #expect(dropped.services.first?.template.publishedPorts == [])
        #expect(dropped.warnings.contains { $0.contains("service web: ports: ignored") })
    }

    @Test func portRangesAndMalformedPortsAreErrorsNamingThem() {
        let malformed = failure(webFile("ports:\n  - \"8080:80\"\n  - \"80:abc\""))
        #expect(malformed.hasPrefix("compose.yaml: service web: ports[1] \"80:abc\": is not a port"))
        #expect(failure(webFile("ports: [\"8000-8010:80\"]")).contains("ports[0] \"8000-8010:80\": port ranges are not supported"))
        #expect(failure(webFile("ports:\n  - target: 80\n    published: 8000-8010")).contains("ports[0].published \"8000-8010\": port ranges"))
        #expect(failure(webFile("ports:\n  - published: 80")).contains("ports[0]: target: is missing"))
        #expect(failure(webFile("ports:\n  - target: 70000")).contains("ports[0].target \"70000\": must be a whole number in 1…65535"))
        #expect(failure(webFile("ports:\n  - target: 80\n    host_ip: \"::1\"")).contains("host_ip \"::1\": is not an IPv4 address"))
    }

    @Test func volumesBindsAndTmpfsMounts() throws {
        let service = try web("""
            volumes:
              - ./data:/data
              - ../shared/logs:/logs:rw
              - /etc/ssl/certs:/etc/ssl/certs:ro,rslave
              - ~/cache:/cache
              - cache:/var/cache:ro
              - type: bind
                source: conf
                target: /etc/app
                read_only: true
                bind:
                  propagation: rprivate
              - type: volume
                source: cache
                target: /other
              - type: tmpfs
                target: /scratch
                tmpfs:
                  size: 64m
                  mode: 1770
            tmpfs:
              - /run
              - /tmp:size=16m,mode=1777
            """, top: "volumes:\n  cache:\n", environment: ["HOME": "/home/ada"])
        #expect(service.template.mounts == [
            .bind(source: "/srv/demo/data", target: "/data", readOnly: false, propagation: nil),
            .bind(source: "/srv/shared/logs", target: "/logs", readOnly: false, propagation: nil),
            .bind(source: "/etc/ssl/certs", target: "/etc/ssl/certs", readOnly: true, propagation: .rslave),
            .bind(source: "/home/ada/cache", target: "/cache", readOnly: false, propagation: nil),
            .volume(name: "demo_cache", target: "/var/cache", readOnly: true),
            .bind(source: "/srv/demo/conf", target: "/etc/app", readOnly: true, propagation: .rprivate),
            .volume(name: "demo_cache", target: "/other", readOnly: false),
            .tmpfs(target: "/scratch", size: 64 << 20, mode: 0o1770),
            .tmpfs(target: "/run", size: nil, mode: 0o1777),
            .tmpfs(target: "/tmp", size: 16 << 20, mode: 0o1777),
        ])
        let single = try web("tmpfs: /run")
        #expect(single.template.mounts == [.tmpfs(target: "/run")])
    }

    @Test func volumeErrorsNameTheVolume() throws {
        #expect(failure(webFile("volumes: [\"data:/data\"]")).contains("service web: volumes[0] \"data:/data\": the volume data is not declared"))
        // Anonymous volumes: the project's, named after the service and the path.
        let anonymous = try parse(webFile("volumes: [\"/var/lib/data\", {type: volume, target: /cache, read_only: true}]"))
        #expect(anonymous.services[0].template.mounts == [.volume(name: "demo_web_var-lib-data", target: "/var/lib/data"),
                                                          .volume(name: "demo_web_cache", target: "/cache", readOnly: true)])
        #expect(anonymous.volumes.map(\.name) == ["demo_web_cache", "demo_web_var-lib-data"] && anonymous.warnings.isEmpty)
        let shared = try parse(webFile("volumes: [/data]\nscale: 2"))
        #expect(shared.warnings == ["compose.yaml: service web: volumes: the anonymous volume of /data is the service's, shared by its 2 replicas (Docker gives each container its own)"],
                "\(shared.warnings)")
        #expect(failure(webFile("volumes: [\"./a:relative\"]")).contains("must be an absolute path"))
        #expect(failure(webFile("volumes: [\"./a:/a:shared\"]")).contains("shared propagation is not offered"))
        #expect(failure(webFile("volumes:\n  - type: npipe\n    source: x\n    target: /x")).contains("volumes[0].type \"npipe\": must be bind, volume or tmpfs"))
        #expect(failure(webFile("tmpfs: [\"/run:size=lots\"]")).contains("the size lots"))
    }

    @Test func envFilesAndEnvironmentMerge() async throws {
        try await withTemporaryDirectory("compose-env") { directory in
            try write("""
                # settings
                export MODE=production

                GREETING="hello world"
                QUOTED='single'
                HALF="open
                EMPTY=
                FROM_HOST
                MISSING_FROM_HOST
                OVERRIDDEN=from-file
                """, to: directory + "/app.env")
            try write("EXTRA=1\n", to: directory + "/config/extra.env")
            let yaml = webFile("""
                env_file:
                  - app.env
                  - ./config/extra.env
                  - path: optional.env
                    required: false
                environment:
                  OVERRIDDEN: from-compose
                  HOST_VALUE:
                  NOT_SET:
                  PORT: 8080
                """)
            let project = try ComposeProject.parse(yaml, directory: directory, environment: ["FROM_HOST": "host", "HOST_VALUE": "hv"])
            #expect(project.services.first?.template.environment == [
                "MODE=production", "GREETING=hello world", "QUOTED=single", "HALF=\"open", "EMPTY=", "FROM_HOST=host",
                "OVERRIDDEN=from-compose", "EXTRA=1", "HOST_VALUE=hv", "PORT=8080",
            ])
            let missing = #expect(throws: ReconcilerError.self) {
                try ComposeProject.parse(webFile("env_file: nope.env"), directory: directory)
            }
            #expect(missing?.message.contains("compose.yaml: service web: env_file \"nope.env\": no such file") == true)
            try write("GOOD=1\n=bad\n", to: directory + "/bad.env")
            let bad = #expect(throws: ReconcilerError.self) {
                try ComposeProject.parse(webFile("env_file: [bad.env]"), directory: directory)
            }
            #expect(bad?.message.contains("env_file[0] \"bad.env\": line 2: expected KEY=VALUE") == true)
        }
    }

    @Test func variablesAreInterpolatedWithDefaults() throws {
        let environment = ["TAG": "1.2", "EMPTY": "", "PORT": "9090", "USER_NAME": "ada"]
        let project = try parse(webFile("""
            command: ["${TAG}", "${EMPTY:-colon-default}", "${EMPTY-dash-default}", "${UNSET-dash-default}", "$USER_NAME", "$$HOME", "${UNSET:-${TAG}-nested}", "${TAG:+set}", "${UNSET:+set}", "cost: 5$"]
            ports: ["${PORT}:80"]
            environment:
              PLAIN: $UNSET_VAR
            """), environment: environment)
        let service = try #require(project.services.first)
        #expect(service.template.command == ["1.2", "colon-default", "", "dash-default", "ada", "$HOME", "1.2-nested", "set", "", "cost: 5$"])
        #expect(service.template.publishedPorts == [PublishedPort(hostPort: 9090, containerPort: 80)])
        #expect(service.template.environment == ["PLAIN="])
        #expect(project.warnings == ["compose.yaml: the variable UNSET_VAR is not set; it stands for an empty string"])
    }

    @Test func requiredVariablesAndBadTemplatesAreErrors() {
        let required = failure(webFile("environment:\n  DB_PASSWORD: ${DB_PASSWORD:?set the database password}"))
        #expect(required.hasPrefix("compose.yaml: service web: environment.DB_PASSWORD \"${DB_PASSWORD:?set the database password}\""))
        #expect(required.hasSuffix("the variable DB_PASSWORD is required: set the database password"))
        #expect(failure("services:\n  web:\n    image: app:${TAG:?}\n", environment: ["TAG": ""]).hasSuffix("the variable TAG is required"))
        #expect(failure(webFile("user: ${UID"), environment: [:]).contains("${ without its closing }"))
        #expect(failure(webFile("user: ${1BAD}")).contains("does not start with a variable name"))
        #expect(throws: Never.self) { try parse(webFile("user: ${TAG?missing}"), environment: ["TAG": ""]) }
    }

    @Test func commandLinesSplitLikeAShell() throws {
        #expect(ComposeSyntax.shellWords("sh -c 'echo $HOME; exit 3'") == ["sh", "-c", "echo $HOME; exit 3"])
        #expect(ComposeSyntax.shellWords(#"echo "a \"quoted\" \$word" b\ c"#) == ["echo", #"a "quoted" $word"#, "b c"])
        #expect(ComposeSyntax.shellWords(#"say "keep \n as is""#) == ["say", #"keep \n as is"#])
        #expect(ComposeSyntax.shellWords("  spaced   out\targs  ") == ["spaced", "out", "args"])
        #expect(ComposeSyntax.shellWords(#"empty "" ''"#) == ["empty", "", ""])
        #expect(ComposeSyntax.shellWords("open 'quote") == nil)
        #expect(try web("command: >-\n  python -m http.server\n  8000").template.command == ["python", "-m", "http.server", "8000"])
        #expect(try web("entrypoint: []").template.entrypoint == [])
        #expect(try web("command: null").template.command == nil)
        #expect(failure(webFile("command: echo \"unclosed")).contains("service web: command \"echo \"unclosed\": has a quote that is not closed"))
    }

    @Test func healthchecksBecomeReadinessProbes() throws {
        #expect(try web("healthcheck:\n  test: curl -f http://localhost").probes.readiness?.action == .exec(["/bin/sh", "-c", "curl -f http://localhost"]))
        #expect(try web("healthcheck:\n  test: [\"NONE\"]").probes.readiness == nil)
        #expect(try web("healthcheck:\n  test: [\"CMD\", \"true\"]\n  disable: true").probes.readiness == nil)
        let defaults = try #require(try web("healthcheck:\n  test: [\"CMD\", \"true\"]").probes.readiness)
        #expect(defaults == Probe(.exec(["true"]), initialDelay: .zero, period: .seconds(30), timeout: .seconds(30), successThreshold: 1, failureThreshold: 3))

        let live = try web("""
            x-gantry:
              liveness:
                test: ["CMD-SHELL", "kill -0 1"]
                interval: 15s
                retries: 2
            """)
        #expect(live.probes.liveness == Probe(.exec(["/bin/sh", "-c", "kill -0 1"]), period: .seconds(15), timeout: .seconds(30), failureThreshold: 2))
        #expect(live.probes.readiness == nil)

        #expect(failure(webFile("healthcheck:\n  interval: 5s")).contains("service web: healthcheck: test: is missing"))
        #expect(failure(webFile("healthcheck:\n  test: [\"CMD\"]")).contains("healthcheck.test: must be"))
        #expect(failure(webFile("healthcheck:\n  test: [\"CMD\", \"true\"]\n  retries: 0")).contains("healthcheck.retries \"0\": must be a whole number of at least 1"))
        #expect(failure(webFile("healthcheck:\n  test: [\"CMD\", \"true\"]\n  interval: 0s")).contains("healthcheck.interval \"0s\": must be longer than 0"))
        let warned = try parse(webFile("healthcheck:\n  test: [\"CMD\", \"true\"]\n  start_interval: 1s"))
        #expect(warned.warnings == ["compose.yaml: service web: healthcheck.start_interval \"1s\": ignored; checks run every interval from the start"])
    }

    @Test func dependenciesNameKnownServices() throws {
        let project = try parse("""
            services:
              web:
                image: nginx
                depends_on: [cache, db]
              worker:
                image: busybox
                depends_on:
                  db:
                    condition: service_healthy
                  migrate:
                    condition: service_completed_successfully
                  cache:
              cache:
                image: redis
              db:
                image: postgres
              migrate:
                image: busybox
            """)
        let byName = Dictionary(uniqueKeysWithValues: project.services.map { ($0.name, $0) })
        #expect(byName["web"]?.dependsOn == [ServiceDependency("cache"), ServiceDependency("db")])
        #expect(byName["worker"]?.dependsOn == [
            ServiceDependency("db", condition: .healthy), ServiceDependency("migrate", condition: .completedSuccessfully), ServiceDependency("cache"),
        ])
        #expect(failure(webFile("depends_on: [db]")).contains("compose.yaml: service web: depends_on db, which is not a service of the file"))
        #expect(failure(webFile("depends_on:\n  web:\n    condition: service_started")).contains("service web depends on itself"))
        #expect(failure(webFile("depends_on:\n  db:\n    condition: service_ready")).contains("depends_on.db.condition \"service_ready\": must be"))
        let circle = failure("services:\n  a:\n    image: x\n    depends_on: [b]\n  b:\n    image: x\n    depends_on: [a]\n")
        #expect(circle.contains("depends_on goes round in a circle: a → b → a"))
    }

    @Test func restartPoliciesFollowCompose() throws {
        #expect(try web("").restartPolicy == .always)
        #expect(try web("restart: no").restartPolicy == .never)
        #expect(try web("restart: \"no\"").restartPolicy == .never)
        #expect(try web("restart: always").restartPolicy == .always)
        #expect(try web("restart: unless-stopped").restartPolicy == .always)
        #expect(try web("restart: on-failure").restartPolicy == .onFailure)
        let limited = try parse(webFile("restart: on-failure:3"))
        #expect(limited.services.first?.restartPolicy == .onFailure)
        #expect(limited.warnings.first?.hasPrefix("compose.yaml: service web: restart \"on-failure:3\": the retry limit 3 is ignored") == true)
        #expect(try web("restart: always\ndeploy:\n  restart_policy:\n    condition: none").restartPolicy == .never)
        #expect(try web("deploy:\n  restart_policy:\n    condition: on-failure").restartPolicy == .onFailure)
        #expect(try web("deploy:\n  restart_policy:\n    condition: any").restartPolicy == .always)
        #expect(failure(webFile("restart: sometimes")).contains("restart \"sometimes\": must be no, always, on-failure[:N] or unless-stopped"))
    }

    @Test func deployMapsReplicasLimitsAndRollouts() throws {
        let stopFirst = try web("""
            scale: 4
            deploy:
              resources:
                limits:
                  cpus: 1.5
                  memory: 1073741824
                reservations:
                  memory: 64m
              update_config:
                parallelism: 2
                delay: 10s
                failure_action: pause
              labels:
                team: core
            """)
        #expect(stopFirst.replicas == 4)
        #expect(stopFirst.template.resources.cpuQuota == 150_000)
        #expect(stopFirst.template.resources.memory == 1 << 30)
        #expect(stopFirst.template.resources.memoryReservation == 64 << 20)
        #expect(stopFirst.requestedMemory == 64 << 20 && stopFirst.requestedCPUs == 1.5)
        #expect(stopFirst.update.maxSurge == .count(0) && stopFirst.update.maxUnavailable == .count(2))
        #expect(!stopFirst.update.rollbackOnFailure)
        #expect(stopFirst.labels == ["team": "core"])
        #expect(try web("deploy:\n  update_config:\n    parallelism: 0").update.maxUnavailable == .percent(100))
        #expect(try web("deploy:\n  update_config:\n    order: start-first").update == UpdateStrategy(maxSurge: .count(1), maxUnavailable: .count(0)))
        #expect(try web("").update == UpdateStrategy())
        #expect(try web("mem_limit: 512k\ncpus: \"0.25\"\npids_limit: 10").template.resources == ResourceLimits(cpuQuota: 25_000, cpuPeriod: 100_000, memory: 512 << 10, pids: 10))

        let reserved = try web("deploy:\n  resources:\n    reservations:\n      cpus: 0.5")
        #expect(reserved.template.resources.cpuShares == 512 && reserved.requestedCPUs == 0.5 && reserved.requestedMemory == nil)
        #expect(failure(webFile("deploy:\n  resources:\n    reservations:\n      devices: []")).contains("deploy.resources.reservations.devices"))
        let warnings = try parse(webFile("deploy:\n  update_config:\n    delay: 5s")).warnings
        #expect(warnings == [
            "compose.yaml: service web: deploy.update_config.delay \"5s\": ignored; Gantry moves on as soon as new replicas are ready",
        ])
        #expect(failure(webFile("scale: 2\ndeploy:\n  replicas: 3")).contains("scale: 2 and deploy.replicas: 3 disagree"))
        #expect(failure(webFile("deploy:\n  mode: global")).contains("deploy.mode \"global\": only replicated services"))
        #expect(failure(webFile("deploy:\n  resources:\n    limits:\n      memory: lots")).contains("deploy.resources.limits.memory \"lots\": is not a size"))
        #expect(failure(webFile("deploy:\n  resources:\n    limits:\n      cpus: \"-1\"")).contains("must be a number of CPUs above 0"))
    }

    @Test func gantryExtensionsSetWhatComposeHasNoKeyFor() throws {
        let service = try web("""
            x-gantry:
              lifetime: independent
              crash_loop:
                initial: 2s
                maximum: 1m
                reset_after: 5m
              min_ready: 3s
              progress_deadline: 90s
            x-other: ignored
            """)
        #expect(service.template.lifetime == .independent)
        #expect(service.crashLoop == CrashLoopBackoff(initial: .seconds(2), maximum: .seconds(60), resetAfter: .seconds(300)))
        #expect(service.update.minReady == .seconds(3))
        #expect(service.update.progressDeadline == .seconds(90))
        #expect(try web("x-gantry:\n  lifetime: bound").template.lifetime == .boundToHost)
        #expect(failure(webFile("x-gantry:\n  lifespan: forever")).contains("service web: x-gantry.lifespan: is not a x-gantry key Gantry supports"))
        #expect(failure(webFile("x-gantry:\n  crash_loop:\n    initial: 1m\n    maximum: 10s")).contains("maximum must not be below initial"))
    }

    @Test func containerNameNamesTheOneReplica() throws {
        #expect(try web("privileged: true").template.privileged)
        #expect(try web("privileged: false").template.privileged == false)
        let service = try web("container_name: my-web")
        #expect(service.template.name == "my-web")
        #expect(service.replicas == 1)
        #expect(throws: ReconcilerError.self) {
            var two = service
            two.replicas = 2
            try two.validate()
        }
    }

    @Test func securityOptionsSwapAndLinksAreTaken() async throws {
        try await withTemporaryDirectory("compose-secopt") { dir in
            try write(#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}"#, to: dir + "/seccomp.json")
            let project = try parse("""
                services:
                  web:
                    image: nginx
                    security_opt: ["no-new-privileges:false", "seccomp=seccomp.json", "label=disable", "apparmor:unconfined"]
                    mem_limit: 64m
                    memswap_limit: 128m
                    links: ["db:database", "cache"]
                  db:
                    image: postgres
                    security_opt: ["seccomp:unconfined", "no-new-privileges"]
                    memswap_limit: -1
                  cache:
                    image: redis
                """, directory: dir)
            let web = try #require(project.services.first { $0.name == "web" })
            #expect(web.template.noNewPrivileges == false)
            guard case .profile(let profile) = web.template.seccomp else { Issue.record("no seccomp profile: \(web.template.seccomp)"); return }
            #expect(profile.syscalls.first?.names == ["mkdir"])
            #expect(web.template.resources.memorySwap == 128 << 20)
            #expect(project.warnings.filter { $0.contains("SELinux label") || $0.contains("AppArmor profile") }.count == 2, "\(project.warnings)")
            let db = try #require(project.services.first { $0.name == "db" })
            #expect(db.template.seccomp == .unconfined && db.template.noNewPrivileges)
            #expect(db.template.resources.memorySwap == -1)
            // A link with an alias makes the linked service answer to it.
            #expect(db.template.networkAliases == ["database"])
            #expect(try #require(project.services.first { $0.name == "cache" }).template.networkAliases.isEmpty)
        }
        #expect(failure(webFile("security_opt: [\"systempaths=unconfined\"]")).contains("is not a security option Gantry supports"))
        #expect(failure(webFile("security_opt: [\"seccomp=/no/such/profile.json\"]")).contains("/no/such/profile.json"))
        #expect(failure(webFile("links: [\"nowhere\"]")).contains("links to service nowhere, which does not exist"))
        #expect(failure(webFile("links: [\"db:\"]")).contains("must be SERVICE or SERVICE:ALIAS"))
    }

    @Test func extendsMergesAnotherServiceOfThisFileOrAnother() async throws {
        try await withTemporaryDirectory("compose-extends") { dir in
            try write("""
                services:
                  common:
                    image: busybox
                    environment: {LEVEL: info, REGION: eu}
                    ports: ["8080:80"]
                    command: ["serve", "--quiet"]
                """, to: dir + "/common.yaml")
            let project = try parse("""
                services:
                  base:
                    extends: {file: common.yaml, service: common}
                    labels: {tier: web}
                  web:
                    extends: base
                    environment: {LEVEL: debug}
                    ports: ["8080:80", "9090:90"]
                    command: ["serve"]
                    runtime: runc
                """, directory: dir)
            let web = try #require(project.services.first { $0.name == "web" })
            #expect(web.template.root == .image("busybox"))
            #expect(Set(web.template.environment) == ["LEVEL=debug", "REGION=eu"])
            #expect(web.template.publishedPorts.map(\.hostPort) == [8080, 9090])
            #expect(web.template.command == ["serve"])
            #expect(web.template.labels["tier"] == "web")
            #expect(project.warnings.contains { $0.contains("runtime \"runc\": ignored") })
        }
        #expect(failure("services:\n  a:\n    extends: b\n    image: x\n  b:\n    extends: a\n    image: y\n").contains("extends goes round in a circle: a → b → a"))
        #expect(failure("services:\n  a:\n    extends: nothing\n").contains("service a: extends service nothing, which does not exist"))
        #expect(failure("services:\n  a:\n    extends: {service: b, file: /no/such.yaml}\n").contains("extends.file /no/such.yaml cannot be read"))
    }

    @Test func secretsAndConfigsComeFromFilesVariablesOrContent() throws {
        let project = try parse("""
            secrets:
              db_password:
                file: ./secrets/db_password.txt
              api_key:
                environment: API_KEY
            configs:
              nginx:
                file: /etc/demo/nginx.conf
              banner:
                content: |
                  Welcome to ${PROJECT_TITLE:-demo}
            services:
              web:
                image: nginx
                secrets:
                  - db_password
                  - source: api_key
                    target: api.key
                    uid: "101"
                    gid: "101"
                    mode: 0440
                configs:
                  - nginx
                  - source: banner
                    target: /etc/motd
                    mode: 0400
            """)
        let web = try #require(project.services.first)
        #expect(web.template.secrets == [
            .init(name: "db_password", source: .file(path: "/srv/demo/secrets/db_password.txt")),
            .init(name: "api_key", source: .environment(variable: "API_KEY"), target: "api.key", uid: 101, gid: 101, mode: 0o440),
        ])
        #expect(web.template.secrets.map(\.path) == ["/run/secrets/db_password", "/run/secrets/api.key"])
        #expect(web.template.configs == [
            .init(name: "nginx", source: .file(path: "/etc/demo/nginx.conf")),
            .init(name: "banner", source: .content("Welcome to demo\n"), target: "/etc/motd", mode: 0o400),
        ])
        #expect(web.template.configs.map(\.path) == ["/nginx", "/etc/motd"])

        #expect(failure(webFile("secrets: [nope]")).contains("service web: secrets[0] \"nope\": the secret nope is not declared under the top-level secrets:"))
        #expect(failure("secrets:\n  k:\n    content: x\nservices: {}\n").contains("secret k: content: is not a secret key Gantry supports"))
        #expect(failure("secrets:\n  k:\n    file: a\n    environment: B\nservices: {}\n").contains("secret k: give exactly one of file:, environment:"))
        #expect(failure("configs:\n  c:\n    template_driver: golang\n    content: x\nservices: {}\n").contains("config c: template_driver: not supported"))
        #expect(failure(webFile("secrets:\n  - source: k\n    mode: rw", top: "secrets:\n  k:\n    file: k\n")).contains("secrets[0].mode \"rw\": must be permission bits"))
        #expect(failure(webFile("configs:\n  - source: c\n    uid: root", top: "configs:\n  c:\n    content: x\n")).contains("configs[0].uid \"root\": must be a numeric ID"))
    }

    @Test func buildsAreTakenAsComposeWritesThem() throws {
        let built = try parse("services:\n  api:\n    build: ./api\n  web:\n    image: shop/web:2\n    build:\n      context: web\n      target: prod\n      args: [VERSION=2, TOKEN]\n      tags: [\"shop/web:latest\"]\n      network: host\n      no_cache: true\n      cache_from: [shop/web:1]\n", environment: ["TOKEN": "t"])
        #expect(built.builds["api"] == ComposeBuild(context: "/srv/demo/api"))
        #expect(built.services.first { $0.name == "api" }?.template.root == .image("demo-api"))
        #expect(built.builds["web"] == ComposeBuild(context: "/srv/demo/web", arguments: ["VERSION": "2", "TOKEN": "t"], target: "prod", network: "host",
                                                    noCache: true, tags: ["shop/web:latest"]))
        #expect(built.services.first { $0.name == "web" }?.template.root == .image("shop/web:2"))
        #expect(built.warnings.contains { $0.contains("build.cache_from") && $0.contains("ignored by Gantry's image builder") }, "\(built.warnings)")
    }

    /// Every service key of the Compose Specification is honoured, warned
    /// about or refused with a reason of its own: none is dropped silently,
    /// and none falls to the generic "not a service key" error.
    @Test func everyServiceKeyOfTheSpecificationHasAnAnswer() {
        let specification: Set<String> = [
            "annotations", "attach", "blkio_config", "build", "cap_add", "cap_drop", "cgroup", "cgroup_parent", "command", "configs",
            "container_name", "cpu_count", "cpu_percent", "cpu_period", "cpu_quota", "cpu_rt_period", "cpu_rt_runtime", "cpu_shares",
            "cpus", "cpuset", "credential_spec", "depends_on", "deploy", "develop", "device_cgroup_rules", "devices", "dns", "dns_opt",
            "dns_search", "domainname", "entrypoint", "env_file", "environment", "expose", "extends", "external_links", "extra_hosts",
            "gpus", "group_add", "healthcheck", "hostname", "image", "init", "ipc", "isolation", "label_file", "labels", "links",
            "logging", "mac_address", "mem_limit", "mem_reservation", "mem_swappiness", "memswap_limit", "models", "network_mode",
            "networks", "oom_kill_disable", "oom_score_adj", "pid", "pids_limit", "platform", "ports", "post_start", "pre_stop",
            "privileged", "profiles", "provider", "pull_policy", "pull_refresh_after", "read_only", "restart", "runtime", "scale",
            "secrets", "security_opt", "shm_size", "stdin_open", "stop_grace_period", "stop_signal", "storage_opt", "sysctls", "tmpfs",
            "tty", "ulimits", "use_api_socket", "user", "userns_mode", "uts", "volumes", "volumes_from", "working_dir",
        ]
        // extends is resolved before a service is read.
        let unanswered = specification.subtracting(ServiceReader.keys).subtracting(["extends"])
        #expect(unanswered.isEmpty, "keys of the specification without an answer: \(unanswered.sorted())")
        let ignored = Set(ServiceReader.ignored.map(\.key))
        let refused = Set(ServiceReader.refused.map(\.key))
        #expect(ignored.isDisjoint(with: refused) && ignored.union(refused).isSubset(of: ServiceReader.keys))
        for key in refused.sorted() {
            let message = failure(webFile("\(key): x"))
            #expect(message.hasPrefix("compose.yaml: service web: \(key)") && message.contains("not supported:"), "\(key): \(message)")
        }
    }

    @Test func unsupportedKeysAreErrorsNamingThem() {
        #expect(failure(webFile("privileged: maybe")).contains("service web: privileged \"maybe\": must be true or false"))
        #expect(failure(webFile("frobnicate: hyperv")).hasPrefix("compose.yaml: service web: frobnicate: is not a service key Gantry supports"))
        #expect(failure(webFile("volumes_from: [db]")).contains("service web: volumes_from: not supported: list the volumes themselves"))
        // Too far from any key: no guess.
        #expect(failure(webFile("restart_polcy: always")).hasSuffix("service web: restart_polcy: is not a service key Gantry supports"))
        #expect(failure(webFile("enviroment: [A=1]")).contains("service web: enviroment: is not a service key Gantry supports; did you mean environment?"))
        #expect(failure(webFile("healthchek: {test: [CMD, x]}")).contains("did you mean healthcheck?"))
        #expect(failure(webFile("pid: service:db")).contains("pid \"service:db\": must be host or private"))
        #expect(failure(webFile("group_add: [audio]")).contains("Gantry adds groups by number"))
        #expect(failure(webFile("container_name: web1\ndeploy:\n  replicas: 2")).contains("service web: container_name: names one container, and the service asks for 2 replicas"))
        #expect(failure(webFile("container_name: -web")).contains("container_name \"-web\": \"-web\" is not a valid container name"))
        #expect(failure(webFile("build:\n  context: .\n  ssh: [default]")).contains("service web: build.ssh: not supported by Gantry's image builder"))
        #expect(failure(webFile("build:\n  network: bridge")).contains("build.network \"bridge\": must be none or host"))
        #expect(failure(webFile("pull_policy: build")).contains("pull_policy \"build\": build asks for a build:"))
        #expect(failure("services:\n  web:\n    command: [x]\n").contains("image: is missing, and there is no build: to make one"))
        #expect(failure(webFile("extra_hosts: [\"db=fe80::1\"]")).contains("fe80::1 is neither an IPv4 address nor host-gateway"))
        #expect(failure("services:\n  web:\n    command: sleep 1\n").contains("compose.yaml: service web: image: is missing"))
        #expect(failure("services:\n  -web:\n    image: nginx\n").contains("\"-web\" is not a valid service name"))
        #expect(failure("secrets:\n  key:\n    external: true\nservices: {}\n").contains("compose.yaml: secret key: external \"true\": an external secret is kept by a Swarm or a cluster"))
        #expect(failure("version: \"3\"\n").contains("compose.yaml: services: is missing"))
        #expect(failure("services:\n  web: [nginx]\n").contains("service web: must be a mapping"))
        #expect(failure("services:\n  web:\n    image: a\n    image: b\n").contains("compose.yaml: not valid YAML: Parser: expected all keys to be unique"))
        #expect(failure("services: [").contains("compose.yaml: not valid YAML"))
    }

    @Test func ignoredKeysAreWarnedAbout() throws {
        let project = try parse("""
            version: "3.9"
            x-shared: &shared
              image: busybox
              tty: true
            services:
              web:
                image: nginx
                logging:
                  driver: json-file
                platform: linux/amd64
                pull_policy: always
                dns: 1.1.1.1
                stdin_open: true
                expose: ["80"]
              debug:
                image: busybox
                profiles: [debug]
              tool:
                <<: *shared
                command: sleep 1
            """)
        #expect(project.services.map(\.name) == ["tool", "web"])
        #expect(project.services.first?.template.root == .image("busybox"))
        #expect(project.warnings == [
            "compose.yaml: version \"3.9\": obsolete and ignored",
            "compose.yaml: service web: logging: ignored; each replica's output goes to its Gantry container log",
            "compose.yaml: service web: dns \"1.1.1.1\": ignored; Gantry sets up name resolution itself",
            "compose.yaml: service web: platform \"linux/amd64\": ignored; the image is run as the image store has it",
            "compose.yaml: service web: stdin_open \"true\": ignored; replicas run detached, without stdin",
            "compose.yaml: service debug: profiles: the service is left out: none of its profiles (debug) is active (--profile, COMPOSE_PROFILES)",
            "compose.yaml: service tool: tty \"true\": ignored; replicas run detached, without a terminal",
        ])
        let dependent = failure("services:\n  web:\n    image: nginx\n    depends_on: [debug]\n  debug:\n    image: busybox\n    profiles: [debug]\n")
        #expect(dependent.contains("service web: depends_on debug, which has profiles and is left out"))
        // Active profiles bring their services in: given, or from COMPOSE_PROFILES.
        let file = "services:\n  web:\n    image: nginx\n  debug:\n    image: busybox\n    profiles: [debug, tools]\n"
        #expect(try parse(file).services.map(\.name) == ["web"])
        #expect(try ComposeProject.parse(file, profiles: ["tools"]).services.map(\.name) == ["debug", "web"])
        #expect(try ComposeProject.parse(file, profiles: ["*"]).services.map(\.name) == ["debug", "web"])
        #expect(try parse(file, environment: ["COMPOSE_PROFILES": "other, debug"]).services.map(\.name) == ["debug", "web"])
    }

    @Test func processSettingsMapOntoTheTemplate() throws {
        let service = try web("""
            user: 1000
            hostname: web-host
            working_dir: /srv/app
            read_only: true
            init: true
            cap_add: [NET_ADMIN, cap_sys_time]
            cap_drop: [ALL]
            sysctls:
              net.core.somaxconn: 1024
            ulimits:
              nproc: 512
              nofile:
                soft: 1024
                hard: 4096
            stop_signal: "9"
            stop_grace_period: 500ms
            labels: [com.example.role=web, flag]
            """)
        let template = service.template
        #expect(template.user == "1000" && template.hostname == "web-host" && template.workingDirectory == "/srv/app")
        #expect(template.readOnlyRootfs && template.initProcess)
        #expect(template.capabilitiesAdded == ["NET_ADMIN", "cap_sys_time"] && template.capabilitiesDropped == ["ALL"])
        #expect(template.sysctls == ["net.core.somaxconn": "1024"])
        #expect(template.resourceLimits == [ContainerSpec.ResourceLimit("nproc", soft: 512, hard: 512), ContainerSpec.ResourceLimit("nofile", soft: 1024, hard: 4096)])
        #expect(template.stopSignal == 9 && template.stopGracePeriod == .milliseconds(500))
        #expect(template.labels == ["com.example.role": "web", "flag": ""])
        #expect(try web("sysctls: [\"net.ipv4.ip_forward=1\"]\nstop_signal: term").template.sysctls == ["net.ipv4.ip_forward": "1"])
        #expect(try web("stop_signal: SIGQUIT").template.stopSignal == 3)
        // Resources, namespaces and host entries beyond the common ones.
        let tuned = try web("""
            extra_hosts: ["host.docker.internal:host-gateway", "db=10.0.0.2"]
            shm_size: 256m
            mem_reservation: 64m
            cpu_shares: 512
            cpu_quota: 50000
            cpuset: "0"
            blkio_config: {weight: 300}
            oom_score_adj: -500
            group_add: ["27"]
            pid: host
            ipc: private
            uts: host
            userns_mode: host
            domainname: example.com
            """).template
        #expect(tuned.extraHosts == ["host.docker.internal": "host-gateway", "db": "10.0.0.2"] && tuned.shmSize == 256 << 20)
        #expect(tuned.resources.memoryReservation == 64 << 20 && tuned.resources.cpuShares == 512 && tuned.resources.cpuQuota == 50000)
        #expect(tuned.resources.cpuPeriod == 100_000 && tuned.resources.cpusetCPUs == "0" && tuned.resources.ioWeight == 300)
        #expect(tuned.oomScoreAdjustment == -500 && tuned.supplementaryGroups == [27])
        #expect(!tuned.namespaces.contains(.pid) && !tuned.namespaces.contains(.uts) && tuned.namespaces.contains(.ipc))
        #expect(try parse(webFile("extra_hosts: {db: 10.0.0.3}")).services[0].template.extraHosts == ["db": "10.0.0.3"])
        #expect(try parse(webFile("expose: [\"80\", 53/udp, 8000-8010]")).warnings.isEmpty)
        #expect(failure(webFile("expose: [http]")).contains("expose[0] \"http\": is not a port such as 80"))
        #expect(failure(webFile("network_mode: host\nextra_hosts: [\"db=10.0.0.2\"]")).contains("service web: extra_hosts: needs a bridge network"))
        #expect(failure(webFile("stop_signal: SIGFOO")).contains("stop_signal \"SIGFOO\": is not a signal"))
        #expect(failure(webFile("stop_signal: 99")).contains("is not a signal"))
        #expect(failure(webFile("cap_add: [NET_MAGIC]")).contains("cap_add[0] \"NET_MAGIC\": is not a capability"))
        #expect(failure(webFile("working_dir: app")).contains("working_dir \"app\": must be an absolute path"))
        #expect(failure(webFile("read_only: maybe")).contains("read_only \"maybe\": must be true or false"))
        #expect(failure(webFile("stop_grace_period: soon")).contains("stop_grace_period \"soon\": is not a duration"))
    }

    @Test func devicesMapOntoTheTemplate() throws {
        let service = try web("""
            devices:
              - /dev/fuse
              - /dev/sdb:/dev/xvdb:r
              - source: /dev/kvm
                target: /dev/kvm
                permissions: rw
            device_cgroup_rules: ["c 189:* rmw", "b 8:* r"]
            """)
        #expect(service.template.devices == [
            ContainerSpec.Device("/dev/fuse"), ContainerSpec.Device("/dev/sdb", at: "/dev/xvdb", access: .read),
            ContainerSpec.Device("/dev/kvm", at: "/dev/kvm", access: [.read, .write]),
        ])
        #expect(service.template.deviceRules == [DeviceRule(.character, major: 189, minor: nil), DeviceRule(.block, major: 8, minor: nil, access: .read)])
        #expect(failure(webFile("devices: [dev/sdb]")).contains("devices[0] \"dev/sdb\": device \"dev/sdb\" names dev/sdb, not an absolute path"))
        #expect(failure(webFile("devices: [/dev/sdb:/dev/xvdb:rwx]")).contains("devices[0]"))
        #expect(failure(webFile("devices:\n  - target: /dev/x")).contains("needs a source:"))
        #expect(failure(webFile("device_cgroup_rules: [\"z 1:3 rwm\"]")).contains("device_cgroup_rules[0]"))
    }

    @Test func durationsParseAsComposeWritesThem() {
        let cases: [(String, Duration?)] = [
            ("10s", .seconds(10)), ("1m30s", .seconds(90)), ("500ms", .milliseconds(500)), ("1h", .seconds(3600)),
            ("1.5s", .milliseconds(1500)), ("2h45m", .seconds(9900)), ("100us", .microseconds(100)), ("250µs", .microseconds(250)),
            ("40ns", .nanoseconds(40)), ("0s", .zero), ("0", .zero), ("30", .seconds(30)), ("2.5", .milliseconds(2500)),
            ("", nil), ("s", nil), ("-1s", nil), ("10x", nil), ("1m30", nil), ("1d", nil), ("ten", nil), ("1 s", nil),
        ]
        for (text, expected) in cases {
            #expect(ComposeSyntax.duration(text) == expected, "\(text)")
        }
    }

    @Test func sizesParseAsComposeWritesThem() {
        let cases: [(String, Int64?)] = [
            ("64m", 64 << 20), ("1g", 1 << 30), ("512k", 512 << 10), ("1048576", 1 << 20), ("1GiB", 1 << 30), ("2MB", 2 << 20),
            ("1.5g", 3 << 29), ("100b", 100), ("64 M", 64 << 20), ("1t", 1 << 40),
            ("0", nil), ("0m", nil), ("abc", nil), ("10q", nil), ("", nil), ("-5m", nil), ("m", nil),
        ]
        for (text, expected) in cases {
            #expect(ComposeSyntax.size(text) == expected, "\(text)")
        }
    }

    @Test func loadReadsTheFileAndNamesTheProjectAfterItsDirectory() async throws {
        try await withTemporaryDirectory("compose-load") { directory in
            try write("services:\n  web:\n    image: nginx:${TAG}\n    volumes: [./html:/usr/share/nginx/html:ro]\n", to: directory + "/Site_1/compose.yaml")
            let project = try ComposeProject.load(path: directory + "/Site_1/compose.yaml", environment: ["TAG": "1.27"])
            #expect(project.name == "site_1")
            #expect(project.services.first?.template.root == .image("nginx:1.27"))
            #expect(project.services.first?.template.mounts == [.bind(source: directory + "/Site_1/html", target: "/usr/share/nginx/html", readOnly: true)])
            #expect(try ComposeProject.load(path: directory + "/Site_1/compose.yaml", environment: ["TAG": "1"], projectName: "other").name == "other")
            let missing = #expect(throws: ReconcilerError.self) { try ComposeProject.load(path: directory + "/none.yaml") }
            #expect(missing?.message.hasPrefix(directory + "/none.yaml: cannot read the compose file") == true)
        }
    }

    @Test func theProjectDirectorysDotEnvGivesWhatTheEnvironmentDoesNot() async throws {
        try await withTemporaryDirectory("compose-dotenv") { directory in
            try write("services:\n  web:\n    image: nginx:${TAG:?set TAG}\n    environment: [MODE, LEVEL]\n", to: directory + "/compose.yaml")
            try write("# defaults\nTAG=1.27\nexport MODE=\"production\"\nLEVEL=info\n", to: directory + "/.env")
            let project = try ComposeProject.load(path: directory + "/compose.yaml", environment: ["LEVEL": "debug"])
            #expect(project.services.first?.template.root == .image("nginx:1.27"))
            #expect(project.services.first?.template.environment == ["MODE=production", "LEVEL=debug"], "the environment wins over .env")
            try write("TAG 1.27\n", to: directory + "/.env")
            let bad = #expect(throws: ReconcilerError.self) { try ComposeProject.load(path: directory + "/compose.yaml", environment: [:]) }
            #expect(bad?.message == directory + "/.env: line 1: expected KEY=VALUE")
        }
    }
}
