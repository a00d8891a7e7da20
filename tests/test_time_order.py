"""Time order (DESIGN §2.2): with eof=True the output is exactly the k-way merge by
(timestamp, stream index, offset), offset order inside a partition even where time goes back."""

import collections
import random

import pytest
import tensorflow as tf
from helpers import (
    BASE_TS,
    GraphReader,
    eager_values,
    first_difference,
    kway_merge,
    kway_merge_heapq,
    streams_from_delivered,
)
from kafka_dataset import testing as kt

PARTITIONS = 7


def make_records(seed, partitions=PARTITIONS):
    """Random CreateTime timestamps on a coarse grid (many ties across partitions), equal
    timestamps inside a partition, and one partition whose time goes backwards twice."""
    rng = random.Random(seed)
    per_partition = []
    for p in range(partitions):
        ts = BASE_TS + rng.randrange(0, 200, 10)
        stamps = []
        for i in range(rng.randint(15, 40)):
            stamps.append(ts)
            ts += rng.choice([0, 10, 10, 20, 30, 50, 100])
        per_partition.append(stamps)
    back = per_partition[2]
    back[5] = back[4] - 150  # goes back far: older than what other partitions emitted
    back[12] = back[11] - 10  # goes back a little: ties likely
    records = []
    for p, stamps in enumerate(per_partition):
        for i, ts in enumerate(stamps):
            records.append((p, b"p%d-o%d-t%d" % (p, i, ts - BASE_TS), None, ts))
    # Produce in a random interleaving, preserving each partition's own order.
    queues = {p: collections.deque(r for r in records if r[0] == p) for p in range(partitions)}
    interleaved = []
    while any(queues.values()):
        p = rng.choice([q for q in queues if queues[q]])
        interleaved.append(queues[p].popleft())
    return interleaved


def check_scenario(delivered):
    """The data really has the properties this test is about (guards the generator)."""
    stamps = collections.defaultdict(set)
    backwards = 0
    last = {}
    for d in sorted(delivered, key=lambda d: (d.partition, d.offset)):
        stamps[d.timestamp].add(d.partition)
        if d.partition in last and d.timestamp < last[d.partition]:
            backwards += 1
        last[d.partition] = d.timestamp
    assert any(len(ps) > 1 for ps in stamps.values()), "no timestamp ties across partitions"
    assert backwards >= 1, "no timestamp goes backwards inside a partition"


@pytest.fixture(scope="module", params=[11, 23])
def scenario(request, broker):
    """A 7-partition topic per seed, shared by this module's tests (they only read it)."""
    topic = kt.create_topic(
        broker.bootstrap, kt.unique_name("time-order-%d" % request.param), PARTITIONS
    )
    delivered = kt.produce(broker.bootstrap, topic, make_records(request.param))
    check_scenario(delivered)
    # The broker kept our CreateTime timestamps (else the oracle's input would be wrong).
    stored = kt.read_partitions(broker.bootstrap, topic, range(PARTITIONS))
    for p in range(PARTITIONS):
        sent = sorted((d.offset, d.timestamp, d.value) for d in delivered if d.partition == p)
        assert [(m.offset, m.timestamp, m.value) for m in stored[p]] == sent, (
            "broker changed partition %d's records/timestamps" % p
        )
    return topic, delivered


def expected_order(delivered, partition_order):
    streams = streams_from_delivered(delivered, partition_order)
    expected = kway_merge(streams)
    assert expected == kway_merge_heapq(streams)
    return expected


def test_eof_merge_equals_kway_merge(kd, kafka, scenario):
    topic, delivered = scenario
    # Stream index = position of the partition's first entry: list partitions out of order, and
    # mix the entry forms.
    order = [3, 0, 6, 1, 5, 2, 4]
    entries = [
        "%s:%d" % (topic, p) if i % 2 else "%s:%d:0:-1" % (topic, p) for i, p in enumerate(order)
    ]
    expected = expected_order(delivered, order)
    got = eager_values(kd.KafkaDataset(entries, servers=kafka.servers, eof=True, timeout=500))
    assert got == expected, first_difference(got, expected)


def test_stream_index_breaks_ties_not_partition_number(kd, kafka, scenario):
    topic, delivered = scenario
    order = list(reversed(range(PARTITIONS)))
    expected = expected_order(delivered, order)
    assert expected != expected_order(delivered, sorted(order)), "scenario has no tie to break"
    got = eager_values(
        kd.KafkaDataset(
            ["%s:%d" % (topic, p) for p in order], servers=kafka.servers, eof=True, timeout=500
        )
    )
    assert got == expected, first_difference(got, expected)


def test_all_partitions_form_merges_in_partition_order(kd, kafka, scenario):
    """`"t"` expands to every partition, ascending, at the entry's position."""
    topic, delivered = scenario
    expected = expected_order(delivered, list(range(PARTITIONS)))
    got = eager_values(kd.KafkaDataset([topic], servers=kafka.servers, eof=True, timeout=500))
    assert sorted(got) == sorted(expected), "messages lost or duplicated"
    assert got == expected, first_difference(got, expected)


def test_chained_ranges_inside_the_merge(kd, kafka, scenario):
    """Partition 2 split into two chained ranges and partition 0 bounded: still the merge."""
    topic, delivered = scenario
    order = [2, 0, 1, 3, 4, 5, 6]
    cut0 = 9
    kept = [d for d in delivered if not (d.partition == 0 and d.offset > cut0)]
    expected = expected_order(kept, order)
    entries = ["%s:2:0:7" % topic, "%s:0:0:%d" % (topic, cut0), "%s:2:8:-1" % topic]
    entries += ["%s:%d" % (topic, p) for p in order[2:]]
    got = eager_values(kd.KafkaDataset(entries, servers=kafka.servers, eof=True, timeout=500))
    assert got == expected, first_difference(got, expected)


def test_streaming_read_of_existing_data_is_the_same_merge(kd, kafka, scenario):
    """eof=False over data already on the broker: partitions with lag are always waited for, so
    the order is the same merge; the reader then blocks (no end, no extra element)."""
    topic, delivered = scenario
    order = list(range(PARTITIONS))
    expected = expected_order(delivered, order)
    with GraphReader(
        lambda: kd.KafkaDatasetV1(
            ["%s:%d" % (topic, p) for p in order], servers=kafka.servers, eof=False, timeout=200
        )
    ) as r:
        got = r.init().take(len(expected), timeout_ms=20_000)
        assert got == expected, first_difference(got, expected)
        with pytest.raises(tf.errors.DeadlineExceededError):
            r.next(timeout_ms=1000)
