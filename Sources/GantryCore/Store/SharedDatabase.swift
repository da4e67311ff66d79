package import GRDB
#if canImport(Glibc)
import Glibc
#endif

/// Opens a SQLite database (WAL mode) that several processes share, and
/// brings its schema up to date.
///
/// The migrator reads which migrations were applied before it runs each
/// one in a transaction of its own, so two processes opening a new
/// database at once could both try to apply the same migration. An
/// exclusive `flock` on the database's directory makes the opens take
/// turns. (Not on the database file itself: closing any descriptor of that
/// file would drop every `fcntl` lock SQLite holds on it in this process.)
package func openSharedDatabase(path: String, label: String, migrator: DatabaseMigrator) throws -> DatabasePool {
    let directory = Sys.parentDirectory(of: path)
    let lock = try Sys.check("open", directory) { open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
    defer { close(lock) }
    try Sys.check("flock", directory) { flock(lock, LOCK_EX) }
    var configuration = Configuration()
    configuration.busyMode = .timeout(30)
    configuration.label = label
    let pool = try DatabasePool(path: path, configuration: configuration)
    try migrator.migrate(pool)
    return pool
}
