import Testing
@testable import Runtime

@Suite struct EventBroadcastTests {
    @Test func everySubscriberGetsEveryValue() async {
        let broadcast = EventBroadcast<Int>()
        let first = broadcast.subscribe()
        let second = broadcast.subscribe()
        #expect(broadcast.subscriberCount == 2)
        for value in 1...3 { broadcast.send(value) }
        broadcast.finish()
        #expect(await Array(first) == [1, 2, 3])
        #expect(await Array(second) == [1, 2, 3])
        #expect(broadcast.subscriberCount == 0)
    }

    @Test func slowSubscribersKeepTheNewest() async {
        let broadcast = EventBroadcast<Int>(bufferLimit: 2)
        let stream = broadcast.subscribe()
        for value in 1...5 { broadcast.send(value) }
        broadcast.finish()
        #expect(await Array(stream) == [4, 5])
    }

    @Test func subscribingAfterFinishEndsAtOnce() async {
        let broadcast = EventBroadcast<String>()
        broadcast.finish()
        #expect(await Array(broadcast.subscribe()).isEmpty)
    }
}

extension Array {
    init<S: AsyncSequence>(_ sequence: S) async where S.Element == Element, S.Failure == Never {
        self = []
        for await element in sequence { append(element) }
    }
}
