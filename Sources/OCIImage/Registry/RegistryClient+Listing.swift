#if Registry
import AsyncHTTPClient
import Foundation
import NIOCore

extension RegistryClient {
    private struct TagList: Decodable {
        var tags: [String]?
    }

    private struct Catalog: Decodable {
        var repositories: [String]?
    }

    /// Every tag of a repository, following `Link` pagination.
    public func tags(registry: String, repository: String, pageSize: Int = 100) async throws -> [String] {
        try await paged(registry: registry, first: repositoryURL(registry, repository) + "/tags/list?n=\(pageSize)",
                        scopes: ["repository:\(repository):pull"], subject: "tags of \(registry)/\(repository)") { data in
            try JSONDecoder().decode(TagList.self, from: data).tags ?? []
        }
    }

    /// Every repository a registry lists in its catalog, following `Link`
    /// pagination. Registries may limit the catalog to what the caller may see.
    public func catalog(registry: String, pageSize: Int = 100) async throws -> [String] {
        try await paged(registry: registry, first: baseURL(registry) + "/_catalog?n=\(pageSize)",
                        scopes: ["registry:catalog:*"], subject: "catalog of \(registry)") { data in
            try JSONDecoder().decode(Catalog.self, from: data).repositories ?? []
        }
    }

    private func paged(registry: String, first: String, scopes: [String], subject: String,
                       decode: (Data) throws -> [String]) async throws -> [String] {
        var results: [String] = []
        var next: String? = first
        var visited: Set<String> = []
        while let url = next {
            guard visited.insert(url).inserted, visited.count <= 10_000 else {
                throw OCIImageError(.registryError, "\(subject): the registry's page links go round in a circle")
            }
            let request = Request(registry: registry, url: url, scopes: scopes, subject: subject)
            let response = try await send(request)
            try await expect(response, [200], request)
            let body = try await response.body.collect(upTo: 16 << 20)
            do {
                results += try decode(Data(body.readableBytesView))
            } catch {
                throw OCIImageError(.registryError, "\(subject): the registry sent a list that cannot be read")
            }
            next = Self.nextLink(response.headers.first(name: "Link")).flatMap { URL(string: $0, relativeTo: URL(string: url))?.absoluteString }
        }
        return results
    }

    /// The target of `rel="next"` in a `Link` header: `</v2/a/tags/list?last=x&n=2>; rel="next"`.
    static func nextLink(_ header: String?) -> String? {
        guard let header else { return nil }
        for part in header.split(separator: ",") {
            let pieces = part.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces) }
            guard let target = pieces.first, target.hasPrefix("<"), target.hasSuffix(">"),
                  pieces.dropFirst().contains(where: { $0.replacingOccurrences(of: " ", with: "").lowercased() == "rel=\"next\"" || $0.lowercased() == "rel=next" })
            else { continue }
            return String(target.dropFirst().dropLast())
        }
        return nil
    }

    /// Checks a credential against a registry (`GET /v2/`, answering its
    /// challenge), as `docker login` does before storing it.
    ///
    /// - Throws: ``OCIImageError/Code/unauthorized`` when the registry or its
    ///   token service refuses the credential.
    public func login(registry: String, credential: RegistryCredential) async throws {
        let checker = try RegistryClient(options: options, credentials: StaticCredentials([registry: credential]), logger: logger)
        let request = Request(registry: registry, url: checker.baseURL(registry) + "/", scopes: [], subject: "login to \(registry)")
        let response = try await checker.send(request)
        try await checker.expect(response, [200], request)
        await Self.drain(response)
    }
}
#endif
