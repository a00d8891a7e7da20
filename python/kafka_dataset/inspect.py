"""KafkaDataset positions read from TF iterator checkpoints (``python -m kafka_dataset inspect``).

    from kafka_dataset import inspect
    for row in inspect.read_positions("/ckpt/dir"):         # a prefix or a directory
        print(row["topic"], row["partition"], row["next_offset"])
    rows = inspect.with_lag(rows, "broker:9092")            # + low, high, lag (confluent-kafka)

How TF stores an iterator: the checkpoint holds a DT_VARIANT tensor per iterator (TF2
``tf.train.Checkpoint(iterator=it)``: ``<name>/.ATTRIBUTES/ITERATOR_STATE``; TF1 ``Saver`` with
``make_saveable_from_iterator``: ``<iterator op>:0_STATE``), one element per dataset iterator of
the pipeline. Each element is a ``VariantTensorDataProto`` (type ``tensorflow::Iterator``) whose
``metadata`` is ``<iterator prefix>@@<key>@@<key>...`` and whose tensors hold the values of those
keys in order -- or, since TF compresses iterator checkpoints, one scalar variant
``CompressedElement`` holding all of them. The KafkaDataset kernel writes its versioned ``state``
blob plus one readable int64 ``next_offset:<topic>:<partition>`` per partition; this module reads
only the latter (with protobuf classes and TF's own ops; it never parses the state blob and never
loads the op library).

``next_offset`` is where the KafkaDataset itself reads next. In a pipeline with buffering
(``prefetch``, ``shuffle``, parallel ``map``...) elements it already read may still sit in those
buffers, saved in the same checkpoint; they come out first after a restore.
"""

import logging
import os

import tensorflow as tf
from google.protobuf.message import DecodeError

__all__ = ["InspectError", "read_positions", "resolve_checkpoint", "with_lag"]

NEXT_OFFSET_PREFIX = "next_offset:"
"""Key prefix of the per-partition positions the kernel writes (cc/kafka_dataset_op.cc)."""

DATASET_TYPE = "KdKafka"
"""The KafkaDataset's component in iterator prefixes (``Iterator::Root::...::KdKafka``)."""

_ITERATOR_TYPE_NAME = "tensorflow::Iterator"
_COMPRESSED_TYPE_NAME = "tensorflow.data.CompressedElement"
_KEY_DELIMITER = b"@@"
_CHECKPOINT_SUFFIXES = (".index", ".meta")

_log = logging.getLogger(__name__)
_log.addHandler(logging.NullHandler())  # librdkafka's connection noise: only if logging is set up


class InspectError(Exception):
    """A checkpoint that cannot be inspected: missing, unreadable, or without KafkaDataset state.
    The message names the path."""


def resolve_checkpoint(path):
    """The checkpoint prefix ``path`` designates.

    ``path`` may be a prefix (``/ckpt/ckpt-3``), one of its files (``ckpt-3.index``), or a
    directory: then the latest checkpoint its ``checkpoint`` file names
    (``tf.train.latest_checkpoint``), else its only ``*.index`` prefix
    (``tf.train.Checkpoint.write`` writes no ``checkpoint`` file). Raises `InspectError` if
    there is no such checkpoint.
    """
    path = os.fspath(path)
    if tf.io.gfile.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest is not None:
            return latest
        prefixes = sorted(
            name[: -len(".index")] for name in tf.io.gfile.listdir(path) if name.endswith(".index")
        )
        if len(prefixes) == 1:
            return os.path.join(path, prefixes[0])
        if not prefixes:
            raise InspectError("no checkpoint in directory %s" % path)
        raise InspectError(
            "several checkpoints in directory %s and no 'checkpoint' file naming the latest; "
            "pass one prefix: %s" % (path, ", ".join(prefixes))
        )
    prefix = path
    for suffix in _CHECKPOINT_SUFFIXES:
        if prefix.endswith(suffix):
            prefix = prefix[: -len(suffix)]
    data = prefix.rsplit(".data-", 1)
    if len(data) == 2 and "-of-" in data[1]:
        prefix = data[0]
    if tf.io.gfile.exists(prefix + ".index"):
        return prefix
    raise InspectError("no such checkpoint: %s (no %s.index)" % (path, prefix))


def read_positions(checkpoint):
    """Where every KafkaDataset iterator saved in ``checkpoint`` reads next.

    Args:
      checkpoint: A checkpoint prefix, or a directory of checkpoints (see `resolve_checkpoint`).
        TF2 ``tf.train.Checkpoint`` and TF1 ``Saver`` checkpoints both work, also when the
        iterator is one of a pipeline (``KafkaDataset(...).map(f).batch(8).prefetch(1)``).

    Returns:
      A list of dicts, one per partition, in the order the dataset lists its partitions:
      ``{"topic": str, "partition": int, "next_offset": int, "key": str, "iterator": str}``.
      ``next_offset`` is the offset of the next message the KafkaDataset will read from that
      partition (messages before it were emitted into the pipeline). ``key`` is the checkpoint
      tensor holding the iterator (``iterator/.ATTRIBUTES/ITERATOR_STATE``, ``IteratorV2:0_STATE``,
      ...) and ``iterator`` the KafkaDataset's iterator prefix in it, which tell apart several
      KafkaDataset iterators saved in one checkpoint.

    Raises:
      InspectError: no such checkpoint, an unreadable one, or one without KafkaDataset state.
    """
    prefix = resolve_checkpoint(checkpoint)
    try:
        dtypes = tf.train.load_checkpoint(prefix).get_variable_to_dtype_map()
    except (tf.errors.OpError, ValueError) as e:
        raise InspectError("cannot read checkpoint %s: %s" % (prefix, _first_line(e)))
    names = sorted(name for name, dtype in dtypes.items() if dtype == tf.variant)
    rows = []
    found = False
    with _Evaluator() as evaluate:
        for name in names:
            try:
                serialized = evaluate(
                    lambda name=name: tf.io.serialize_tensor(
                        tf.raw_ops.RestoreV2(
                            prefix=prefix,
                            tensor_names=[name],
                            shape_and_slices=[""],
                            dtypes=[tf.variant],
                        )[0]
                    )
                )
            except tf.errors.OpError as e:
                raise InspectError(
                    "cannot read %s from checkpoint %s: %s" % (name, prefix, _first_line(e))
                )
            try:
                elements = _variant_elements(serialized)
            except (ValueError, DecodeError):
                continue  # a variant that is not an iterator state: not ours
            for element in elements:
                if element.type_name != _ITERATOR_TYPE_NAME:
                    continue
                iterator, keys = _split_metadata(element.metadata)
                if not _is_kafka_iterator(iterator, keys):
                    continue
                found = True
                values = _element_values(element, keys, evaluate, name, prefix)
                for key, value in zip(keys, values):
                    if not key.startswith(NEXT_OFFSET_PREFIX):
                        continue
                    topic, _, partition = key[len(NEXT_OFFSET_PREFIX) :].rpartition(":")
                    if not topic or not partition.isdigit():
                        raise InspectError(
                            "checkpoint %s, %s: malformed key %r" % (prefix, name, key)
                        )
                    rows.append(
                        {
                            "topic": topic,
                            "partition": int(partition),
                            "next_offset": int(value),
                            "key": name,
                            "iterator": iterator,
                        }
                    )
    if not found:
        raise InspectError(
            "no KafkaDataset iterator state in checkpoint %s (%s)"
            % (
                prefix,
                "iterator tensors: " + ", ".join(names) if names else "it holds no iterator",
            )
        )
    return rows


def with_lag(positions, servers, config=None, timeout=10.0):
    """``positions`` (from `read_positions`) with each partition's live watermarks and lag.

    Connects to the cluster with confluent-kafka (imported here; ``pip install confluent-kafka``).
    Every row gets ``low`` and ``high`` (the partition's log start and end offsets) and
    ``lag = high - next_offset`` (messages not yet read by the checkpointed iterator; negative if
    the checkpoint is ahead of the log, e.g. after the topic was recreated). A partition whose
    watermarks cannot be read gets ``low``/``high``/``lag`` None and an ``error`` string.

    Args:
      positions: Rows with ``topic``, ``partition``, ``next_offset``.
      servers: Bootstrap servers, ``host:port[,host:port...]``.
      config: Extra client properties (``{"security.protocol": "SSL", ...}``) for the consumer;
        ``servers`` wins over ``bootstrap.servers``. Values ``${env:NAME}`` / ``${file:PATH}``
        are read here, as the dataset does, so secrets stay off command lines. The consumer
        never joins a group or commits.
        librdkafka's log goes to the ``kafka_dataset.inspect`` logger.
      timeout: Seconds to wait for the cluster, per request.

    Raises:
      ImportError: confluent-kafka is not installed.
      InspectError: bad client configuration, or the cluster cannot be reached.
    """
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    settings = {"group.id": "kafka-dataset-inspect", "enable.auto.commit": False, "logger": _log}
    settings.update({key: _resolve_reference(key, value) for key, value in (config or {}).items()})
    settings["bootstrap.servers"] = servers
    settings.setdefault("socket.connection.setup.timeout.ms", int(max(timeout, 1) * 1000))
    try:
        consumer = Consumer(settings)
    except (KafkaException, ValueError, TypeError) as e:
        raise InspectError("cannot create a Kafka client for %s: %s" % (servers, _first_line(e)))
    try:
        try:
            metadata = consumer.list_topics(timeout=timeout)
        except KafkaException as e:
            raise InspectError("cannot reach Kafka at %s: %s" % (servers, _first_line(e)))
        out = []
        for row in positions:
            row = dict(row, low=None, high=None, lag=None)
            topic = metadata.topics.get(row["topic"])
            if topic is None or topic.error is not None or row["partition"] not in topic.partitions:
                row["error"] = "unknown topic or partition"
                out.append(row)
                continue
            try:
                marks = consumer.get_watermark_offsets(
                    TopicPartition(row["topic"], row["partition"]), timeout=timeout, cached=False
                )
            except KafkaException as e:
                marks, row["error"] = None, _first_line(e)
            if marks is None:
                row.setdefault("error", "timed out reading watermarks")
            else:
                row["low"], row["high"] = int(marks[0]), int(marks[1])
                row["lag"] = row["high"] - row["next_offset"]
            out.append(row)
        return out
    finally:
        consumer.close()


# --- decoding ------------------------------------------------------------------------------


def _first_line(error):
    arg = error.args[0] if getattr(error, "args", None) else None
    if callable(getattr(arg, "str", None)):  # confluent_kafka.KafkaError
        text = arg.str()
    else:
        text = getattr(error, "message", None) or str(error)
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__


class _Evaluator:
    """Runs small TF computations eagerly, or in a private graph + session when eager execution
    is disabled (TF1 programs); returns numpy values."""

    def __enter__(self):
        self._session = None
        with tf.init_scope():
            eager = tf.executing_eagerly()
        if not eager:
            self._graph = tf.Graph()
            self._session = tf.compat.v1.Session(graph=self._graph)
        return self

    def __call__(self, build):
        if self._session is None:
            with tf.init_scope():
                return tf.nest.map_structure(lambda t: t.numpy(), build())
        with self._graph.as_default():
            return self._session.run(build())

    def __exit__(self, *exc):
        if self._session is not None:
            self._session.close()


def _read_varint(buf, pos):
    shift = value = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated variant list")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _variant_elements(serialized):
    """A serialized DT_VARIANT TensorProto -> its ``VariantTensorDataProto`` elements.

    TF writes a variant tensor's elements either as ``variant_val`` or as ``tensor_content``
    holding TF's encoded variant list: one varint size per element, then the serialized
    elements."""
    from tensorflow.core.framework import tensor_pb2

    proto = tensor_pb2.TensorProto.FromString(serialized)
    if proto.variant_val:
        return list(proto.variant_val)
    count = 1
    for dim in proto.tensor_shape.dim:
        count *= dim.size
    buf, pos, sizes = proto.tensor_content, 0, []
    for _ in range(count):
        size, pos = _read_varint(buf, pos)
        sizes.append(size)
    elements = []
    for size in sizes:
        if pos + size > len(buf):
            raise ValueError("truncated variant list")
        elements.append(tensor_pb2.VariantTensorDataProto.FromString(buf[pos : pos + size]))
        pos += size
    return elements


def _resolve_reference(key, value):
    """``${env:NAME}`` / ``${file:PATH}`` -> the variable / the file's contents without trailing
    newlines (like the core's config references); other values as they are. Errors name the
    key and the variable or file, never a value."""
    if not isinstance(value, str) or not (value.startswith("${") and value.endswith("}")):
        return value
    kind, _, name = value[2:-1].partition(":")
    if kind == "env":
        if name not in os.environ:
            raise InspectError("config %s: environment variable %s is not set" % (key, name))
        return os.environ[name]
    if kind == "file":
        try:
            with open(name) as f:
                return f.read().rstrip("\r\n")
        except OSError as e:
            raise InspectError("config %s: cannot read %s (%s)" % (key, name, e.strerror))
    return value


def _split_metadata(metadata):
    """``<iterator prefix>@@<key>@@<key>...`` -> (prefix, [keys]); empty parts are skipped."""
    parts = [p.decode("utf-8", "replace") for p in metadata.split(_KEY_DELIMITER) if p]
    if not parts:
        return "", []
    return parts[0], parts[1:]


def _is_kafka_iterator(iterator, keys):
    last = iterator.rsplit("::", 1)[-1]
    return last.startswith(DATASET_TYPE) or any(k.startswith(NEXT_OFFSET_PREFIX) for k in keys)


def _compressed_element(element):
    """The single scalar ``CompressedElement`` variant TF packs an iterator's values into (TF's
    ``IteratorStateVariant::GetCompressedElement`` rule), or None if the tensors are plain."""
    if len(element.tensors) != 1:
        return None
    tensor = element.tensors[0]
    if tensor.dtype != tf.variant.as_datatype_enum or tensor.tensor_shape.dim:
        return None
    if len(tensor.variant_val) != 1 or tensor.variant_val[0].type_name != _COMPRESSED_TYPE_NAME:
        return None
    return tensor


def _compressed_element_proto():
    try:
        from tensorflow.core.framework import dataset_pb2
    except ImportError:  # older TF kept it under core/data
        from tensorflow.core.data import dataset_pb2
    return dataset_pb2.CompressedElement


def _element_values(element, keys, evaluate, name, prefix):
    """The values of ``keys`` in one iterator element (numpy values / arrays)."""
    compressed = _compressed_element(element)
    if compressed is None:
        if len(element.tensors) != len(keys):
            raise InspectError(
                "checkpoint %s, %s: %d keys but %d tensors"
                % (prefix, name, len(keys), len(element.tensors))
            )
        return [tf.make_ndarray(t) for t in element.tensors]
    meta = _compressed_element_proto().FromString(compressed.variant_val[0].metadata)
    components = list(meta.component_metadata)
    if len(components) != len(keys):
        raise InspectError(
            "checkpoint %s, %s: %d keys but %d compressed components"
            % (prefix, name, len(keys), len(components))
        )
    serialized = compressed.SerializeToString()

    def uncompress():
        return tf.raw_ops.UncompressElement(
            compressed=tf.io.parse_tensor(serialized, tf.variant),
            output_types=[tf.dtypes.as_dtype(m.dtype) for m in components],
            output_shapes=[tf.TensorShape(m.tensor_shape) for m in components],
        )

    try:
        return list(evaluate(uncompress))
    except tf.errors.OpError as e:
        raise InspectError("cannot decode %s in checkpoint %s: %s" % (name, prefix, _first_line(e)))
