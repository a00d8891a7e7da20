"""Save/restore through tf.data pipelines (DESIGN §2.5): for each pipeline over KafkaDataset
(map, batch, shuffle with its buffer, prefetch, interleave of several KafkaDatasets, repeat, and
a combination), one iterator saves at several break points while it reads on; each checkpoint is
then restored into a fresh iterator of a fresh dataset built the same way, which must continue
with exactly the uninterrupted run's remaining elements."""

import pytest
import tensorflow as tf
from helpers import BASE_TS, first_difference, to_py

PARTITIONS = 3
TOTAL = 40


def _drain(iterator, limit=10_000):
    out = []
    for element in iterator:
        out.append(to_py(element))
        assert len(out) <= limit, "the pipeline did not end"
    return out


@pytest.fixture(scope="module")
def data(broker):
    """One topic for the single-source pipelines, three for interleave (created once)."""
    from kafka_dataset import testing as kt

    servers = broker.bootstrap
    main = kt.create_topic(servers, kt.unique_name("pipelines"), PARTITIONS)
    kt.produce(
        servers,
        main,
        [
            (i % PARTITIONS, "m%02d" % i, None, BASE_TS + 10 * i - (15 if i % 4 == 1 else 0))
            for i in range(TOTAL)
        ],
    )
    inputs = []
    for tag in "abc":
        topic = kt.create_topic(servers, kt.unique_name("interleave-" + tag), 2)
        kt.produce(
            servers,
            topic,
            [(i % 2, "%s%02d" % (tag, i), None, BASE_TS + 10 * i) for i in range(11)],
        )
        inputs.append(topic)
    return {"servers": servers, "topic": main, "inputs": inputs}


def _source(kd, data, topics=None):
    return kd.KafkaDataset(
        data["topic"] if topics is None else topics, servers=data["servers"], eof=True, timeout=200
    )


def _interleave(kd, data, parallel):
    def open_topic(topic):
        return kd.KafkaDataset(topic, servers=data["servers"], eof=True, timeout=200)

    names = tf.data.Dataset.from_tensor_slices(data["inputs"])
    if parallel:
        return names.interleave(
            open_topic, cycle_length=2, block_length=2, num_parallel_calls=2, deterministic=True
        )
    return names.interleave(open_topic, cycle_length=2, block_length=2)


def _exclaim(x):
    return tf.strings.join([x, "!"])


PIPELINES = {
    "map": lambda kd, d: _source(kd, d).map(_exclaim),
    "parallel-map": lambda kd, d: _source(kd, d).map(
        _exclaim, num_parallel_calls=2, deterministic=True
    ),
    "batch": lambda kd, d: _source(kd, d).batch(7),
    "shuffle": lambda kd, d: _source(kd, d).shuffle(16, seed=7),
    "prefetch": lambda kd, d: _source(kd, d).prefetch(4),
    "interleave": lambda kd, d: _interleave(kd, d, parallel=False),
    "parallel-interleave": lambda kd, d: _interleave(kd, d, parallel=True),
    "repeat": lambda kd, d: _source(kd, d).repeat(2),
    "map-shuffle-batch-prefetch": lambda kd, d: (
        _source(kd, d)
        .map(_exclaim, num_parallel_calls=2, deterministic=True)
        .shuffle(10, seed=3)
        .batch(4)
        .prefetch(2)
    ),
}


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_restore_continues_the_uninterrupted_run(kd, data, tmp_path, name):
    build = lambda: PIPELINES[name](kd, data)  # noqa: E731
    full = _drain(iter(build()))
    n = len(full)
    assert n >= 5, full
    if name in ("shuffle", "map-shuffle-batch-prefetch"):
        flat = [x for e in full for x in (e if isinstance(e, list) else [e])]
        assert len(set(flat)) == len(flat) == TOTAL, "shuffle lost or repeated elements"
    if name == "repeat":
        assert full[: n // 2] * 2 == full, "every epoch re-reads the same data"

    # One iterator saves at every break point while it reads on; saving must not disturb it.
    breaks = sorted({0, 1, n // 3, n // 2 + 1, n - 1, n})
    it = iter(build())
    ckpt = tf.train.Checkpoint(iterator=it)
    head, paths = [], {}
    for k in breaks:
        while len(head) < k:
            head.append(to_py(next(it)))
        paths[k] = ckpt.write(str(tmp_path / ("k%d" % k)))
    head += _drain(it)
    assert head == full, "saving changed the run: " + first_difference(head, full)
    # Past the end: the exhausted iterator saves, and restores to an exhausted iterator.
    paths[n + 1] = ckpt.write(str(tmp_path / "past-end"))

    for k, path in sorted(paths.items()):
        restored = iter(build())  # a fresh dataset built the same way, and a fresh iterator
        tf.train.Checkpoint(iterator=restored).read(path).assert_consumed()
        rest = _drain(restored)
        want = full[min(k, n) :]
        assert rest == want, "%s, saved after %d elements: %s" % (
            name,
            k,
            first_difference(rest, want),
        )
