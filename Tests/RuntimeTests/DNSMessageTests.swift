import Testing
@testable import Runtime

/// The resolver's reading of queries that containers send, byte by byte:
/// no root, no network.
@Suite struct DNSMessageTests {
    /// A query for `name` of `type`, with ID 0x1234 and recursion desired.
    func query(_ name: String, type: UInt16 = DNSMessage.addressType, questions: UInt8 = 1) -> [UInt8] {
        [0x12, 0x34, 0x01, 0x00, 0, questions, 0, 0, 0, 0, 0, 0] + DNSMessage.encodeName(name) + [UInt8(type >> 8), UInt8(type & 0xFF), 0, 1]
    }

    @Test func clusterNamesOfAServiceAreItsName() {
        for name in ["web.default.svc.cluster.local", "web.default.svc.cluster.local.", "web.shop.svc", "web.default", "web.shop", "web.default.cluster.local"] {
            #expect(NetworkResolver.clusterName(name, network: "shop_default") == "web", "\(name)")
        }
        for name in ["web", "web.example.com", "a.b.c.svc.cluster.local", "web.other", "svc.cluster.local"] {
            #expect(NetworkResolver.clusterName(name, network: "shop_default") == nil, "\(name)")
        }
    }

    @Test func aQueryIsReadAsItWasWritten() throws {
        let bytes = query("db.shop")
        let message = try #require(DNSMessage(bytes))
        #expect(message.id == 0x1234 && message.flags == 0x0100 && !message.isResponse)
        #expect(message.name == "db.shop" && message.type == DNSMessage.addressType)
        #expect(message.questionEnd == bytes.count)
    }

    @Test func anAnswerRepeatsTheQuestionAndPointsBackAtItsName() throws {
        let message = try #require(DNSMessage(query("db")))
        let reply = message.answer(type: DNSMessage.addressType, data: [10, 88, 0, 2])
        // ID, then QR + AA + RD, RA with no error, one question, one answer.
        #expect(Array(reply[0 ..< 12]) == [0x12, 0x34, 0x85, 0x80, 0, 1, 0, 1, 0, 0, 0, 0])
        #expect(Array(reply[12 ..< message.questionEnd]) == Array(query("db")[12...]))
        let record = Array(reply[message.questionEnd...])
        #expect(record == [0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 10, 0, 4, 10, 88, 0, 2])
        // No record at all: an empty, successful answer.
        #expect(message.answer(type: nil, data: [])[7] == 0)
    }

    @Test func aFailureCarriesItsCodeAndNoRecord() throws {
        let message = try #require(DNSMessage(query("elsewhere.example")))
        let reply = message.failure(code: DNSMessage.refused)
        #expect(reply[3] & 0x0F == DNSMessage.refused && reply[7] == 0)
        #expect(reply.count == message.questionEnd)
    }

    @Test(arguments: [
        ("shorter than a header", [UInt8](repeating: 0, count: 11)),
        ("no question", Array([0x12, 0x34, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0] + DNSMessage.encodeName("a") + [0, 1, 0, 1])),
        ("a label longer than 63", [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 64] + [UInt8](repeating: 0x61, count: 64) + [0, 0, 1, 0, 1]),
        ("a label past the end", [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 5, 0x61, 0x62]),
        ("a compression pointer in the question", [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 12, 0, 1, 0, 1]),
        ("no type and class", [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0x61, 0, 0, 1]),
        ("more than 255 questions", [0x12, 0x34, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0x61, 0, 0, 1, 0, 1]),
    ] as [(String, [UInt8])])
    func malformedQueriesAreDropped(_ what: String, bytes: [UInt8]) {
        #expect(DNSMessage(bytes) == nil, "\(what)")
    }

    @Test func namesAreEncodedLabelByLabelAndCutAt63() {
        #expect(DNSMessage.encodeName("db.shop") == [2, 0x64, 0x62, 4, 0x73, 0x68, 0x6F, 0x70, 0])
        let long = DNSMessage.encodeName(String(repeating: "x", count: 70))
        #expect(long.first == 63 && long.count == 65)
    }
}
