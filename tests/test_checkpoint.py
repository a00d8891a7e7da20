"""Save/restore (DESIGN §2.5): the seed example's TF1 Saver flow across processes, and TF2
tf.train.Checkpoint in-process. Save at any point + restore == the uninterrupted run."""

import json

import pytest
import tensorflow as tf
from helpers import (
    BASE_TS,
    eager_values,
    first_difference,
    kway_merge,
    parse_result,
    streams_from_delivered,
)

# The seed example (seeds/KafkaDataset.md), verbatim where possible; `import tensorflow.compat.v1
# as tf` is how TF1 code runs on TF 2.x. Reads are bounded by a RunOptions deadline so a broken
# reader fails instead of hanging.
SEED_GRAPH = r"""
import json, sys
import kafka_dataset  # noqa: F401  -- installs tf.data.KafkaDataset
import tensorflow.compat.v1 as tf
from tensorflow.python.data.ops import iterator_ops
tf.disable_eager_execution()
args = json.loads(sys.argv[1])

kafka_dataset = tf.data.KafkaDataset(topics=args["topics"],
                                     servers=args["servers"],
                                     group=args["group"],
                                     timeout=100,
                                     eof=False)
iterator = iterator_ops.Iterator.from_structure(kafka_dataset.output_types)
init_op = iterator.make_initializer(kafka_dataset)
get_next = iterator.get_next()
saveable_obj = tf.data.experimental.make_saveable_from_iterator(iterator)
tf.add_to_collection(tf.GraphKeys.SAVEABLE_OBJECTS, saveable_obj)
saver = tf.train.Saver()
opts = tf.RunOptions(timeout_in_ms=20000)
"""

SEED_SAVE = (
    SEED_GRAPH
    + r"""
got = []
with tf.Session() as sess:
  sess.run(init_op)
  for i in range(args["n"]):
    got.append(sess.run(get_next, options=opts).decode())
  saver.save(sess, args["ckpt"])
print("RESULT " + json.dumps(got))
"""
)

SEED_RESTORE = (
    SEED_GRAPH
    + r"""
got = []
with tf.Session() as sess:
  sess.run(init_op)                 # initializer first, then restore (DESIGN §5)
  saver.restore(sess, args["ckpt"])
  for i in range(args["n"]):
    got.append(sess.run(get_next, options=opts).decode())
  try:   # caught up: the next read must block (no duplicate, no extra message)
    extra = sess.run(get_next, options=tf.RunOptions(timeout_in_ms=1500)).decode()
  except tf.errors.DeadlineExceededError:
    extra = None
print("RESULT " + json.dumps({"got": got, "extra": extra}))
"""
)


def _produce_interleaved(kafka, topic, partitions, total):
    records = []
    for i in range(total):
        p = (i * 7 + i // 3) % partitions
        ts = BASE_TS + 10 * i + (5 if i % 4 == 0 else 0) - (15 if i % 9 == 0 and i else 0)
        records.append((p, "m%03d-p%d" % (i, p), None, ts))
    return kafka.produce(topic, records)


@pytest.mark.parametrize(
    "partitions, total, n",
    [(1, 100, 37), (3, 60, 25), (3, 30, 0), (2, 20, 20)],
    ids=["seed-1-partition", "3-partitions", "save-before-first", "save-at-end"],
)
def test_seed_example_saves_and_a_new_process_continues(
    kd, kafka, run_python, tmp_path, partitions, total, n
):
    topic = kafka.new_topic(partitions)
    delivered = _produce_interleaved(kafka, topic, partitions, total)
    expected = [
        v.decode() for v in kway_merge(streams_from_delivered(delivered, range(partitions)))
    ]
    (tmp_path / "ckpt").mkdir()
    args = {
        "topics": ["%s:%d:0:-1" % (topic, p) for p in range(partitions)],
        "servers": kafka.servers,
        "group": kafka.new_group(),
        "ckpt": "ckpt/1",
    }

    saved = parse_result(
        run_python(SEED_SAVE, [json.dumps(dict(args, n=n))], cwd=str(tmp_path)).stdout
    )
    assert saved == expected[:n], first_difference(saved, expected[:n])
    assert (tmp_path / "ckpt" / "checkpoint").exists()

    restored = parse_result(
        run_python(SEED_RESTORE, [json.dumps(dict(args, n=total - n))], cwd=str(tmp_path)).stdout
    )
    assert restored["got"] == expected[n:], first_difference(restored["got"], expected[n:])
    assert restored["extra"] is None, "read %r past the end of the data" % restored["extra"]
    assert saved + restored["got"] == expected


def _scenario(kafka, partitions=4, total=48):
    topic = kafka.new_topic(partitions)
    delivered = _produce_interleaved(kafka, topic, partitions, total)
    expected = kway_merge(streams_from_delivered(delivered, range(partitions)))
    return topic, expected


@pytest.mark.parametrize("k", [0, 1, 17, 48])
def test_tf2_checkpoint_round_trip(kd, kafka, tmp_path, k):
    topic, expected = _scenario(kafka)
    ds = kd.KafkaDataset([topic], servers=kafka.servers, eof=True, timeout=300)
    it = iter(ds)
    head = [next(it).numpy() for _ in range(k)]
    path = tf.train.Checkpoint(iterator=it).save(str(tmp_path / "ckpt"))
    tail = [x.numpy() for x in it]
    assert head + tail == expected, first_difference(head + tail, expected)

    it2 = iter(ds)
    tf.train.Checkpoint(iterator=it2).restore(path).assert_consumed()
    tail2 = [x.numpy() for x in it2]
    assert tail2 == tail, first_difference(tail2, tail)


def test_tf2_restore_twice_from_one_checkpoint_and_into_a_fresh_dataset(kd, kafka, tmp_path):
    topic, expected = _scenario(kafka, partitions=3, total=30)
    make = lambda: kd.KafkaDataset([topic], servers=kafka.servers, eof=True, timeout=300)  # noqa: E731
    it = iter(make())
    head = [next(it).numpy() for _ in range(11)]
    path = tf.train.Checkpoint(iterator=it).save(str(tmp_path / "ckpt"))
    for _ in range(2):  # a checkpoint is not consumed by restoring it
        restored = iter(make())  # a new dataset object with the same arguments
        tf.train.Checkpoint(iterator=restored).restore(path).assert_consumed()
        rest = eager_values(_Iterated(restored))
        assert head + rest == expected, first_difference(head + rest, expected)


class _Iterated:
    """Lets eager_values() drain an already-created iterator."""

    def __init__(self, iterator):
        self._iterator = iterator

    def __iter__(self):
        return self._iterator


def test_restore_into_different_streams_is_rejected(kd, kafka, tmp_path):
    topic_a, _ = _scenario(kafka, partitions=2, total=10)
    topic_b, _ = _scenario(kafka, partitions=2, total=10)
    it = iter(kd.KafkaDataset([topic_a], servers=kafka.servers, eof=True, timeout=300))
    next(it)
    path = tf.train.Checkpoint(iterator=it).save(str(tmp_path / "ckpt"))
    other = iter(kd.KafkaDataset([topic_b], servers=kafka.servers, eof=True, timeout=300))
    with pytest.raises((tf.errors.FailedPreconditionError, tf.errors.InvalidArgumentError)) as info:
        tf.train.Checkpoint(iterator=other).restore(path)
        next(other)
    assert topic_a in str(info.value) or topic_b in str(info.value), str(info.value)
