"""metadata=True (DESIGN §2.4): each element is a dict of value, key, topic, partition, offset,
timestamp and headers, also with native batches, in TF1 and TF2, across checkpoints.

Every expected field comes from an independent consumer (confluent-kafka reading the broker
directly), never from values the dataset echoes; the expected order is the test-side k-way
merge oracle (helpers.kway_merge) over what that consumer read.
"""

import json
import os

import pytest
import tensorflow as tf
from helpers import BASE_TS, GraphReader, kway_merge, parse_result

PARTITIONS = 3

# Header sets the producer attaches, cycled over the messages: none, an empty list (also none
# on the wire), null vs empty values, duplicate names (order kept), binary and non-ASCII.
HEADER_SETS = [
    None,
    [("trace", b"t-1")],
    [("n", None), ("e", b""), ("dup", b"1"), ("dup", b"2")],
    [],
    [("bin", b"\x00\xff\x01"), ("ключ", "значение".encode())],
    [("dup", None), ("dup", b"")],
]


def _records():
    """(partition, value, key, timestamp, headers): timestamps interleave the partitions (and
    go backwards inside one) so that the merge really reorders; some keys are null, one
    empty."""
    out = []
    for i in range(40):
        p = i % PARTITIONS
        key = None if i % 4 == 1 else (b"" if i == 6 else b"k%d" % i)
        ts = BASE_TS + (i * 37) % 50 * 10
        out.append((p, b"v%d" % i, key, ts, HEADER_SETS[i % len(HEADER_SETS)]))
    return out


def _broker_view(servers, topic):
    """Every message as an independent consumer reads it from the broker, per partition in
    offset order: dicts shaped like a dataset element (null key -> b"", headers as
    (name bytes, value bytes, is_null) triples)."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": servers,
            "group.id": "metadata-oracle",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        out = {p: [] for p in range(PARTITIONS)}
        pending = set(range(PARTITIONS))
        import time

        deadline = time.monotonic() + 30
        while pending:
            assert time.monotonic() < deadline, "oracle read did not reach the end: %s" % pending
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                assert msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
                pending.discard(msg.partition())
                continue
            out[msg.partition()].append(
                {
                    "value": msg.value() or b"",
                    "key": msg.key() or b"",
                    "topic": msg.topic().encode(),
                    "partition": msg.partition(),
                    "offset": msg.offset(),
                    "timestamp": msg.timestamp()[1],
                    "headers": [
                        (name.encode(), value or b"", value is None)
                        for name, value in (msg.headers() or [])
                    ],
                }
            )
        return out
    finally:
        consumer.close()


def _expected(servers, topic):
    """The broker's messages in the merge order of DESIGN §2.2 (stream index = partition)."""
    view = _broker_view(servers, topic)
    streams = [[(m["timestamp"], m["offset"], m) for m in view[p]] for p in range(PARTITIONS)]
    return kway_merge(streams)


@pytest.fixture
def topic(kafka):
    name = kafka.new_topic(PARTITIONS)
    records = _records()
    delivered = kafka.produce(name, records)
    assert len(delivered) == len(records)
    return name


@pytest.fixture
def expected(kafka, topic):
    got = _expected(kafka.servers, topic)
    assert len(got) == len(_records())
    # The data really has what the tests are about, as the broker stored it.
    headers = [h for m in got for h in m["headers"]]
    assert (b"n", b"", True) in headers and (b"e", b"", False) in headers
    assert any(m["key"] == b"" for m in got) and any(not m["headers"] for m in got)
    return got


def _field(x):
    """numpy / RaggedTensorValue / eager tensor -> plain Python."""
    if hasattr(x, "to_list"):
        return x.to_list()
    if hasattr(x, "numpy"):
        x = x.numpy()
    return x.tolist() if hasattr(x, "tolist") else x


def _unbatch(element, batched):
    """One element (dict of tensors or of numpy values) -> the list of message dicts it holds,
    shaped like `_broker_view`'s."""
    e = {k: _field(v) for k, v in element.items() if k != "headers"}
    h = {k: _field(v) for k, v in element["headers"].items()}
    if not batched:
        e, h = {k: [v] for k, v in e.items()}, {k: [v] for k, v in h.items()}
    out = []
    for i in range(len(e["value"])):
        m = {k: e[k][i] for k in e}
        assert len(h["key"][i]) == len(h["value"][i]) == len(h["null"][i])
        m["headers"] = [
            (n, v, bool(z)) for n, v, z in zip(h["key"][i], h["value"][i], h["null"][i])
        ]
        out.append(m)
    return out


def _dataset(kd, kafka, topic, **kwargs):
    kwargs.setdefault("metadata", True)
    return kd.KafkaDataset([topic], servers=kafka.servers, eof=True, timeout=200, **kwargs)


def _header_spec(shape, dtype, ragged_rank):
    return tf.RaggedTensorSpec(shape, dtype, ragged_rank=ragged_rank, row_splits_dtype=tf.int64)


def _spec(field, header_shape, ragged_rank):
    return {
        "value": tf.TensorSpec(field, tf.string),
        "key": tf.TensorSpec(field, tf.string),
        "topic": tf.TensorSpec(field, tf.string),
        "partition": tf.TensorSpec(field, tf.int32),
        "offset": tf.TensorSpec(field, tf.int64),
        "timestamp": tf.TensorSpec(field, tf.int64),
        "headers": {
            "key": _header_spec(header_shape, tf.string, ragged_rank),
            "value": _header_spec(header_shape, tf.string, ragged_rank),
            "null": _header_spec(header_shape, tf.bool, ragged_rank),
        },
    }


def test_scalar_elements_match_the_broker(kd, kafka, topic, expected):
    ds = _dataset(kd, kafka, topic)
    assert ds.element_spec == _spec([], [None], 0)
    got = [m for e in ds for m in _unbatch(e, batched=False)]
    assert got == expected


def test_batch_yields_ragged_headers(kd, kafka, topic, expected):
    ds = _dataset(kd, kafka, topic).batch(7)
    assert ds.element_spec == _spec([None], [None, None], 1)
    got = []
    for e in ds:
        assert isinstance(e["headers"]["key"], tf.RaggedTensor)
        assert e["headers"]["null"].dtype == tf.bool
        got += _unbatch(e, batched=True)
    assert got == expected
    # unbatch gives the scalar elements back.
    again = [m for e in ds.unbatch() for m in _unbatch(e, batched=False)]
    assert again == expected


def test_map_and_tf_function(kd, kafka, topic, expected):
    """Per-element and per-batch maps see the dict; a tf.function reads it too."""
    ds = _dataset(kd, kafka, topic)

    def summary(e):
        return {
            "offset": e["offset"],
            "partition": e["partition"],
            "n_headers": tf.size(e["headers"]["key"]),
            "n_null": tf.reduce_sum(tf.cast(e["headers"]["null"], tf.int32)),
            "names": tf.strings.reduce_join(e["headers"]["key"], separator=","),
        }

    got = [{k: _field(v) for k, v in s.items()} for s in ds.map(summary)]
    assert got == [
        {
            "offset": m["offset"],
            "partition": m["partition"],
            "n_headers": len(m["headers"]),
            "n_null": sum(z for _, _, z in m["headers"]),
            "names": b",".join(n for n, _, _ in m["headers"]),
        }
        for m in expected
    ]

    # A map over batches gets RaggedTensors and may return them (structure kept).
    def keep_nulls(e):
        return {
            "offset": e["offset"],
            "null_names": tf.ragged.boolean_mask(e["headers"]["key"], e["headers"]["null"]),
        }

    batched = ds.batch(5).map(keep_nulls)
    assert isinstance(batched.element_spec["null_names"], tf.RaggedTensorSpec)
    null_names = [n for b in batched for n in b["null_names"].to_list()]
    assert null_names == [[n for n, _, z in m["headers"] if z] for m in expected]

    @tf.function
    def whole():
        # Everything in one batch, inside a graph: ragged headers cross the function boundary.
        return ds.batch(1000).get_single_element()

    assert _unbatch(whole(), batched=True) == expected

    @tf.function
    def totals():
        return ds.reduce(
            (tf.constant(0, tf.int64), tf.constant(0, tf.int32)),
            lambda acc, e: (
                acc[0] + e["offset"],
                acc[1] + tf.reduce_sum(tf.cast(e["headers"]["null"], tf.int32)),
            ),
        )

    offsets, nulls = totals()
    assert int(offsets) == sum(m["offset"] for m in expected)
    assert int(nulls) == sum(z for m in expected for _, _, z in m["headers"])


def test_native_batches(kd, kafka, topic, expected):
    ds = _dataset(kd, kafka, topic, batch_size=4)
    assert ds.element_spec == _spec([None], [None, None], 1)
    got = []
    for e in ds:
        n = int(e["value"].shape[0])
        assert 1 <= n <= 4
        assert all(int(v.shape[0]) == n for k, v in e.items() if k != "headers")
        assert all(int(v.nrows()) == n for v in e["headers"].values())
        got += _unbatch(e, batched=True)
    assert got == expected
    # Native batches unbatch to exactly the scalar elements.
    assert [m for e in ds.unbatch() for m in _unbatch(e, batched=False)] == expected


def test_with_message_key_the_dict_is_the_same(kd, kafka, topic, expected):
    ds = _dataset(kd, kafka, topic, message_key=True)
    assert ds.element_spec == _spec([], [None], 0)
    assert [m for e in ds for m in _unbatch(e, batched=False)] == expected


def test_tf1_graph_mode_with_saver(kd, kafka, topic, expected, tmp_path):
    def make():
        return kd.KafkaDatasetV1(
            [topic], servers=kafka.servers, eof=True, timeout=200, metadata=True
        )

    with GraphReader(make, saveable=True) as r:
        assert r.dataset.output_types["offset"] == tf.int64
        assert r.dataset.output_types["headers"]["null"] == tf.bool
        r.init()
        first = [m for e in r.take(11) for m in _unbatch(e, batched=False)]
        path = r.save(tmp_path / "ckpt")
        rest = [m for e in r.read_to_end() for m in _unbatch(e, batched=False)]
    assert first + rest == expected
    with GraphReader(make, saveable=True) as r:
        r.restore(path)
        assert [m for e in r.read_to_end() for m in _unbatch(e, batched=False)] == rest
    # Batched in graph mode: the session returns ragged values.
    with GraphReader(lambda: make().batch(6)) as r:
        got = [m for e in r.init().read_to_end() for m in _unbatch(e, batched=True)]
    assert got == expected


# Reads `k` elements (or native batches) with metadata, writes a TF2 checkpoint, prints them.
SAVER = r"""
import json, sys
import tensorflow as tf
import kafka_dataset
args = json.loads(sys.argv[1])
ds = kafka_dataset.KafkaDataset([args["topic"]], servers=args["servers"], eof=True, timeout=200,
                                metadata=True, batch_size=args["batch_size"])
it = iter(ds)
got = []
for _ in range(args["k"]):
    e = next(it)
    got.append({k: e[k].numpy().tolist() for k in ("offset", "partition")})
path = tf.train.Checkpoint(iterator=it).write(args["path"])
print("RESULT " + json.dumps({"path": path, "got": got}))
"""


@pytest.mark.parametrize("batch_size", [0, 4])
def test_restore_in_another_process_resumes_exactly(
    kd, kafka, topic, expected, run_python, tmp_path, batch_size
):
    k = 13 if batch_size == 0 else 3
    args = {
        "topic": topic,
        "servers": kafka.servers,
        "batch_size": batch_size,
        "k": k,
        "path": os.path.join(tmp_path, "ckpt"),
    }
    saved = parse_result(run_python(SAVER, [json.dumps(args)]).stdout)
    if batch_size:
        prefix = [(p, o) for b in saved["got"] for p, o in zip(b["partition"], b["offset"])]
    else:
        prefix = [(e["partition"], e["offset"]) for e in saved["got"]]
    n = len(prefix)
    assert prefix == [(m["partition"], m["offset"]) for m in expected[:n]]

    ds = _dataset(kd, kafka, topic, batch_size=batch_size)
    it = iter(ds)
    tf.train.Checkpoint(iterator=it).read(saved["path"]).assert_consumed()
    rest = [m for e in it for m in _unbatch(e, batched=bool(batch_size))]
    # Every field of every resumed element, nothing lost or repeated.
    assert rest == expected[n:]


def test_off_adds_nothing(kd, kafka, topic):
    """metadata=False (the default): the op alone, no metadata outputs, no map."""
    with tf.Graph().as_default():
        ds = kd.KafkaDataset([topic], servers=kafka.servers, eof=True)
        op = ds._variant_tensor.op
        assert op.type == "KdKafkaDataset"
        assert op.get_attr("message_metadata") is False
        on = kd.KafkaDataset([topic], servers=kafka.servers, eof=True, metadata=True)
        assert on._variant_tensor.op.type != "KdKafkaDataset"  # the structuring map
    assert kd.KafkaDataset([topic], servers=kafka.servers).element_spec == tf.TensorSpec(
        [], tf.string
    )


@pytest.mark.parametrize("value", ["yes", 1, None, tf.constant(True)])
def test_metadata_must_be_a_bool(kd, value):
    with pytest.raises(TypeError, match="metadata must be a Python bool"):
        kd.KafkaDataset(["t:0"], servers="localhost:9092", metadata=value)
