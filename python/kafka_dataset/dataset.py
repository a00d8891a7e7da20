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
EXTENSIONS = frozenset({"batch_size", "num_workers", "worker_index", "subscribe"})


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
            `subscribe=True`: consumer-group mode. Each iterator joins `group` (required) and
            reads the partitions the group assigns it, moving them on rebalances
            (cooperative-sticky); entries are topic names. A partition starts at the group's
            committed offset (its log start when none), emitted offsets are committed
            periodically, on save, on revoke and on close: at-least-once, see the README.
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
        self._config_topic = _string_vector("config_topic", config_topic)

        value_spec = tf.TensorSpec([None] if self._batch_size else [], tf.string)
        self._element_spec = (value_spec, value_spec) if self._message_key else value_spec

        ops = _loader.load_library()
        attrs = {"message_key": self._message_key}
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
        super(KafkaDatasetV2, self).__init__(variant_tensor)

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
