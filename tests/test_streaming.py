"""eof=False (DESIGN §2.2, §2.3): late data arrives, deadlines and session close are prompt, and
an idle partition costs about `timeout` once, not once per element."""

import threading
import time

import pytest
import tensorflow as tf
from helpers import (
    BASE_TS,
    GraphReader,
    Stopwatch,
    first_difference,
    kway_merge,
    streams_from_delivered,
)


def test_data_produced_after_the_read_started_arrives(kd, kafka):
    topic = kafka.new_topic(2)
    kafka.produce(topic, [(0, b"w0-a", None, BASE_TS), (1, b"w0-b", None, BASE_TS + 1)])
    with GraphReader(
        lambda: kd.KafkaDatasetV1(
            [topic + ":0", topic + ":1"], servers=kafka.servers, eof=False, timeout=100
        )
    ) as r:
        r.init()
        # Wave 0 was there before the iterator started.
        assert r.take(2, timeout_ms=20_000) == [b"w0-a", b"w0-b"]

        # Wave 1 is produced while get_next is blocked on a caught-up stream.
        produced_at = []

        def produce_later():
            time.sleep(0.5)  # let the main thread block in get_next first
            kafka.produce(
                topic, [(1, b"w1-b", None, BASE_TS + 10), (0, b"w1-a", None, BASE_TS + 11)]
            )
            produced_at.append(time.monotonic())

        producer = threading.Thread(target=produce_later)
        started = time.monotonic()
        producer.start()
        try:
            first = r.next(timeout_ms=20_000)
        finally:
            producer.join(30)
        returned = time.monotonic()
        assert produced_at, "producer thread failed"
        assert returned >= started + 0.5, "get_next returned before anything was produced"
        second = r.next(timeout_ms=20_000)
        # Arrival order across partitions is a race while streaming; inside a wave we check the
        # set, and that nothing else sneaks in.
        assert sorted([first, second]) == [b"w1-a", b"w1-b"]

        # Wave 2: produced while no read is pending, read afterwards.
        kafka.produce(topic, [(0, b"w2-a%d" % i, None, BASE_TS + 100 + i) for i in range(3)])
        assert r.take(3, timeout_ms=20_000) == [b"w2-a0", b"w2-a1", b"w2-a2"]

        with pytest.raises(tf.errors.DeadlineExceededError):
            r.next(timeout_ms=1000)


def test_eager_streaming_blocks_until_data_arrives(kd, kafka):
    topic = kafka.new_topic(1)
    ds = kd.KafkaDataset([topic + ":0"], servers=kafka.servers, eof=False, timeout=100)
    it = iter(ds)
    timer = threading.Timer(0.5, lambda: kafka.produce(topic, [(0, b"late", None, BASE_TS)]))
    timer.start()
    try:
        watch = Stopwatch()
        assert next(it).numpy() == b"late"
        assert watch.elapsed >= 0.45
    finally:
        timer.cancel()
        timer.join(30)


@pytest.mark.parametrize("timeout_ms", [100, 5000])
def test_deadline_on_an_empty_stream_is_prompt(kd, kafka, timeout_ms):
    """A TF1 RunOptions deadline returns DeadlineExceeded within ~1 s of the deadline, whatever
    the dataset's `timeout` (the wait slice must honour cancellation)."""
    topic = kafka.new_topic(1)
    with GraphReader(
        lambda: kd.KafkaDatasetV1(
            [topic + ":0"], servers=kafka.servers, eof=False, timeout=timeout_ms
        )
    ) as r:
        r.init()
        watch = Stopwatch()
        with pytest.raises(tf.errors.DeadlineExceededError):
            r.next(timeout_ms=1500)
        assert 1.4 <= watch.elapsed <= 2.5, "deadline 1.5 s, returned after %.2f s" % watch.elapsed
        watch = Stopwatch()
    assert watch.elapsed < 2.0, "session close took %.2f s" % watch.elapsed


def test_no_message_is_lost_after_a_deadline(kd, kafka):
    """TF1 polling pattern. A step deadline cancels the iterator's own cancellation manager
    (TF's IteratorResource), so TF may report later get_next calls as Cancelled; either way the
    messages are not lost: they come next, or after re-running the initializer."""
    topic = kafka.new_topic(1)
    with GraphReader(
        lambda: kd.KafkaDatasetV1([topic + ":0"], servers=kafka.servers, eof=False, timeout=100)
    ) as r:
        r.init()
        with pytest.raises(tf.errors.DeadlineExceededError):
            r.next(timeout_ms=800)
        kafka.produce(topic, [(0, b"m%d" % i, None, BASE_TS + i) for i in range(3)])
        watch = Stopwatch()
        try:
            got = [r.next(timeout_ms=20_000)]
        except tf.errors.CancelledError:
            assert watch.elapsed < 2.0, "reporting Cancelled took %.2f s" % watch.elapsed
            r.init()
            got = []
        got += r.take(3 - len(got), timeout_ms=20_000)
        assert got == [b"m0", b"m1", b"m2"]


def test_session_close_cancels_a_blocked_get_next(kd, kafka):
    topic = kafka.new_topic(1)
    r = GraphReader(
        lambda: kd.KafkaDatasetV1([topic + ":0"], servers=kafka.servers, eof=False, timeout=1000)
    )
    r.init()
    outcome = []

    def blocked_read():
        try:
            outcome.append(r.session.run(r.next_op))
        except Exception as e:  # expected: CancelledError
            outcome.append(e)

    reader = threading.Thread(target=blocked_read, daemon=True)
    reader.start()
    reader.join(1.0)
    assert reader.is_alive() and not outcome, "get_next on an empty stream returned %r" % outcome
    watch = Stopwatch()
    r.close()
    reader.join(10)
    assert not reader.is_alive(), "get_next still blocked 10 s after Session.close()"
    assert watch.elapsed < 2.0, "close + unblock took %.2f s" % watch.elapsed
    assert len(outcome) == 1 and isinstance(outcome[0], tf.errors.CancelledError), outcome


def _busy_and_idle(kafka, per_partition=67, busy=3):
    topic = kafka.new_topic(busy + 1)  # the last partition stays empty
    records = []
    for i in range(per_partition):
        for p in range(busy):
            records.append((p, b"p%d-%03d" % (p, i), None, BASE_TS + 7 * i + 3 * p))
    delivered = kafka.produce(topic, records[:200])
    return topic, delivered


def test_idle_partition_costs_timeout_once_not_per_element(kd, kafka):
    topic, delivered = _busy_and_idle(kafka)
    assert len(delivered) == 200
    entries = ["%s:%d" % (topic, p) for p in range(4)]
    expected = kway_merge(streams_from_delivered(delivered, [0, 1, 2]))
    with GraphReader(
        lambda: kd.KafkaDatasetV1(entries, servers=kafka.servers, eof=False, timeout=1000)
    ) as r:
        r.init()
        watch = Stopwatch()
        got = r.take(200, timeout_ms=20_000)
        elapsed = watch.elapsed
    assert got == expected, first_difference(got, expected)
    # Per element it would be ~200 s; once per drained partition it is a few seconds.
    assert elapsed < 10.0, "200 elements with one idle partition took %.1f s" % elapsed


def test_idle_partition_with_eof_ends_promptly(kd, kafka):
    topic, delivered = _busy_and_idle(kafka)
    entries = ["%s:%d" % (topic, p) for p in range(4)]
    expected = kway_merge(streams_from_delivered(delivered, [0, 1, 2]))
    with GraphReader(
        lambda: kd.KafkaDatasetV1(entries, servers=kafka.servers, eof=True, timeout=1000)
    ) as r:
        watch = Stopwatch()
        got = r.init().read_to_end(timeout_ms=20_000)
        elapsed = watch.elapsed
    assert got == expected, first_difference(got, expected)
    assert elapsed < 10.0, "took %.1f s" % elapsed
