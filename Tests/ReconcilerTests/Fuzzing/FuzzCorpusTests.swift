import Foundation
import Testing

/// Every input of the fuzz corpus (`Fuzz/Corpus/<target>/`), the seeds and
/// each input that once crashed a parser, goes through its target again in
/// every test run, without the fuzzer: a parser that crashes on one fails
/// the run.
@Suite struct FuzzCorpusTests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fuzz/Corpus").path

    @Test(arguments: FuzzTarget.all.map(\.name))
    func everyCorpusInputIsReadWithoutACrash(target name: String) throws {
        let target = try #require(FuzzTarget.all.first { $0.name == name })
        let directory = Self.corpus + "/" + name
        let inputs = try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
        #expect(!inputs.isEmpty, "the corpus of \(name) is empty")
        for input in inputs {
            let bytes = try #require(FileManager.default.contents(atPath: directory + "/" + input), "\(input)")
            target.run([UInt8](bytes))
        }
    }

    @Test func everyTargetHasACorpusAndEveryCorpusATarget() throws {
        let directories = try FileManager.default.contentsOfDirectory(atPath: Self.corpus).sorted()
        #expect(directories == FuzzTarget.all.map(\.name).sorted())
    }
}
