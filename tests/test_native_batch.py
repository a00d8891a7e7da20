"""The batch_size extension: 1-D batches filled natively, exact order and checkpoints."""

import os

import pytest
import tensorflow as tf
from helpers import BASE_TS, eager_values

D = [b"D%d" % i for i in range(10)]


@pytest.fixture
def topic(kafka):
    name = kafka.new_topic(1)
    kafka.produce(name, [(0, D[i], b"k%d" % i if i % 3 else None, BASE_TS + i) for i in range(10)])
    return name


def _batches(ds):
    return [b.numpy().tolist() for b in ds]


def test_batches_concatenate_to_the_message_sequence(kd, kafka, topic):
    ds = kd.KafkaDataset([topic], servers=kafka.servers, eof=True, timeout=200, batch_size=4)
    assert ds.element_spec == tf.TensorSpec([None], tf.string)
    batches = _batches(ds)
    assert all(1 <= len(b) <= 4 for b in batches), batches
    assert sum(batches, []) == D


def test_batches_with_keys(kd, kafka, topic):
    ds = kd.KafkaDataset(
        [topic], servers=kafka.servers, eof=True, timeout=200, message_key=True, batch_size=3
    )
    values, keys = [], []
    for v, k in ds:
        assert v.shape == k.shape
        values += v.numpy().tolist()
        keys += k.numpy().tolist()
    assert values == D
    assert keys == [b"k%d" % i if i % 3 else b"" for i in range(10)]


def test_time_order_is_the_same_as_one_message_per_element(kd, kafka):
    name = kafka.new_topic(3)
    records = [(i % 3, b"m%d" % i, None, BASE_TS + (i * 7919) % 97) for i in range(90)]
    kafka.produce(name, records)
    scalar = eager_values(kd.KafkaDataset([name], servers=kafka.servers, eof=True, timeout=200))
    batched = kd.KafkaDataset([name], servers=kafka.servers, eof=True, timeout=200, batch_size=7)
    assert sum(_batches(batched), []) == scalar


def test_checkpoint_between_batches_is_exact(kd, kafka, topic, tmp_path):
    def make():
        return kd.KafkaDataset([topic], servers=kafka.servers, eof=True, timeout=200, batch_size=3)

    it = iter(make())
    first = next(it).numpy().tolist()
    path = tf.train.Checkpoint(iterator=it).write(os.path.join(tmp_path, "ckpt"))
    rest = sum((b.numpy().tolist() for b in it), [])
    assert first + rest == D
    restored = iter(make())
    tf.train.Checkpoint(iterator=restored).read(path).assert_consumed()
    assert sum((b.numpy().tolist() for b in restored), []) == rest


@pytest.mark.parametrize(
    "value, error", [(-1, ValueError), ("4", TypeError), (True, TypeError), (2.5, TypeError)]
)
def test_bad_batch_size(kd, value, error):
    with pytest.raises(error, match="batch_size"):
        kd.KafkaDataset(["t:0"], servers="localhost:9092", batch_size=value)
