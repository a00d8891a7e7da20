"""Group offsets follow training, not fetching (DESIGN §2.5, README "Where we differ"): with a
group, the library commits the next *unemitted* offset of each partition periodically
(``auto.commit.interval.ms``), when the iterator is saved and when it is destroyed. Committed
offsets are read back from the broker with a plain confluent-kafka consumer of the same group;
at no sample may they exceed what was emitted, although librdkafka has prefetched far more."""

import gc
import time

import pytest
import tensorflow as tf
from helpers import BASE_TS, Stopwatch, parse_result
from kafka_dataset import testing as kt

PARTITIONS = 2
BACKLOG = 2000  # messages; librdkafka prefetches far more than the test ever reads


@pytest.fixture
def backlog(kafka):
    topic = kafka.new_topic(PARTITIONS)
    # Batched: `stored` starts mid-log, inside a record batch.
    delivered = kafka.produce(
        topic, [(i % PARTITIONS, "m%04d" % i, None, BASE_TS + i) for i in range(BACKLOG)]
    )
    where = {d.value.decode(): (d.partition, d.offset) for d in delivered}
    return topic, where


class Committed:
    """Reads a group's committed offsets (a consumer that never joins or commits itself)."""

    def __init__(self, servers, group, topic):
        from confluent_kafka import Consumer

        self.topic = topic
        self.consumer = Consumer(
            {"bootstrap.servers": servers, "group.id": group, "enable.auto.commit": False}
        )

    def read(self):
        """{partition: committed offset}; partitions without a commit are left out."""
        from confluent_kafka import KafkaError, KafkaException, TopicPartition

        parts = [TopicPartition(self.topic, p) for p in range(PARTITIONS)]
        # The coordinator of a new group may move or still be loading: the broker answers
        # NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS for a moment; ask again.
        transient = {
            KafkaError.NOT_COORDINATOR,
            KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
            KafkaError.COORDINATOR_NOT_AVAILABLE,
        }
        deadline = time.monotonic() + 15
        while True:
            try:
                answer = self.consumer.committed(parts, timeout=10)
                break
            except KafkaException as e:
                if e.args[0].code() not in transient or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        out = {}
        for tp in answer:
            assert tp.error is None, tp.error
            if tp.offset >= 0:
                out[tp.partition] = tp.offset
        return out

    def wait_for(self, expected, timeout=15.0):
        last = []

        def matches():
            last[:] = [self.read()]
            return last[0] == expected

        try:
            kt.wait_for(matches, timeout, "committed offsets %r" % (expected,), interval=0.1)
        except TimeoutError:
            raise AssertionError(
                "committed offsets are %r, expected %r" % (last and last[0], expected)
            )

    def close(self):
        self.consumer.close()


class Emitted:
    """Tracks the next unemitted offset per partition of what the iterator returned."""

    def __init__(self, iterator, where):
        self.iterator, self.where = iterator, where
        self.next = {p: 0 for p in range(PARTITIONS)}

    def read(self, n=1):
        for _ in range(n):
            partition, offset = self.where[next(self.iterator).numpy().decode()]
            assert offset == self.next[partition], "offset order broken"
            self.next[partition] = offset + 1

    def assert_not_exceeded(self, committed, when):
        for p, offset in committed.items():
            assert offset <= self.next[p], (
                "%s: partition %d committed %d but only offsets < %d were emitted (committed %r)"
                % (when, p, offset, self.next[p], committed)
            )


def _dataset(kd, kafka, topic, group, entries=None, interval_ms=200):
    return kd.KafkaDataset(
        entries or ["%s:%d" % (topic, p) for p in range(PARTITIONS)],
        servers=kafka.servers,
        group=group,
        eof=False,
        timeout=200,
        config_global=["auto.commit.interval.ms=%d" % interval_ms],
    )


STEP_S = 0.02  # simulated training-step time between reads in the periodic test


def test_save_commits_exactly_the_emitted_positions(kd, kafka, backlog, tmp_path):
    """10 of 2000 read: committed offsets stay within the 10 emitted at every sample (although
    librdkafka has fetched far more), and saving commits exactly the emitted positions."""
    topic, where = backlog
    group = kafka.new_group()
    committed = Committed(kafka.servers, group, topic)
    try:
        it = iter(_dataset(kd, kafka, topic, group))
        emitted = Emitted(it, where)
        for i in range(10):
            emitted.read()
            emitted.assert_not_exceeded(committed.read(), "after %d elements" % (i + 1))
        assert sum(emitted.next.values()) == 10
        tf.train.Checkpoint(iterator=it).write(str(tmp_path / "ckpt"))
        committed.wait_for(dict(emitted.next))
        # A second save after more reads moves the committed offsets with it.
        emitted.read(9)
        tf.train.Checkpoint(iterator=it).write(str(tmp_path / "ckpt2"))
        committed.wait_for(dict(emitted.next))
        assert sum(emitted.next.values()) == 19
    finally:
        committed.close()


def test_periodic_commit_while_reading(kd, kafka, backlog):
    """auto.commit.interval.ms=200 and no save: reading alone commits, and at every sample the
    committed offsets are within what was emitted."""
    topic, where = backlog
    group = kafka.new_group()
    committed = Committed(kafka.servers, group, topic)
    try:
        emitted = Emitted(iter(_dataset(kd, kafka, topic, group)), where)
        watch, samples, moved, last = Stopwatch(), 0, 0, {}
        while moved < 2:  # two different commits seen: the interval repeats
            emitted.read()
            now = committed.read()
            samples += 1
            emitted.assert_not_exceeded(now, "sample %d while reading" % samples)
            if now != last:
                moved += 1
                last = now
            assert watch.elapsed < 6 and sum(emitted.next.values()) < BACKLOG - 10, (
                "no periodic commit within %.1f s of reading (auto.commit.interval.ms=200, %d "
                "elements emitted, no save): committed offsets %r"
                % (watch.elapsed, sum(emitted.next.values()), now)
            )
            time.sleep(STEP_S)  # the training step
    finally:
        committed.close()


def test_destroying_the_iterator_commits_and_stored_resumes_there(kd, kafka, backlog):
    topic, where = backlog
    group = kafka.new_group()
    committed = Committed(kafka.servers, group, topic)
    try:
        it = iter(_dataset(kd, kafka, topic, group, interval_ms=600_000))
        emitted = Emitted(it, where)
        emitted.read(17)
        emitted.assert_not_exceeded(committed.read(), "before the iterator was destroyed")
        final = dict(emitted.next)
        del it, emitted
        gc.collect()
        committed.wait_for(final)
    finally:
        committed.close()

    # The `stored` start resumes at the group's committed offsets.
    stored = ["%s:%d:stored" % (topic, p) for p in range(PARTITIONS)]
    it = iter(_dataset(kd, kafka, topic, group, entries=stored))
    firsts = {}
    for _ in range(10):
        partition, offset = where[next(it).numpy().decode()]
        firsts.setdefault(partition, offset)
    assert firsts == final, (firsts, final)


def test_long_interval_commits_only_on_save_and_destroy(kd, kafka, backlog, tmp_path):
    """With a long interval, reading alone commits nothing; save and destroy do."""
    topic, where = backlog
    group = kafka.new_group()
    committed = Committed(kafka.servers, group, topic)
    try:
        it = iter(_dataset(kd, kafka, topic, group, interval_ms=600_000))
        emitted = Emitted(it, where)
        emitted.read(25)
        assert committed.read() == {}, "committed without a save, close or due interval"
        tf.train.Checkpoint(iterator=it).write(str(tmp_path / "ckpt"))
        committed.wait_for(dict(emitted.next))
        emitted.read(3)
        final = dict(emitted.next)
        del it, emitted
        gc.collect()
        committed.wait_for(final)
    finally:
        committed.close()


# The broker goes away, then the iterator is destroyed: its commit on destroy must not hold the
# training process (a private broker, so the session's keeps running). A timer reports a
# teardown still blocked after BLOCKED_S and ends the child, so a failure costs seconds.
BLOCKED_S = 12
TEARDOWN_WITHOUT_BROKER = r"""
import gc, json, os, sys, threading, time
import tensorflow as tf
import kafka_dataset
from kafka_dataset import testing as kt
blocked_s = float(sys.argv[1])
broker = kt.start_kafka()
topic = kt.create_topic(broker.bootstrap, "teardown", 1)
kt.produce(broker.bootstrap, topic, [(0, b"m%d" % i, None, 1700000000000 + i) for i in range(50)])
it = iter(kafka_dataset.KafkaDataset([topic + ":0"], servers=broker.bootstrap,
                                     group="teardown-group", eof=False, timeout=200))
assert [next(it).numpy() for _ in range(10)][-1] == b"m9"
broker.stop(timeout=0)  # SIGKILL: gone at once

def blocked():
    print("RESULT " + json.dumps({"teardown_s": None}), flush=True)
    os._exit(0)

timer = threading.Timer(blocked_s, blocked)
timer.daemon = True
timer.start()
start = time.monotonic()
del it
gc.collect()
timer.cancel()
print("RESULT " + json.dumps({"teardown_s": time.monotonic() - start}), flush=True)
"""


def test_destroying_the_iterator_is_prompt_when_the_broker_is_gone(kd, run_python):
    """With a group the iterator commits when destroyed; with the broker gone that commit must
    not hold the training process (without a group teardown takes ~0.1 s)."""
    try:
        kt.find_kafka_libs()
    except kt.BrokerError as e:
        pytest.fail(str(e), pytrace=False)
    proc = run_python(TEARDOWN_WITHOUT_BROKER, [BLOCKED_S], timeout=60)
    took = parse_result(proc.stdout)["teardown_s"]
    assert took is not None, (
        "destroying an iterator with a group while the broker is gone still blocked after %d s"
        % BLOCKED_S
    )
    assert took < 10, "destroying an iterator with a group while the broker is gone took %.1f s" % (
        took
    )


def test_commit_checkpoint_commits_exactly_the_last_saved_positions(kd, kafka, backlog, tmp_path):
    """commit="checkpoint": the group's committed offsets are the positions of the last saved
    checkpoint, and nothing else: not periodically (the interval here is 100 ms), not when the
    iterator goes away. A fresh iterator starting at `stored` then resumes exactly where the
    checkpoint does."""
    topic, where = backlog
    group = kafka.new_group()
    committed = Committed(kafka.servers, group, topic)
    entries = ["%s:%d" % (topic, p) for p in range(PARTITIONS)]
    make = lambda entries: kd.KafkaDataset(  # noqa: E731
        entries,
        servers=kafka.servers,
        group=group,
        timeout=200,
        config_global=["auto.commit.interval.ms=100"],
        commit="checkpoint",
    )
    it = iter(make(entries))
    emitted = Emitted(it, where)
    for _ in range(25):  # ~10 commit intervals of reading
        emitted.read(2)
        time.sleep(STEP_S * 2)
    assert committed.read() == {}, "committed before any checkpoint"
    path = tf.train.Checkpoint(iterator=it).write(str(tmp_path / "first"))
    saved = dict(emitted.next)
    committed.wait_for(saved)
    for _ in range(25):
        emitted.read(2)
        time.sleep(STEP_S * 2)
    assert committed.read() == saved, "committed without a checkpoint"
    del it, emitted
    gc.collect()
    assert committed.read() == saved, "committed when the iterator went away"

    stored = [next(iter(make(["%s:%d:stored" % (topic, p) for p in range(PARTITIONS)])))]
    restored = iter(make(entries))
    tf.train.Checkpoint(iterator=restored).read(path).assert_consumed()
    assert [next(restored).numpy()] == [v.numpy() for v in stored]
    committed.close()


@pytest.mark.parametrize(
    "kwargs, error, needle",
    [
        (dict(commit="checkpoint"), tf.errors.InvalidArgumentError, "needs a consumer group"),
        (
            dict(commit="checkpoint", group="g", subscribe=True),
            tf.errors.InvalidArgumentError,
            "cannot be combined with commit",
        ),
        (
            dict(commit="sometimes", group="g"),
            tf.errors.InvalidArgumentError,
            "kafka_dataset.commit",
        ),
        (dict(commit=1, group="g"), TypeError, "commit must be a str"),
    ],
)
def test_commit_mode_misuse_is_refused_naming_it(kd, kafka, kwargs, error, needle):
    topic = kafka.new_topic(1)
    with pytest.raises(error, match=needle):
        iter(kd.KafkaDataset([topic], servers=kafka.servers, **kwargs))
