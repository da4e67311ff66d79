import Glibc
import Testing
@testable import Runtime

/// Route netlink requests as the kernel will read them, and attributes read
/// back from replies: no root, no socket.
@Suite struct NetlinkMessageTests {
    @Test func aRequestHasItsHeaderAndPaddedAttributes() {
        var message = NetlinkMessage(type: Netlink.newLink, flags: Netlink.create | Netlink.exclusive)
        message.appendLinkHeader(index: 7, up: true)
        message.append(attribute: Netlink.linkName, string: "gt-abc")
        let bytes = message.encoded(sequence: 42)
        // nlmsghdr: length, type, flags with NLM_F_REQUEST, sequence, port 0.
        #expect(bytes.count % 4 == 0)
        #expect(Array(bytes[0 ..< 4]) == [UInt8(bytes.count), 0, 0, 0])
        #expect(Array(bytes[4 ..< 6]) == [16, 0])
        #expect(UInt16(bytes[6]) | UInt16(bytes[7]) << 8 == Netlink.create | Netlink.exclusive | Netlink.request)
        #expect(Array(bytes[8 ..< 16]) == [42, 0, 0, 0, 0, 0, 0, 0])
        // ifinfomsg: family 0, index 7, IFF_UP in flags and change mask.
        #expect(Array(bytes[16 ..< 24]) == [0, 0, 0, 0, 7, 0, 0, 0])
        #expect(Array(bytes[24 ..< 32]) == [UInt8(IFF_UP), 0, 0, 0, UInt8(IFF_UP), 0, 0, 0])
        // IFLA_IFNAME: 4 + 7 bytes ("gt-abc" and its NUL), padded to 12.
        #expect(Array(bytes[32 ..< 36]) == [11, 0, 3, 0])
        #expect(Array(bytes[36 ..< 43]) == Array("gt-abc".utf8) + [0] && bytes[43] == 0)
        #expect(bytes.count == 44)
    }

    @Test func nestedAttributesAreMarkedAndReadBack() {
        var message = NetlinkMessage(type: Netlink.newLink, flags: 0)
        message.nest(Netlink.linkInfo) { info in
            info.append(attribute: Netlink.infoKind, string: "veth")
            info.append(attribute: Netlink.infoData, uint32: 0x0102_0304)
        }
        let body = message.body
        #expect(UInt16(body[2]) | UInt16(body[3]) << 8 == Netlink.linkInfo | Netlink.nested)
        let outer = NetlinkMessage.attributes(body)
        let inner = NetlinkMessage.attributes(outer[Netlink.linkInfo] ?? [])
        #expect(inner[Netlink.infoKind] == Array("veth".utf8) + [0])
        #expect(inner[Netlink.infoData] == [4, 3, 2, 1])
    }

    @Test func malformedAttributesEndTheReadingWithoutACrash() {
        // A length below the header's, then one past the end.
        #expect(NetlinkMessage.attributes([2, 0, 3, 0, 0xFF, 0xFF]).isEmpty)
        #expect(NetlinkMessage.attributes([8, 0, 3, 0, 1, 2, 3, 4, 200, 0, 4, 0, 1]) == [3: [1, 2, 3, 4]])
        #expect(NetlinkMessage.attributes([UInt8]()).isEmpty)
        #expect(NetlinkMessage.attributes([5, 0, 1, 0, 9]) == [1: [9]])
    }
}
