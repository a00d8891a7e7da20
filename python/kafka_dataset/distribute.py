"""Splitting KafkaDataset partitions across training workers (``tf.distribute`` and friends).

Kafka partitions are the unit of parallelism: each worker reads a disjoint share of them, in
timestamp order within its share, and checkpoints its own position. TensorFlow's auto-sharding
cannot split a custom source by partition (it falls back to DATA sharding, where every worker
reads everything and keeps every N-th element), so the datasets made here turn it off.
"""

import tensorflow as tf

from kafka_dataset.dataset import KafkaDataset


def distributed_dataset(input_context, topics, **kwargs):
    """A `KafkaDataset` reading the share of `input_context`'s input pipeline.

    For `strategy.distribute_datasets_from_function`:

        def dataset_fn(input_context):
            return kafka_dataset.distributed_dataset(
                input_context, ["clicks"], servers=..., eof=True
            ).batch(input_context.get_per_replica_batch_size(global_batch))

        dist = strategy.distribute_datasets_from_function(dataset_fn)

    `input_context.num_input_pipelines` becomes `num_workers` and `input_pipeline_id` becomes
    `worker_index`; the other arguments are `KafkaDataset`'s. Auto-sharding is turned off on the
    returned dataset (each pipeline already reads only its own partitions).
    """
    if "num_workers" in kwargs or "worker_index" in kwargs:
        raise TypeError(
            "distributed_dataset: num_workers and worker_index come from input_context; "
            "do not pass them"
        )
    dataset = KafkaDataset(
        topics,
        num_workers=int(input_context.num_input_pipelines),
        worker_index=int(input_context.input_pipeline_id),
        **kwargs,
    )
    return without_auto_shard(dataset)


def without_auto_shard(dataset):
    """`dataset` with `tf.data` auto-sharding off, for `strategy.experimental_distribute_dataset`
    over a dataset that already reads only this worker's partitions."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return dataset.with_options(options)
