"""Counters of the live KafkaDataset iterators in this process (observability).

Each iterator counts the elements and key/value bytes it emitted, late elements, idle passes
(elements emitted while an idle partition was passed over), and offsets skipped (below the log
start) or rewound (beyond its end) by an opt-in ``auto.offset.reset``; per partition it shows
the next offset, the high watermark it last saw in a fetch response, and the lag between them.
Counters and positions are exact up to the last emitted element; the watermark is the one seen
when the iterator last took fetched messages.

    kafka_dataset.stats()          # eager: a list of dicts, one per live iterator
    kafka_dataset.stats_tensor()   # graph / tf.function: the JSON document as a string tensor

``KAFKA_DATASET_STATS_LOG_SECONDS=30`` makes every iterator write one progress line to stderr
every 30 seconds.
"""

import json

import tensorflow as tf

from kafka_dataset._loader import load_library

LOG_INTERVAL_ENV = "KAFKA_DATASET_STATS_LOG_SECONDS"


def stats_tensor():
    """A scalar string tensor holding the JSON document ``{"iterators": [...]}``.

    For graph mode (``sess.run``) and ``tf.function``; parse it with ``json.loads``. A new
    reading every run (the op is stateful)."""
    return load_library().kd_kafka_stats()


def stats():
    """The live iterators' counters, one dict per iterator (eager mode).

    Keys: ``id``, ``topics``, ``group``, ``messages``, ``bytes``, ``late_elements``,
    ``idle_passes``, ``skipped_offsets``, ``rewound_offsets``, ``lag`` (sum over partitions,
    ``None`` until every partition's high watermark is known) and ``partitions``: a list of
    dicts with ``topic``, ``partition``, ``next_offset``, ``high_watermark``, ``lag``,
    ``finished``, ``skipped_offsets``, ``rewound_offsets``. An iterator stays listed while it
    is alive (a finished one too)."""
    if not tf.executing_eagerly():
        raise RuntimeError(
            "kafka_dataset.stats() needs eager execution; in graph mode run "
            "kafka_dataset.stats_tensor() and json.loads the result"
        )
    return json.loads(stats_tensor().numpy().decode("utf-8"))["iterators"]
