"""The dataset survives graph serialization and tf.data's graph rewrites (AsGraphDefInternal)."""

import tensorflow as tf
from helpers import BASE_TS, eager_values


def _topic(kafka, partitions=2, n=12):
    name = kafka.new_topic(partitions)
    kafka.produce(name, [(i % partitions, b"m%d" % i, None, BASE_TS + i) for i in range(n)])
    return name


def test_round_trip_through_a_serialized_graph(kd, kafka):
    topic = _topic(kafka)
    ds = kd.KafkaDataset(
        [topic + ":1", topic + ":0:0:-1"],
        servers=kafka.servers,
        eof=True,
        timeout=300,
        message_key=True,
        config_global=["fetch.wait.max.ms=50"],
    )
    graph_def = tf.raw_ops.DatasetToGraphV2(input_dataset=ds._variant_tensor)
    rebuilt = tf.data.experimental.from_variant(
        tf.raw_ops.DatasetFromGraph(graph_def=graph_def), ds.element_spec
    )
    original = eager_values(ds)
    assert len(original) == 12
    assert eager_values(rebuilt) == original


def test_survives_default_and_aggressive_rewrites(kd, kafka):
    topic = _topic(kafka)
    ds = kd.KafkaDataset([topic], servers=kafka.servers, eof=True, timeout=300)
    expected = eager_values(ds)
    options = tf.data.Options()
    options.experimental_optimization.apply_default_optimizations = True
    options.experimental_optimization.map_parallelization = True
    options.experimental_optimization.inject_prefetch = True
    options.autotune.enabled = True
    pipeline = ds.map(lambda v: v).batch(5).unbatch().with_options(options)
    assert eager_values(pipeline) == expected
