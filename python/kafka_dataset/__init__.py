"""kafka_dataset: a tf.data source that streams Kafka partitions merged in timestamp order.

    import kafka_dataset                     # also installs tf.data.KafkaDataset aliases
    ds = kafka_dataset.KafkaDataset(["clicks:0", "clicks:1"], servers="localhost:9092", eof=True)

After import, ``tf.data.KafkaDataset`` is :class:`KafkaDatasetV2` and
``tf.compat.v1.data.KafkaDataset`` is :class:`KafkaDatasetV1` (with ``output_types``), so code
written for DeepRec's ``tf.data.KafkaDataset`` runs unchanged. The op library
``libkafka_dataset.so`` is loaded on first use (``$KAFKA_DATASET_LIBRARY`` overrides its path).
"""

import importlib

import tensorflow as tf

from kafka_dataset._loader import LibraryError, built_for_tensorflow, library_path, load_library
from kafka_dataset.dataset import KafkaDataset, KafkaDatasetV1, KafkaDatasetV2
from kafka_dataset.distribute import distributed_dataset, without_auto_shard
from kafka_dataset.stats import stats, stats_tensor

__version__ = "0.1.0"

__all__ = [
    "KafkaDataset",
    "KafkaDatasetV1",
    "KafkaDatasetV2",
    "LibraryError",
    "built_for_tensorflow",
    "distributed_dataset",
    "library_path",
    "load_library",
    "stats",
    "stats_tensor",
    "without_auto_shard",
]


def _install_aliases():
    """tf.data.KafkaDataset (V2) and tf.compat.v1.data.KafkaDataset (V1), like TFRecordDataset."""
    targets = (
        ("tensorflow._api.v2.data", KafkaDatasetV2),
        ("tensorflow._api.v2.compat.v2.data", KafkaDatasetV2),
        ("tensorflow._api.v2.compat.v1.data", KafkaDatasetV1),
    )
    for module_name, cls in targets:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        setattr(module, "KafkaDataset", cls)
    # Whatever the generated API layout, the public spellings must resolve.
    tf.data.KafkaDataset = KafkaDatasetV2
    tf.compat.v2.data.KafkaDataset = KafkaDatasetV2
    tf.compat.v1.data.KafkaDataset = KafkaDatasetV1


_install_aliases()


def _warn_on_version_mismatch():
    """At import, as tensorflow-io does: the library will not load into this TensorFlow."""
    import warnings

    from kafka_dataset._loader import version_mismatch

    mismatch = version_mismatch()
    if mismatch:
        warnings.warn(mismatch, RuntimeWarning, stacklevel=2)


_warn_on_version_mismatch()
