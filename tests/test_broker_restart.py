"""A real broker restart mid-stream: tansu with its libsql file storage is SIGKILLed while an
iterator reads, and started again on the same port and file. The iterator rides it out (get_next
waits while the broker is gone), and its output is exactly the timestamp-ordered merge of
everything produced before and after: nothing lost, nothing repeated. A checkpoint written
before the crash restores into a new iterator after it.
"""

import os
import signal
import threading

import pytest
import tensorflow as tf
from helpers import BASE_TS, first_difference, kway_merge, streams_from_delivered, to_py
from kafka_dataset import testing as kt

PARTITIONS = 3


@pytest.fixture
def restartable(tmp_path):
    """A tansu of our own (not the session's), storing in tmp_path/tansu.db; `restart()`
    SIGKILLs it and starts it again on the same port and file."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        pytest.skip("restarts a broker of its own; an external cluster is not restarted")
    state = {"broker": kt.start_tansu(storage="sqlite://tansu.db", cwd=str(tmp_path))}

    def restart():
        old = state["broker"]
        os.kill(old.process.pid, signal.SIGKILL)
        old.process.wait(10)
        old.stop()
        port = int(old.bootstrap.rsplit(":", 1)[1])
        state["broker"] = kt.start_tansu(port=port, storage="sqlite://tansu.db", cwd=str(tmp_path))
        return state["broker"]

    state["restart"] = restart
    yield state
    state["broker"].stop()


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


def test_a_broker_killed_and_restarted_mid_stream_loses_and_repeats_nothing(
    kd, restartable, tmp_path
):
    servers = restartable["broker"].bootstrap
    topic = kt.create_topic(servers, kt.unique_name("restart"), PARTITIONS)
    before = produce(servers, topic, 0, 60)
    entries = ["%s:%d" % (topic, p) for p in range(PARTITIONS)]
    # A long idle deadline: no partition is passed over while the broker is away, so the
    # output must be exactly the merge.
    ds = kd.KafkaDataset(entries, servers=servers, eof=False, timeout=30000)
    it = iter(ds)
    head = read_with_deadline(it, 30, 60)
    checkpoint = tf.train.Checkpoint(iterator=it).write(str(tmp_path / "before-crash"))

    servers = restartable["restart"]().bootstrap
    # One message more per partition than is read: every partition has a later head, so the
    # last element read is emitted without waiting out the idle deadline.
    after = produce(servers, topic, 60, 60 + PARTITIONS)
    delivered = before + after
    expected = kway_merge(streams_from_delivered(delivered, list(range(PARTITIONS))))[:120]

    rest = read_with_deadline(it, 90, 120)
    got = head + rest
    assert got == expected, first_difference(got, expected)

    # The checkpoint from before the crash restores into a new iterator after it.
    restored = iter(ds)
    tf.train.Checkpoint(iterator=restored).read(checkpoint).assert_consumed()
    again = read_with_deadline(restored, 90, 120)
    assert again == expected[30:], first_difference(again, expected[30:])
