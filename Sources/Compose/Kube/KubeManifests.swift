import Foundation
import Reconciler
import Runtime
public import Scheduler
import Yams

/// Kubernetes manifests read into a project the reconciler runs, as
/// `gantry kube play` does: Pods and Deployments become services, Services
/// their load-balanced endpoints (ClusterIP: the virtual address and its
/// ports; NodePort and LoadBalancer: ports published on the host),
/// ConfigMaps configs and variables, Secrets secrets, and
/// PersistentVolumeClaims named volumes, Jobs and CronJobs jobs run
/// beside the services (their containers on the project's network).
///
/// ```swift
/// let play = try KubeManifests.load(paths: ["app.yaml"], project: "shop", secretsDirectory: runDirectory + "/kube/shop")
/// try play.writeSecrets()
/// try await reconciler.apply(play.project)
/// ```
///
/// Fields Gantry does not honour are each named in a warning
/// (``ComposeProject/warnings``); a malformed document is an error naming
/// the file, the document and the field.
public struct KubePlay: Sendable {
    /// The services, their network and volumes.
    public var project: ComposeProject
    /// The Jobs, by name: each runs to its end once the project is up
    /// (``runJobs(on:store:logger:wallClock:events:)``).
    public var jobs: [String: JobTemplate]
    /// The CronJobs, by name: their jobs start on their schedules while the
    /// project is up.
    public var cronJobs: [CronJobSpec]
    /// When the images of Jobs and CronJobs are pulled, by their names; one
    /// not listed has ``PullPolicy/missing``.
    public var jobPullPolicies: [String: PullPolicy]
    /// Where the values of the manifests' Secrets go: a directory in
    /// memory, which services read them from.
    public var secretsDirectory: String
    /// The Secrets' values, by the path ``writeSecrets()`` writes each to.
    public var secretFiles: [String: [UInt8]]

    /// Writes the Secrets' values into ``secretsDirectory``, which is made
    /// on a tmpfs (root mounts one there when it is not in memory), files
    /// mode 0600: they are written nowhere else.
    public func writeSecrets() throws {
        guard !secretFiles.isEmpty else { return }
        try ContainerRuntime.makeMemoryDirectory(secretsDirectory, size: secretFiles.values.reduce(0) { $0 + $1.count } + (1 << 20))
        for (path, bytes) in secretFiles.sorted(by: { $0.key < $1.key }) {
            try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
            let temporary = path + ".new"
            guard FileManager.default.createFile(atPath: temporary, contents: Data(bytes), attributes: [.posixPermissions: 0o600]),
                  rename(temporary, path) == 0 else {
                throw ReconcilerError(.invalidState, "cannot write a Secret's value in \(secretsDirectory)")
            }
        }
    }

    /// Removes what ``writeSecrets()`` wrote.
    public static func removeSecrets(in directory: String) throws {
        try ContainerRuntime.removeMemoryDirectory(directory)
    }
}

/// Reads Kubernetes manifests.
public enum KubeManifests {
    /// Reads manifest files (several documents each, `---` apart).
    ///
    /// - Parameters:
    ///   - paths: the files.
    ///   - project: the project the services belong to.
    ///   - secretsDirectory: where the Secrets' values are to be written.
    /// - Throws: `ReconcilerError` with code `compose` naming the file, the
    ///   document and the field.
    public static func load(paths: [String], project: String, secretsDirectory: String) throws -> KubePlay {
        var documents: [(file: String, index: Int, value: Any)] = []
        for path in paths {
            let text: String
            do {
                let size = try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int ?? 0
                guard size <= ComposeProject.maximumFileSize else {
                    throw ReconcilerError(.compose, "\(path): the manifest is \(size) bytes; at most \(ComposeProject.maximumFileSize) are read")
                }
                text = try String(contentsOfFile: path, encoding: .utf8)
            } catch let error as ReconcilerError {
                throw error
            } catch {
                throw ReconcilerError(.compose, "\(path): cannot read the manifest: \(error.localizedDescription)")
            }
            documents += try parseDocuments(text, file: (path as NSString).lastPathComponent)
        }
        return try read(documents, project: project, secretsDirectory: secretsDirectory)
    }

    /// Reads the text of manifests.
    public static func parse(_ yaml: String, file: String = "manifest.yaml", project: String, secretsDirectory: String) throws -> KubePlay {
        try read(try parseDocuments(yaml, file: file), project: project, secretsDirectory: secretsDirectory)
    }

    private static func parseDocuments(_ yaml: String, file: String) throws -> [(file: String, index: Int, value: Any)] {
        guard yaml.utf8.count <= ComposeProject.maximumFileSize else {
            throw ReconcilerError(.compose, "\(file): the manifest is \(yaml.utf8.count) bytes; at most \(ComposeProject.maximumFileSize) are read")
        }
        // Each document, checked within the bounds compose files have
        // (aliases expanded, depth), then as plain values.
        var values: [Any] = []
        do {
            let parser = try Parser(yaml: yaml)
            let budget = ComposeNodeBudget()
            while let node = try parser.nextRoot() {
                _ = try ComposeNode(node, file: file, path: "", budget: budget)
                values.append(Constructor.default.any(from: node))
            }
        } catch let error as ReconcilerError {
            throw error
        } catch {
            let reason = "\(error)"
            throw ReconcilerError(.compose, "\(file): not valid YAML: \(reason.count > 600 ? reason.prefix(600) + "…" : reason)")
        }
        var documents: [(file: String, index: Int, value: Any)] = []
        for (index, value) in values.enumerated() {
            guard !(value is NSNull) else { continue }
            // A List holds its documents as items.
            if let mapping = value as? [String: Any], mapping["kind"] as? String == "List", let items = mapping["items"] as? [Any] {
                documents += items.map { (file, index + 1, $0) }
            } else {
                documents.append((file, index + 1, value))
            }
        }
        return documents
    }

    private static func read(_ documents: [(file: String, index: Int, value: Any)], project: String, secretsDirectory: String) throws -> KubePlay {
        let warnings = KubeWarnings()
        var reader = KubeReader(project: project, secretsDirectory: secretsDirectory, warnings: warnings)
        var objects: [(kind: String, name: String, object: KubeObject)] = []
        for document in documents {
            guard let mapping = document.value as? [String: Any] else {
                throw ReconcilerError(.compose, "\(document.file): document \(document.index): must be a mapping with apiVersion, kind and metadata")
            }
            guard let kind = mapping["kind"] as? String, !kind.isEmpty else {
                throw ReconcilerError(.compose, "\(document.file): document \(document.index): kind: is missing")
            }
            let name = ((mapping["metadata"] as? [String: Any])?["name"] as? String) ?? ""
            guard !name.isEmpty else {
                throw ReconcilerError(.compose, "\(document.file): document \(document.index) (\(kind)): metadata.name is missing")
            }
            let object = KubeObject(mapping, location: "\(document.file): \(kind) \(name)", path: "", sink: warnings)
            object.accept("apiVersion", "kind")
            if let metadata = try object.object("metadata") {
                metadata.accept("name", "annotations", "uid", "resourceVersion", "generation", "creationTimestamp", "managedFields")
                if let namespace = try metadata.string("namespace"), namespace != "default" {
                    metadata.warn("namespace", "Gantry has no namespaces: \(kind) \(name) belongs to project \(project)")
                }
                _ = try metadata.stringMap("labels")
            }
            objects.append((kind, name, object))
        }
        // Data first: workloads refer to it.
        for (kind, name, object) in objects {
            switch kind {
            case "ConfigMap": try reader.configMap(name, object)
            case "Secret": try reader.secret(name, object)
            case "PersistentVolumeClaim": try reader.claim(name, object)
            default: continue
            }
        }
        for (kind, name, object) in objects {
            switch kind {
            case "Deployment": try reader.deployment(name, object)
            case "Pod": try reader.pod(name, object)
            default: continue
            }
        }
        for (kind, name, object) in objects {
            switch kind {
            case "Service": try reader.service(name, object)
            case "Job": try reader.job(name, object)
            case "CronJob": try reader.cronJob(name, object)
            case "ConfigMap", "Secret", "PersistentVolumeClaim", "Deployment", "Pod": continue
            default:
                warnings.add("\(object.location): the kind \(kind) is not played by Gantry; skipped")
                object.accept(contentsOf: Array(object.fields.keys))
            }
        }
        for (_, _, object) in objects { object.finish() }
        let services = reader.services.sorted { $0.name < $1.name }
        let network = ComposeNetwork(key: "default", name: "\(project)_default")
        let volumes = reader.claims.sorted().map { ComposeVolume(key: $0, name: $0) }
        let runsAnything = !services.isEmpty || !reader.jobs.isEmpty || !reader.cronJobs.isEmpty
        let composed = ComposeProject(name: project, services: services, networks: runsAnything ? [network] : [], volumes: volumes,
                                      warnings: warnings.all, pullPolicies: reader.pullPolicies)
        return KubePlay(project: composed, jobs: reader.jobs, cronJobs: reader.cronJobs.sorted { $0.name < $1.name },
                        jobPullPolicies: reader.jobPullPolicies, secretsDirectory: secretsDirectory, secretFiles: reader.secretFiles)
    }
}
