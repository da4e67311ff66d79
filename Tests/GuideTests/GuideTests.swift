import Foundation
import Testing

/// Every Swift block of README.md and of the guides is in
/// GuideExamples.swift, line for line, and so compiles with the tests: a
/// guide whose code stops compiling, or drifts from what is compiled,
/// fails here, naming the file and the block's first line.
@Suite struct GuideTests {
    /// The package's root, found from this file's path.
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The documents with code: README.md and every article of the catalog.
    static var documents: [URL] {
        let catalog = root.appendingPathComponent("Documentation/Gantry.docc")
        let articles = (try? FileManager.default.contentsOfDirectory(at: catalog, includingPropertiesForKeys: nil)) ?? []
        return [root.appendingPathComponent("README.md")] + articles.filter { $0.pathExtension == "md" }.sorted { $0.path < $1.path }
    }

    /// The lines that matter for comparing: trimmed, blank lines and
    /// imports (the examples' file has its own) left out.
    static func significant(_ text: some StringProtocol) -> [String] {
        text.split(separator: "\n", omittingEmptySubsequences: false)
            .map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty && !$0.hasPrefix("import ") }
    }

    /// The Swift blocks of a Markdown text.
    static func swiftBlocks(_ text: String) -> [String] {
        var blocks: [String] = []
        var current: [Substring]?
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if current == nil, line.trimmingCharacters(in: .whitespaces) == "```swift" {
                current = []
            } else if let lines = current, line.trimmingCharacters(in: .whitespaces) == "```" {
                blocks.append(lines.joined(separator: "\n"))
                current = nil
            } else {
                current?.append(line)
            }
        }
        return blocks
    }

    /// Whether `lines` stand in `text` one after another.
    static func contains(_ text: [String], run lines: [String]) -> Bool {
        guard lines.count <= text.count else { return false }
        for start in 0 ... text.count - lines.count where text[start ..< start + lines.count].elementsEqual(lines) {
            return true
        }
        return false
    }

    @Test func everyGuideBlockIsCompiled() throws {
        let examples = Self.significant(try String(contentsOf: Self.root.appendingPathComponent("Tests/GuideTests/GuideExamples.swift"), encoding: .utf8))
        var blocks = 0
        for document in Self.documents {
            for block in Self.swiftBlocks(try String(contentsOf: document, encoding: .utf8)) {
                let lines = Self.significant(block)
                guard let first = lines.first else { continue }
                blocks += 1
                let found = Self.contains(examples, run: lines)
                #expect(found, "\(document.lastPathComponent): the block starting \"\(first)\" is not in GuideExamples.swift as written")
            }
        }
        // README.md and the articles have code; none may go unnoticed.
        #expect(blocks >= 15, "only \(blocks) Swift blocks found in the guides")
    }

    @Test func blocksAreFoundAndMismatchesSeen() {
        let text = "Intro\n\n```swift\nimport Gantry\nlet a = 1\n  print(a)\n```\n\n```bash\nls\n```\n"
        let blocks = Self.swiftBlocks(text).map { Self.significant($0) }
        #expect(blocks == [["let a = 1", "print(a)"]])
        #expect(Self.contains(["x", "let a = 1", "print(a)"], run: blocks[0]))
        #expect(!Self.contains(["let a = 1", "x", "print(a)"], run: blocks[0]))
    }
}
