"""Test-side helpers: the independent merge oracle and bounded TF readers.

The oracle is deliberately written from DESIGN.md §2.2 alone, not from the implementation:
repeatedly emit the head (next unread message, offset order inside a partition) with the smallest
``(timestamp, stream index, offset)``.
"""

import heapq
import json
import threading
import time

import tensorflow as tf

BASE_TS = 1_700_000_000_000  # a realistic CreateTime (ms since the epoch)


def kway_merge(streams):
    """``streams``: per stream (in stream-index order) a list of ``(timestamp, offset, payload)``
    in offset order. Returns the payloads in emission order. O(n*k), obviously correct."""
    heads = [0] * len(streams)
    out = []
    while True:
        best = None
        for index, stream in enumerate(streams):
            if heads[index] < len(stream):
                ts, offset, payload = stream[heads[index]]
                key = (ts, index, offset)
                if best is None or key < best[0]:
                    best = (key, index, payload)
        if best is None:
            return out
        out.append(best[2])
        heads[best[1]] += 1


def kway_merge_heapq(streams):
    """The same rule with a heap of heads (a second, independent formulation)."""
    heap = []
    for index, stream in enumerate(streams):
        if stream:
            ts, offset, _ = stream[0]
            heap.append((ts, index, offset, 0))
    heapq.heapify(heap)
    out = []
    while heap:
        _, index, _, pos = heapq.heappop(heap)
        out.append(streams[index][pos][2])
        if pos + 1 < len(streams[index]):
            ts, offset, _ = streams[index][pos + 1]
            heapq.heappush(heap, (ts, index, offset, pos + 1))
    return out


def streams_from_delivered(delivered, partition_order):
    """Per-partition ``(timestamp, offset, value)`` lists (offset order), in ``partition_order``."""
    by_partition = {p: [] for p in partition_order}
    for d in delivered:
        if d.partition in by_partition:
            by_partition[d.partition].append((d.timestamp, d.offset, d.value))
    return [sorted(by_partition[p], key=lambda x: x[1]) for p in partition_order]


def first_difference(got, expected):
    for i, (a, b) in enumerate(zip(got, expected)):
        if a != b:
            return "first difference at index %d: got %r, expected %r (got[%d:%d]=%r)" % (
                i,
                a,
                b,
                max(0, i - 2),
                i + 3,
                got[max(0, i - 2) : i + 3],
            )
    if len(got) != len(expected):
        return "length differs: got %d, expected %d" % (len(got), len(expected))
    return "equal"


def to_py(element):
    """Eager element (tensor or tuple of tensors) -> bytes / tuple of bytes / numpy array."""
    if isinstance(element, (tuple, list)):
        return tuple(to_py(e) for e in element)
    value = element.numpy()
    return value.tolist() if hasattr(value, "tolist") and getattr(value, "ndim", 0) else value


def eager_values(dataset, limit=100_000):
    out = []
    for element in dataset:
        out.append(to_py(element))
        if len(out) > limit:
            raise AssertionError("dataset did not end after %d elements" % limit)
    return out


class GraphReader:
    """A TF1 graph + Session reading a dataset with a deadline on every ``get_next``.

    ``make_dataset`` is called inside the reader's graph. Every read is bounded by
    ``RunOptions(timeout_in_ms)``, so a reader that blocks fails the test instead of hanging it.
    """

    def __init__(self, make_dataset, saveable=False):
        self.graph = tf.Graph()
        self.saver = None
        with self.graph.as_default():
            self.dataset = make_dataset()
            self.iterator = tf.compat.v1.data.make_initializable_iterator(self.dataset)
            self.next_op = self.iterator.get_next()
            if saveable:  # the seed example's Saver over the iterator (SAVEABLE_OBJECTS)
                saveable_obj = tf.data.experimental.make_saveable_from_iterator(self.iterator)
                tf.compat.v1.add_to_collection(
                    tf.compat.v1.GraphKeys.SAVEABLE_OBJECTS, saveable_obj
                )
                self.saver = tf.compat.v1.train.Saver()
        self.session = tf.compat.v1.Session(graph=self.graph)

    def init(self):
        self.session.run(self.iterator.initializer)
        return self

    def next(self, timeout_ms=30_000):
        options = tf.compat.v1.RunOptions(timeout_in_ms=int(timeout_ms))
        return self.session.run(self.next_op, options=options)

    def take(self, n, timeout_ms=30_000):
        return [self.next(timeout_ms) for _ in range(n)]

    def read_to_end(self, timeout_ms=30_000, limit=100_000):
        """Reads until OutOfRange; a read that blocks past ``timeout_ms`` fails the test."""
        out = []
        while True:
            try:
                out.append(self.next(timeout_ms))
            except tf.errors.OutOfRangeError:
                return out
            except tf.errors.DeadlineExceededError:
                raise AssertionError(
                    "the dataset did not end: get_next blocked for %d ms after %d "
                    "elements %r" % (timeout_ms, len(out), out[-5:])
                )
            if len(out) > limit:
                raise AssertionError("dataset did not end after %d elements" % limit)

    def save(self, path):
        """``Saver.save``; returns the checkpoint prefix."""
        with self.graph.as_default():
            return self.saver.save(self.session, str(path))

    def restore(self, path):
        """The TF1 order: initializer first, then ``Saver.restore`` (DESIGN.md §5)."""
        self.init()
        with self.graph.as_default():
            self.saver.restore(self.session, str(path))
        return self

    def close(self):
        self.session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Stopwatch:
    def __init__(self):
        self.start = time.monotonic()

    @property
    def elapsed(self):
        return time.monotonic() - self.start


def parse_result(stdout):
    """The JSON payload of the child's ``RESULT {...}`` line."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise AssertionError("child printed no RESULT line; stdout:\n" + stdout[-4000:])


# --- iterator checkpoints: reading and rewriting the saved state ------------------------------
#
# TF stores an iterator's state as a DT_VARIANT tensor (TF2: ``.../ITERATOR_STATE``, TF1 Saver:
# ``..._STATE``). Each element is a VariantTensorData "tensorflow::Iterator" whose metadata is
# ``<iterator prefix>@@<key>@@<key>...`` and whose one tensor is a CompressedElement holding the
# values of those keys in order. Our kernel writes ``state`` (the versioned blob) and one readable
# int64 ``next_offset:<topic>:<partition>`` per stream. These helpers decode that with TF's own
# ops (SerializeTensor / ParseTensor, UncompressElement / CompressElement), so a rewritten
# checkpoint differs from the original only where the test changed it.

# The package's own reader of TF's variant lists (the inspector).
from kafka_dataset.inspect import _variant_elements  # noqa: E402

_KEY_DELIMITER = b"@@"
STATE_MAGIC = b"KDST"


def _varint(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _checkpoint_tensors(path):
    """{name: eager tensor} of every tensor in the checkpoint ``path`` (a prefix)."""
    dtypes = tf.train.load_checkpoint(str(path)).get_variable_to_dtype_map()
    out = {}
    for name, dtype in sorted(dtypes.items()):
        out[name] = tf.raw_ops.RestoreV2(
            prefix=str(path), tensor_names=[name], shape_and_slices=[""], dtypes=[dtype]
        )[0]
    return out


def _iterator_protos(variant):
    """A DT_VARIANT iterator-state tensor -> (TensorProto, [VariantTensorDataProto])."""
    from tensorflow.core.framework import tensor_pb2

    serialized = tf.io.serialize_tensor(variant).numpy()
    return tensor_pb2.TensorProto.FromString(serialized), _variant_elements(serialized)


def _element_entries(element):
    """One iterator's VariantTensorDataProto -> (prefix, [(key, numpy value)])."""
    from tensorflow.core.framework import dataset_pb2

    names = element.metadata.split(_KEY_DELIMITER)
    prefix, keys = names[0].decode(), [k.decode() for k in names[1:]]
    if not keys:
        return prefix, []
    compressed = element.tensors[0]
    meta = dataset_pb2.CompressedElement.FromString(compressed.variant_val[0].metadata)
    values = tf.raw_ops.UncompressElement(
        compressed=tf.io.parse_tensor(compressed.SerializeToString(), tf.variant),
        output_types=[tf.dtypes.as_dtype(m.dtype) for m in meta.component_metadata],
        output_shapes=[tf.TensorShape(m.tensor_shape) for m in meta.component_metadata],
    )
    assert len(values) == len(keys), (keys, len(values))
    return prefix, [(k, v.numpy()) for k, v in zip(keys, values)]


def iterator_state_entries(path):
    """Every iterator prefix's saved entries in checkpoint ``path``:
    ``{checkpoint tensor name: {iterator prefix: {key: value}}}``."""
    out = {}
    for name, tensor in _checkpoint_tensors(path).items():
        if tensor.dtype != tf.variant:
            continue
        _, elements = _iterator_protos(tensor)
        out[name] = {p: dict(e) for p, e in (_element_entries(x) for x in elements)}
    return out


def kafka_state_entries(path):
    """The saved entries of the one KafkaDataset iterator in checkpoint ``path``."""
    found = [
        entries
        for per_prefix in iterator_state_entries(path).values()
        for entries in per_prefix.values()
        if "state" in entries and bytes(entries["state"]).startswith(STATE_MAGIC)
    ]
    assert len(found) == 1, "expected one KafkaDataset state in %s, found %d" % (path, len(found))
    return found[0]


def rewrite_kafka_state(src, dst, transform):
    """Copies checkpoint ``src`` to ``dst`` (prefixes), passing the entries of every iterator that
    holds a KafkaDataset state through ``transform({key: value}) -> {key: value}`` (bytes for
    strings, ints for int64; keys may be renamed or dropped). Returns ``dst``."""
    tensors = _checkpoint_tensors(src)
    changed = 0
    for name, tensor in list(tensors.items()):
        if tensor.dtype != tf.variant:
            continue
        proto, elements = _iterator_protos(tensor)
        for element in elements:
            prefix, entries = _element_entries(element)
            state = dict(entries).get("state")
            if not isinstance(state, bytes) or not state.startswith(STATE_MAGIC):
                continue
            new = transform(dict(entries))
            element.metadata = _KEY_DELIMITER.join([prefix.encode()] + [k.encode() for k in new])
            del element.tensors[:]
            if new:
                components = [
                    tf.constant(v, dtype=tf.string if isinstance(v, bytes) else tf.int64)
                    for v in new.values()
                ]
                packed = tf.raw_ops.CompressElement(components=components)
                element.tensors.add().MergeFromString(tf.io.serialize_tensor(packed).numpy())
            changed += 1
        data = [e.SerializeToString() for e in elements]
        proto.tensor_content = b"".join(_varint(len(d)) for d in data) + b"".join(data)
        tensors[name] = tf.io.parse_tensor(proto.SerializeToString(), tf.variant)
    assert changed, "no KafkaDataset state found in %s" % src
    names = sorted(tensors)
    tf.raw_ops.SaveV2(
        prefix=str(dst),
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=[tensors[n] for n in names],
    )
    return str(dst)


def seal_state(body):
    """``body`` (a state without its trailing CRC) + its CRC32 (little-endian), as the codec
    writes it: a modified state that only the later checks can reject."""
    import struct
    import zlib

    return body + struct.pack("<I", zlib.crc32(body))


def state_with_version(state, version):
    """``state`` with its format version (u16 LE at bytes 4..6) set and its CRC32 recomputed, so
    only the version check can reject it."""
    import struct

    return seal_state(state[:4] + struct.pack("<H", version) + state[6:-4])


def read_until_end(dataset, seconds=60):
    """Every element of a dataset that must end by itself, or fail after ``seconds`` (a read
    that never ends is a failure, not a hang)."""
    got, errors = [], []

    def run():
        try:
            got.extend(v.numpy() for v in dataset)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "did not end within %d s (%d elements)" % (seconds, len(got))
    if errors:
        raise errors[0]
    return got
