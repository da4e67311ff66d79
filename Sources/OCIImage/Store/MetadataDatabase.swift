public import Foundation
import GRDB

/// A named image: a name and the manifest or index it points to.
public struct ImageRecord: Hashable, Sendable, Codable {
    /// The image's normalised name, with its tag.
    public var reference: ImageReference
    /// The manifest or index the name points to.
    public var descriptor: Descriptor
    /// When the name was first given to this content.
    public var created: Date
    /// When the name last changed.
    public var updated: Date
}

/// A layer unpacked once for overlay stacks.
public struct Snapshot: Hashable, Sendable, Codable {
    /// The chain ID that names the snapshot: the layer with all layers below it.
    public var chainID: Digest
    /// The chain ID of the snapshot below, if any.
    public var parent: Digest?
    /// The uncompressed digest of this layer alone.
    public var diffID: Digest
    /// The directory holding the layer's files.
    public var directory: String
    /// The size of the layer's uncompressed archive in bytes (0 when a
    /// snapshot left by an interrupted process was adopted).
    public var size: Int64
    /// When the snapshot was made.
    public var created: Date
}

/// The SQLite database (WAL mode) that holds image names and snapshot records.
struct MetadataDatabase: Sendable {
    let pool: DatabasePool

    init(path: String) throws {
        do {
            pool = try openSharedDatabase(path: path, label: "gantry", migrator: Self.migrator)
        } catch let error as DatabaseError {
            let reason = error.message ?? error.description
            if error.resultCode == .SQLITE_CORRUPT || error.resultCode == .SQLITE_NOTADB {
                throw OCIImageError(.damagedState, "the image database \(path) is damaged (\(reason)). Move it aside and pull or import the images again: their blobs are kept and reused, but image names and snapshot records are lost with the database")
            }
            throw OCIImageError(.systemCall, "the metadata database \(path) cannot be opened: \(reason)")
        }
    }

    private static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.create(table: "image") { table in
                table.primaryKey("name", .text)
                table.column("digest", .text).notNull().indexed()
                table.column("mediaType", .text).notNull()
                table.column("size", .integer).notNull()
                table.column("created", .datetime).notNull()
                table.column("updated", .datetime).notNull()
            }
            try db.create(table: "snapshot") { table in
                table.primaryKey("chainID", .text)
                table.column("parent", .text)
                table.column("diffID", .text).notNull()
                table.column("size", .integer).notNull()
                table.column("created", .datetime).notNull()
            }
        }
        migrator.registerMigration("v2") { db in
            // Where blobs are known to live, for cross-repository mounts.
            try db.create(table: "blobSource") { table in
                table.column("digest", .text).notNull()
                table.column("registry", .text).notNull()
                table.column("repository", .text).notNull()
                table.primaryKey(["digest", "registry", "repository"])
            }
        }
        migrator.registerMigration("v3") { db in
            // Build steps' results, by cache key: roots for garbage collection.
            try db.create(table: "buildCache") { table in
                table.primaryKey("key", .text)
                table.column("digest", .text).notNull().indexed()
                table.column("mediaType", .text).notNull()
                table.column("size", .integer).notNull()
                table.column("used", .datetime).notNull()
            }
        }
        return migrator
    }

    private struct ImageRow: Codable, FetchableRecord, PersistableRecord {
        static let databaseTableName = "image"
        var name: String
        var digest: String
        var mediaType: String
        var size: Int64
        var created: Date
        var updated: Date

        init(name: String, digest: String, mediaType: String, size: Int64, created: Date, updated: Date) {
            (self.name, self.digest, self.mediaType, self.size, self.created, self.updated) = (name, digest, mediaType, size, created, updated)
        }

        /// Read by column, not through `Decodable`: an image is looked up
        /// on every container creation.
        init(row: Row) throws {
            name = try row.decode(forColumn: "name")
            digest = try row.decode(forColumn: "digest")
            mediaType = try row.decode(forColumn: "mediaType")
            size = try row.decode(forColumn: "size")
            created = try row.decode(forColumn: "created")
            updated = try row.decode(forColumn: "updated")
        }
    }

    private struct SnapshotRow: Codable, FetchableRecord, PersistableRecord {
        static let databaseTableName = "snapshot"
        var chainID: String
        var parent: String?
        var diffID: String
        var size: Int64
        var created: Date
    }

    private func record(_ row: ImageRow) throws -> ImageRecord {
        ImageRecord(
            reference: try ImageReference(parsing: row.name),
            descriptor: Descriptor(mediaType: MediaType(row.mediaType), digest: try Digest(parsing: row.digest), size: row.size),
            created: row.created, updated: row.updated)
    }

    func images() throws -> [ImageRecord] {
        try pool.read { db in try ImageRow.order(Column("name")).fetchAll(db) }.map(record)
    }

    func image(named name: String) throws -> ImageRecord? {
        try pool.read { db in
            try ImageRow.fetchOne(try db.cachedStatement(sql: "SELECT * FROM image WHERE name = ?"), arguments: [name])
        }.map(record)
    }

    /// Points `reference` at `descriptor`, keeping the creation date when the
    /// name already pointed at the same content. Returns the previous record.
    @discardableResult
    func setImage(_ reference: ImageReference, to descriptor: Descriptor) throws -> ImageRecord? {
        let name = reference.description
        let now = Date()
        let previous = try pool.write { db -> ImageRow? in
            let old = try ImageRow.fetchOne(db, key: name)
            let created = (old?.digest == descriptor.digest.description) ? old?.created ?? now : now
            try ImageRow(name: name, digest: descriptor.digest.description, mediaType: descriptor.mediaType.rawValue,
                         size: descriptor.size, created: created, updated: now).save(db)
            return old
        }
        return try previous.map(record)
    }

    @discardableResult
    func removeImage(named name: String) throws -> Bool {
        try pool.write { db in try ImageRow.deleteOne(db, key: name) }
    }

    func snapshots(root: StateRoot) throws -> [Snapshot] {
        try pool.read { db in try SnapshotRow.fetchAll(db) }.map { try snapshot($0, root: root) }
    }

    func snapshot(_ chainID: Digest, root: StateRoot) throws -> Snapshot? {
        try pool.read { db in try SnapshotRow.fetchOne(db, key: chainID.description) }.map { try snapshot($0, root: root) }
    }

    private func snapshot(_ row: SnapshotRow, root: StateRoot) throws -> Snapshot {
        let chainID = try Digest(parsing: row.chainID)
        return Snapshot(chainID: chainID, parent: try row.parent.map(Digest.init(parsing:)), diffID: try Digest(parsing: row.diffID),
                        directory: Snapshotter.directory(for: chainID, in: root), size: row.size, created: row.created)
    }

    func addSnapshot(chainID: Digest, parent: Digest?, diffID: Digest, size: Int64) throws {
        try pool.write { db in
            try SnapshotRow(chainID: chainID.description, parent: parent?.description, diffID: diffID.description, size: size, created: Date())
                .insert(db, onConflict: .ignore)
        }
    }

    /// Records that `registry/repository` holds these blobs.
    func addBlobSources(_ digests: [Digest], registry: String, repository: String) throws {
        try pool.write { db in
            for digest in digests {
                try db.execute(sql: "INSERT OR IGNORE INTO blobSource (digest, registry, repository) VALUES (?, ?, ?)",
                               arguments: [digest.description, registry, repository])
            }
        }
    }

    /// The repositories of `registry` known to hold a blob.
    func blobSources(_ digest: Digest, registry: String) throws -> [String] {
        try pool.read { db in
            try String.fetchAll(db, sql: "SELECT repository FROM blobSource WHERE digest = ? AND registry = ? ORDER BY repository",
                                arguments: [digest.description, registry])
        }
    }

    /// Forgets blobs that are no longer in the store.
    func removeBlobSources(_ digest: Digest) throws {
        try pool.write { db in try db.execute(sql: "DELETE FROM blobSource WHERE digest = ?", arguments: [digest.description]) }
    }

    func removeSnapshot(_ chainID: Digest) throws {
        _ = try pool.write { db in try SnapshotRow.deleteOne(db, key: chainID.description) }
    }

    // MARK: Build cache

    /// The image a build step with this cache key made, marking it used.
    func buildCacheEntry(_ key: String) throws -> Descriptor? {
        try pool.write { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT digest, mediaType, size FROM buildCache WHERE key = ?", arguments: [key]) else {
                return nil
            }
            try db.execute(sql: "UPDATE buildCache SET used = ? WHERE key = ?", arguments: [Date(), key])
            return Descriptor(mediaType: MediaType(row["mediaType"]), digest: try Digest(parsing: row["digest"]), size: row["size"])
        }
    }

    /// The cached step image whose manifest has this digest.
    func buildCacheEntry(digest: Digest) throws -> Descriptor? {
        try pool.read { db in
            try Row.fetchOne(db, sql: "SELECT mediaType, size FROM buildCache WHERE digest = ? LIMIT 1", arguments: [digest.description])
                .map { Descriptor(mediaType: MediaType($0["mediaType"]), digest: digest, size: $0["size"]) }
        }
    }

    func setBuildCacheEntry(_ key: String, to descriptor: Descriptor) throws {
        try pool.write { db in
            try db.execute(sql: "INSERT OR REPLACE INTO buildCache (key, digest, mediaType, size, used) VALUES (?, ?, ?, ?, ?)",
                           arguments: [key, descriptor.digest.description, descriptor.mediaType.rawValue, descriptor.size, Date()])
        }
    }

    /// Every cached step image, with when it was last used.
    func buildCacheEntries() throws -> [(key: String, descriptor: Descriptor, used: Date)] {
        try pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM buildCache ORDER BY key").map { row in
                (row["key"], Descriptor(mediaType: MediaType(row["mediaType"]), digest: try Digest(parsing: row["digest"]), size: row["size"]),
                 row["used"])
            }
        }
    }

    /// Forgets the cached steps with these keys.
    func removeBuildCacheEntries(keys: [String]) throws {
        try pool.write { db in
            for key in keys { try db.execute(sql: "DELETE FROM buildCache WHERE key = ?", arguments: [key]) }
        }
    }

    /// Forgets cached steps last used before `date` (all, when nil). Returns how many.
    @discardableResult
    func removeBuildCacheEntries(usedBefore date: Date?) throws -> Int {
        try pool.write { db in
            if let date {
                try db.execute(sql: "DELETE FROM buildCache WHERE used < ?", arguments: [date])
            } else {
                try db.execute(sql: "DELETE FROM buildCache")
            }
            return db.changesCount
        }
    }
}
