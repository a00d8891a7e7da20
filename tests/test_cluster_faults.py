"""Faults on a real 3-node Apache Kafka cluster (replication factor 3, min.insync.replicas=2;
``cluster`` in conftest.py): the leader of a partition being read is SIGKILLed mid-stream and
later restarted, a broker is shut down cleanly, and every broker goes away. The iterator rides
out the first two (get_next waits while leadership moves), its output is exactly the
timestamp-ordered merge of everything produced (nothing lost, nothing repeated), and a checkpoint
written before a fault restores after it. With every broker gone a new iterator is Unavailable
after the documented deadline, not a hang.
"""

import threading
import time

import pytest
import tensorflow as tf
from helpers import BASE_TS, first_difference, kway_merge, streams_from_delivered, to_py
from kafka_dataset import testing as kt

PARTITIONS = 3


def produce(servers, topic, start, count):
    records = [
        (i % PARTITIONS, "m%03d" % i, None, BASE_TS + i * 7) for i in range(start, start + count)
    ]
    return kt.produce(servers, topic, records)


def read_with_deadline(iterator, count, seconds):
    """`count` elements from `iterator`, or fail after `seconds` (a stuck read is a failure,
    not a hang)."""
    got, errors = [], []

    def run():
        try:
            for _ in range(count):
                got.append(to_py(next(iterator)))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not errors, errors
    assert not thread.is_alive(), "read %d of %d within %ss" % (len(got), count, seconds)
    return got


@pytest.fixture
def healthy(cluster):
    """The cluster with every node running, before and after the test."""
    cluster.restart_nodes(*[n for n in cluster.nodes if not n.alive()])
    yield cluster
    cluster.restart_nodes(*[n for n in cluster.nodes if not n.alive()])


@pytest.mark.parametrize("fault", ["sigkill", "clean-shutdown"])
def test_a_leader_lost_mid_stream_loses_and_repeats_nothing(kd, healthy, tmp_path, fault):
    cluster = healthy
    servers = cluster.bootstrap
    topic = kt.create_topic(servers, kt.unique_name("failover"), PARTITIONS)
    before = produce(servers, topic, 0, 60)
    entries = ["%s:%d" % (topic, p) for p in range(PARTITIONS)]
    # A long idle deadline: no partition is passed over while leadership moves, so the output
    # must be exactly the merge.
    ds = kd.KafkaDataset(entries, servers=servers, eof=False, timeout=30000)
    it = iter(ds)
    head = read_with_deadline(it, 30, 60)
    checkpoint = tf.train.Checkpoint(iterator=it).write(str(tmp_path / "before-fault"))

    victim = cluster.node_for(topic, 0)
    victim.kill() if fault == "sigkill" else victim.stop()
    # Two in-sync replicas remain: acks=all still succeeds while the victim is away.
    during = produce(servers, topic, 60, 60)
    middle = read_with_deadline(it, 60, 120)
    cluster.restart_nodes(victim)
    # One message more per partition than is read: every partition has a later head, so the
    # last element read is emitted without waiting out the idle deadline.
    after = produce(servers, topic, 120, 30 + PARTITIONS)
    expected = kway_merge(streams_from_delivered(before + during + after, list(range(PARTITIONS))))
    expected = expected[:150]

    rest = read_with_deadline(it, 60, 120)
    got = head + middle + rest
    assert got == expected, first_difference(got, expected)

    # The checkpoint from before the fault restores into a new iterator after it.
    restored = iter(ds)
    tf.train.Checkpoint(iterator=restored).read(checkpoint).assert_consumed()
    again = read_with_deadline(restored, 120, 120)
    assert again == expected[30:], first_difference(again, expected[30:])


def test_every_broker_down_is_unavailable_at_the_deadline_then_a_checkpoint_restores(
    kd, healthy, tmp_path
):
    cluster = healthy
    servers = cluster.bootstrap
    topic = kt.create_topic(servers, kt.unique_name("outage"), PARTITIONS)
    delivered = produce(servers, topic, 0, 30)
    entries = ["%s:%d" % (topic, p) for p in range(PARTITIONS)]
    make = lambda: kd.KafkaDataset(entries, servers=servers, eof=True, timeout=1000)  # noqa: E731
    expected = kway_merge(streams_from_delivered(delivered, list(range(PARTITIONS))))
    it = iter(make())
    head = read_with_deadline(it, 10, 60)
    checkpoint = tf.train.Checkpoint(iterator=it).write(str(tmp_path / "before-outage"))
    del it

    for node in cluster.nodes:
        node.kill()
    # The documented deadline at iterator start: max(10 s, 2 x timeout) = 10 s here.
    start = time.monotonic()
    with pytest.raises(tf.errors.UnavailableError) as raised:
        next(iter(make()))
    elapsed = time.monotonic() - start
    assert 9 <= elapsed < 30, "Unavailable after %.1f s, the deadline is 10 s" % elapsed
    assert "127.0.0.1" in str(raised.value), str(raised.value)

    cluster.restart_nodes(*cluster.nodes)
    restored = iter(make())
    tf.train.Checkpoint(iterator=restored).read(checkpoint).assert_consumed()
    rest = read_with_deadline(restored, 20, 120)
    assert head + rest == expected, first_difference(head + rest, expected)
    with pytest.raises(StopIteration):
        next(restored)
