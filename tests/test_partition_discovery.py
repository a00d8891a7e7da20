"""Partitions that appear while training (DESIGN.md §2.1): with a whole-topic entry and
``eof=False`` an iterator picks up partitions added to its topic (CreatePartitions) within the
discovery interval, reads them from their start and merges them in time order; its checkpoint
records them; a restore into a topic that grew since the save reads the new partitions from
their start, while a topic that shrank fails naming the partition. The worker split deals new
partitions out deterministically. Oracles: the broker's delivery reports and the k-way merge."""

import json
import threading
from collections import Counter

import pytest
import tensorflow as tf
from helpers import BASE_TS, first_difference, kway_merge, streams_from_delivered
from kafka_dataset import testing as kt

DISCOVERY = ["kafka_dataset.partition.discovery.interval.ms=200"]
END_TS = BASE_TS + 10_000_000  # sentinels: the last message of every partition, never emitted


def add_partitions(servers, topic, total):
    from confluent_kafka.admin import NewPartitions

    admin = kt.admin_client(servers)
    for future in admin.create_partitions([NewPartitions(topic, total)]).values():
        future.result(30)
    kt.wait_for(lambda: kt.partition_count(servers, topic) == total, 30, "%s to grow" % topic)


def iterator_partitions(kd, topic):
    """The partitions the newest live iterator reading ``topic`` reads now."""
    stats = [s for s in kd.stats() if topic in s["topics"]]
    newest = max(stats, key=lambda s: s["id"])
    return sorted(p["partition"] for p in newest["partitions"])


def data_and_sentinels(kafka, topic, partitions, n, first_ts, tag):
    """``n`` messages spread over ``partitions`` (interleaved timestamps), then one sentinel per
    partition with the largest timestamps: with ``eof=False`` every data message can then be
    emitted without waiting for an idle partition, and the sentinels stay unread."""
    data = [(i % partitions, "%s%03d" % (tag, i), None, first_ts + 7 * i) for i in range(n)]
    sentinels = [(p, "end-%s-%d" % (tag, p), None, END_TS + p) for p in range(partitions)]
    delivered = kafka.produce(topic, data + sentinels)
    return delivered[:n], delivered[n:]


def test_partitions_added_while_streaming_are_read_from_their_start_in_time_order(
    kd, kafka, tmp_path, run_python
):
    topic = kafka.new_topic(2)
    make = lambda **kw: kd.KafkaDataset(  # noqa: E731
        [topic], servers=kafka.servers, config_global=DISCOVERY, **kw
    )
    # timeout 10 s: no partition is passed over as idle while the data arrives, so the order is
    # exactly the k-way merge.
    it = iter(make(eof=False, timeout=10_000))
    first = []
    reader = threading.Thread(target=lambda it=it: first.append(next(it).numpy()), daemon=True)
    reader.start()  # blocks inside get_next: the topic is empty
    kt.wait_for(lambda: iterator_partitions(kd, topic) == [0, 1], 30, "the iterator to start")
    add_partitions(kafka.servers, topic, 4)
    kt.wait_for(lambda: iterator_partitions(kd, topic) == [0, 1, 2, 3], 30, "discovery")
    data, sentinels = data_and_sentinels(kafka, topic, 4, 80, BASE_TS, "a")
    reader.join(60)
    assert not reader.is_alive()
    got = first + [next(it).numpy() for _ in range(len(data) - 1)]
    expected = kway_merge(streams_from_delivered(data, [0, 1, 2, 3]))
    assert got == expected, first_difference(got, expected)

    # The checkpoint records the discovered partitions at their exact positions.
    path = tf.train.Checkpoint(iterator=it).write(str(tmp_path / "four"))
    del it
    tail, tail_sentinels = data_and_sentinels(kafka, topic, 4, 12, END_TS + 100, "t")
    proc = run_python(RESTORE_AND_READ, args=[topic, kafka.servers, path, "true", "0"])
    rest = [v.encode() for v in json.loads(proc.stdout.splitlines()[-1])]
    expected = kway_merge(streams_from_delivered(sentinels + tail + tail_sentinels, [0, 1, 2, 3]))
    assert rest == expected, first_difference(rest, expected)


def test_a_restore_into_a_topic_that_grew_reads_the_new_partitions_from_their_start(
    kd, kafka, tmp_path, run_python
):
    topic = kafka.new_topic(2)
    before = kafka.produce(topic, [(i % 2, "a%02d" % i, None, BASE_TS + 10 * i) for i in range(20)])
    it = iter(kd.KafkaDataset([topic], servers=kafka.servers, eof=True))
    head = [next(it).numpy() for _ in range(8)]
    path = tf.train.Checkpoint(iterator=it).write(str(tmp_path / "two"))
    del it
    add_partitions(kafka.servers, topic, 3)
    data, sentinels = data_and_sentinels(kafka, topic, 3, 30, BASE_TS + 150, "b")

    # eof=False: partition 2 takes part in the merge from the first element on.
    expected = kway_merge(streams_from_delivered(before + data, [0, 1, 2]))
    assert head == expected[:8]
    n = len(expected) - 8
    proc = run_python(RESTORE_AND_READ, args=[topic, kafka.servers, path, "false", str(n)])
    rest = [v.encode() for v in json.loads(proc.stdout.splitlines()[-1])]
    assert rest == expected[8:], first_difference(rest, expected[8:])

    # eof=True reads the partitions the checkpoint holds, as the iterator that saved it did.
    proc = run_python(RESTORE_AND_READ, args=[topic, kafka.servers, path, "true", "0"])
    rest = [v.encode() for v in json.loads(proc.stdout.splitlines()[-1])]
    expected = kway_merge(streams_from_delivered(before + data + sentinels, [0, 1]))[8:]
    assert rest == expected, first_difference(rest, expected)


def test_a_restore_into_a_topic_that_shrank_fails_naming_the_partition(kd, kafka, tmp_path):
    topic = kafka.new_topic(3)
    kafka.produce(topic, [(i % 3, "a%d" % i, None, BASE_TS + i) for i in range(9)])
    make = lambda: kd.KafkaDataset([topic], servers=kafka.servers, eof=False)  # noqa: E731
    it = iter(make())
    next(it)
    path = tf.train.Checkpoint(iterator=it).write(str(tmp_path / "three"))
    del it
    admin = kt.admin_client(kafka.servers)
    for future in admin.delete_topics([topic]).values():
        future.result(30)
    kt.wait_for(lambda: topic not in admin.list_topics(timeout=5).topics, 30, "deletion")
    kt.wait_for(
        lambda: kt.create_topic(kafka.servers, topic, 2) or True, 60, "recreation", interval=0.5
    )
    restored = iter(make())
    tf.train.Checkpoint(iterator=restored).read(path).assert_consumed()
    with pytest.raises(tf.errors.FailedPreconditionError) as e:
        next(restored)
    assert "%s:2" % topic in str(e.value) and "has 2 partitions now" in str(e.value)


def test_workers_share_added_partitions_deterministically(kd, kafka):
    topic = kafka.new_topic(1)
    workers = [
        iter(
            kd.KafkaDataset(
                [topic],
                servers=kafka.servers,
                timeout=300,
                config_global=DISCOVERY,
                num_workers=2,
                worker_index=w,
            )
        )
        for w in range(2)
    ]
    add_partitions(kafka.servers, topic, 6)
    delivered = kafka.produce(topic, [(i % 6, "w%03d" % i, None, BASE_TS + i) for i in range(120)])
    # What each worker owns, as fresh iterators resolving the grown topic see it.
    shares = [
        [
            v.numpy()
            for v in kd.KafkaDataset(
                [topic], servers=kafka.servers, eof=True, num_workers=2, worker_index=w
            )
        ]
        for w in range(2)
    ]
    assert sorted(shares[0] + shares[1]) == sorted(d.value for d in delivered)
    assert shares[0] and shares[1]
    for it, share in zip(workers, shares):
        got = [next(it).numpy() for _ in range(len(share))]
        assert Counter(got) == Counter(share)
        partition_of = {d.value: d.partition for d in delivered}
        for p in set(partition_of[v] for v in got):
            in_partition = [v for v in got if partition_of[v] == p]
            assert in_partition == [v for v in share if partition_of[v] == p]


RESTORE_AND_READ = r"""
import json, sys
import tensorflow as tf
import kafka_dataset
topic, servers, path, eof, n = sys.argv[1:6]
eof, n = eof == "true", int(n)
it = iter(kafka_dataset.KafkaDataset(
    [topic], servers=servers, eof=eof, timeout=10_000,
    config_global=["kafka_dataset.partition.discovery.interval.ms=200"]))
tf.train.Checkpoint(iterator=it).read(path).assert_consumed()
values = [v.numpy() for v in it] if eof else [next(it).numpy() for _ in range(n)]
print(json.dumps([v.decode() for v in values]))
"""
