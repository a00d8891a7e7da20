"""Restoring a checkpoint that does not fit (DESIGN §2.5, §2.7): another topic, partition,
range or entry order is FailedPrecondition naming the difference; corrupted, truncated, foreign
and future-version state is a clear error. The process survives every rejection: afterwards the
good checkpoint still restores and continues exactly.

The checkpoints are modified with helpers.rewrite_kafka_state, which re-encodes the iterator's
saved entries with TF's own ops; an unmodified rewrite restores normally (checked first), so each
rejection is caused by the one change the case made."""

import random
import re
import struct

import pytest
import tensorflow as tf
from helpers import (
    BASE_TS,
    GraphReader,
    first_difference,
    kafka_state_entries,
    kway_merge,
    rewrite_kafka_state,
    seal_state,
    state_with_version,
    streams_from_delivered,
    to_py,
)

REJECTED = (tf.errors.FailedPreconditionError, tf.errors.InvalidArgumentError)


@pytest.fixture(scope="module")
def topics(broker):
    """Topic A (3 partitions) and topic B (2 partitions), 12 messages each."""
    from kafka_dataset import testing as kt

    out = {}
    for name, partitions in (("A", 3), ("B", 2)):
        topic = kt.create_topic(broker.bootstrap, kt.unique_name("restore-errors"), partitions)
        delivered = kt.produce(
            broker.bootstrap,
            topic,
            [(i % partitions, "%s%02d" % (name, i), None, BASE_TS + i) for i in range(12)],
        )
        out[name] = (topic, delivered)
    return out


def _dataset(kd, servers, entries):
    return kd.KafkaDataset(entries, servers=servers, eof=True, timeout=200)


def _drain(iterator):
    return [to_py(x) for x in iterator]


@pytest.fixture
def saved(kd, kafka, topics, tmp_path):
    """A checkpoint of entries [A:0:0:-1, A:1:0:-1] after 3 elements, and its continuation."""
    a, delivered = topics["A"]
    entries = ["%s:0:0:-1" % a, "%s:1:0:-1" % a]
    expected = kway_merge(streams_from_delivered(delivered, [0, 1]))
    it = iter(_dataset(kd, kafka.servers, entries))
    head = [to_py(next(it)) for _ in range(3)]
    assert head == expected[:3]
    path = tf.train.Checkpoint(iterator=it).write(str(tmp_path / "good"))
    return {"path": path, "entries": entries, "rest": expected[3:], "a": a, "b": topics["B"][0]}


def _restore(kd, servers, entries, path):
    it = iter(_dataset(kd, servers, entries))
    tf.train.Checkpoint(iterator=it).read(path).assert_consumed()
    return it


def _assert_good_restore_still_works(kd, kafka, saved):
    rest = _drain(_restore(kd, kafka.servers, saved["entries"], saved["path"]))
    assert rest == saved["rest"], first_difference(rest, saved["rest"])


# (case id, entries of the restoring dataset from topic names a/b, what the error must name:
# stream names, or offsets as numbers standing alone)
MISMATCHES = [
    ("other-topic", lambda a, b: [b + ":0:0:-1", b + ":1:0:-1"], lambda a, b: [a, b]),
    (
        "other-partition",
        lambda a, b: [a + ":0:0:-1", a + ":2:0:-1"],
        lambda a, b: [a + ":1", a + ":2"],
    ),
    ("other-last", lambda a, b: [a + ":0:0:-1", a + ":1:0:17"], lambda a, b: [a + ":1", 17]),
    ("other-start", lambda a, b: [a + ":0:4:-1", a + ":1:0:-1"], lambda a, b: [a + ":0", 4]),
    ("other-order", lambda a, b: [a + ":1:0:-1", a + ":0:0:-1"], lambda a, b: [a + ":0", a + ":1"]),
    ("fewer-streams", lambda a, b: [a + ":0:0:-1"], lambda a, b: [a + ":1"]),
    (
        "more-streams",
        lambda a, b: [a + ":0:0:-1", a + ":1:0:-1", a + ":2:0:-1"],
        lambda a, b: [a + ":2"],
    ),
    (
        "split-range",
        lambda a, b: [a + ":0:0:5", a + ":0:6:-1", a + ":1:0:-1"],
        lambda a, b: [a + ":0", 5],
    ),
]


@pytest.mark.parametrize("case", MISMATCHES, ids=[c[0] for c in MISMATCHES])
def test_identity_mismatch_is_rejected_naming_the_difference(kd, kafka, saved, case):
    _, make_entries, make_names = case
    entries = make_entries(saved["a"], saved["b"])
    with pytest.raises(REJECTED) as info:
        _restore(kd, kafka.servers, entries, saved["path"])
    message = str(info.value)
    for name in make_names(saved["a"], saved["b"]):
        if isinstance(name, int):  # an offset, not a digit inside a topic's hex suffix
            found = re.search(r"(?<![0-9a-z])%d(?![0-9a-z])" % name, message)
        else:
            found = name in message
        assert found, "error does not name %r: %s" % (name, message)
    _assert_good_restore_still_works(kd, kafka, saved)


@pytest.mark.parametrize(
    "spelling",
    [lambda a: [a + ":0", a + ":1"], lambda a: [a + ":0:beginning", a + ":1:0"]],
    ids=["defaults-omitted", "named-start"],
)
def test_same_streams_spelled_differently_restore(kd, kafka, saved, spelling):
    rest = _drain(_restore(kd, kafka.servers, spelling(saved["a"]), saved["path"]))
    assert rest == saved["rest"], first_difference(rest, saved["rest"])


def _flip(state, index):
    return state[:index] + bytes([state[index] ^ 0x10]) + state[index + 1 :]


def _stream_count_at(state):
    """Byte offset of the stream count in a version 4 state of fixed partitions: after magic,
    version, the empty group name (u32 length 0), worker count and index, and the list of
    subscribed partitions (u32 count, then per partition a u32-length topic and an i32
    partition)."""
    assert state[6:10] == b"\0\0\0\0", "no group name"
    pos = 6 + 4 + 4 + 4
    (partitions,) = struct.unpack_from("<I", state, pos)
    pos += 4
    for _ in range(partitions):
        (length,) = struct.unpack_from("<I", state, pos)
        pos += 4 + length + 4
    return pos


def _set_stream_count(state, count):
    at = _stream_count_at(state)
    return seal_state(state[:at] + struct.pack("<I", count) + state[at + 4 : -4])


def _set_assignment(state, workers, index):
    return seal_state(state[:10] + struct.pack("<II", workers, index) + state[18:-4])


# (case id, transform of the saved entries {key: value}, substring the error must contain)
CORRUPTIONS = [
    # Byte 28: inside the first subscribed partition's topic name.
    ("flip-topic-byte", lambda e: dict(e, state=_flip(e["state"], 28)), "corrupted"),
    ("flip-crc", lambda e: dict(e, state=_flip(e["state"], len(e["state"]) - 1)), "corrupted"),
    ("truncated-by-one", lambda e: dict(e, state=e["state"][:-1]), "corrupted"),
    ("truncated-to-header", lambda e: dict(e, state=e["state"][:6]), "corrupted"),
    ("empty", lambda e: dict(e, state=b""), "corrupted"),
    ("foreign-bytes", lambda e: dict(e, state=b"not a kafka-dataset state at all"), "corrupted"),
    (
        "future-version",
        lambda e: dict(e, state=state_with_version(e["state"], 5)),
        "format version 5",
    ),
    ("zero-workers", lambda e: dict(e, state=_set_assignment(e["state"], 0, 0)), "corrupted"),
    (
        "index-beyond-workers",
        lambda e: dict(e, state=_set_assignment(e["state"], 2, 2)),
        "corrupted",
    ),
    (
        "another-worker",
        lambda e: dict(e, state=_set_assignment(e["state"], 2, 1)),
        "saved by worker 1 of 2",
    ),
    (
        "huge-stream-count",
        lambda e: dict(e, state=_set_stream_count(e["state"], 0x7FFFFFFF)),
        "corrupted",
    ),
    ("extra-stream-count", lambda e: dict(e, state=_set_stream_count(e["state"], 3)), "corrupted"),
    ("trailing-bytes", lambda e: dict(e, state=seal_state(e["state"][:-4] + b"\0\0")), "corrupted"),
    ("no-state-entry", lambda e: {k: v for k, v in e.items() if k != "state"}, '"state"'),
]


def test_unmodified_rewrite_restores(kd, kafka, saved, tmp_path):
    """The rewriting tool itself is faithful, and the CRC helper matches the codec's."""
    state = bytes(kafka_state_entries(saved["path"])["state"])
    assert state_with_version(state, 4) == state
    path = rewrite_kafka_state(saved["path"], tmp_path / "same", lambda e: e)
    rest = _drain(_restore(kd, kafka.servers, saved["entries"], path))
    assert rest == saved["rest"], first_difference(rest, saved["rest"])


@pytest.mark.parametrize("case", CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS])
def test_bad_state_is_a_clear_error(kd, kafka, saved, tmp_path, case):
    _, transform, needle = case
    path = rewrite_kafka_state(saved["path"], tmp_path / "bad", transform)
    with pytest.raises(REJECTED) as info:
        _restore(kd, kafka.servers, saved["entries"], path)
    assert needle in str(info.value), str(info.value)
    _assert_good_restore_still_works(kd, kafka, saved)


def test_random_byte_flips_are_all_rejected(kd, kafka, saved, tmp_path):
    state = bytes(kafka_state_entries(saved["path"])["state"])
    rng = random.Random(7)
    for i, index in enumerate(rng.sample(range(len(state)), 6)):
        path = rewrite_kafka_state(
            saved["path"], tmp_path / ("flip%d" % i), lambda e: dict(e, state=_flip(state, index))
        )
        with pytest.raises(REJECTED):
            _restore(kd, kafka.servers, saved["entries"], path)
    _assert_good_restore_still_works(kd, kafka, saved)


def test_tf1_saver_rejects_a_future_version(kd, kafka, topics, tmp_path):
    """The same check through the seed example's Saver path (variant key ``..._STATE``)."""
    a, delivered = topics["A"]
    expected = kway_merge(streams_from_delivered(delivered, [0, 1, 2]))

    def make():
        return kd.KafkaDatasetV1([a], servers=kafka.servers, eof=True, timeout=200)

    (tmp_path / "tf1").mkdir()
    with GraphReader(make, saveable=True) as r:
        r.init()
        head = r.take(5)
        good = r.save(tmp_path / "tf1" / "good")
    bad = rewrite_kafka_state(
        good, tmp_path / "tf1" / "bad", lambda e: dict(e, state=state_with_version(e["state"], 5))
    )
    with GraphReader(make, saveable=True) as r:
        with pytest.raises(REJECTED) as info:
            r.restore(bad)
        assert "format version 5" in str(info.value), str(info.value)
    with GraphReader(make, saveable=True) as r:
        rest = r.restore(good).read_to_end()
    assert head + rest == expected, first_difference(head + rest, expected)
