import Foundation
public import Reconciler
import Runtime
public import Scheduler
import Yams

/// Kubernetes manifests for services, as `gantry kube generate` writes them.
public struct KubeManifestSet: Sendable {
    /// The manifests, `---` apart.
    public var yaml: String
    /// What could not be carried over, each naming the service and why.
    public var warnings: [String]
}

extension KubeManifests {
    /// The label that ties a generated Deployment, its pods and its Service.
    public static let nameLabel = "app.kubernetes.io/name"

    /// Manifests for a cluster: per service a Deployment, a Service when it
    /// has an endpoint, a ConfigMap of its configs and a Secret of its
    /// secrets (their values read now, from their files or variables); per
    /// job a Job and per cron job a CronJob, with their ConfigMaps and
    /// Secrets; and a PersistentVolumeClaim per named volume. What `kube
    /// play` of them gives back is the same services, jobs and cron jobs.
    ///
    /// - Parameters:
    ///   - services: the services.
    ///   - jobs: jobs, by name.
    ///   - cronJobs: cron jobs.
    ///   - claimSize: the storage each claim asks for.
    /// - Throws: `ReconcilerError` naming the service when a secret or
    ///   config cannot be read, or a name cannot be a Kubernetes name.
    public static func generate(_ services: [ServiceSpec], jobs: [String: JobTemplate] = [:], cronJobs: [CronJobSpec] = [],
                                claimSize: String = "1Gi") throws -> KubeManifestSet {
        var documents: [[String: Any]] = []
        var warnings: [String] = []
        var claims: [String] = []
        func claimVolumes(_ container: ContainerSpec) {
            for case .volume(let name, _, _) in container.mounts where !claims.contains(name) { claims.append(name) }
        }
        for service in services.sorted(by: { $0.name < $1.name }) {
            var generator = KubeServiceGenerator(service: service)
            documents += try generator.documents()
            warnings += generator.warnings
            claimVolumes(service.template)
        }
        for (name, job) in jobs.sorted(by: { $0.key < $1.key }) {
            var generator = KubeServiceGenerator(job: name, template: job, what: "job")
            documents += try generator.jobDocuments()
            warnings += generator.warnings
            claimVolumes(job.container)
        }
        for cron in cronJobs.sorted(by: { $0.name < $1.name }) {
            var generator = KubeServiceGenerator(job: cron.name, template: cron.job, what: "cron job")
            documents += try generator.cronJobDocuments(cron)
            warnings += generator.warnings
            claimVolumes(cron.job.container)
        }
        for claim in claims {
            documents.append([
                "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": ["name": try kubeName(claim, what: "volume")],
                "spec": ["accessModes": ["ReadWriteOnce"], "resources": ["requests": ["storage": claimSize]]],
            ])
        }
        let yaml: String
        do {
            yaml = try Yams.dump(objects: documents, width: -1, explicitStart: true, sortKeys: true)
        } catch {
            throw ReconcilerError(.compose, "cannot write the manifests: \(error)")
        }
        return KubeManifestSet(yaml: yaml, warnings: warnings)
    }

    /// `name` as a Kubernetes object name (lowercase letters, digits and
    /// `-`), or an error naming it.
    static func kubeName(_ name: String, what: String) throws -> String {
        let converted = name.lowercased().replacingOccurrences(of: "_", with: "-").replacingOccurrences(of: ".", with: "-")
        guard !converted.isEmpty, converted.count <= 63, converted.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }),
              converted.first?.isLetter == true || converted.first?.isNumber == true,
              converted.last?.isLetter == true || converted.last?.isNumber == true else {
            throw ReconcilerError(.invalidSpec, "the \(what) name \(name) cannot be a Kubernetes name (up to 63 of a-z, 0-9 and -)")
        }
        return converted
    }
}

/// The manifests of one service, job or cron job.
struct KubeServiceGenerator {
    /// The service; a job's is one of its container that does not restart.
    let service: ServiceSpec
    /// A job's template: how it runs and retries, and the resources its
    /// runs ask for and are limited to.
    private let job: JobTemplate?
    /// What it is, for messages: `service`, `job` or `cron job`.
    private let what: String
    var warnings: [String] = []
    private var volumes: [[String: Any]] = []
    private var mounts: [[String: Any]] = []
    private var configData: [String: String] = [:]
    private var secretData: [String: String] = [:]

    init(service: ServiceSpec) {
        self.service = service
        job = nil
        what = "service"
    }

    init(job name: String, template: JobTemplate, what: String) {
        var service = ServiceSpec(name: name, template: template.container)
        service.restartPolicy = .never
        self.service = service
        job = template
        self.what = what
    }

    private mutating func warn(_ message: String) { warnings.append("\(what) \(service.name): \(message)") }

    mutating func documents() throws -> [[String: Any]] {
        let name = try KubeManifests.kubeName(service.name, what: what)
        if name != service.name { warn("named \(name) in Kubernetes") }
        let (podSpec, labels) = try pod(name: name)
        let metadata: [String: Any] = ["name": name, "labels": [KubeManifests.nameLabel: name]]
        var documents = dataDocuments(name: name)
        let pod: [String: Any] = ["metadata": ["labels": labels], "spec": podSpec]
        if service.restartPolicy != .always {
            // A Deployment's pods always restart: a service that does not is a Pod.
            var bare = pod
            bare["metadata"] = ["name": name, "labels": labels]
            var spec = podSpec
            spec["restartPolicy"] = service.restartPolicy == .onFailure ? "OnFailure" : "Never"
            bare["spec"] = spec
            if service.replicas != 1 { warn("a Pod is one replica, not \(service.replicas)") }
            documents.append(["apiVersion": "v1", "kind": "Pod"].merging(bare) { $1 })
        } else {
            let update = service.update
            var deployment: [String: Any] = [
                "replicas": service.replicas,
                "selector": ["matchLabels": [KubeManifests.nameLabel: name]],
                "strategy": ["type": "RollingUpdate", "rollingUpdate": ["maxSurge": Self.count(update.maxSurge), "maxUnavailable": Self.count(update.maxUnavailable)]],
                "progressDeadlineSeconds": max(1, Int(update.progressDeadline.components.seconds)),
                "revisionHistoryLimit": update.revisionHistoryLimit,
                "template": pod,
            ]
            if update.minReady > .zero { deployment["minReadySeconds"] = Int(update.minReady.components.seconds) }
            documents.append(["apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata, "spec": deployment])
        }
        if let endpoint = endpointService(name: name, metadata: metadata) { documents.append(endpoint) }
        if service.dependsOn.contains(where: { $0.service != service.networkService }) {
            warn("depends_on has no Kubernetes equivalent: its services start in any order")
        }
        if service.template.privileged { warn("privileged: the cluster's policies may refuse it") }
        return documents
    }

    /// A Job, with its ConfigMap and Secret.
    mutating func jobDocuments() throws -> [[String: Any]] {
        let name = try KubeManifests.kubeName(service.name, what: what)
        if name != service.name { warn("named \(name) in Kubernetes") }
        let spec = try jobSpec(name: name)
        return dataDocuments(name: name) + [
            ["apiVersion": "batch/v1", "kind": "Job", "metadata": ["name": name, "labels": [KubeManifests.nameLabel: name]], "spec": spec],
        ]
    }

    /// A CronJob, with the ConfigMap and Secret of its jobs.
    mutating func cronJobDocuments(_ cron: CronJobSpec) throws -> [[String: Any]] {
        let name = try KubeManifests.kubeName(service.name, what: what)
        if name != service.name { warn("named \(name) in Kubernetes") }
        // The five fields (or the @ descriptor) without a zone's prefix: the zone is timeZone.
        var schedule = Substring(cron.schedule.text.trimmingCharacters(in: .whitespaces))
        if schedule.hasPrefix("CRON_TZ=") || schedule.hasPrefix("TZ=") {
            schedule = schedule.drop { !$0.isWhitespace }.drop { $0.isWhitespace }
        }
        var spec: [String: Any] = [
            "schedule": String(schedule), "timeZone": cron.schedule.timeZone.identifier,
            "concurrencyPolicy": cron.concurrencyPolicy.rawValue, "suspend": cron.suspend,
            "successfulJobsHistoryLimit": cron.successfulJobsHistoryLimit, "failedJobsHistoryLimit": cron.failedJobsHistoryLimit,
            "jobTemplate": ["metadata": ["labels": [KubeManifests.nameLabel: name]], "spec": try jobSpec(name: name)],
        ]
        if let deadline = cron.startingDeadline { spec["startingDeadlineSeconds"] = Int(deadline.components.seconds) }
        return dataDocuments(name: name) + [
            ["apiVersion": "batch/v1", "kind": "CronJob", "metadata": ["name": name, "labels": [KubeManifests.nameLabel: name]], "spec": spec],
        ]
    }

    /// A Job's `spec`: how it runs and retries, and its pods' template.
    private mutating func jobSpec(name: String) throws -> [String: Any] {
        guard let job else { return [:] }
        let (podSpec, labels) = try pod(name: name)
        var pod = podSpec
        // Each failed run is a new one, as a Job's pods that never restart.
        pod["restartPolicy"] = "Never"
        var spec: [String: Any] = [
            "completions": job.completions, "parallelism": job.parallelism, "backoffLimit": job.backoffLimit,
            "completionMode": job.completionMode.rawValue, "template": ["metadata": ["labels": labels], "spec": pod],
        ]
        if let deadline = job.activeDeadline { spec["activeDeadlineSeconds"] = max(1, Int(deadline.components.seconds)) }
        if let ttl = job.ttlAfterFinished { spec["ttlSecondsAfterFinished"] = Int(ttl.components.seconds) }
        if job.backoffBase != .seconds(10) || job.backoffCap != .seconds(360) {
            warn("Kubernetes waits 10 s doubling to 6 minutes between failed runs, not \(job.backoffBase) to \(job.backoffCap)")
        }
        if job.priority != 0 { warn("priority \(job.priority) needs a PriorityClass of the cluster (priorityClassName); left out") }
        if job.queue != "default" { warn("the admission queue \(job.queue) has no Kubernetes equivalent (Kueue's LocalQueue is the nearest)") }
        if !service.template.publishedPorts.isEmpty { warn("a job's published ports have no Kubernetes equivalent; left out") }
        if job.resources.limits.pids != nil || job.resources.requests.pids != nil { warn("a limit of processes is the cluster's (the kubelet's podPidsLimit); left out") }
        return spec
    }

    /// The pod's spec and labels.
    private mutating func pod(name: String) throws -> (spec: [String: Any], labels: [String: String]) {
        let template = service.template
        var container: [String: Any] = ["name": name]
        guard case .image(let image) = template.root else {
            throw ReconcilerError(.invalidSpec, "service \(service.name) runs a directory, not an image: a cluster cannot run it")
        }
        container["image"] = image
        if let entrypoint = template.entrypoint { container["command"] = entrypoint }
        if let command = template.command { container["args"] = command }
        if let directory = template.workingDirectory { container["workingDir"] = directory }
        var environment: [[String: Any]] = template.environment.map { pair in
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            return ["name": String(parts[0]), "value": parts.count > 1 ? String(parts[1]) : ""]
        }
        try provided(name: name, environment: &environment)
        if !environment.isEmpty { container["env"] = environment }
        // The container's ports: what the endpoint and published ports reach.
        var ports: [UInt16] = []
        for port in service.virtualPorts.map(\.containerPort) + template.publishedPorts.map(\.containerPort) where !ports.contains(port) { ports.append(port) }
        if !ports.isEmpty { container["ports"] = ports.map { ["containerPort": Int($0)] } }
        if let resources = resources() { container["resources"] = resources }
        for (kind, probe) in [("startupProbe", service.probes.startup), ("livenessProbe", service.probes.liveness), ("readinessProbe", service.probes.readiness)] {
            if let probe { container[kind] = Self.probe(probe) }
        }
        container["securityContext"] = securityContext(of: template)
        mounts += mountEntries(of: template)
        if !mounts.isEmpty { container["volumeMounts"] = mounts }

        var podSpec: [String: Any] = ["containers": [container]]
        if !service.initContainers.isEmpty { podSpec["initContainers"] = try service.initContainers.enumerated().map { try initContainer($1, name: "\(name)-init-\($0 + 1)") } }
        podSpec["terminationGracePeriodSeconds"] = Int(template.stopGracePeriod.components.seconds)
        if !volumes.isEmpty { podSpec["volumes"] = volumes }
        if let hostname = template.hostname { podSpec["hostname"] = hostname }
        if template.network == .host { podSpec["hostNetwork"] = true }
        if !template.namespaces.contains(.pid) { podSpec["hostPID"] = true }
        if !template.namespaces.contains(.ipc) { podSpec["hostIPC"] = true }
        if !template.namespaces.contains(.uts) { warn("the host's UTS namespace has no Kubernetes equivalent (hostNetwork gives it with the network)") }
        // Host entries: those of an address; the host's gateway has no equivalent in a cluster.
        var aliases: [String: [String]] = [:]
        for (name, address) in template.extraHosts.sorted(by: { $0.key < $1.key }) {
            if address == ContainerSpec.hostGateway {
                warn("the host entry \(name) → host-gateway has no Kubernetes equivalent; left out")
            } else {
                aliases[address, default: []].append(name)
            }
        }
        if !aliases.isEmpty { podSpec["hostAliases"] = aliases.sorted { $0.key < $1.key }.map { ["ip": $0.key, "hostnames": $0.value] } }
        if let size = template.shmSize { warn("a /dev/shm of \(size) bytes: mount an emptyDir of medium Memory at /dev/shm in the cluster") }
        if !template.networkAliases.isEmpty || !template.additionalNetworks.isEmpty {
            warn("network aliases and networks besides the first have no Kubernetes equivalent: pods reach each other through Services")
        }
        if let other = service.networkService {
            warn("shares the network of service \(other): in Kubernetes, put both containers in one pod")
        } else if case .container(let other) = template.network {
            warn("shares the network of container \(other): in Kubernetes, put both containers in one pod")
        }
        var labels = service.labels.filter { Self.isLabel($0.key) && Self.isLabelValue($0.value) }
        labels[KubeManifests.nameLabel] = name
        if labels.count - 1 != service.labels.filter({ $0.key != KubeManifests.nameLabel }).count { warn("labels that are not Kubernetes labels are left out") }
        return (podSpec, labels)
    }

    /// An init container: what it runs, its variables, resources, security
    /// context and mounts.
    private mutating func initContainer(_ spec: ContainerSpec, name: String) throws -> [String: Any] {
        guard case .image(let image) = spec.root else {
            throw ReconcilerError(.invalidSpec, "service \(service.name): an init container runs a directory, not an image: a cluster cannot run it")
        }
        var container: [String: Any] = ["name": name, "image": image]
        if let entrypoint = spec.entrypoint { container["command"] = entrypoint }
        if let command = spec.command { container["args"] = command }
        if let directory = spec.workingDirectory { container["workingDir"] = directory }
        if !spec.environment.isEmpty {
            container["env"] = spec.environment.map { pair in
                let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                return ["name": String(parts[0]), "value": parts.count > 1 ? String(parts[1]) : ""]
            }
        }
        if !spec.providedFiles.isEmpty { warn("the secrets and configs of init container \(name) are left out") }
        if let resources = resources(of: spec) { container["resources"] = resources }
        container["securityContext"] = securityContext(of: spec)
        let mounts = mountEntries(of: spec)
        if !mounts.isEmpty { container["volumeMounts"] = mounts }
        return container
    }

    /// The ConfigMap and Secret of what ``pod(name:)`` read.
    private mutating func dataDocuments(name: String) -> [[String: Any]] {
        var documents: [[String: Any]] = []
        if !configData.isEmpty {
            documents.append(["apiVersion": "v1", "kind": "ConfigMap", "metadata": ["name": name + "-config"], "data": configData])
        }
        if !secretData.isEmpty {
            documents.append(["apiVersion": "v1", "kind": "Secret", "metadata": ["name": name + "-secrets"], "type": "Opaque", "data": secretData])
            warn("the Secret \(name)-secrets holds the values of \(secretData.count) secret\(secretData.count == 1 ? "" : "s") (base64, not encrypted): keep the manifests as the secrets themselves")
        }
        return documents
    }

    /// Secrets and configs: values read now into the Secret and ConfigMap;
    /// files mounted one by one, variables from the Secret.
    private mutating func provided(name: String, environment: inout [[String: Any]]) throws {
        for file in service.template.providedFiles {
            let value: [UInt8]
            do {
                value = try file.read(container: "service \(service.name)")
            } catch let error as RuntimeError {
                throw ReconcilerError(.invalidSpec, error.message)
            }
            let key = file.name
            if file.kind == .secret {
                secretData[key] = Data(value).base64EncodedString()
                if let variable = file.environmentVariable {
                    environment.append(["name": variable, "valueFrom": ["secretKeyRef": ["name": name + "-secrets", "key": key]]])
                }
            } else {
                guard let text = String(validating: value, as: UTF8.self) else {
                    throw ReconcilerError(.invalidSpec, "service \(service.name): config \(file.name) is not text, which a ConfigMap's data is")
                }
                configData[key] = text
            }
            guard file.mounted else { continue }
            let volume = "\(file.kind.rawValue)-\(volumes.count)"
            let source: [String: Any] = file.kind == .secret
                ? ["secret": ["secretName": name + "-secrets", "items": [["key": key, "path": key, "mode": Int(file.mode)]]]]
                : ["configMap": ["name": name + "-config", "items": [["key": key, "path": key, "mode": Int(file.mode)]]]]
            volumes.append(["name": volume].merging(source) { $1 })
            mounts.append(["name": volume, "mountPath": file.path, "subPath": key, "readOnly": true])
            if file.uid != nil || file.gid != nil { warn("the \(file.kind.rawValue) \(file.name) belongs to the pod's user in Kubernetes, not \(file.uid ?? 0):\(file.gid ?? 0)") }
        }
    }

    /// The volume mounts of `container`, its volumes added to the pod's.
    private mutating func mountEntries(of container: ContainerSpec) -> [[String: Any]] {
        var mounts: [[String: Any]] = []
        for mount in container.mounts {
            let volume = "volume-\(volumes.count)"
            switch mount {
            case .volume(let claim, let target, let readOnly):
                let claimName = (try? KubeManifests.kubeName(claim, what: "volume")) ?? claim
                volumes.append(["name": volume, "persistentVolumeClaim": ["claimName": claimName]])
                mounts.append(["name": volume, "mountPath": target, "readOnly": readOnly])
            case .tmpfs(let target, let size, _):
                var source: [String: Any] = ["medium": "Memory"]
                if let size { source["sizeLimit"] = "\(size)" }
                volumes.append(["name": volume, "emptyDir": source])
                mounts.append(["name": volume, "mountPath": target])
            case .bind(let path, let target, let readOnly, _):
                warn("the bind mount of \(path) is a hostPath volume: it needs the same path on the cluster's node")
                volumes.append(["name": volume, "hostPath": ["path": path]])
                mounts.append(["name": volume, "mountPath": target, "readOnly": readOnly])
            }
        }
        return mounts
    }

    private func resources(of container: ContainerSpec? = nil) -> [String: Any]? {
        if container == nil, let job {
            // A job's runs ask for and are limited to its requirements.
            func amounts(_ amounts: ResourceAmounts) -> [String: Any] {
                var written: [String: Any] = [:]
                if let milliCPU = amounts.milliCPU { written["cpu"] = "\(ResourceQuantity(milliValue: milliCPU))" }
                if let memory = amounts.memory { written["memory"] = "\(memory)" }
                return written
            }
            var resources: [String: Any] = [:]
            if case let limits = amounts(job.resources.limits), !limits.isEmpty { resources["limits"] = limits }
            if case let requests = amounts(job.resources.requests), !requests.isEmpty { resources["requests"] = requests }
            return resources.isEmpty ? nil : resources
        }
        let limits = (container ?? service.template).resources
        var limit: [String: Any] = [:]
        var request: [String: Any] = [:]
        if let quota = limits.cpuQuota, quota > 0, let period = limits.cpuPeriod, period > 0 {
            limit["cpu"] = "\(max(1, Int64(quota) * 1000 / Int64(period)))m"
        }
        if let memory = limits.memory, memory > 0 { limit["memory"] = "\(memory)" }
        if let shares = limits.cpuShares { request["cpu"] = "\(max(1, shares * 1000 / 1024))m" }
        if let reservation = limits.memoryReservation, reservation > 0 { request["memory"] = "\(reservation)" }
        var resources: [String: Any] = [:]
        if !limit.isEmpty { resources["limits"] = limit }
        if !request.isEmpty { resources["requests"] = request }
        return resources.isEmpty ? nil : resources
    }

    private mutating func securityContext(of template: ContainerSpec) -> [String: Any] {
        var context: [String: Any] = ["allowPrivilegeEscalation": !template.noNewPrivileges]
        if let user = template.user {
            let parts = user.split(separator: ":", maxSplits: 1).map(String.init)
            if let uid = Int(parts[0]) { context["runAsUser"] = uid } else { warn("the user \(parts[0]) is named, which Kubernetes cannot: the image's user runs") }
            if parts.count > 1 { if let gid = Int(parts[1]) { context["runAsGroup"] = gid } }
        }
        if template.privileged { context["privileged"] = true }
        if template.readOnlyRootfs { context["readOnlyRootFilesystem"] = true }
        var capabilities: [String: Any] = [:]
        if !template.capabilitiesAdded.isEmpty { capabilities["add"] = template.capabilitiesAdded }
        if !template.capabilitiesDropped.isEmpty { capabilities["drop"] = template.capabilitiesDropped }
        if !capabilities.isEmpty { context["capabilities"] = capabilities }
        switch template.seccomp {
        case .default: break
        case .unconfined: context["seccompProfile"] = ["type": "Unconfined"]
        case .profile: warn("a seccomp profile of its own is left to the cluster (seccompProfile Localhost)")
        }
        return context
    }

    /// The Service of the endpoint: ClusterIP ports on the virtual
    /// address, LoadBalancer with published ports, headless for replicas
    /// reached one by one.
    private func endpointService(name: String, metadata: [String: Any]) -> [String: Any]? {
        let template = service.template
        var ports: [[String: Any]] = []
        func add(_ port: UInt16, _ target: UInt16, _ transport: PublishedPort.TransportProtocol) {
            guard !ports.contains(where: { $0["port"] as? Int == Int(port) }) else { return }
            ports.append(["name": "\(transport.rawValue)-\(port)", "port": Int(port), "targetPort": Int(target), "protocol": transport.rawValue.uppercased()])
        }
        for port in template.publishedPorts { add(port.hostPort == 0 ? port.containerPort : port.hostPort, port.containerPort, port.protocol) }
        for port in service.virtualPorts { add(port.hostPort, port.containerPort, port.protocol) }
        guard !ports.isEmpty || service.endpointMode == .dnsRoundRobin else { return nil }
        var spec: [String: Any] = ["selector": [KubeManifests.nameLabel: name], "ports": ports]
        if service.endpointMode == .dnsRoundRobin {
            spec["clusterIP"] = "None"
        } else if !template.publishedPorts.isEmpty {
            spec["type"] = "LoadBalancer"
        }
        if service.sessionAffinity == .clientAddress { spec["sessionAffinity"] = "ClientIP" }
        return ["apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": spec]
    }

    static func probe(_ probe: Probe) -> [String: Any] {
        var written: [String: Any] = [
            "periodSeconds": max(1, Int(probe.period.components.seconds)),
            "timeoutSeconds": max(1, Int(probe.timeout.components.seconds)),
            "successThreshold": probe.successThreshold,
            "failureThreshold": probe.failureThreshold,
        ]
        if probe.initialDelay > .zero { written["initialDelaySeconds"] = Int(probe.initialDelay.components.seconds) }
        switch probe.action {
        case .exec(let command): written["exec"] = ["command": command]
        case .httpGet(let path, let port, let host):
            var action: [String: Any] = ["path": path, "port": Int(port)]
            if let host { action["host"] = host }
            written["httpGet"] = action
        case .tcpSocket(let port, let host):
            var action: [String: Any] = ["port": Int(port)]
            if let host { action["host"] = host }
            written["tcpSocket"] = action
        }
        return written
    }

    static func count(_ count: ReplicaCount) -> Any {
        switch count {
        case .count(let value): value
        case .percent(let value): "\(value)%"
        }
    }

    static func isLabel(_ key: String) -> Bool {
        let name = key.split(separator: "/").last.map(String.init) ?? key
        return !name.isEmpty && name.count <= 63 && name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) }
            && key.split(separator: "/").count <= 2
    }

    static func isLabelValue(_ value: String) -> Bool {
        value.count <= 63 && value.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) }
    }
}
