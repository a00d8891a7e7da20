"""Test-side helpers: the independent merge oracle and bounded TF readers.

The oracle is deliberately written from DESIGN.md §2.2 alone, not from the implementation:
repeatedly emit the head (next unread message, offset order inside a partition) with the smallest
``(timestamp, stream index, offset)``.
"""

import heapq
import json
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

    def __init__(self, make_dataset):
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.dataset = make_dataset()
            self.iterator = tf.compat.v1.data.make_initializable_iterator(self.dataset)
            self.next_op = self.iterator.get_next()
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
