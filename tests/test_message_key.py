"""message_key=True yields (value, key); a null key reads as b"" (DESIGN §2.4)."""

import tensorflow as tf
from helpers import BASE_TS, GraphReader, eager_values

RECORDS = [
    (b"v0", b"k0"),
    (b"v1", None),  # null key
    (b"v2", b""),  # empty, non-null key
    (b"v3", b"\x00\xff\x01"),  # binary key
    (b"", b"only-key"),  # empty value
    (b"v5", None),
]


def _topic(kafka):
    topic = kafka.new_topic(1)
    delivered = kafka.produce(topic, [(0, v, k, BASE_TS + i) for i, (v, k) in enumerate(RECORDS)])
    assert [d.key for d in delivered] == [k for _, k in RECORDS]
    stored = kafka.read(topic, 0)
    assert [m.key for m in stored] == [k for _, k in RECORDS], (
        "broker did not keep null/non-null keys"
    )
    return topic


def test_value_and_key(kd, kafka):
    topic = _topic(kafka)
    ds = kd.KafkaDataset(
        [topic + ":0"], servers=kafka.servers, eof=True, timeout=200, message_key=True
    )
    assert ds.element_spec == (tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.string))
    assert eager_values(ds) == [(v, k or b"") for v, k in RECORDS]


def test_without_message_key_only_values(kd, kafka):
    topic = _topic(kafka)
    ds = kd.KafkaDataset([topic + ":0"], servers=kafka.servers, eof=True, timeout=200)
    assert eager_values(ds) == [v for v, _ in RECORDS]


def test_value_and_key_batched_and_in_graph_mode(kd, kafka):
    topic = _topic(kafka)
    ds = kd.KafkaDataset(
        [topic + ":0"], servers=kafka.servers, eof=True, timeout=200, message_key=True
    ).batch(4)
    assert eager_values(ds) == [
        ([v for v, _ in RECORDS[:4]], [k or b"" for _, k in RECORDS[:4]]),
        ([v for v, _ in RECORDS[4:]], [k or b"" for _, k in RECORDS[4:]]),
    ]
    with GraphReader(
        lambda: kd.KafkaDatasetV1(
            [topic + ":0"], servers=kafka.servers, eof=True, timeout=200, message_key=True
        )
    ) as r:
        assert r.dataset.output_types == (tf.string, tf.string)
        assert [tuple(x) for x in r.init().read_to_end()] == [(v, k or b"") for v, k in RECORDS]
