@testable import Compose
import Foundation
import GantryTestSupport
@testable import Runtime
import Scheduler
import Synchronization
import Testing
@testable import Reconciler

/// A manifest set of every kind `kube play` takes, as people write them.
let shopManifests = """
    apiVersion: v1
    kind: ConfigMap
    metadata: {name: web-content}
    data:
      index.html: "hello from a ConfigMap"
      LOG_LEVEL: debug
    ---
    apiVersion: v1
    kind: Secret
    metadata: {name: db-credentials}
    type: Opaque
    data:
      password: c2VjcmV0LXB3   # secret-pw
    stringData:
      user: shop
    ---
    apiVersion: v1
    kind: PersistentVolumeClaim
    metadata: {name: uploads}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
    ---
    apiVersion: apps/v1
    kind: Deployment
    metadata:
      name: web
      namespace: default
      labels: {app: web}
    spec:
      replicas: 2
      selector: {matchLabels: {app: web}}
      strategy:
        type: RollingUpdate
        rollingUpdate: {maxSurge: 1, maxUnavailable: 0}
      minReadySeconds: 1
      template:
        metadata:
          labels: {app: web, tier: front}
        spec:
          terminationGracePeriodSeconds: 2
          nodeSelector: {disk: ssd}
          securityContext: {runAsUser: 1000, runAsGroup: 1000}
          containers:
            - name: httpd
              image: busybox:test
              command: ["httpd"]
              args: ["-f", "-p", "8080", "-h", "/www"]
              ports:
                - {name: http, containerPort: 8080}
              env:
                - {name: MODE, value: production}
                - name: LEVEL
                  valueFrom: {configMapKeyRef: {name: web-content, key: LOG_LEVEL}}
                - name: DB_PASSWORD
                  valueFrom: {secretKeyRef: {name: db-credentials, key: password}}
                - name: NAMESPACE
                  valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
                - name: TIER
                  valueFrom: {fieldRef: {fieldPath: "metadata.labels['tier']"}}
                - name: POD_NAME
                  valueFrom: {fieldRef: {fieldPath: metadata.name}}
                - name: POD_IP
                  valueFrom: {fieldRef: {fieldPath: status.podIP}}
              envFrom:
                - {secretRef: {name: db-credentials}, prefix: DB_}
              resources:
                limits: {cpu: 500m, memory: 64Mi}
                requests: {cpu: 250m, memory: 32Mi}
              readinessProbe:
                httpGet: {path: /index.html, port: http}
                periodSeconds: 1
              livenessProbe:
                tcpSocket: {port: 8080}
                initialDelaySeconds: 2
              securityContext:
                allowPrivilegeEscalation: false
                readOnlyRootFilesystem: true
                capabilities: {drop: [ALL]}
              lifecycle:
                preStop: {exec: {command: ["sleep", "1"]}}
              volumeMounts:
                - {name: content, mountPath: /www}
                - {name: credentials, mountPath: /etc/db, readOnly: true}
                - {name: scratch, mountPath: /tmp}
                - {name: data, mountPath: /uploads}
          volumes:
            - name: content
              configMap:
                name: web-content
                items: [{key: index.html, path: index.html}]
            - name: credentials
              secret: {secretName: db-credentials, defaultMode: 0400}
            - name: scratch
              emptyDir: {sizeLimit: 16Mi}
            - name: data
              persistentVolumeClaim: {claimName: uploads}
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: frontend}
    spec:
      selector: {app: web}
      ports:
        - {name: http, port: 80, targetPort: http}
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: frontend-public}
    spec:
      type: NodePort
      selector: {tier: front}
      ports:
        - {port: 8080}
    ---
    apiVersion: v1
    kind: Pod
    metadata:
      name: once
      labels: {app: once}
    spec:
      restartPolicy: OnFailure
      containers:
        - name: job
          image: busybox:test
          command: ["sh", "-c", "echo done"]
    ---
    apiVersion: networking.k8s.io/v1
    kind: Ingress
    metadata: {name: shop}
    spec: {rules: []}
    """

/// Jobs and a CronJob as people write them.
let batchManifests = """
    apiVersion: batch/v1
    kind: Job
    metadata: {name: migrate}
    spec:
      completions: 3
      parallelism: 2
      completionMode: Indexed
      backoffLimit: 2
      activeDeadlineSeconds: 60
      ttlSecondsAfterFinished: 30
      template:
        metadata: {labels: {app: migrate}}
        spec:
          restartPolicy: Never
          terminationGracePeriodSeconds: 5
          containers:
            - name: migrate
              image: shop/migrate:1
              args: ["up"]
              imagePullPolicy: Never
              env: [{name: STEP, value: schema}]
              resources: {limits: {cpu: 500m, memory: 64Mi}, requests: {cpu: 250m}}
    ---
    apiVersion: batch/v1
    kind: CronJob
    metadata: {name: report}
    spec:
      schedule: "30 2 * * *"
      timeZone: Europe/Berlin
      concurrencyPolicy: Forbid
      startingDeadlineSeconds: 120
      successfulJobsHistoryLimit: 5
      failedJobsHistoryLimit: 2
      jobTemplate:
        metadata: {labels: {app: report}}
        spec:
          backoffLimit: 1
          template:
            spec:
              restartPolicy: OnFailure
              containers: [{name: report, image: shop/report:1, command: ["report", "--daily"]}]
    ---
    apiVersion: batch/v1
    kind: Job
    metadata: {name: later}
    spec:
      suspend: true
      template:
        spec:
          restartPolicy: Never
          containers: [{name: later, image: shop/migrate:1}]
    """

@Suite struct KubeManifestTests {
    @Test func jobsAndCronJobsMapOntoJobTemplates() throws {
        let play = try KubeManifests.parse(batchManifests, file: "batch.yaml", project: "shop", secretsDirectory: "/run/unused")
        #expect(play.project.services.isEmpty && play.project.networks.map(\.name) == ["shop_default"], "the jobs' runs join the project's network")
        #expect(play.jobs.keys.sorted() == ["migrate"], "a suspended Job is not run")
        #expect(play.project.warnings.contains { $0.contains("batch.yaml: Job later: spec.suspend: the Job is suspended: it is not run") }, "\(play.project.warnings)")
        let migrate = try #require(play.jobs["migrate"])
        #expect(migrate.completions == 3 && migrate.parallelism == 2 && migrate.completionMode == .indexed && migrate.backoffLimit == 2)
        #expect(migrate.activeDeadline == .seconds(60) && migrate.ttlAfterFinished == .seconds(30))
        #expect(migrate.container.root == .image("shop/migrate:1") && migrate.container.command == ["up"] && migrate.container.environment == ["STEP=schema"])
        #expect(migrate.container.network == .bridge("shop_default") && migrate.container.labels[ReplicaLabel.project] == "shop")
        #expect(migrate.container.stopGracePeriod == .seconds(5))
        // The runs ask for and are limited to the container's resources.
        #expect(migrate.resources.limits == ResourceAmounts(milliCPU: 500, memory: 64 << 20) && migrate.resources.requests == ResourceAmounts(milliCPU: 250))
        #expect(migrate.container.resources.cpuQuota == nil && migrate.container.resources.memory == nil)
        #expect(play.jobPullPolicies == ["migrate": .never])
        let report = try #require(play.cronJobs.first)
        #expect(play.cronJobs.count == 1 && report.name == "report")
        #expect(report.schedule == (try CronSchedule("30 2 * * *", timeZoneIdentifier: "Europe/Berlin")))
        #expect(report.concurrencyPolicy == .forbid && report.startingDeadline == .seconds(120) && !report.suspend)
        #expect(report.successfulJobsHistoryLimit == 5 && report.failedJobsHistoryLimit == 2 && report.job.backoffLimit == 1)
        #expect(report.job.container.entrypoint == ["report", "--daily"])
    }

    @Test func initContainersMapOntoTheServiceWithTheirOwnMountsAndResources() throws {
        let yaml = """
            apiVersion: v1
            kind: Pod
            metadata: {name: app}
            spec:
              initContainers:
                - name: wait
                  image: busybox:1
                  command: ["sh", "-c", "until nslookup db; do sleep 1; done"]
                  resources: {limits: {cpu: 100m, memory: 16Mi}}
                - name: seed
                  image: busybox:1
                  args: ["cp", "-r", "/seed", "/work"]
                  restartPolicy: Always
                  readinessProbe: {exec: {command: ["true"]}}
                  volumeMounts: [{name: scratch, mountPath: /work}]
              containers: [{name: app, image: app:1, volumeMounts: [{name: scratch, mountPath: /work}]}]
              volumes: [{name: scratch, emptyDir: {}}]
            """
        let play = try KubeManifests.parse(yaml, file: "app.yaml", project: "p", secretsDirectory: "/run/x")
        let service = try #require(play.project.services.first)
        #expect(service.initContainers.map(\.root) == [.image("busybox:1"), .image("busybox:1")])
        #expect(service.initContainers[0].entrypoint == ["sh", "-c", "until nslookup db; do sleep 1; done"] && service.initContainers[0].resources.memory == 16 << 20)
        #expect(service.initContainers[1].command == ["cp", "-r", "/seed", "/work"] && service.initContainers[1].network == .bridge("p_default"))
        let warnings = play.project.warnings
        #expect(warnings.contains("app.yaml: Pod app: spec.initContainers[1].volumeMounts: an emptyDir is each container's own here: what an init container writes there, the others do not see (a PersistentVolumeClaim is shared)"), "\(warnings)")
        #expect(warnings.contains { $0.contains("initContainers[1].restartPolicy: a sidecar runs to its end here") })
        #expect(warnings.contains { $0.contains("initContainers[1].readinessProbe: an init container is not probed") })
    }

    @Test func badJobsAndCronJobsNameTheField() {
        func failure(_ yaml: String) -> String {
            let error = #expect(throws: ReconcilerError.self) {
                try KubeManifests.parse(yaml, file: "bad.yaml", project: "bad", secretsDirectory: "/run/x")
            }
            return error?.message ?? ""
        }
        func job(_ spec: String, restart: String = "restartPolicy: Never") -> String {
            "apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\nspec:\n\(spec)\n  template:\n    spec:\n      \(restart)\n      containers: [{name: a, image: x}]\n"
        }
        func cron(_ spec: String, name: String = "c") -> String {
            "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: \(name)}\nspec:\n\(spec)\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: Never\n          containers: [{name: a, image: x}]\n"
        }
        #expect(failure(job("  completions: 1", restart: "")).contains("bad.yaml: Job j: spec.template.spec.restartPolicy: is missing: a Job's pods run to their end"))
        #expect(failure(job("  completions: 1", restart: "restartPolicy: Always")).contains("Job j: spec.template.spec.restartPolicy: must be Never or OnFailure here, not Always"))
        #expect(failure(job("  completionMode: Indexed")).contains("Job j: spec.completions: is missing: an Indexed Job needs it"))
        #expect(failure(job("  completions: 0")).contains("Job j: spec.completions:"))
        #expect(failure(job("  completionMode: Sometimes")).contains("spec.completionMode: must be NonIndexed or Indexed, not Sometimes"))
        #expect(failure(cron("  schedule: \"61 * * * *\"")).contains("CronJob c: spec.schedule: cron schedule \"61 * * * *\""))
        #expect(failure(cron("  schedule: \"@daily\"\n  timeZone: Mars/Base")).contains("CronJob c: spec.timeZone: Mars/Base is not a time zone"))
        #expect(failure(cron("  schedule: \"@daily\"\n  concurrencyPolicy: Sometimes")).contains("spec.concurrencyPolicy: must be Allow, Forbid or Replace"))
        #expect(failure(cron("  suspend: false")).contains("CronJob c: spec.schedule: is missing"))
        #expect(failure(cron("  schedule: \"@daily\"", name: String(repeating: "c", count: 53))).contains("is not a valid cron job name: use up to 52"))
    }

    @Test func manifestsMapOntoServicesEndpointsConfigsSecretsAndVolumes() throws {
        let play = try KubeManifests.parse(shopManifests, file: "shop.yaml", project: "shop", secretsDirectory: "/run/gantry/kube/shop")
        let project = play.project
        #expect(project.name == "shop")
        #expect(project.services.map(\.name) == ["frontend", "once"])
        #expect(project.volumes.map(\.name) == ["uploads"])
        #expect(project.networks.map(\.name) == ["shop_default"])
        #expect(play.secretFiles == ["/run/gantry/kube/shop/db-credentials/password": Array("secret-pw".utf8),
                                     "/run/gantry/kube/shop/db-credentials/user": Array("shop".utf8)])

        // The Deployment takes the name of the Service that picks it.
        let web = try #require(project.services.first { $0.name == "frontend" })
        #expect(web.replicas == 2)
        #expect(web.labels == ["app": "web", "tier": "front"])
        #expect(web.update.maxSurge == .count(1) && web.update.maxUnavailable == .count(0) && web.update.minReady == .seconds(1))
        #expect(web.virtualPorts == [PublishedPort(hostPort: 80, containerPort: 8080)])
        #expect(web.template.networkAliases == ["frontend-public"], "the second Service answers as an alias")
        #expect(web.template.publishedPorts == [PublishedPort(hostPort: 0, containerPort: 8080)], "and publishes its node port")
        let template = web.template
        #expect(template.root == .image("busybox:test"))
        #expect(template.entrypoint == ["httpd"] && template.command == ["-f", "-p", "8080", "-h", "/www"])
        #expect(template.user == "1000:1000")
        #expect(template.stopGracePeriod == .seconds(2))
        #expect(template.environment == ["MODE=production", "LEVEL=debug", "NAMESPACE=shop", "TIER=front", "POD_NAME=web"])
        #expect(template.secrets.filter { !$0.mounted }.map { "\($0.environmentVariable ?? "")<\($0.source)" } == [
            "DB_password<file(path: \"/run/gantry/kube/shop/db-credentials/password\")",
            "DB_user<file(path: \"/run/gantry/kube/shop/db-credentials/user\")",
            "DB_PASSWORD<file(path: \"/run/gantry/kube/shop/db-credentials/password\")",
        ])
        #expect(template.secrets.filter(\.mounted).map { "\($0.path) \(String($0.mode, radix: 8))" } == ["/etc/db/password 400", "/etc/db/user 400"])
        #expect(template.configs.map { "\($0.path) \($0.source)" } == ["/www/index.html content(\"hello from a ConfigMap\")"])
        #expect(template.mounts == [.tmpfs(target: "/tmp", size: 16 << 20, mode: 0o777), .volume(name: "uploads", target: "/uploads")])
        #expect(template.resources.cpuQuota != nil && template.resources.memory == 64 << 20)
        #expect(template.resources.cpuShares == 256 && template.resources.memoryReservation == 32 << 20)
        #expect(template.noNewPrivileges && template.readOnlyRootfs && template.capabilitiesDropped == ["ALL"])
        #expect(template.network == .bridge("shop_default"))
        #expect(web.probes.readiness?.action == .httpGet(path: "/index.html", port: 8080, host: nil))
        #expect(web.probes.readiness?.period == .seconds(1))
        #expect(web.probes.liveness?.action == .tcpSocket(port: 8080, host: nil) && web.probes.liveness?.initialDelay == .seconds(2))

        let once = try #require(project.services.first { $0.name == "once" })
        #expect(once.restartPolicy == .onFailure && once.replicas == 1)
        #expect(once.template.entrypoint == ["sh", "-c", "echo done"])

        // Every field not honoured is named once; nothing is dropped silently.
        let warnings = project.warnings
        for expected in [
            "shop.yaml: Deployment web: spec.template.spec.nodeSelector: not honoured by Gantry; ignored",
            "shop.yaml: Deployment web: spec.template.spec.containers[0].lifecycle: not honoured by Gantry; ignored",
            "shop.yaml: Ingress shop: the kind Ingress is not played by Gantry; skipped",
            "shop.yaml: Deployment web: spec.template.spec.containers[0].env[5].valueFrom.fieldRef.fieldPath: POD_NAME is the service's name, web, the same in every replica",
            "shop.yaml: Deployment web: spec.template.spec.containers[0].env[6].valueFrom.fieldRef.fieldPath: status.podIP is not known before a replica is made: POD_IP is left unset",
            "shop.yaml: PersistentVolumeClaim uploads: spec.resources.requests: a named volume has no size limit here",
            "shop.yaml: Service frontend-public: the Service frontend already serves web; frontend-public answers as an alias of each pod, and its host ports are published through frontend's endpoint",
        ] {
            #expect(warnings.contains { $0.hasPrefix(expected) }, "no warning \(expected) in \(warnings)")
        }
        #expect(!warnings.contains { $0.contains("Ingress shop: spec") }, "a skipped kind is one warning")
    }

    @Test func badManifestsNameTheFileDocumentAndField() {
        func failure(_ yaml: String) -> String {
            let error = #expect(throws: ReconcilerError.self) {
                try KubeManifests.parse(yaml, file: "bad.yaml", project: "bad", secretsDirectory: "/run/x")
            }
            return error?.message ?? ""
        }
        let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers:\n"
        #expect(failure("apiVersion: v1\nmetadata: {name: x}\n").contains("bad.yaml: document 1: kind: is missing"))
        #expect(failure("kind: Pod\nmetadata: {}\n").contains("bad.yaml: document 1 (Pod): metadata.name is missing"))
        #expect(failure("- a\n- b\n").contains("document 1: must be a mapping"))
        #expect(failure("kind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: a, image: x}, {name: b, image: y}]\n")
            .contains("bad.yaml: Pod p: spec.containers: lists 2 containers; Gantry runs one per replica"))
        #expect(failure(deployment + "        - {name: a}\n").contains("Deployment web: spec.template.spec.containers[0].image: is missing"))
        #expect(failure(deployment.replacingOccurrences(of: "matchLabels: {app: web}", with: "matchLabels: {app: api}") + "        - {name: a, image: x}\n")
            .contains("spec.selector.matchLabels: selects app=api, which the pod template's labels do not have"))
        #expect(failure(deployment + "        - name: a\n          image: x\n          resources: {limits: {memory: lots}}\n")
            .contains("containers[0].resources.limits.memory: invalid quantity \"lots\""))
        #expect(failure(deployment + "        - name: a\n          image: x\n          envFrom: [{configMapRef: {name: nowhere}}]\n")
            .contains("containers[0].envFrom[0].configMapRef.name: the ConfigMap nowhere is not in the manifests"))
        #expect(failure("kind: Secret\nmetadata: {name: s}\ndata: {key: \"!!not base64\"}\n").contains("Secret s: data.key: is not base64"))
        #expect(failure(deployment + "        - name: a\n          image: x\n          volumeMounts: [{name: v, mountPath: /v}]\n      volumes: [{name: v, nfs: {server: n}}]\n")
            .contains("spec.template.spec.volumes[0].nfs: is not a volume Gantry provides"))
        #expect(failure(deployment + "        - name: a\n          image: x\n          readinessProbe: {grpc: {port: 1}}\n").contains("readinessProbe: needs exec, httpGet or tcpSocket"))
        #expect(failure("kind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}]}\n").contains("Service s: spec.selector: is missing"))
        #expect(failure("kind: Pod\nmetadata: {name: p}\nspec: [\n").contains("bad.yaml: not valid YAML"))
    }
}

@Suite(.requiresRoot, .serialized) struct KubePlayTests {
    @Test func playedManifestsServeThroughTheServicesPortsWithTheirSecrets() async throws {
        try await withBusyboxRuntime("kube-play", applets: reconcilerApplets + ["httpd", "md5sum", "cut", "stat"]) { runtime, dir in
            // The image's httpd must run as user 1000 and read /www; busybox as the image.
            let secrets = dir + "/kube-secrets"
            var manifests = shopManifests.replacingOccurrences(of: "command: [\"httpd\"]", with: "command: [\"sh\", \"-c\", \"stat -c '%a %u' /etc/db/password; md5sum /etc/db/password | cut -c1-32; echo $DB_PASSWORD | md5sum | cut -c1-32; exec httpd $0 $@\"]")
            manifests = manifests.replacingOccurrences(of: "readOnlyRootFilesystem: true", with: "readOnlyRootFilesystem: false")
            let play = try KubeManifests.parse(manifests, file: "shop.yaml", project: "shop", secretsDirectory: secrets)
            try play.writeSecrets()
            let reconciler = try Reconciler(runtime: runtime, options: Reconciler.Options(project: "shop"))
            try await reconciler.withRunning { reconciler in
                let report = try await reconciler.apply(play.project)
                #expect(report.createdNetworks == ["shop_default"] && report.createdVolumes == ["uploads"])
                let record = try await reconciler.waitForRollout("frontend")
                let address = try #require(record.status.virtualAddress)
                // The Service's port 80 reaches the pods' named port 8080 on the virtual address.
                var body: String?
                for _ in 0 ..< 200 {
                    body = LoadBalancingTests.body(await onOwnThread { httpGetBlocking(port: 80, host: address.description) })
                    if body != nil { break }
                    try await Task.sleep(for: .milliseconds(50))
                }
                #expect(body == "hello from a ConfigMap")
                // The NodePort Service's port is published on the host, also to the pods' 8080.
                let published = try #require(record.status.publishedPorts?.first)
                #expect(published.containerPort == 8080)
                #expect(await LoadBalancingTests.fetch(published.hostPort) == "hello from a ConfigMap")
                // The Secret: a file of mode 0400 owned by the pod's user, and a variable.
                let digest = try await md5Hex("secret-pw")
                let newline = try await md5Hex("secret-pw\n")
                for replica in try runningReplicas(runtime, service: "frontend") {
                    let logs = try await runtime.container(replica.id).logs.text()
                    #expect(logs.hasPrefix("400 1000\n\(digest)\n\(newline)\n"), "\(logs)")
                }
                #expect(filesHolding("secret-pw", under: runtime.images.root.path).isEmpty)
                try await Reconciler.tearDown(project: "shop", runtime: runtime, store: reconciler.store, removingVolumes: true, timeout: .seconds(20))
            }
            try KubePlay.removeSecrets(in: secrets)
            #expect(!FileManager.default.fileExists(atPath: secrets))
            #expect(try runtime.list().isEmpty && runtime.networks.list().isEmpty)
        }
    }
}

extension KubePlayTests {
    @Test func initContainersRunInOrderBeforeEachReplicaAndAFailingOneHoldsItBack() async throws {
        try await withBusyboxRuntime("kube-init", applets: reconcilerApplets + ["cat", "sleep"]) { runtime, _ in
            let manifests = """
                apiVersion: v1
                kind: PersistentVolumeClaim
                metadata: {name: data}
                ---
                apiVersion: apps/v1
                kind: Deployment
                metadata: {name: app}
                spec:
                  replicas: 2
                  selector: {matchLabels: {app: app}}
                  template:
                    metadata: {labels: {app: app}}
                    spec:
                      terminationGracePeriodSeconds: 1
                      initContainers:
                        - name: prepare
                          image: busybox:test
                          command: ["sh", "-c", "echo prepared > /data/state"]
                          volumeMounts: [{name: data, mountPath: /data}]
                        - name: check
                          image: busybox:test
                          command: ["sh", "-c", "test -f /data/state && echo checked >> /data/state"]
                          volumeMounts: [{name: data, mountPath: /data}]
                      containers:
                        - name: app
                          image: busybox:test
                          command: ["sh", "-c", "cat /data/state; exec sleep 600"]
                          volumeMounts: [{name: data, mountPath: /data}]
                      volumes: [{name: data, persistentVolumeClaim: {claimName: data}}]
                """
            let play = try KubeManifests.parse(manifests, file: "init.yaml", project: "init", secretsDirectory: "/run/unused")
            #expect(play.project.services.first?.initContainers.count == 2)
            let reconciler = try Reconciler(runtime: runtime, options: Reconciler.Options(project: "init"))
            try await reconciler.withRunning { reconciler in
                try await reconciler.apply(play.project)
                _ = try await reconciler.waitForRollout("app")
                let replicas = try runningReplicas(runtime, service: "app")
                #expect(replicas.count == 2, "the init containers are gone once they ran: \(replicas.map(\.name))")
                for replica in replicas {
                    let container = try runtime.container(replica.id)
                    for _ in 0 ..< 200 where try await container.logs.text().isEmpty { try await Task.sleep(for: .milliseconds(10)) }
                    #expect(try await container.logs.text().hasPrefix("prepared\nchecked\n"))
                }
                // An init container that fails: the new revision's replicas are not started, the old ones stay.
                var failing = play.project.services[0]
                failing.initContainers[1].entrypoint = ["sh", "-c", "exit 3"]
                let events = reconciler.events()
                try reconciler.store.apply(failing)
                try reconciler.refresh()
                let waiter = Task { () -> ServiceEvent? in
                    for await event in events where event.kind == .failed { return event }
                    return nil
                }
                let deadline = Task {
                    try await Task.sleep(for: .seconds(30))
                    waiter.cancel()
                }
                let failure = await waiter.value
                deadline.cancel()
                #expect(failure?.message == "init container 2 ended: exited with 3", "\(String(describing: failure))")
                #expect(try runningReplicas(runtime, service: "app").count == 2)
                try await Reconciler.tearDown(project: "init", runtime: runtime, store: reconciler.store, removingVolumes: true, timeout: .seconds(20))
            }
        }
    }

    @Test func playedJobsRunOnTheProjectsNetworkAndCronJobsOnTheirSchedules() async throws {
        try await withBusyboxRuntime("kube-jobs", applets: reconcilerApplets + ["httpd", "wget"]) { runtime, _ in
            let manifests = """
                apiVersion: apps/v1
                kind: Deployment
                metadata: {name: web}
                spec:
                  selector: {matchLabels: {app: web}}
                  template:
                    metadata: {labels: {app: web}}
                    spec:
                      containers:
                        - name: httpd
                          image: busybox:test
                          command: ["sh", "-c", "mkdir -p /www && echo served > /www/index.html && exec httpd -f -p 8080 -h /www"]
                          readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
                ---
                apiVersion: v1
                kind: Service
                metadata: {name: web}
                spec:
                  selector: {app: web}
                  ports: [{port: 80, targetPort: 8080}]
                ---
                apiVersion: batch/v1
                kind: Job
                metadata: {name: fetch}
                spec:
                  completions: 2
                  parallelism: 2
                  completionMode: Indexed
                  backoffLimit: 0
                  template:
                    spec:
                      restartPolicy: Never
                      containers:
                        - name: fetch
                          image: busybox:test
                          command: ["sh", "-c", "echo index $JOB_COMPLETION_INDEX; wget -q -O - http://web/ && wget -q -O - http://web.default.svc.cluster.local/"]
                ---
                apiVersion: batch/v1
                kind: CronJob
                metadata: {name: tick}
                spec:
                  schedule: "* * * * *"
                  jobTemplate:
                    spec:
                      template:
                        spec:
                          restartPolicy: Never
                          containers: [{name: tick, image: busybox:test, command: ["echo", "ticked"]}]
                """
            let play = try KubeManifests.parse(manifests, file: "batch.yaml", project: "batch", secretsDirectory: "/run/unused")
            #expect(play.project.warnings.isEmpty, "\(play.project.warnings)")
            #expect(try await play.pullJobImages(runtime.images).isEmpty, "the image is in the store")
            let store = try JobStore(root: runtime.images.root)
            let output = Mutex([String]())
            var node = try LocalNode(runtime: runtime)
            node.output = { _, chunk in output.withLock { $0.append(chunk.text) } }
            let cluster = try Cluster(nodes: [node])
            let reconciler = try Reconciler(runtime: runtime, options: Reconciler.Options(project: "batch"))
            try await reconciler.withRunning { reconciler in
                try await reconciler.apply(play.project)
                _ = try await reconciler.waitForRollout("web")
                // The next minute's fire time 1.5 s away.
                let now = Date().timeIntervalSince1970
                let offset = 60 - now.truncatingRemainder(dividingBy: 60) - 1.5
                let events = Recorded<KubePlay.JobEvent>()
                let running = Task {
                    try await play.runJobs(on: cluster, store: store, wallClock: { Date().addingTimeInterval(offset) }, events: { event in
                        events.items.withLock { $0.append(event) }
                    })
                }
                func ended() -> (fetch: JobStatus?, tick: JobStatus?) {
                    events.items.withLock { events in
                        var ended: (fetch: JobStatus?, tick: JobStatus?) = (nil, nil)
                        for event in events {
                            if case .job("fetch", let status) = event, status.condition != .running { ended.fetch = status }
                            if case .cron(.finished(cronJob: "tick", _, let status)) = event { ended.tick = status }
                        }
                        return ended
                    }
                }
                for _ in 0 ..< 600 where ended().fetch == nil || ended().tick == nil { try await Task.sleep(for: .milliseconds(50)) }
                running.cancel()
                _ = await running.result
                let (fetch, tick) = ended()
                #expect(fetch?.condition == .complete && fetch?.succeeded == 2 && fetch?.completedIndexes == [0, 1], "\(String(describing: fetch)) \(output.withLock { $0 })")
                #expect(tick?.condition == .complete, "\(String(describing: tick))")
                let printed = output.withLock { $0.joined() }
                #expect(printed.contains("index 0") && printed.contains("index 1") && printed.components(separatedBy: "served").count == 5, "the runs reached the Service by its names: \(printed)")
                #expect(printed.contains("ticked"))
                #expect(try store.job("fetch")?.status.condition == .complete && store.jobs(cronJob: "tick").count == 1)

                // Played again: the Job that completed is not run again.
                var replay = play
                replay.cronJobs = []
                let again = Mutex([String]())
                try await replay.runJobs(on: cluster, store: store, events: { event in
                    if case .alreadyEnded(let name, let status) = event { again.withLock { $0.append("\(name) \(status.condition.rawValue)") } }
                })
                #expect(again.withLock { $0 } == ["fetch Complete"])
                try await Reconciler.tearDown(project: "batch", runtime: runtime, store: reconciler.store, timeout: .seconds(20))
                #expect(try play.forgetJobs(in: store).sorted().count == 2)
                #expect(try store.jobs().isEmpty)
            }
        }
    }
}

/// What a closure called from other tasks was given.
final class Recorded<Item: Sendable>: Sendable {
    let items = Mutex<[Item]>([])
}

@Suite struct KubeGenerateTests {
    /// The services of a small shop, with every part a manifest carries.
    static func shop(secretFile: String, variable: String) -> [ServiceSpec] {
        var web = ServiceSpec(name: "web", project: "shop", replicas: 3, template: ContainerSpec(image: "nginx:1.27", command: ["nginx", "-g", "daemon off;"]))
        web.template.entrypoint = ["/docker-entrypoint.sh"]
        web.template.environment = ["MODE=production", "PORT=8080", "EMPTY="]
        web.template.publishedPorts = [PublishedPort(hostPort: 8080, containerPort: 80)]
        web.template.user = "101:101"
        web.template = web.template.resources(cpus: 0.5, memory: 128 << 20)
        web.template.resources.cpuShares = 512
        web.template.resources.memoryReservation = 64 << 20
        web.template.mounts = [.volume(name: "uploads", target: "/uploads"), .tmpfs(target: "/var/cache/nginx", size: 16 << 20, mode: 0o777)]
        web.template.secrets = [
            .init(name: "token", source: .file(path: secretFile)),
            .init(name: "api", source: .environment(variable: variable), environmentVariable: "API_KEY", mounted: false),
        ]
        web.template.configs = [.init(name: "nginx.conf", source: .content("events {}\nhttp {}\n"), target: "/etc/nginx/nginx.conf")]
        web.template.extraHosts = ["legacy.local": "10.0.0.9", "legacy": "10.0.0.9"]
        web.template.capabilitiesDropped = ["ALL"]
        web.template.capabilitiesAdded = ["NET_BIND_SERVICE"]
        web.template.stopGracePeriod = .seconds(20)
        web.labels = ["tier": "front"]
        web.probes.readiness = Probe(.httpGet(path: "/health", port: 80, host: nil), period: .seconds(2))
        web.probes.liveness = Probe(.tcpSocket(port: 80, host: nil), initialDelay: .seconds(5))
        web.update = UpdateStrategy(maxSurge: .count(1), maxUnavailable: .percent(0), minReady: .seconds(3))
        var prepare = ContainerSpec(image: "shop/migrate:1", command: ["migrate", "up"])
        prepare.environment = ["TARGET=latest"]
        prepare.mounts = [.volume(name: "uploads", target: "/uploads")]
        web.initContainers = [prepare.resources(cpus: 0.25, memory: 32 << 20)]
        var db = ServiceSpec(name: "db", project: "shop", template: ContainerSpec(image: "postgres:16"))
        db.virtualPorts = [PublishedPort(hostPort: 5432, containerPort: 5432)]
        db.template.environment = ["POSTGRES_DB=shop"]
        db.probes.readiness = .exec(["pg_isready"])
        var migrate = ServiceSpec(name: "migrate", project: "shop", template: ContainerSpec(image: "shop/migrate:1", command: ["migrate", "up"]))
        migrate.restartPolicy = .onFailure
        var peers = ServiceSpec(name: "peers", project: "shop", replicas: 2, template: ContainerSpec(image: "redis:7"))
        peers.endpointMode = .dnsRoundRobin
        return [web, db, migrate, peers]
    }

    @Test func generatedManifestsValidateAndPlayBackTheSameServices() async throws {
        try await withTemporaryDirectory("kube-generate") { dir in
            let secretValue = "generated-\(UUID().uuidString)"
            try write(secretValue, to: dir + "/token")
            let variable = "GANTRY_TEST_KUBE_\(UUID().uuidString.prefix(8))"
            setenv(variable, "api-value", 1)
            defer { unsetenv(variable) }
            let services = Self.shop(secretFile: dir + "/token", variable: variable)
            let generated = try KubeManifests.generate(services)
            #expect(generated.yaml.contains("kind: Deployment") && generated.yaml.contains("kind: PersistentVolumeClaim"))
            #expect(generated.yaml.contains(Data(secretValue.utf8).base64EncodedString()), "the Secret carries the value read now")
            #expect(generated.warnings == ["service web: the Secret web-secrets holds the values of 2 secrets (base64, not encrypted): keep the manifests as the secrets themselves"],
                    "\(generated.warnings)")

            // Kubernetes' own schemas, strictly (no field it does not know).
            try write(generated.yaml, to: dir + "/shop.yaml")
            let searched = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin").split(separator: ":").map { String($0) + "/kubernetes-validate" }
            let validator = searched.first { FileManager.default.isExecutableFile(atPath: $0) }
            let tool = try #require(validator, "kubernetes-validate is missing: scripts/setup.sh installs it")
            let validated = try await runWithStatus(tool, ["--strict", dir + "/shop.yaml"])
            #expect(validated.status == 0, "\(validated.output) \(validated.error)")

            // Played back, the same services; generated again, the same manifests.
            let memory = "/dev/shm/gantry-kube-\(UUID().uuidString.prefix(8))"
            let play = try KubeManifests.parse(generated.yaml, file: "shop.yaml", project: "shop", secretsDirectory: memory)
            try play.writeSecrets()
            defer { try? KubePlay.removeSecrets(in: memory) }
            // Only that a claim's size is not enforced here.
            #expect(play.project.warnings.allSatisfy { $0.contains("a named volume has no size limit here") }, "\(play.project.warnings)")
            let played = Dictionary(uniqueKeysWithValues: play.project.services.map { ($0.name, $0) })
            #expect(played.keys.sorted() == ["db", "migrate", "peers", "web"])
            for original in services {
                let back = try #require(played[original.name])
                #expect(back.replicas == original.replicas && back.restartPolicy == original.restartPolicy && back.endpointMode == original.endpointMode)
                #expect(back.template.root == original.template.root && back.template.entrypoint == original.template.entrypoint
                        && back.template.command == original.template.command && back.template.environment == original.template.environment)
                #expect(back.template.user == original.template.user && back.template.resources == original.template.resources)
                #expect(back.template.mounts == original.template.mounts && back.template.stopGracePeriod == original.template.stopGracePeriod)
                #expect(back.template.capabilitiesAdded == original.template.capabilitiesAdded && back.template.capabilitiesDropped == original.template.capabilitiesDropped)
                #expect(back.probes == original.probes && back.update == original.update, "\(original.name)")
                #expect(back.template.secrets.map { "\($0.name) \($0.mounted ? $0.path : "") \($0.environmentVariable ?? "") \(String($0.mode, radix: 8))" }.sorted()
                        == original.template.secrets.map { "\($0.name) \($0.mounted ? $0.path : "") \($0.environmentVariable ?? "") \(String($0.mode, radix: 8))" }.sorted())
                #expect(back.template.configs.map { "\($0.name) \($0.path) \($0.source)" } == original.template.configs.map { "\($0.name) \($0.path) \($0.source)" })
                #expect(back.template.publishedPorts == original.template.publishedPorts)
                #expect(back.template.extraHosts == original.template.extraHosts && back.template.namespaces == original.template.namespaces)
                #expect(back.initContainers.map { "\($0.root) \($0.command ?? []) \($0.environment) \($0.mounts) \($0.resources)" }
                        == original.initContainers.map { "\($0.root) \($0.command ?? []) \($0.environment) \($0.mounts) \($0.resources)" })
            }
            #expect(played["db"]?.virtualPorts == [PublishedPort(hostPort: 5432, containerPort: 5432)])
            let again = try KubeManifests.generate(play.project.services)
            #expect(again.yaml == generated.yaml)
        }
    }

    @Test func generatedJobsAndCronJobsValidateAndPlayBackTheSame() async throws {
        try await withTemporaryDirectory("kube-generate-jobs") { dir in
            let played = try KubeManifests.parse(batchManifests, file: "batch.yaml", project: "shop", secretsDirectory: "/run/unused")
            // A job as `gantry job run` makes it, too: limits only, no network of a project.
            var made = JobTemplate(container: ContainerSpec(image: "busybox", command: ["sh", "-c", "echo made"]),
                                   resources: ResourceRequirements(limits: .cpus(0.25, memory: 32 << 20)), priority: 5, parallelism: 2)
            made.container.environment = ["A=1"]
            var jobs = played.jobs
            jobs["made"] = made
            let generated = try KubeManifests.generate([], jobs: jobs, cronJobs: played.cronJobs)
            #expect(generated.yaml.contains("kind: Job") && generated.yaml.contains("kind: CronJob") && generated.yaml.contains("timeZone: Europe/Berlin"))
            #expect(generated.warnings == ["job made: priority 5 needs a PriorityClass of the cluster (priorityClassName); left out"], "\(generated.warnings)")
            try write(generated.yaml, to: dir + "/batch.yaml")
            let searched = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin").split(separator: ":").map { String($0) + "/kubernetes-validate" }
            let tool = try #require(searched.first { FileManager.default.isExecutableFile(atPath: $0) }, "kubernetes-validate is missing: scripts/setup.sh installs it")
            let validated = try await runWithStatus(tool, ["--strict", dir + "/batch.yaml"])
            #expect(validated.status == 0, "\(validated.output) \(validated.error)")

            // What kube play read comes back the same, and is generated the same again.
            let back = try KubeManifests.parse(generated.yaml, file: "batch.yaml", project: "shop", secretsDirectory: "/run/unused")
            #expect(back.jobs["migrate"] == played.jobs["migrate"])
            #expect(back.cronJobs == played.cronJobs)
            var backMade = try #require(back.jobs["made"])
            #expect(backMade.container.entrypoint == nil && backMade.container.command == ["sh", "-c", "echo made"] && backMade.container.environment == ["A=1"])
            #expect(backMade.resources == made.resources && backMade.parallelism == 2 && backMade.completions == 1)
            backMade.priority = made.priority
            backMade.container = made.container
            #expect(backMade == made, "all but the container's network and labels, and the priority")
            #expect(try KubeManifests.generate([], jobs: back.jobs, cronJobs: back.cronJobs).yaml == generated.yaml)
        }
    }
}
