#if Registry
import AsyncHTTPClient
public import Foundation
import NIOCore
import NIOHTTP1
#if canImport(Glibc)
import Glibc
#endif

/// A manifest or index as a registry served it.
public struct FetchedManifest: Hashable, Sendable {
    /// The bytes, exactly as served.
    public var data: Data
    /// The media type from `Content-Type` (or the document itself).
    public var mediaType: MediaType
    /// The digest of the bytes.
    public var digest: Digest
    /// Whether it is a manifest or an index.
    public var kind: DocumentKind

    /// A descriptor for it.
    public var descriptor: Descriptor {
        Descriptor(mediaType: mediaType, digest: digest, size: Int64(data.count))
    }
}

/// What happened to one blob during a push.
public enum BlobPushOutcome: String, Hashable, Sendable, Codable {
    /// The registry had it already.
    case existed
    /// The registry linked it from another repository it holds.
    case mounted
    /// Its bytes were uploaded.
    case uploaded
}

extension RegistryClient {
    static let manifestAccept = [
        MediaType.ociIndex, .ociManifest, .dockerManifestList, .dockerManifest,
    ].map(\.rawValue).joined(separator: ", ")

    func repositoryURL(_ registry: String, _ repository: String) -> String {
        baseURL(registry) + "/" + repository
    }

    // MARK: Manifests

    /// Fetches a manifest or index by tag or digest and checks its digest:
    /// against `reference` when that is a digest, and against the
    /// `Docker-Content-Digest` the registry announces.
    ///
    /// - Throws: ``OCIImageError`` — `notFound`, `unauthorized`,
    ///   `digestMismatch`, or `unsupportedSchemaVersion` for Docker schema 1.
    public func manifest(registry: String, repository: String, reference: String) async throws -> FetchedManifest {
        let expected = try? Digest(parsing: reference)
        var request = Request(registry: registry, url: repositoryURL(registry, repository) + "/manifests/" + reference,
                              scopes: ["repository:\(repository):pull"], subject: "manifest \(registry)/\(repository):\(reference)")
        request.headers.add(name: "Accept", value: Self.manifestAccept)
        let response = try await send(request)
        try await expect(response, [200], request)
        let body: ByteBuffer
        do {
            body = try await response.body.collect(upTo: Int(ContentStore.maximumDocumentSize))
        } catch {
            throw OCIImageError(.registryError, "\(request.subject) is larger than \(ContentStore.maximumDocumentSize) bytes or was cut off: \(error)")
        }
        let data = Data(body.readableBytesView)
        let digest = Digest.compute(data, algorithm: expected?.algorithm ?? .sha256)
        let contentType = response.headers.first(name: "Content-Type")?.split(separator: ";").first
            .map { MediaType(String($0).trimmingCharacters(in: .whitespaces)) }
        let announcedType = contentType.flatMap { $0.isIndex || $0.isManifest || $0.isSchema1 ? $0 : nil }
        let detected = Result { try DocumentKind.detect(data, announced: announcedType) }
        // Schema 1 first: its digests leave out its signatures, so they never match.
        if case .failure(let error as OCIImageError) = detected, error.code == .unsupportedSchemaVersion {
            throw OCIImageError(error.code, "\(request.subject): \(error.message)")
        }
        if let expected, digest != expected {
            throw OCIImageError(.digestMismatch, "\(request.subject): the registry served content that hashes to \(digest)")
        }
        if let announced = response.headers.first(name: "Docker-Content-Digest").flatMap({ try? Digest(parsing: $0) }),
           announced.algorithm == digest.algorithm, announced != digest {
            throw OCIImageError(.digestMismatch, "\(request.subject): the registry announced \(announced) but served content that hashes to \(digest)")
        }
        let kind: DocumentKind
        do {
            kind = try detected.get()
        } catch let error as OCIImageError {
            throw OCIImageError(error.code, "\(request.subject): \(error.message)")
        }
        let declared = (try? JSONDecoder().decode(MediaTypeProbe.self, from: data))?.mediaType.map(MediaType.init(rawValue:))
        let mediaType = announcedType ?? declared ?? (kind == .index ? .ociIndex : .ociManifest)
        return FetchedManifest(data: data, mediaType: mediaType, digest: digest, kind: kind)
    }

    private struct MediaTypeProbe: Decodable {
        var mediaType: String?
    }

    /// Stores a manifest or index under a tag or its digest.
    public func putManifest(_ data: Data, mediaType: MediaType, registry: String, repository: String, reference: String) async throws {
        var request = Request(registry: registry, method: .PUT, url: repositoryURL(registry, repository) + "/manifests/" + reference,
                              scopes: ["repository:\(repository):pull,push"], subject: "manifest \(registry)/\(repository):\(reference)")
        request.headers.add(name: "Content-Type", value: mediaType.rawValue)
        let bytes = ByteBuffer(bytes: data)
        request.body = { .bytes(bytes) }
        let response = try await send(request)
        try await expect(response, [200, 201, 202], request)
        await Self.drain(response)
    }

    // MARK: Downloading blobs

    /// Downloads a blob into the content store, verifying digest and size.
    /// A download cut off midway is resumed with `Range` where the registry
    /// allows it. Nothing is stored unless the whole blob arrives intact.
    ///
    /// - Returns: The bytes transferred (0 when the store had the blob).
    @discardableResult
    public func download(_ descriptor: Descriptor, registry: String, repository: String, into content: ContentStore,
                         progress: (@Sendable (Int64) -> Void)? = nil) async throws -> Int64 {
        if content.size(of: descriptor.digest) == descriptor.size { return 0 }
        let request = Request(registry: registry, url: repositoryURL(registry, repository) + "/blobs/" + descriptor.digest.description,
                              scopes: ["repository:\(repository):pull"], subject: "blob \(descriptor.digest) of \(registry)/\(repository)")
        var writer = try content.writer(expected: descriptor.digest, expectedSize: descriptor.size)
        defer { writer.cancel() }
        var interruptions = 0
        var transferred: Int64 = 0
        while writer.count < descriptor.size || descriptor.size == 0 {
            var attempt = request
            if writer.count > 0 { attempt.headers.add(name: "Range", value: "bytes=\(writer.count)-") }
            let response = try await send(attempt)
            try await expect(response, [200, 206], request)
            if response.status.code == 200 && writer.count > 0 {
                // The registry (or the storage behind it) ignored the range: start over.
                writer.cancel()
                writer = try content.writer(expected: descriptor.digest, expectedSize: descriptor.size)
            } else if response.status.code == 206, !Self.contentRange(response.headers.first(name: "Content-Range"), startsAt: writer.count) {
                throw OCIImageError(.registryError, "\(request.subject): the registry resumed at another offset than \(writer.count)")
            }
            do {
                for try await buffer in response.body {
                    try buffer.withUnsafeReadableBytes { try writer.write($0) }
                    transferred += Int64(buffer.readableBytes)
                    progress?(writer.count)
                }
            } catch let error as OCIImageError {
                throw error
            } catch let error as CancellationError {
                throw error
            } catch {
                // The connection broke midway: resume from what arrived.
                interruptions += 1
                guard interruptions < options.retry.attempts else {
                    throw OCIImageError(.network, "\(request.subject): the download broke off \(interruptions) times: \(Self.describe(error))")
                }
                logger.debug("resuming an interrupted download", metadata: ["digest": "\(descriptor.digest)", "offset": "\(writer.count)"])
                try await Task.sleep(for: options.retry.delay(beforeRetry: interruptions))
                continue
            }
            break
        }
        // Everything arrived (perhaps just before a connection broke).
        let finished = writer
        _ = try await offload { _ in try finished.commit() }
        return transferred
    }

    static func contentRange(_ value: String?, startsAt offset: Int64) -> Bool {
        // "bytes START-END/TOTAL"
        guard let value, let range = value.split(separator: " ").last,
              let start = range.split(separator: "-").first.flatMap({ Int64($0) })
        else { return false }
        return start == offset
    }

    // MARK: Uploading blobs

    /// Whether the registry has a blob in a repository.
    public func blobExists(_ digest: Digest, registry: String, repository: String) async throws -> Bool {
        let request = Request(registry: registry, method: .HEAD, url: repositoryURL(registry, repository) + "/blobs/" + digest.description,
                              scopes: ["repository:\(repository):pull,push"], subject: "blob \(digest) of \(registry)/\(repository)")
        let response = try await send(request)
        try await expect(response, [200, 404], request)
        await Self.drain(response)
        return response.status.code == 200
    }

    /// Uploads a blob from a file unless the registry has it, mounting it
    /// from `mountFrom` (another repository of the same registry) when it can.
    ///
    /// An upload that breaks off (a dropped connection, a server error, an
    /// upload session the registry forgot) is started over, with back-off,
    /// up to ``RetryPolicy/attempts`` times.
    public func upload(_ descriptor: Descriptor, from path: String, registry: String, repository: String, mountFrom: String? = nil,
                       progress: (@Sendable (Int64) -> Void)? = nil) async throws -> BlobPushOutcome {
        if try await blobExists(descriptor.digest, registry: registry, repository: repository) {
            progress?(descriptor.size)
            return .existed
        }
        var attempt = 0
        var mount = mountFrom.flatMap { $0 == repository ? nil : $0 }
        while true {
            attempt += 1
            do {
                return try await uploadOnce(descriptor, from: path, registry: registry, repository: repository, mountFrom: mount, progress: progress)
            } catch let error as OCIImageError where error.code == .unauthorized && mount != nil {
                // Some token services refuse a token that also reads the source
                // repository; upload the bytes instead.
                logger.debug("mount refused; uploading", metadata: ["digest": "\(descriptor.digest)", "error": "\(error)"])
                mount = nil
            } catch let failure as InterruptedUpload where attempt < options.retry.attempts {
                logger.debug("starting an upload over", metadata: ["digest": "\(descriptor.digest)", "error": "\(failure.error)"])
                try await Task.sleep(for: options.retry.delay(beforeRetry: attempt))
            } catch let failure as InterruptedUpload {
                throw failure.error
            }
        }
    }

    /// An upload that failed in a way starting over may cure.
    struct InterruptedUpload: Error {
        var error: OCIImageError
    }

    /// Sends one request of an upload; failures that starting over may cure
    /// (a broken connection, a server error, a forgotten session, a range the
    /// registry does not expect) come back as ``InterruptedUpload``.
    private func sendUploadStep(_ request: Request, expecting expected: Set<UInt>) async throws -> HTTPClientResponse {
        let response: HTTPClientResponse
        do {
            response = try await send(request)
        } catch let error as OCIImageError where error.code == .network {
            throw InterruptedUpload(error: error)
        }
        let status = response.status.code
        do {
            try await expect(response, expected, request)
        } catch let error as OCIImageError where [416, 429, 500, 502, 503, 504].contains(status) || error.message.contains("BLOB_UPLOAD") {
            throw InterruptedUpload(error: error)
        }
        await Self.drain(response)
        return response
    }

    private func uploadOnce(_ descriptor: Descriptor, from path: String, registry: String, repository: String, mountFrom: String?,
                            progress: (@Sendable (Int64) -> Void)?) async throws -> BlobPushOutcome {
        let uploads = repositoryURL(registry, repository) + "/blobs/uploads/"
        let subject = "blob \(descriptor.digest) to \(registry)/\(repository)"
        var start = Request(registry: registry, method: .POST, url: uploads, scopes: ["repository:\(repository):pull,push"], subject: subject)
        if let mountFrom {
            start.url += "?mount=\(descriptor.digest)&from=\(mountFrom)"
            start.scopes.append("repository:\(mountFrom):pull")
        }
        start.headers.add(name: "Content-Length", value: "0")
        let started = try await sendUploadStep(start, expecting: [201, 202])
        if started.status.code == 201 {
            progress?(descriptor.size)
            return .mounted
        }
        guard var location = started.headers.first(name: "Location").flatMap({ URL(string: $0, relativeTo: URL(string: uploads))?.absoluteString }) else {
            throw OCIImageError(.registryError, "\(subject): the registry started an upload without a location")
        }
        let scopes = ["repository:\(repository):pull,push"]
        if let chunkSize = options.uploadChunkSize, descriptor.size > 0 {
            var offset: Int64 = 0
            while offset < descriptor.size {
                let length = min(Int64(chunkSize), descriptor.size - offset)
                var patch = Request(registry: registry, method: .PATCH, url: location, scopes: scopes, subject: subject, repeatable: false)
                patch.headers.add(name: "Content-Type", value: "application/octet-stream")
                patch.headers.add(name: "Content-Range", value: "\(offset)-\(offset + length - 1)")
                patch.headers.add(name: "Content-Length", value: "\(length)")
                let chunkOffset = offset
                patch.body = { .stream(FileChunks(path: path, offset: chunkOffset, length: length, progress: progress), length: .known(length)) }
                let response = try await sendUploadStep(patch, expecting: [202])
                location = response.headers.first(name: "Location").flatMap { URL(string: $0, relativeTo: URL(string: location))?.absoluteString } ?? location
                offset += length
            }
        }
        var finish = Request(registry: registry, method: .PUT, url: location + (location.contains("?") ? "&" : "?") + "digest=\(descriptor.digest)",
                             scopes: scopes, subject: subject, repeatable: false)
        finish.headers.add(name: "Content-Type", value: "application/octet-stream")
        if options.uploadChunkSize == nil || descriptor.size == 0 {
            let size = descriptor.size
            finish.headers.add(name: "Content-Length", value: "\(size)")
            finish.body = { .stream(FileChunks(path: path, offset: 0, length: size, progress: progress), length: .known(size)) }
        } else {
            finish.headers.add(name: "Content-Length", value: "0")
        }
        _ = try await sendUploadStep(finish, expecting: [201, 204])
        return .uploaded
    }
}

/// A byte range of a file as a stream of buffers, for upload bodies. The
/// file is open only while the stream is iterated, and closed however the
/// iteration ends.
struct FileChunks: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let path: String
    let offset: Int64
    let length: Int64
    let progress: (@Sendable (Int64) -> Void)?

    /// Closes the file when the iterator is dropped.
    final class OpenFile {
        let fd: Int32
        init(_ path: String) throws { fd = try Sys.open(path, O_RDONLY) }
        deinit { Sys.close(fd) }
    }

    struct AsyncIterator: AsyncIteratorProtocol {
        let source: FileChunks
        var file: OpenFile?
        var position: Int64
        let end: Int64

        mutating func next() async throws -> ByteBuffer? {
            guard position < end else {
                file = nil
                return nil
            }
            let open = try file ?? OpenFile(source.path)
            file = open
            let count = Int(Swift.min(1 << 20, end - position))
            var buffer = ByteBufferAllocator().buffer(capacity: count)
            let read = try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { raw in
                let result = pread(open.fd, raw.baseAddress, count, off_t(position))
                if result < 0 { throw SystemCallError("read", source.path, Sys.errno) }
                return result
            }
            guard read > 0 else {
                file = nil
                throw OCIImageError(.systemCall, "\(source.path) ended before its expected size")
            }
            position += Int64(read)
            source.progress?(position)
            return buffer
        }
    }

    func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(source: self, position: offset, end: offset + length)
    }
}
#endif
