"""Bad inputs (DESIGN §2.7): the exact TF status class, the bad item named, and the process lives.

InvalidArgument is raised when the dataset op runs (TF2 eager: at construction; TF1: when the
iterator's initializer runs); NotFound when the iterator is built (it needs the broker).
"""

import pytest
import tensorflow as tf
from helpers import BASE_TS, GraphReader, eager_values

IA = tf.errors.InvalidArgumentError
NF = tf.errors.NotFoundError

# (id, kwargs builder(topic) -> KafkaDataset kwargs, error class, substrings of which at least one
# must be in the message, all formatted with the topic). "{t}" is a real 2-partition topic so
# only the intended item is wrong.
CASES = [
    ("empty-entry", dict(topics=[""]), IA, ['""', "''", "empty"]),
    ("no-topic", dict(topics=[":0"]), IA, [":0"]),
    ("partition-not-int", dict(topics=["{t}:x"]), IA, ["{t}:x"]),
    ("offset-not-int", dict(topics=["{t}:0:abc"]), IA, ["{t}:0:abc", "abc"]),
    ("negative-partition", dict(topics=["{t}:-1"]), IA, ["{t}:-1"]),
    ("last-before-offset", dict(topics=["{t}:0:5:3"]), IA, ["{t}:0:5:3"]),
    ("last-below-minus-one", dict(topics=["{t}:0:0:-2"]), IA, ["{t}:0:0:-2", "-2"]),
    ("too-many-fields", dict(topics=["{t}:0:0:4:9"]), IA, ["{t}:0:0:4:9"]),
    ("bad-topic-chars", dict(topics=["bad topic!:0"]), IA, ["bad topic!"]),
    ("topic-too-long", dict(topics=["x" * 250 + ":0"]), IA, ["x" * 250]),
    ("partition-overflow", dict(topics=["{t}:99999999999"]), IA, ["99999999999"]),
    (
        "overlapping-ranges",
        dict(topics=["{t}:0:0:10", "{t}:0:5:20"]),
        IA,
        ["{t}:0:5:20", "{t}:0:0:10"],
    ),
    ("bad-config-key", dict(config_global=["no.such.key=1"]), IA, ["no.such.key"]),
    ("bad-config-value", dict(config_global=["fetch.wait.max.ms=abc"]), IA, ["fetch.wait.max.ms"]),
    (
        "config-without-equals",
        dict(config_global=["fetch.wait.max.ms"]),
        IA,
        ["fetch.wait.max.ms", "config_global[0]"],
    ),  # the value may be a secret: named by index
    ("bad-topic-config-key", dict(config_topic=["no.such.topic.key=1"]), IA, ["no.such.topic.key"]),
    (
        "bad-topic-config-value",
        dict(config_topic=["auto.offset.reset=sideways"]),
        IA,
        ["auto.offset.reset"],
    ),
    ("timeout-zero", dict(timeout=0), IA, ["timeout"]),
    ("timeout-negative", dict(timeout=-5), IA, ["timeout"]),
    ("empty-servers", dict(servers=""), IA, ["servers", "bootstrap"]),
    ("timeout-huge", dict(timeout=2**40), IA, ["timeout"]),
    ("unicode-topic", dict(topics=["t\u00f3pico:0"]), IA, ["t\u00f3pico"]),
    ("leading-space", dict(topics=[" {t}:0"]), IA, [" {t}:0"]),
    ("nul-in-topic", dict(topics=["{t}\0x:0"]), IA, ["{t}"]),
    ("reversed-time-window", dict(topics=["{t}::@20:@10"]), IA, ["{t}::@20:@10", "not after"]),
    ("bad-time-last", dict(topics=["{t}::0:@soon"]), IA, ["{t}::0:@soon", "@soon"]),
    ("offset-overflow", dict(topics=["{t}:0:99999999999999999999"]), IA, ["99999999999999999999"]),
    ("bad-named-start", dict(topics=["{t}:0:yesterday"]), IA, ["yesterday"]),
    ("bad-timestamp-start", dict(topics=["{t}:0:@soon"]), IA, ["@soon"]),
    ("empty-topic-list", dict(topics=[]), IA, ["topics"]),
    ("huge-duplicate-list", dict(topics=["{t}:0"] * 5000), IA, ["{t}:0"]),
    ("empty-config-key", dict(config_global=["=1"]), IA, ["config_global[0]"]),
    (
        "reserved-config-key",
        dict(config_global=["enable.auto.commit=true"]),
        IA,
        ["enable.auto.commit"],
    ),
    (
        "budget-zero",
        dict(config_global=["kafka_dataset.prefetch.budget.mb=0"]),
        IA,
        ["kafka_dataset.prefetch.budget.mb"],
    ),
    (
        "budget-in-topic-config",
        dict(config_topic=["kafka_dataset.prefetch.budget.mb=64"]),
        IA,
        ["kafka_dataset.prefetch.budget.mb"],
    ),
    ("workers-negative", dict(num_workers=-1), IA, ["num_workers", "-1"]),
    ("worker-index-too-big", dict(num_workers=2, worker_index=2), IA, ["worker_index", "2"]),
    ("unknown-topic", dict(topics=["{t}-does-not-exist:0"]), NF, ["{t}-does-not-exist"]),
    (
        "unknown-topic-all-partitions",
        dict(topics=["{t}-does-not-exist"]),
        NF,
        ["{t}-does-not-exist"],
    ),
    ("unknown-partition", dict(topics=["{t}:7"]), NF, ["{t}:7", "partition 7", "7"]),
]


@pytest.fixture(scope="module")
def topic(broker):
    from kafka_dataset import testing as kt

    name = kt.create_topic(broker.bootstrap, kt.unique_name("errors"), 2)
    kt.produce(
        broker.bootstrap,
        name,
        [(p, b"ok-%d-%d" % (p, i), None, BASE_TS + 10 * i + p) for i in range(3) for p in range(2)],
    )
    return name


def test_at_least_thirty_bad_inputs_are_covered():
    assert len(CASES) + len(RAW_OP_CASES) >= 30


def _kwargs(case_kwargs, topic, servers):
    kwargs = dict(topics=["{t}:0"], servers=servers, eof=True, timeout=500)
    kwargs.update(case_kwargs)
    for key, value in kwargs.items():
        if isinstance(value, list):
            kwargs[key] = [v.format(t=topic) for v in value]
    return kwargs


def _check(error, cls, names, topic):
    assert type(error) is cls, "expected %s, got %s: %s" % (
        cls.__name__,
        type(error).__name__,
        error,
    )
    message = error.message if hasattr(error, "message") else str(error)
    wanted = [n.format(t=topic) for n in names]
    assert any(w in message for w in wanted), "message %r names none of %r" % (message, wanted)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_eager(kd, broker, topic, case):
    _, case_kwargs, cls, names = case
    kwargs = _kwargs(case_kwargs, topic, broker.bootstrap)
    stage = "construct"
    with pytest.raises(tf.errors.OpError) as info:
        ds = kd.KafkaDataset(**kwargs)
        stage = "iterator"
        it = iter(ds)
        stage = "get_next"
        next(it)
        stage = "no error"
    _check(info.value, cls, names, topic)
    if cls is IA:
        assert stage == "construct", (
            "InvalidArgument raised at %s, not when the dataset was built" % stage
        )
    else:
        assert stage in ("construct", "iterator"), "%s raised at %s" % (cls.__name__, stage)


GRAPH_CASES = [
    c
    for c in CASES
    if c[0]
    in (
        "partition-not-int",
        "last-before-offset",
        "overlapping-ranges",
        "bad-config-key",
        "timeout-zero",
        "empty-servers",
        "unknown-topic",
        "unknown-partition",
    )
]


@pytest.mark.parametrize("case", GRAPH_CASES, ids=[c[0] for c in GRAPH_CASES])
def test_bad_input_tf1_graph(kd, broker, topic, case):
    """In graph mode the error surfaces when the initializer (or first get_next) runs."""
    _, case_kwargs, cls, names = case
    kwargs = _kwargs(case_kwargs, topic, broker.bootstrap)
    reader = GraphReader(lambda: kd.KafkaDatasetV1(**kwargs))
    try:
        with pytest.raises(tf.errors.OpError) as info:
            reader.init()
            reader.next(timeout_ms=30_000)
        _check(info.value, cls, names, topic)
    finally:
        reader.close()


def test_process_survives_all_bad_inputs(kd, broker, topic):
    """Runs after the table: the same process still reads correctly."""
    ds = kd.KafkaDataset(
        [topic + ":0", topic + ":1"], servers=broker.bootstrap, eof=True, timeout=500
    )
    expected = [b"ok-%d-%d" % (p, i) for i in range(3) for p in range(2)]
    assert eager_values(ds) == expected


def _raw_inputs(topic, servers):
    return dict(
        topics=tf.constant([topic + ":0"]),
        servers=tf.constant(servers),
        group=tf.constant(""),
        eof=tf.constant(True),
        timeout=tf.constant(500, tf.int64),
        config_global=tf.constant([], tf.string),
        config_topic=tf.constant([], tf.string),
    )


# Raw op calls with wrong shapes or attributes (what the Python class prevents): (id, input
# overrides, attribute overrides, substring of the message).
RAW_OP_CASES = [
    ("topics-matrix", dict(topics=tf.constant([["a:0"]])), {}, "topics"),
    ("servers-vector", dict(servers=tf.constant(["a", "b"])), {}, "servers"),
    ("group-vector", dict(group=tf.constant(["g"])), {}, "group"),
    ("eof-vector", dict(eof=tf.constant([True, False])), {}, "eof"),
    ("timeout-vector", dict(timeout=tf.constant([1, 2], tf.int64)), {}, "timeout"),
    ("config-scalar", dict(config_global=tf.constant("fetch.wait.max.ms=5")), {}, "config_global"),
    ("batch-size-negative", {}, dict(batch_size=-4), "batch_size"),
    ("workers-zero", {}, dict(num_workers=0), "num_workers"),
]


@pytest.mark.parametrize("case", RAW_OP_CASES, ids=[c[0] for c in RAW_OP_CASES])
def test_raw_op_calls_with_wrong_shapes_are_invalid_argument(kd, broker, topic, case):
    from kafka_dataset import _loader

    _, inputs, attrs, named = case
    op = getattr(kd.load_library(), _loader.OP_FUNCTION)
    args = _raw_inputs(topic, broker.bootstrap)
    args.update(inputs)
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        op(**args, **attrs)
    assert named in str(info.value), str(info.value)


def test_raw_op_with_a_wrong_dtype_is_refused_before_it_runs(kd, broker, topic):
    from kafka_dataset import _loader

    op = getattr(kd.load_library(), _loader.OP_FUNCTION)
    args = _raw_inputs(topic, broker.bootstrap)
    args["timeout"] = tf.constant(1.5)
    # TensorFlow refuses it by the op definition: input #4 (timeout) is int64.
    with pytest.raises((TypeError, tf.errors.InvalidArgumentError), match="int64"):
        op(**args)
