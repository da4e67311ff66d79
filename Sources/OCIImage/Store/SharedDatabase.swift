import GRDB
#if canImport(Glibc)
import Glibc
#endif

/// Opens a SQLite database (WAL mode) that several processes share, and
/// brings its schema up to date.
///
/// The migrator reads which migrations were applied before it runs each
/// one in a transaction of its own, so two processes opening a new
/// database at once could both try to apply the same migration. An
/// exclusive `flock` on the database file (SQLite itself uses `fcntl`
/// locks, which do not interact with it) makes the opens take turns.
package func openSharedDatabase(path: String, label: String, migrator: DatabaseMigrator) throws -> DatabasePool {
    let lock = try Sys.check("open", path) { open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644) }
    defer { close(lock) }
    try Sys.check("flock", path) { flock(lock, LOCK_EX) }
    var configuration = Configuration()
    configuration.busyMode = .timeout(30)
    configuration.label = label
    let pool = try DatabasePool(path: path, configuration: configuration)
    try migrator.migrate(pool)
    return pool
}
