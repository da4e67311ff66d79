import Foundation
import Reconciler
import Runtime
import Scheduler

/// Turns the manifests' objects into services, one kind at a time.
struct KubeReader {
    let project: String
    let secretsDirectory: String
    let warnings: KubeWarnings
    var configMaps: [String: [String: String]] = [:]
    var secrets: [String: Set<String>] = [:]
    var secretFiles: [String: [UInt8]] = [:]
    var claims: [String] = []
    var services: [ServiceSpec] = []
    var pullPolicies: [String: PullPolicy] = [:]
    /// The labels of each service's pods, to match Services' selectors.
    var podLabels: [String: [String: String]] = [:]
    /// The named ports of each service's container.
    var namedPorts: [String: [String: UInt16]] = [:]
    /// The Service that named each service, by the service's original name.
    var renamed: [String: String] = [:]
    /// The volumes of the pod being read.
    private var podVolumes: PodVolumes?
    /// The Jobs, by name.
    var jobs: [String: JobTemplate] = [:]
    var cronJobs: [CronJobSpec] = []
    /// The pull policies of the Jobs' and CronJobs' images, by their names.
    var jobPullPolicies: [String: PullPolicy] = [:]

    init(project: String, secretsDirectory: String, warnings: KubeWarnings) {
        self.project = project
        self.secretsDirectory = secretsDirectory
        self.warnings = warnings
    }

    // MARK: - Data

    mutating func configMap(_ name: String, _ object: KubeObject) throws {
        var data = try object.stringMap("data")
        if let binary = try object.object("binaryData") {
            for key in binary.fields.keys.sorted() {
                guard let encoded = try binary.string(key), let bytes = Data(base64Encoded: encoded), let text = String(data: bytes, encoding: .utf8) else {
                    throw binary.error(key, "is not base64 of UTF-8 text (Gantry's configs are text)")
                }
                data[key] = text
            }
        }
        _ = try object.bool("immutable")
        configMaps[name] = data
    }

    mutating func secret(_ name: String, _ object: KubeObject) throws {
        var values: [String: [UInt8]] = [:]
        if let data = try object.object("data") {
            for key in data.fields.keys.sorted() {
                guard let encoded = try data.string(key), let bytes = Data(base64Encoded: encoded) else {
                    throw data.error(key, "is not base64")
                }
                values[key] = Array(bytes)
            }
        }
        for (key, text) in try object.stringMap("stringData") { values[key] = Array(text.utf8) }
        _ = try object.string("type")
        _ = try object.bool("immutable")
        for (key, bytes) in values {
            guard !key.isEmpty, key.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-._".contains($0)) }), key != ".", key != ".." else {
                throw object.error("data", "\(key) is not a key of letters, digits, - . and _")
            }
            secretFiles[secretsDirectory + "/" + name + "/" + key] = bytes
        }
        secrets[name] = Set(values.keys)
    }

    mutating func claim(_ name: String, _ object: KubeObject) throws {
        if let spec = try object.object("spec") {
            spec.accept("accessModes", "volumeMode")
            if let resources = try spec.object("resources") {
                resources.accept("limits")
                resources.ignore("requests", because: "a named volume has no size limit here; it grows as its file system allows")
            }
            if let storageClass = try spec.string("storageClassName") {
                spec.warn("storageClassName", "a named volume of the state root serves whatever class (\(storageClass))")
            }
        }
        claims.append(name)
    }

    // MARK: - Workloads

    mutating func deployment(_ name: String, _ object: KubeObject) throws {
        guard let spec = try object.object("spec") else { throw object.error("spec", "is missing") }
        guard let template = try spec.object("template") else { throw spec.error("template", "is missing") }
        var service = try pod(name, template: template, restartAllowed: ["Always"]).service
        service.replicas = try spec.int("replicas", 0 ... ServiceSpec.maximumReplicas) ?? 1
        let labels = podLabels[name] ?? [:]
        if let selector = try spec.object("selector") {
            let wanted = try selector.stringMap("matchLabels")
            for (key, value) in wanted where labels[key] != value {
                throw selector.error("matchLabels", "selects \(key)=\(value), which the pod template's labels do not have")
            }
            selector.ignore("matchExpressions", because: "not checked; the template's pods are the deployment's")
        }
        if let strategy = try spec.object("strategy") {
            switch try strategy.string("type") ?? "RollingUpdate" {
            case "Recreate":
                service.update.maxSurge = .count(0)
                service.update.maxUnavailable = .percent(100)
            case "RollingUpdate":
                if let rolling = try strategy.object("rollingUpdate") {
                    for (key, path) in [("maxSurge", \UpdateStrategy.maxSurge), ("maxUnavailable", \UpdateStrategy.maxUnavailable)] {
                        guard let text = try rolling.string(key) else { continue }
                        guard let count = ReplicaCount(text) else { throw rolling.error(key, "must be a count or a percentage, as 1 or 25%") }
                        service.update[keyPath: path] = count
                    }
                }
            case let other: throw strategy.error("type", "must be RollingUpdate or Recreate, not \(other)")
            }
        }
        if let seconds = try spec.int("minReadySeconds") { service.update.minReady = .seconds(seconds) }
        if let seconds = try spec.int("progressDeadlineSeconds", 1 ... Int.max) { service.update.progressDeadline = .seconds(seconds) }
        if let limit = try spec.int("revisionHistoryLimit") { service.update.revisionHistoryLimit = limit }
        if try spec.bool("paused") == true { spec.warn("paused", "a paused deployment is rolled out all the same") }
        try add(service, at: object)
    }

    mutating func pod(_ name: String, _ object: KubeObject) throws {
        var service = try pod(name, template: object, restartAllowed: ["Always", "OnFailure", "Never"]).service
        service.replicas = 1
        try add(service, at: object)
    }

    private mutating func add(_ service: ServiceSpec, at object: KubeObject) throws {
        do {
            try service.validate()
        } catch let error as ReconcilerError {
            throw object.error(nil, error.message)
        }
        guard !services.contains(where: { $0.name == service.name }) else {
            throw object.error("metadata.name", "another Pod or Deployment is named \(service.name)")
        }
        services.append(service)
    }

    /// A pod template read: the service it is, and what a job's runs take
    /// from it instead.
    struct PodTemplate {
        var service: ServiceSpec
        /// The container's resources, which a job's runs ask for and are
        /// limited to (a service's are in its template's container).
        var requirements: ResourceRequirements
        /// The image's pull policy, when the container gives one.
        var pullPolicy: PullPolicy?
    }

    /// A pod template (`metadata` and `spec`) as a service named `name`, or
    /// (`asJob`) the runs of a job of that name.
    private mutating func pod(_ name: String, template: KubeObject, restartAllowed: Set<String>, asJob: Bool = false) throws -> PodTemplate {
        var labels: [String: String] = [:]
        if let metadata = try template.object("metadata") {
            metadata.accept("name", "annotations", "namespace", "creationTimestamp")
            labels = try metadata.stringMap("labels")
        }
        if !asJob { podLabels[name] = labels }
        guard let spec = try template.object("spec") else { throw template.error("spec", "is missing") }
        let containers = try spec.objects("containers")
        guard containers.count == 1 else {
            throw spec.error("containers", containers.isEmpty ? "is missing" : "lists \(containers.count) containers; Gantry runs one per replica: give each its own Deployment (a Service finds it by its labels)")
        }
        let container = containers[0]
        podVolumes = nil
        let read = try self.container(container, pod: spec, service: name, asJob: asJob)
        var service = ServiceSpec(name: name, project: project, template: read.spec)
        let initial = try spec.objects("initContainers")
        if asJob, !initial.isEmpty {
            spec.warn("initContainers", "not run: a job's runs have no init containers")
        } else {
            for object in initial {
                // Read as a job's container is (nothing recorded for Services), then limited by its resources.
                var read = try self.container(object, pod: spec, service: name, asJob: true)
                Self.apply(read.requirements, to: &read.spec)
                if read.spec.mounts.contains(where: { if case .tmpfs = $0 { true } else { false } }) {
                    object.warn("volumeMounts", "an emptyDir is each container's own here: what an init container writes there, the others do not see (a PersistentVolumeClaim is shared)")
                }
                if try object.string("restartPolicy") == "Always" {
                    object.warn("restartPolicy", "a sidecar runs to its end here, before the pod's container starts, as the other init containers do")
                }
                if object.has("livenessProbe") || object.has("readinessProbe") || object.has("startupProbe") {
                    object.ignore("livenessProbe", because: "an init container is not probed")
                    object.ignore("readinessProbe", because: "an init container is not probed")
                    object.ignore("startupProbe", because: "an init container is not probed")
                }
                service.initContainers.append(read.spec)
            }
        }
        finishPodVolumes()
        service.labels = labels
        if let policy = try spec.string("restartPolicy") {
            guard restartAllowed.contains(policy) else {
                let allowed = restartAllowed.sorted()
                let listed = allowed.count > 1 ? allowed.dropLast().joined(separator: ", ") + " or " + allowed.last! : allowed.joined()
                throw spec.error("restartPolicy", "must be \(listed) here, not \(policy)")
            }
            service.restartPolicy = policy == "Always" ? .always : policy == "OnFailure" ? .onFailure : .never
        }
        if let seconds = try spec.int("terminationGracePeriodSeconds") { service.template.stopGracePeriod = .seconds(seconds) }
        service.probes = try probes(container, service: name)
        if !asJob, let policy = read.pullPolicy { pullPolicies[name] = policy }
        return PodTemplate(service: service, requirements: read.requirements, pullPolicy: read.pullPolicy)
    }

    // MARK: - Jobs

    /// A Job: run to its end once the manifests are played.
    mutating func job(_ name: String, _ object: KubeObject) throws {
        guard let spec = try object.object("spec") else { throw object.error("spec", "is missing") }
        guard jobs[name] == nil else { throw object.error("metadata.name", "another Job is named \(name)") }
        let template = try jobTemplate(name, spec)
        do {
            try template.jobSpec(named: name).validate()
        } catch let error as SchedulerError {
            throw object.error(nil, error.message)
        }
        if try spec.bool("suspend") == true {
            spec.warn("suspend", "the Job is suspended: it is not run (play it again without suspend to run it)")
            return
        }
        jobs[name] = template
    }

    /// A CronJob: its jobs start on its schedule while the manifests play.
    mutating func cronJob(_ name: String, _ object: KubeObject) throws {
        guard let spec = try object.object("spec") else { throw object.error("spec", "is missing") }
        guard !cronJobs.contains(where: { $0.name == name }) else { throw object.error("metadata.name", "another CronJob is named \(name)") }
        let text = try spec.requiredString("schedule")
        let schedule: CronSchedule
        if let zone = try spec.string("timeZone") {
            guard TimeZone(identifier: zone) != nil else { throw spec.error("timeZone", "\(zone) is not a time zone of the tz database") }
            guard !text.hasPrefix("CRON_TZ="), !text.hasPrefix("TZ=") else { throw spec.error("schedule", "names a time zone, and so does timeZone: give one") }
        }
        do {
            schedule = try CronSchedule(text, timeZoneIdentifier: try spec.string("timeZone") ?? TimeZone.current.identifier)
        } catch let error as SchedulerError {
            throw spec.error("schedule", error.message)
        }
        guard let template = try spec.object("jobTemplate") else { throw spec.error("jobTemplate", "is missing") }
        if let metadata = try template.object("metadata") {
            metadata.accept("name", "annotations", "namespace", "creationTimestamp")
            _ = try metadata.stringMap("labels")
        }
        guard let jobSpec = try template.object("spec") else { throw template.error("spec", "is missing") }
        var cron = CronJobSpec(name: name, schedule: schedule, job: try jobTemplate(name, jobSpec))
        if let policy = try spec.string("concurrencyPolicy") {
            guard let parsed = CronJobSpec.ConcurrencyPolicy(rawValue: policy) else { throw spec.error("concurrencyPolicy", "must be Allow, Forbid or Replace, not \(policy)") }
            cron.concurrencyPolicy = parsed
        }
        cron.startingDeadline = try spec.int("startingDeadlineSeconds", 0 ... Int.max).map { .seconds($0) }
        if let kept = try spec.int("successfulJobsHistoryLimit", 0 ... Int.max) { cron.successfulJobsHistoryLimit = kept }
        if let kept = try spec.int("failedJobsHistoryLimit", 0 ... Int.max) { cron.failedJobsHistoryLimit = kept }
        cron.suspend = try spec.bool("suspend") ?? false
        if try jobSpec.bool("suspend") == true { jobSpec.warn("suspend", "the CronJob's jobs start all the same (suspend the CronJob itself to stop them)") }
        do {
            try cron.validate()
        } catch let error as SchedulerError {
            throw object.error(nil, error.message)
        }
        cronJobs.append(cron)
    }

    /// A Job's `spec` (also a CronJob's `jobTemplate.spec`) as the template
    /// of a job named `name`.
    private mutating func jobTemplate(_ name: String, _ spec: KubeObject) throws -> JobTemplate {
        guard let template = try spec.object("template") else { throw spec.error("template", "is missing") }
        let pod = try self.pod(name, template: template, restartAllowed: ["Never", "OnFailure"], asJob: true)
        guard pod.service.restartPolicy != .always else {
            throw template.error("spec.restartPolicy", "is missing: a Job's pods run to their end, and it must be Never or OnFailure")
        }
        let probes = pod.service.probes
        if probes.liveness != nil || probes.readiness != nil || probes.startup != nil {
            template.warn("spec.containers", "a Job's runs are not probed: they run to their end")
        }
        if let policy = pod.pullPolicy { jobPullPolicies[name] = policy }
        var container = pod.service.template
        container.labels[ReplicaLabel.project] = project
        var job = JobTemplate(container: container, resources: pod.requirements)
        let completions = try spec.int("completions", 1 ... Int.max)
        if let completions { job.completions = completions }
        if let parallelism = try spec.int("parallelism", 1 ... Int.max) {
            job.parallelism = parallelism
            if completions == nil, parallelism > 1 {
                spec.warn("parallelism", "without completions Kubernetes runs a work queue of \(parallelism) pods; Gantry runs one at a time until one succeeds")
            }
        }
        switch try spec.string("completionMode") {
        case "Indexed":
            guard completions != nil else { throw spec.error("completions", "is missing: an Indexed Job needs it") }
            job.completionMode = .indexed
        case "NonIndexed", nil: break
        case let other?: throw spec.error("completionMode", "must be NonIndexed or Indexed, not \(other)")
        }
        if let limit = try spec.int("backoffLimit", 0 ... Int.max) { job.backoffLimit = limit }
        job.activeDeadline = try spec.int("activeDeadlineSeconds", 1 ... Int.max).map { .seconds($0) }
        job.ttlAfterFinished = try spec.int("ttlSecondsAfterFinished", 0 ... Int.max).map { .seconds($0) }
        spec.accept("selector")
        if try spec.bool("manualSelector") == true { spec.warn("manualSelector", "the Job's runs are its own; a selector picks nothing else") }
        return job
    }

    // MARK: - Containers

    /// A container read: its spec, and the resources and pull policy it gives.
    private struct ContainerRead {
        var spec: ContainerSpec
        var requirements: ResourceRequirements
        var pullPolicy: PullPolicy?
    }

    private mutating func container(_ container: KubeObject, pod: KubeObject, service: String, asJob: Bool) throws -> ContainerRead {
        container.accept("name", "terminationMessagePath", "terminationMessagePolicy")
        var spec = ContainerSpec(image: try container.requiredString("image"))
        var pullPolicy: PullPolicy?
        let commandGiven = container.has("command")
        let command = try container.strings("command")
        let arguments = try container.strings("args")
        if commandGiven { spec.entrypoint = command }
        if container.has("args") || commandGiven { spec.command = arguments }
        spec.workingDirectory = try container.string("workingDir")
        switch try container.string("imagePullPolicy") {
        case "Always": pullPolicy = .always
        case "Never": pullPolicy = .never
        case "IfNotPresent", nil: break
        case let other?: throw container.error("imagePullPolicy", "must be Always, IfNotPresent or Never, not \(other)")
        }
        spec.environment = try environment(container, service: service, spec: &spec)
        // Ports: hostPort publishes; the others name ports for Services.
        var named: [String: UInt16] = [:]
        for port in try container.objects("ports") {
            let number = UInt16(try port.int("containerPort", 1 ... 65535) ?? 0)
            guard number > 0 else { throw port.error("containerPort", "is missing") }
            let transport = try port.string("protocol") ?? "TCP"
            guard let parsed = PublishedPort.TransportProtocol(rawValue: transport.lowercased()) else { throw port.error("protocol", "must be TCP or UDP") }
            if let portName = try port.string("name") { named[portName] = number }
            if let hostPort = try port.int("hostPort", 1 ... 65535) {
                let address = try port.string("hostIP").map { text -> IPv4Address in
                    guard let address = IPv4Address(text) else { throw port.error("hostIP", "is not an IPv4 address") }
                    return address
                }
                spec.publishedPorts.append(PublishedPort(hostIP: address, hostPort: UInt16(hostPort), containerPort: number, protocol: parsed))
            }
        }
        if !asJob { namedPorts[service] = named }
        let requirements = try resources(container)
        if !asJob { Self.apply(requirements, to: &spec) }
        try securityContext(try pod.object("securityContext"), container: try container.object("securityContext"), into: &spec)
        try volumes(container, pod: pod, into: &spec)
        if try pod.bool("hostPID") == true { spec.namespaces.remove(.pid) }
        if try pod.bool("hostIPC") == true { spec.namespaces.remove(.ipc) }
        for alias in try pod.objects("hostAliases") {
            let address = try alias.requiredString("ip")
            guard IPv4Address(address) != nil else { throw alias.error("ip", "\(address) is not an IPv4 address") }
            for name in try alias.strings("hostnames") { spec.extraHosts[name] = address }
        }
        if try pod.bool("hostNetwork") == true {
            spec.network = .host
            if !spec.extraHosts.isEmpty {
                pod.warn("hostAliases", "ignored with hostNetwork: the host's hosts file is not Gantry's to write")
                spec.extraHosts = [:]
            }
        } else {
            spec.network = .bridge("\(project)_default")
        }
        spec.hostname = try pod.string("hostname")
        for key in ["stdin", "tty", "stdinOnce"] where try container.bool(key) == true {
            container.warn(key, "replicas run detached, without a terminal or stdin")
        }
        return ContainerRead(spec: spec, requirements: requirements, pullPolicy: pullPolicy)
    }

    /// `env` and `envFrom`: values, ConfigMaps' values, Secrets' values
    /// (given as secrets, never written into the spec) and the pod's fields.
    private func environment(_ container: KubeObject, service: String, spec: inout ContainerSpec) throws -> [String] {
        var variables: [String] = []
        func secretVariable(_ variable: String, secret: String, key: String, at object: KubeObject, field: String) throws {
            guard let keys = secrets[secret] else { throw object.error(field, "the Secret \(secret) is not in the manifests") }
            guard keys.contains(key) else { throw object.error(field, "the Secret \(secret) has no key \(key)") }
            // Named after its key, unless another secret of the container is.
            let named = spec.secrets.contains { $0.name == key } ? Self.fileName("env", variable) : key
            spec.secrets.append(ContainerSpec.Secret(name: named,
                                                     source: .file(path: secretsDirectory + "/" + secret + "/" + key),
                                                     environmentVariable: variable, mounted: false))
        }
        for source in try container.objects("envFrom") {
            let prefix = try source.string("prefix") ?? ""
            if let reference = try source.object("configMapRef") {
                let name = try reference.requiredString("name")
                guard let data = configMaps[name] else {
                    if try reference.bool("optional") == true { continue }
                    throw reference.error("name", "the ConfigMap \(name) is not in the manifests")
                }
                variables += data.sorted { $0.key < $1.key }.map { prefix + $0.key + "=" + $0.value }
            } else if let reference = try source.object("secretRef") {
                let name = try reference.requiredString("name")
                guard let keys = secrets[name] else {
                    if try reference.bool("optional") == true { continue }
                    throw reference.error("name", "the Secret \(name) is not in the manifests")
                }
                for key in keys.sorted() { try secretVariable(prefix + key, secret: name, key: key, at: reference, field: "name") }
            }
        }
        for entry in try container.objects("env") {
            let name = try entry.requiredString("name")
            if let value = try entry.string("value") {
                variables.append(name + "=" + value)
            } else if let from = try entry.object("valueFrom") {
                if let reference = try from.object("configMapKeyRef") {
                    let map = try reference.requiredString("name"), key = try reference.requiredString("key")
                    guard let value = configMaps[map]?[key] else {
                        if try reference.bool("optional") == true { continue }
                        throw reference.error("key", "the ConfigMap \(map) \(configMaps[map] == nil ? "is not in the manifests" : "has no key \(key)")")
                    }
                    variables.append(name + "=" + value)
                } else if let reference = try from.object("secretKeyRef") {
                    let secret = try reference.requiredString("name"), key = try reference.requiredString("key")
                    if try reference.bool("optional") == true, secrets[secret]?.contains(key) != true { continue }
                    try secretVariable(name, secret: secret, key: key, at: reference, field: "key")
                } else if let reference = try from.object("fieldRef") {
                    let path = try reference.requiredString("fieldPath")
                    reference.accept("apiVersion")
                    let labels = podLabels[service] ?? [:]
                    switch path {
                    case "metadata.namespace": variables.append(name + "=" + project)
                    case "spec.serviceAccountName": variables.append(name + "=default")
                    case "spec.nodeName": variables.append(name + "=" + ProcessInfo.processInfo.hostName)
                    case "metadata.name":
                        // A replica's name is made when it starts; its host name is its own.
                        reference.warn("fieldPath", "\(name) is the service's name, \(service), the same in every replica (each replica's host name is its own)")
                        variables.append(name + "=" + service)
                    case let label where label.hasPrefix("metadata.labels['") && label.hasSuffix("']"):
                        let key = String(label.dropFirst("metadata.labels['".count).dropLast(2))
                        variables.append(name + "=" + (labels[key] ?? ""))
                    default:
                        reference.warn("fieldPath", "\(path) is not known before a replica is made: \(name) is left unset")
                    }
                } else {
                    throw from.error(nil, "needs configMapKeyRef, secretKeyRef or fieldRef (resourceFieldRef is not supported)")
                }
            } else {
                variables.append(name + "=")
            }
        }
        return variables
    }

    /// `resources`: the limits and requests of CPU and memory.
    private func resources(_ container: KubeObject) throws -> ResourceRequirements {
        var requirements = ResourceRequirements()
        guard let resources = try container.object("resources") else { return requirements }
        func quantity(_ object: KubeObject, _ key: String) throws -> ResourceQuantity? {
            guard let text = try object.string(key) else { return nil }
            do {
                return try ResourceQuantity(parsing: text)
            } catch let error as SchedulerError {
                throw object.error(key, error.message)
            }
        }
        if let limits = try resources.object("limits") {
            requirements.limits.milliCPU = try quantity(limits, "cpu")?.milliValue
            requirements.limits.memory = try quantity(limits, "memory")?.value
            for key in limits.fields.keys where !["cpu", "memory"].contains(key) {
                limits.ignore(key, because: "not limited by Gantry (cpu and memory are)")
            }
        }
        if let requests = try resources.object("requests") {
            requirements.requests.milliCPU = try quantity(requests, "cpu")?.milliValue
            requirements.requests.memory = try quantity(requests, "memory")?.value
            for key in requests.fields.keys where !["cpu", "memory"].contains(key) {
                requests.ignore(key, because: "not reserved by Gantry (cpu and memory are)")
            }
        }
        return requirements
    }

    /// A service's resources as its container's limits, and a share of CPU
    /// time in proportion to the request, as the kubelet gives.
    private static func apply(_ requirements: ResourceRequirements, to spec: inout ContainerSpec) {
        if let milliCPU = requirements.limits.milliCPU { spec = spec.resources(cpus: Double(milliCPU) / 1000) }
        if let memory = requirements.limits.memory { spec.resources.memory = memory }
        if let milliCPU = requirements.requests.milliCPU { spec.resources.cpuShares = max(2, UInt64(milliCPU) * 1024 / 1000) }
        if let memory = requirements.requests.memory { spec.resources.memoryReservation = memory }
    }

    private func securityContext(_ pod: KubeObject?, container: KubeObject?, into spec: inout ContainerSpec) throws {
        // The container's settings over the pod's.
        let user = try container?.int("runAsUser") ?? pod?.int("runAsUser")
        let group = try container?.int("runAsGroup") ?? pod?.int("runAsGroup")
        if let user { spec.user = String(user) + (group.map { ":\($0)" } ?? "") } else if let group { spec.user = "0:\(group)" }
        if let groups = pod?.raw("supplementalGroups") as? [Int] { spec.supplementaryGroups = groups.compactMap { UInt32(exactly: $0) } }
        if let pod {
            pod.ignore("fsGroup", because: "volumes keep their owners; fsGroup is not applied")
            for sysctl in try pod.objects("sysctls") { spec.sysctls[try sysctl.requiredString("name")] = try sysctl.string("value") ?? "" }
            if try pod.bool("runAsNonRoot") == true, user == 0 { throw pod.error("runAsNonRoot", "runAsUser is 0") }
            try seccomp(pod, into: &spec)
        }
        guard let container else { return }
        if try container.bool("runAsNonRoot") == true, user == 0 { throw container.error("runAsNonRoot", "runAsUser is 0") }
        if let privileged = try container.bool("privileged") { spec.privileged = privileged }
        if let readOnly = try container.bool("readOnlyRootFilesystem") { spec.readOnlyRootfs = readOnly }
        if let escalation = try container.bool("allowPrivilegeEscalation") { spec.noNewPrivileges = !escalation }
        if let capabilities = try container.object("capabilities") {
            spec.capabilitiesAdded = try capabilities.strings("add")
            spec.capabilitiesDropped = try capabilities.strings("drop")
        }
        try seccomp(container, into: &spec)
    }

    private func seccomp(_ context: KubeObject, into spec: inout ContainerSpec) throws {
        guard let profile = try context.object("seccompProfile") else { return }
        switch try profile.requiredString("type") {
        case "Unconfined": spec.seccomp = .unconfined
        case "RuntimeDefault": spec.seccomp = .default
        case "Localhost":
            let path = try profile.requiredString("localhostProfile")
            do {
                spec.seccomp = .profile(try SeccompProfile.load(contentsOf: path.hasPrefix("/") ? path : "/var/lib/kubelet/seccomp/" + path))
            } catch {
                throw profile.error("localhostProfile", "cannot read the seccomp profile \(path): \(error)")
            }
        case let other: throw profile.error("type", "must be RuntimeDefault, Unconfined or Localhost, not \(other)")
        }
    }

    /// The pod's `volumes` (read once for all its containers), and the
    /// source of each mounted so far.
    struct PodVolumes {
        var declared: [String: KubeObject] = [:]
        var sources: [String: (kind: String, object: KubeObject)] = [:]
    }

    /// Warns about the pod's volumes that none of its containers mounts, and
    /// forgets the pod's volumes.
    private mutating func finishPodVolumes() {
        guard let volumes = podVolumes else { return }
        for (name, volume) in volumes.declared where volumes.sources[name] == nil {
            volume.accept(contentsOf: Array(volume.fields.keys))
            volume.warn("name", "the volume \(name) is mounted by no container")
        }
        podVolumes = nil
    }

    /// `volumeMounts` of the pod's `volumes`.
    private mutating func volumes(_ container: KubeObject, pod: KubeObject, into spec: inout ContainerSpec) throws {
        if podVolumes == nil {
            var volumes = PodVolumes()
            for volume in try pod.objects("volumes") { volumes.declared[try volume.requiredString("name")] = volume }
            podVolumes = volumes
        }
        let declared = podVolumes?.declared ?? [:]
        // Each volume's source, read once however often it is mounted.
        var sources = podVolumes?.sources ?? [:]
        defer { podVolumes?.sources = sources }
        func source(_ name: String, _ volume: KubeObject) throws -> (kind: String, object: KubeObject) {
            if let known = sources[name] { return known }
            let kinds = ["configMap", "secret", "emptyDir", "persistentVolumeClaim", "hostPath"]
            guard let kind = kinds.first(where: { volume.fields[$0] != nil }) else {
                let given = volume.fields.keys.filter { $0 != "name" }.sorted()
                throw volume.error(given.first, "is not a volume Gantry provides (configMap, secret, emptyDir, persistentVolumeClaim and hostPath are)")
            }
            let object = try volume.object(kind) ?? KubeObject([:], location: volume.location, path: volume.path + "." + kind, sink: volume.sink)
            sources[name] = (kind, object)
            return (kind, object)
        }
        for mount in try container.objects("volumeMounts") {
            let name = try mount.requiredString("name")
            let target = try mount.requiredString("mountPath")
            guard target.hasPrefix("/") else { throw mount.error("mountPath", "must be an absolute path") }
            let readOnly = try mount.bool("readOnly") ?? false
            let subPath = try mount.string("subPath")
            mount.ignore("mountPropagation", because: "mounts are private")
            guard let volume = declared[name] else { throw mount.error("name", "the pod has no volume \(name)") }
            let (kind, source) = try source(name, volume)
            switch kind {
            case "configMap":
                let mapName = try source.requiredString("name")
                guard let data = configMaps[mapName] else {
                    if try source.bool("optional") == true { continue }
                    throw source.error("name", "the ConfigMap \(mapName) is not in the manifests")
                }
                let mode = try source.mode("defaultMode") ?? 0o644
                for (key, path, itemMode) in try items(source, keys: Set(data.keys), subPath: subPath, at: mount) {
                    spec.configs.append(ContainerSpec.Config(name: subPath == nil || spec.configs.contains { $0.name == key } ? Self.fileName(name, path) : key, source: .content(data[key] ?? ""),
                                                             target: subPath == nil ? target + "/" + path : target, mode: itemMode ?? mode))
                }
            case "secret":
                let secretName = try source.requiredString("secretName")
                guard let keys = secrets[secretName] else {
                    if try source.bool("optional") == true { continue }
                    throw source.error("secretName", "the Secret \(secretName) is not in the manifests")
                }
                let mode = try source.mode("defaultMode") ?? 0o644
                for (key, path, itemMode) in try items(source, keys: keys, subPath: subPath, at: mount) {
                    spec.secrets.append(ContainerSpec.Secret(name: subPath == nil || spec.secrets.contains { $0.name == key } ? Self.fileName(name, path) : key,
                                                             source: .file(path: secretsDirectory + "/" + secretName + "/" + key),
                                                             target: subPath == nil ? target + "/" + path : target, mode: itemMode ?? mode))
                }
            case "emptyDir":
                var size: Int64?
                if let text = try source.string("sizeLimit") {
                    do { size = try ResourceQuantity(parsing: text).value } catch let error as SchedulerError { throw source.error("sizeLimit", error.message) }
                }
                if let medium = try source.string("medium"), medium != "Memory", !medium.isEmpty {
                    source.warn("medium", "an emptyDir is a tmpfs here, in memory")
                }
                if subPath != nil { throw mount.error("subPath", "an emptyDir is mounted whole") }
                spec.mounts.append(.tmpfs(target: target, size: size, mode: 0o777))
            case "persistentVolumeClaim":
                let claim = try source.requiredString("claimName")
                guard claims.contains(claim) else { throw source.error("claimName", "the PersistentVolumeClaim \(claim) is not in the manifests") }
                if subPath != nil { throw mount.error("subPath", "a named volume is mounted whole") }
                spec.mounts.append(.volume(name: claim, target: target, readOnly: try readOnly || (source.bool("readOnly") ?? false)))
            default:
                let path = try source.requiredString("path")
                _ = try source.string("type")
                spec.mounts.append(.bind(source: path + (subPath.map { "/" + $0 } ?? ""), target: target, readOnly: readOnly))
            }
        }
    }

    /// The name of a config or secret made of a volume's file.
    static func fileName(_ volume: String, _ path: String) -> String {
        String((volume + "-" + path).map { $0.isASCII && ($0.isLetter || $0.isNumber || "-._".contains($0)) ? $0 : "-" })
    }

    /// The keys of a ConfigMap or Secret volume as files: all of them, or
    /// its `items`; with a `subPath`, that one.
    private func items(_ source: KubeObject, keys: Set<String>, subPath: String?, at mount: KubeObject) throws -> [(key: String, path: String, mode: UInt32?)] {
        var chosen: [(key: String, path: String, mode: UInt32?)] = []
        let listed = try source.objects("items")
        if listed.isEmpty {
            chosen = keys.sorted().map { ($0, $0, nil) }
        } else {
            for item in listed {
                let key = try item.requiredString("key")
                guard keys.contains(key) else { throw item.error("key", "there is no key \(key)") }
                let path = try item.requiredString("path")
                guard !path.hasPrefix("/"), !path.split(separator: "/").contains("..") else { throw item.error("path", "must be a relative path without ..") }
                chosen.append((key, path, try item.mode("mode")))
            }
        }
        guard let subPath else { return chosen }
        guard let one = chosen.first(where: { $0.path == subPath }) else { throw mount.error("subPath", "the volume has no file \(subPath)") }
        return [one]
    }

    private func probes(_ container: KubeObject, service: String) throws -> ServiceProbes {
        var probes = ServiceProbes()
        probes.liveness = try probe(try container.object("livenessProbe"), service: service)
        probes.readiness = try probe(try container.object("readinessProbe"), service: service)
        probes.startup = try probe(try container.object("startupProbe"), service: service)
        return probes
    }

    private func probe(_ object: KubeObject?, service: String) throws -> Probe? {
        guard let object else { return nil }
        func port(_ holder: KubeObject) throws -> UInt16 {
            guard let value = holder.raw("port") else { throw holder.error("port", "is missing") }
            if let number = value as? Int, (1 ... 65535).contains(number) { return UInt16(number) }
            if let text = value as? String, let number = UInt16(text) ?? namedPorts[service]?[text] { return number }
            throw holder.error("port", "is neither a port number nor a named port of the container")
        }
        let action: Probe.Action
        if let exec = try object.object("exec") {
            action = .exec(try exec.strings("command"))
        } else if let http = try object.object("httpGet") {
            if let scheme = try http.string("scheme"), scheme != "HTTP" { throw http.error("scheme", "only HTTP is probed") }
            http.ignore("httpHeaders", because: "sent without them")
            action = .httpGet(path: try http.string("path") ?? "/", port: try port(http), host: try http.string("host"))
        } else if let tcp = try object.object("tcpSocket") {
            action = .tcpSocket(port: try port(tcp), host: try tcp.string("host"))
        } else {
            throw object.error(nil, "needs exec, httpGet or tcpSocket (grpc is not probed)")
        }
        var probe = Probe(action)
        if let seconds = try object.int("initialDelaySeconds") { probe.initialDelay = .seconds(seconds) }
        if let seconds = try object.int("periodSeconds", 1 ... Int.max) { probe.period = .seconds(seconds) }
        if let seconds = try object.int("timeoutSeconds", 1 ... Int.max) { probe.timeout = .seconds(seconds) }
        if let count = try object.int("successThreshold", 1 ... Int.max) { probe.successThreshold = count }
        if let count = try object.int("failureThreshold", 1 ... Int.max) { probe.failureThreshold = count }
        object.ignore("terminationGracePeriodSeconds", because: "the pod's grace period applies")
        return probe
    }

    // MARK: - Services

    /// A Service: the endpoint of the one workload its selector picks,
    /// which takes the Service's name so that clients find it by it.
    mutating func service(_ name: String, _ object: KubeObject) throws {
        guard let spec = try object.object("spec") else { throw object.error("spec", "is missing") }
        let selector = try spec.stringMap("selector")
        guard !selector.isEmpty else { throw spec.error("selector", "is missing: Gantry's endpoints serve the pods a selector picks") }
        let matching = services.indices.filter { index in
            let labels = podLabels[renamed.first { $0.value == services[index].name }?.key ?? services[index].name] ?? [:]
            return selector.allSatisfy { labels[$0.key] == $0.value }
        }
        guard let index = matching.first else {
            warnings.add("\(object.location): spec.selector: picks no Pod or Deployment of the manifests; the Service is skipped")
            spec.accept(contentsOf: Array(spec.fields.keys))
            return
        }
        guard matching.count == 1 else {
            throw spec.error("selector", "picks \(matching.map { services[$0].name }.joined(separator: " and ")); a Gantry endpoint serves one service")
        }
        // The workload's own name, before a Service named it.
        let original = renamed.first { $0.value == services[index].name }?.key ?? services[index].name
        let portNames = namedPorts[original] ?? [:]
        var virtualPorts: [PublishedPort] = []
        var published: [PublishedPort] = []
        let type = try spec.string("type") ?? "ClusterIP"
        guard ["ClusterIP", "NodePort", "LoadBalancer"].contains(type) else {
            throw spec.error("type", "must be ClusterIP, NodePort or LoadBalancer, not \(type)")
        }
        for port in try spec.objects("ports") {
            let number = try port.int("port", 1 ... 65535) ?? 0
            guard number > 0 else { throw port.error("port", "is missing") }
            let transport = PublishedPort.TransportProtocol(rawValue: (try port.string("protocol") ?? "TCP").lowercased())
            guard let transport else { throw port.error("protocol", "must be TCP or UDP") }
            _ = try port.string("name")
            var target = UInt16(number)
            if let value = port.raw("targetPort") {
                if let given = value as? Int, (1 ... 65535).contains(given) {
                    target = UInt16(given)
                } else if let text = value as? String, let resolved = UInt16(text) ?? portNames[text] {
                    target = resolved
                } else {
                    throw port.error("targetPort", "is neither a port number nor a named port of \(original)'s container")
                }
            }
            virtualPorts.append(PublishedPort(hostPort: UInt16(number), containerPort: target, protocol: transport))
            switch type {
            case "NodePort":
                let node = try port.int("nodePort", 1 ... 65535) ?? 0
                published.append(PublishedPort(hostPort: UInt16(node), containerPort: target, protocol: transport))
            case "LoadBalancer":
                _ = try port.int("nodePort", 1 ... 65535)
                published.append(PublishedPort(hostPort: UInt16(number), containerPort: target, protocol: transport))
            default:
                port.ignore("nodePort", because: "a ClusterIP Service publishes no port on the host")
            }
        }
        var service = services[index]
        if let other = renamed[original] {
            // Another Service already names it: this one's name is an alias
            // of each pod, and its host ports are published by the endpoint.
            let unserved = virtualPorts.filter { port in !service.virtualPorts.contains { $0.hostPort == port.hostPort } && port.hostPort != port.containerPort }
            warnings.add("\(object.location): the Service \(other) already serves \(original); \(name) answers as an alias of each pod"
                + (published.isEmpty ? "" : ", and its host ports are published through \(other)'s endpoint")
                + (unserved.isEmpty ? "" : "; its ports \(unserved.map { String($0.hostPort) }.joined(separator: ", ")) are reached on the pods' ports instead"))
            if !service.template.networkAliases.contains(name) { service.template.networkAliases.append(name) }
            service.template.publishedPorts += published
            spec.accept(contentsOf: Array(spec.fields.keys))
            services[index] = service
            return
        }
        if try spec.string("clusterIP") == "None" {
            service.endpointMode = .dnsRoundRobin
        } else {
            service.virtualPorts = virtualPorts
        }
        service.template.publishedPorts += published
        if try spec.string("sessionAffinity") == "ClientIP" { service.sessionAffinity = .clientAddress }
        spec.accept("sessionAffinityConfig", "ipFamilies", "ipFamilyPolicy", "clusterIPs", "internalTrafficPolicy", "externalTrafficPolicy", "allocateLoadBalancerNodePorts")
        if name != original {
            guard !services.contains(where: { $0.name == name }) else {
                throw object.error("metadata.name", "a Pod or Deployment is named \(name) too, and the Service would take its name")
            }
            service.name = name
            if let policy = pullPolicies.removeValue(forKey: original) { pullPolicies[name] = policy }
        }
        renamed[original] = name
        services[index] = service
    }
}

extension KubeObject {
    func accept(contentsOf keys: [String]) { for key in keys { accept(key) } }
}
