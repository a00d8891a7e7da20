"""``KafkaDataset``: Kafka partitions merged in timestamp order, as a ``tf.data`` source.

Drop-in for DeepRec's ``tf.data.KafkaDataset`` (see DESIGN.md §2). The C++ kernel validates
everything authoritatively; this module only converts arguments to the op's input tensors and
raises ``TypeError`` where a Python type is wrong (a better message than a conversion error).
"""

from collections.abc import Mapping

import numpy as np
import tensorflow as tf
from tensorflow.python.data.ops import dataset_ops
from tensorflow.python.framework import tensor_util

from kafka_dataset import _loader

# Keyword-only extensions (DESIGN.md §2); each defaults to "off" so the seed constructor keeps
# its meaning. batch_size=N: each element is a 1-D batch of 1..N messages filled natively.
# num_workers / worker_index: read only this worker's share of the partitions.
# subscribe: join the consumer group and read the partitions it assigns.
# metadata: each element is a dict with the message's key, topic, partition, offset, timestamp
# and headers beside its value.
# max_lag_ms / commit: reader policies; they reach the core as the library's own config_global
# keys (LIBRARY_KEYS below), so the op and its graph defs do not change.
EXTENSIONS = frozenset(
    {"batch_size", "metadata", "num_workers", "worker_index", "subscribe", "max_lag_ms", "commit"}
)

# Keyword extension -> the library's config_global key carrying it (checked by the core).
LIBRARY_KEYS = {"max_lag_ms": "kafka_dataset.max.lag.ms", "commit": "kafka_dataset.commit"}


def _check_extensions(extensions):
    unknown = sorted(set(extensions) - EXTENSIONS)
    if unknown:
        raise TypeError(
            "KafkaDataset() got unknown keyword argument(s) %s (extensions supported by this "
            "version: %s)"
            % (", ".join(repr(k) for k in unknown), ", ".join(sorted(EXTENSIONS)) or "none")
        )


def _int_extension(extensions, name, default):
    value = extensions.get(name, default)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(
            "KafkaDataset: %s must be an int, got %s %r" % (name, type(value).__name__, value)
        )
    return int(value)


def _library_policies(extensions):
    """The reader policies given as keywords, as ``Key=Value`` items of the library's keys."""
    items = []
    if "max_lag_ms" in extensions:
        items.append(
            "%s=%d" % (LIBRARY_KEYS["max_lag_ms"], _int_extension(extensions, "max_lag_ms", 0))
        )
    if "commit" in extensions:
        commit = extensions["commit"]
        if not isinstance(commit, str):
            raise TypeError(
                'KafkaDataset: commit must be a str ("emitted" or "checkpoint"), got %s %r'
                % (type(commit).__name__, commit)
            )
        items.append("%s=%s" % (LIBRARY_KEYS["commit"], commit))
    return items


def _is_tensor(value):
    return tensor_util.is_tf_type(value)


def _text(name, index, item):
    if isinstance(item, (str, bytes, np.str_, np.bytes_)):
        return item
    where = name if index is None else "%s[%d]" % (name, index)
    raise TypeError(
        "KafkaDataset: %s must be a str, got %s %r" % (where, type(item).__name__, item)
    )


def _string_vector(name, value):
    """None | str | list/tuple of str | {key: value} (configs) | string tensor -> 1-D tf.string."""
    if value is None:
        return tf.constant([], dtype=tf.string, name=name)
    if _is_tensor(value):
        tensor = tf.convert_to_tensor(value, dtype=tf.string, name=name)
        if tensor.shape.rank == 0:
            tensor = tf.reshape(tensor, [1])
        return tensor
    if isinstance(value, (str, bytes, np.str_, np.bytes_)):
        value = [value]
    elif isinstance(value, Mapping):
        value = ["%s=%s" % (k, v) for k, v in value.items()]
    elif isinstance(value, np.ndarray):
        value = value.reshape([-1]).tolist()
    try:
        items = list(value)
    except TypeError:
        raise TypeError(
            "KafkaDataset: %s must be a str or a list of str, got %s %r"
            % (name, type(value).__name__, value)
        ) from None
    items = [_text(name, i, item) for i, item in enumerate(items)]
    return tf.constant(items, dtype=tf.string, shape=[len(items)], name=name)


def _string_scalar(name, value, join_lists=False):
    if _is_tensor(value):
        return tf.convert_to_tensor(value, dtype=tf.string, name=name)
    if value is None:
        value = ""
    if join_lists and isinstance(value, (list, tuple)):
        # The seed documents `servers` as "a list of bootstrap servers".
        value = ",".join(
            s.decode() if isinstance(s, bytes) else s
            for s in (_text(name, i, item) for i, item in enumerate(value))
        )
    return tf.convert_to_tensor(_text(name, None, value), dtype=tf.string, name=name)


def _bool_scalar(name, value):
    if _is_tensor(value):
        return tf.convert_to_tensor(value, dtype=tf.bool, name=name)
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(
            "KafkaDataset: %s must be a bool, got %s %r" % (name, type(value).__name__, value)
        )
    return tf.convert_to_tensor(bool(value), dtype=tf.bool, name=name)


def _int64_scalar(name, value):
    if _is_tensor(value):
        return tf.convert_to_tensor(value, dtype=tf.int64, name=name)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(
            "KafkaDataset: %s must be an int (milliseconds), got %s %r"
            % (name, type(value).__name__, value)
        )
    return tf.convert_to_tensor(int(value), dtype=tf.int64, name=name)


def _metadata_spec(batched):
    """The element structure with ``metadata=True``: per-message fields are scalars (1-D for
    native batches); each header component is a ``tf.RaggedTensorSpec`` with ragged_rank 0
    (ragged_rank 1, ``[n, None]``, for native batches), so ``Dataset.batch`` stacks elements
    with different numbers of headers into RaggedTensors."""
    field = [None] if batched else []

    def header(dtype):
        return tf.RaggedTensorSpec(
            field + [None], dtype, ragged_rank=1 if batched else 0, row_splits_dtype=tf.int64
        )

    return {
        "value": tf.TensorSpec(field, tf.string),
        "key": tf.TensorSpec(field, tf.string),
        "topic": tf.TensorSpec(field, tf.string),
        "partition": tf.TensorSpec(field, tf.int32),
        "offset": tf.TensorSpec(field, tf.int64),
        "timestamp": tf.TensorSpec(field, tf.int64),
        "headers": {
            "key": header(tf.string),
            "value": header(tf.string),
            "null": header(tf.bool),
        },
    }


def _op_spec(batched):
    """The op's own components with metadata (cc/kafka_dataset_op.cc, OutputDtypes): the
    fields, then the headers flattened (names, values, null flags) and, for native batches,
    their row splits."""
    field = [None] if batched else []
    specs = [
        tf.TensorSpec(field, dtype)
        for dtype in (tf.string, tf.string, tf.string, tf.int32, tf.int64, tf.int64)
    ]
    specs += [tf.TensorSpec([None], dtype) for dtype in (tf.string, tf.string, tf.bool)]
    if batched:
        specs.append(tf.TensorSpec([None], tf.int64))
    return tuple(specs)


class _OpDataset(dataset_ops.DatasetSource):
    """The op's output as it is (the flat metadata components), before `_structure_metadata`."""

    def __init__(self, variant_tensor, element_spec):
        self._spec = element_spec
        super(_OpDataset, self).__init__(variant_tensor)

    @property
    def element_spec(self):
        return self._spec


def _structure_metadata(op_dataset, batched):
    """Maps the op's flat components to the metadata dict, encoding the headers as ragged
    tensors (TF's variant encoding, what `RaggedTensorSpec` datasets carry). One cheap,
    stateless function per element (per batch with `batch_size`); checkpoints save only the
    op's position."""
    spec = _metadata_spec(batched)
    headers_spec = spec["headers"]

    def to_element(value, key, topic, partition, offset, timestamp, names, values, nulls, *splits):
        def ragged(name, flat):
            if batched:
                flat = tf.RaggedTensor.from_row_splits(flat, splits[0], validate=False)
            # pylint: disable=protected-access
            return headers_spec[name]._to_tensor_list(flat)[0]

        return {
            "value": value,
            "key": key,
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "timestamp": timestamp,
            "headers": {
                "key": ragged("key", names),
                "value": ragged("value", values),
                "null": ragged("null", nulls),
            },
        }

    try:
        from tensorflow.python.data.ops import map_op

        # Inline on the calling thread: the function is a handful of cheap ops.
        return map_op._MapDataset(
            op_dataset, to_element, use_inter_op_parallelism=False, preserve_cardinality=True
        )
    except (ImportError, AttributeError, TypeError):  # a TensorFlow without that private API
        return op_dataset.map(to_element)


class KafkaDatasetV2(dataset_ops.DatasetSource):
    """Reads Kafka partitions and merges them in message-timestamp order.

    Each element is a scalar ``tf.string`` (the message value), or ``(value, key)`` when
    ``message_key=True`` (a null key reads as ``b""``). The iterator's position is saved in and
    restored from ordinary TF iterator checkpoints.
    """

    def __init__(
        self,
        topics,
        servers="localhost",
        group="",
        eof=False,
        timeout=1000,
        config_global=None,
        config_topic=None,
        message_key=False,
        **extensions,
    ):
        """Creates a `KafkaDataset`.

        Args:
          topics: A `tf.string` tensor (or a str, or a list of str) with one or more subscriptions
            `topic:partition:offset:last`. `partition` omitted = every partition; `offset`
            omitted = 0, or `beginning`, `end`, `@<epoch-ms>`; `last` is the last offset to read,
            inclusive, `-1` (default) = unlimited. Several entries may chain disjoint ranges of
            one partition.
          servers: Bootstrap servers, `host:port[,host:port...]` (a list of str is joined).
          group: The consumer group id; with a group, offsets of emitted messages are committed.
          eof: If True, the dataset ends when every partition reached the end of its log.
          timeout: Milliseconds (> 0): the consumer's wait slice, and how long an idle, caught-up
            partition may hold the time-ordered merge back.
          config_global: librdkafka global properties as `Key=Value` strings.
          config_topic: librdkafka topic properties as `Key=Value` strings.
          message_key: If True, elements are `(value, key)`.
          **extensions: Keyword-only extensions, all off by default. Unknown names raise
            `TypeError`. `batch_size=N` (N > 0): each element is a 1-D `tf.string` batch of the
            1..N messages that are ready (the core fills it, one copy per message), instead of
            one scalar per message; positions and checkpoints stay exact per message.
            `num_workers=N, worker_index=i` (0 <= i < N): read only worker i's share of the
            partitions the entries name: partition p of topic t belongs to worker
            (fnv1a32(t) + p) % N (32-bit FNV-1a of the topic name), so every partition has
            exactly one owner; checkpoints record the split and restore only into the same
            (N, i). See `kafka_dataset.distributed_dataset` for `tf.distribute`.
            `metadata=True`: each element is a dict `{"value", "key", "topic", "partition"
            (int32), "offset" (int64), "timestamp" (int64 ms, as the merge used it),
            "headers": {"key", "value", "null"}}` (a null key reads as `b""`); the header
            components are ragged-capable 1-D tensors (names, values, and `null` telling a
            null value from an empty one), in the producer's order, so `.batch()` yields
            RaggedTensors. With `batch_size`, every field is 1-D and headers are `[n, None]`.
            `subscribe=True`: consumer-group mode. Each iterator joins `group` (required) and
            reads the partitions the group assigns it, moving them on rebalances
            (cooperative-sticky); entries are topic names. A partition starts at the group's
            committed offset (its log start when none), emitted offsets are committed
            periodically, on save, on revoke and on close: at-least-once, see the README.
            `max_lag_ms=N` (N > 0): the freshness policy. When a partition's next message is
            older than N ms by the wall clock, the reader skips to the first offset within the
            window (offsets-for-times) instead of training on stale data; skipped offsets are
            counted per partition (`stale_offsets` in `kafka_dataset.stats()`), and the skip is
            part of the position a checkpoint saves.
            `commit="checkpoint"` (needs `group`, not with `subscribe`): the group's committed
            offsets are exactly the positions of the last saved checkpoint (committed on every
            save, never otherwise), so broker lag tools show where a restart resumes; the
            default `commit="emitted"` commits emitted positions periodically, on save and on
            close.
        """
        _check_extensions(extensions)
        batch_size = _int_extension(extensions, "batch_size", 0)
        if batch_size < 0:
            raise ValueError("KafkaDataset: batch_size must be >= 0, got %d" % batch_size)
        self._batch_size = batch_size
        # Ranges are checked by the core (InvalidArgument naming the value).
        num_workers = _int_extension(extensions, "num_workers", 1)
        worker_index = _int_extension(extensions, "worker_index", 0)
        subscribe = extensions.get("subscribe", False)
        if not isinstance(subscribe, (bool, np.bool_)):
            raise TypeError(
                "KafkaDataset: subscribe must be a Python bool, got %s %r"
                % (type(subscribe).__name__, subscribe)
            )
        metadata = extensions.get("metadata", False)
        if not isinstance(metadata, (bool, np.bool_)):
            raise TypeError(
                "KafkaDataset: metadata must be a Python bool, got %s %r"
                % (type(metadata).__name__, metadata)
            )
        if not isinstance(message_key, (bool, np.bool_)):
            raise TypeError(
                "KafkaDataset: message_key must be a Python bool, got %s %r"
                % (type(message_key).__name__, message_key)
            )
        if topics is None:
            raise TypeError(
                "KafkaDataset: topics is required (a str or a list of "
                "'topic:partition:offset:last' entries)"
            )
        self._name = None
        self._message_key = bool(message_key)
        self._topics = _string_vector("topics", topics)
        self._servers = _string_scalar("servers", servers, join_lists=True)
        self._group = _string_scalar("group", group)
        self._eof = _bool_scalar("eof", eof)
        self._timeout = _int64_scalar("timeout", timeout)
        self._config_global = _string_vector("config_global", config_global)
        policies = _library_policies(extensions)
        if policies:
            # Last: they win over the same keys given in config_global.
            self._config_global = tf.concat(
                [self._config_global, tf.constant(policies, dtype=tf.string)], 0
            )
        self._config_topic = _string_vector("config_topic", config_topic)

        self._with_metadata = bool(metadata)
        value_spec = tf.TensorSpec([None] if self._batch_size else [], tf.string)
        if self._with_metadata:
            self._element_spec = _metadata_spec(bool(self._batch_size))
        elif self._message_key:
            self._element_spec = (value_spec, value_spec)
        else:
            self._element_spec = value_spec

        ops = _loader.load_library()
        attrs = {"message_key": self._message_key}
        if self._with_metadata:
            attrs["message_metadata"] = True
        if self._batch_size:
            attrs["batch_size"] = self._batch_size
        if (num_workers, worker_index) != (1, 0):
            attrs["num_workers"] = num_workers
            attrs["worker_index"] = worker_index
        if subscribe:
            attrs["subscribe"] = True
        variant_tensor = getattr(ops, _loader.OP_FUNCTION)(
            self._topics,
            self._servers,
            self._group,
            self._eof,
            self._timeout,
            self._config_global,
            self._config_topic,
            **attrs,
        )
        self._op_dataset = None
        if self._with_metadata:
            batched = bool(self._batch_size)
            self._op_dataset = _OpDataset(variant_tensor, _op_spec(batched))
            variant_tensor = _structure_metadata(self._op_dataset, batched)._variant_tensor
        super(KafkaDatasetV2, self).__init__(variant_tensor)

    def _inputs(self):
        # With metadata the variant is a map over the op; report the op's dataset as the input
        # (options and functions are traced through inputs).
        return [self._op_dataset] if self._op_dataset is not None else []

    @property
    def element_spec(self):
        return self._element_spec


class KafkaDatasetV1(dataset_ops.DatasetV1Adapter):
    """`KafkaDataset` for `tf.compat.v1` code: has `output_types` / `output_shapes`."""

    def __init__(
        self,
        topics,
        servers="localhost",
        group="",
        eof=False,
        timeout=1000,
        config_global=None,
        config_topic=None,
        message_key=False,
        **extensions,
    ):
        wrapped = KafkaDatasetV2(
            topics,
            servers,
            group,
            eof,
            timeout,
            config_global,
            config_topic,
            message_key,
            **extensions,
        )
        super(KafkaDatasetV1, self).__init__(wrapped)

    __init__.__doc__ = KafkaDatasetV2.__init__.__doc__


KafkaDataset = KafkaDatasetV2
