"""The write-back without Faust's per-value path (tables/write_back.py): what it sends, in which order, what it
writes locally and which changelog offsets it records. Against a real worker, the service and chaos tests."""

from __future__ import annotations

import asyncio

from tables.write_back import write_back


class FakeStore(dict):
    def __init__(self) -> None:
        super().__init__()
        self.persisted: dict = {}
        self._key_index: dict = {}

    def set_persisted_offset(self, tp, offset: int) -> None:
        self.persisted[(tp.topic, tp.partition)] = offset


class FakeTopic:
    def __init__(self, name: str) -> None:
        self.name = name

    def get_topic_name(self) -> str:
        return self.name


class FakeTable:
    def __init__(self, name: str) -> None:
        self.changelog_topic = FakeTopic(f"{name}-changelog")
        self.data = FakeStore()


class FakeSender:
    """Records sends and acks; each acknowledged (topic, partition) gets offsets counted from 100."""

    def __init__(self, events: list) -> None:
        self.events = events
        self.offsets: dict = {}
        self.unacked: dict = {}

    async def send(self, topic, key, value, partition=None, headers=None) -> None:
        self.events.append(("send", topic, partition, key, value))
        where = (topic, partition)
        self.offsets[where] = self.offsets.get(where, 99) + 1
        self.unacked[where] = self.offsets[where]

    async def acks(self) -> dict:
        self.events.append(("acks",))
        acked, self.unacked = self.unacked, {}
        return acked


def test_values_go_local_in_order_and_the_last_of_each_changelog_partition_is_sent_alone():
    events: list = []
    states, positions = FakeTable("sku-state"), FakeTable("partition-state")
    states.data[b"gone"] = b"old"
    sender = FakeSender(events)
    writes = {
        3: [(states, b"#n/3", b"1"), (states, b"gone", None), (states, b"A", b"a"), (positions, b"p3", b"x")],
        5: [(states, b"B", b"b")],
    }
    asyncio.run(write_back(sender, list(writes.items()), lambda: events.append(("check",))))
    assert events == [
        ("check",),
        ("send", "sku-state-changelog", 3, b"#n/3", b"1"),
        ("send", "sku-state-changelog", 3, b"gone", None),
        ("acks",),
        ("check",),
        ("send", "sku-state-changelog", 3, b"A", b"a"),  # the last of each changelog partition: alone, after acks
        ("send", "partition-state-changelog", 3, b"p3", b"x"),
        ("send", "sku-state-changelog", 5, b"B", b"b"),
        ("acks",),
    ]
    assert dict(states.data) == {b"#n/3": b"1", b"A": b"a", b"B": b"b"}  # the deletion too
    assert dict(positions.data) == {b"p3": b"x"}
    assert states.data._key_index == {b"#n/3": 3, b"A": 3, b"B": 5}
    # the offset of the last record of each changelog partition, as Faust records it for a restart's recovery
    assert states.data.persisted == {("sku-state-changelog", 3): 102, ("sku-state-changelog", 5): 100}
    assert positions.data.persisted == {("partition-state-changelog", 3): 100}


def test_nothing_to_write_sends_nothing():
    events: list = []
    asyncio.run(write_back(FakeSender(events), [(0, []), (1, [])], lambda: events.append(("check",))))
    assert events == [("check",)]


def test_a_partition_s_values_are_asked_for_only_once_the_previous_partition_is_sent_and_written_locally():
    # the service passes a generator that encodes each partition's states as it comes: one partition's encoded
    # values at a time, not every partition's at once
    events: list = []
    states = FakeTable("sku-state")
    sender = FakeSender(events)

    def partition_writes():
        for partition, keys in ((1, [b"A", b"B"]), (2, [b"C", b"D"])):
            events.append(("encode", partition, sorted(states.data)))
            yield partition, [(states, key, key.lower()) for key in keys]

    asyncio.run(write_back(sender, partition_writes(), lambda: None))
    assert events[:4] == [
        ("encode", 1, []),
        ("send", "sku-state-changelog", 1, b"A", b"a"),
        ("encode", 2, [b"A", b"B"]),  # partition 1 sent, and in its local store, before partition 2 is encoded
        ("send", "sku-state-changelog", 2, b"C", b"c"),
    ]
