public import Testing

/// Starts a container before a test, or once around all the tests of a
/// suite, and removes it afterwards, whether the test passes, fails,
/// throws, is cancelled or runs out of time.
///
/// ```swift
/// @Test(.container("web", TestContainer(image: "busybox:test", command: ["httpd", "-f", "-p", "80"]).exposing(80)))
/// func answers() async throws {
///     let web = try RunningContainer.scoped("web")
///     #expect(try web.mappedPort(80) > 0)
/// }
/// ```
public struct ContainerTrait: TestTrait, SuiteTrait, TestScoping {
    /// The name the test finds the container under (``RunningContainer/scoped(_:)``).
    public let key: String
    /// The container.
    public let container: TestContainer
    private let session: (@Sendable () async throws -> TestSession)?

    init(key: String, container: TestContainer, session: (@Sendable () async throws -> TestSession)?) {
        self.key = key
        self.container = container
        self.session = session
    }

    /// Applied to a suite, the container is started once for all its tests.
    public var isRecursive: Bool { false }

    /// Starts the container, runs `function` with it in scope under
    /// ``key``, and removes it, however `function` ends.
    public func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        let session = try await session?() ?? TestSession.shared
        try await session.withContainer(container) { running in
            try await RunningContainer.$scope.withValue(RunningContainer.scope.merging([key: running]) { $1 }) {
                try await function()
            }
        }
    }
}

extension Trait where Self == ContainerTrait {
    /// A container started before the test (or once around a suite's
    /// tests) and removed after it, found in the test by `key`.
    ///
    /// - Parameters:
    ///   - key: The name the test finds it under, with ``RunningContainer/scoped(_:)``.
    ///   - container: The container.
    ///   - session: Gives the session that runs it, when the test begins;
    ///     by default ``TestSession/shared``.
    public static func container(_ key: String, _ container: TestContainer,
                                 session: (@Sendable () async throws -> TestSession)? = nil) -> Self {
        ContainerTrait(key: key, container: container, session: session)
    }
}

extension RunningContainer {
    /// The containers that traits started for the running test.
    @TaskLocal static var scope: [String: RunningContainer] = [:]

    /// The container a ``ContainerTrait`` started under `key` for the
    /// running test or its suite.
    ///
    /// - Throws: ``TestingError`` with code `notInScope` naming the keys in
    ///   scope.
    public static func scoped(_ key: String) throws -> RunningContainer {
        if let found = scope[key] { return found }
        let known = scope.keys.sorted()
        throw TestingError(.notInScope, "no container is in scope as \"\(key)\""
            + (known.isEmpty ? "; add the trait .container(\"\(key)\", …) to the test or its suite" : "; in scope: \(known.joined(separator: ", "))"))
    }
}

/// Runs `body` with `container` started and ready in the shared session
/// (``TestSession/shared``), and removes it afterwards; for Swift Testing
/// and XCTest alike.
public func withTestContainer<T>(_ container: TestContainer, _ body: (RunningContainer) async throws -> T) async throws -> T {
    try await TestSession.shared.withContainer(container, body)
}
