"""Observability: per-iterator counters and positions readable from Python (eager and graph),
and the optional periodic log line."""

import json
import re

import pytest
import tensorflow as tf
from helpers import BASE_TS


def mine(kd, topic):
    """The stats of the one live iterator reading `topic`."""
    found = [s for s in kd.stats() if s["topics"] == [topic]]
    assert len(found) == 1, kd.stats()
    return found[0]


def by_partition(stats):
    return {p["partition"]: p for p in stats["partitions"]}


def test_a_finished_read_counts_every_message_and_byte(kd, kafka):
    topic = kafka.new_topic(3)
    values = [b"v" * (i + 1) for i in range(30)]
    kafka.produce(
        topic, [(i % 3, values[i], b"key" if i % 2 else None, BASE_TS + i) for i in range(30)]
    )
    it = iter(kd.KafkaDataset([topic], servers=kafka.servers, eof=True, timeout=200))
    got = [v.numpy() for v in it]
    assert got == values
    s = mine(kd, topic)
    assert s["messages"] == 30
    assert s["bytes"] == sum(map(len, values)) + 3 * 15  # 15 keyed messages of 3 bytes
    assert (s["late_elements"], s["idle_passes"], s["skipped_offsets"], s["lag"]) == (0, 0, 0, 0)
    for p in range(3):
        part = by_partition(s)[p]
        assert (part["next_offset"], part["high_watermark"], part["lag"]) == (10, 10, 0), part
        assert part["finished"] is True
    del it
    assert not [x for x in kd.stats() if x["topics"] == [topic]], "a dropped iterator leaves"


def test_a_live_read_shows_exact_positions_and_lag(kd, kafka, tmp_path):
    topic = kafka.new_topic(2)
    kafka.produce(
        topic, [(i % 2, b"%d:%d" % (i % 2, i // 2), None, BASE_TS + i) for i in range(40)]
    )
    it = iter(kd.KafkaDataset([topic], servers=kafka.servers, eof=False, timeout=200))
    read = [next(it).numpy().decode() for _ in range(13)]
    next_offset = {0: 0, 1: 0}
    for value in read:
        p, seq = map(int, value.split(":"))
        next_offset[p] = seq + 1
    s = mine(kd, topic)
    assert s["messages"] == 13
    parts = by_partition(s)
    for p in (0, 1):
        assert parts[p]["next_offset"] == next_offset[p], parts
        # Every message was fetched before these were emitted: the watermark is the log end.
        assert parts[p]["high_watermark"] == 20, parts
        assert parts[p]["lag"] == 20 - next_offset[p]
        assert parts[p]["finished"] is False
    assert s["lag"] == 40 - 13

    # A restore: TensorFlow replaces the iterator; the stats show the restored one (the
    # replaced one left), at the checkpoint's positions, counting from there.
    ckpt = tf.train.Checkpoint(iterator=it)
    path = ckpt.write(str(tmp_path / "stats"))
    [next(it) for _ in range(5)]
    assert mine(kd, topic)["messages"] == 18
    ckpt.read(path).assert_consumed()
    after = mine(kd, topic)
    assert {p: x["next_offset"] for p, x in by_partition(after).items()} == next_offset
    assert after["messages"] == 0
    next(it)
    assert mine(kd, topic)["messages"] == 1


def test_the_graph_mode_tensor_holds_the_same_document(kd, kafka):
    topic = kafka.new_topic(1)
    kafka.produce(topic, [(0, b"x%d" % i, None, BASE_TS + i) for i in range(5)])
    with tf.Graph().as_default():
        ds = kd.KafkaDataset([topic], servers=kafka.servers, eof=True, timeout=200)
        element = tf.compat.v1.data.make_one_shot_iterator(ds).get_next()
        stats = kd.stats_tensor()
        with tf.compat.v1.Session() as sess:
            for _ in range(5):
                sess.run(element)
            document = json.loads(sess.run(stats))
            with pytest.raises(RuntimeError, match="stats_tensor"):
                kd.stats()
    found = [s for s in document["iterators"] if s["topics"] == [topic]]
    assert len(found) == 1 and found[0]["messages"] == 5, document


LOG_CHILD = r"""
import sys, threading, time
from confluent_kafka import Producer
import kafka_dataset as kd

topic, servers = sys.argv[1:3]
producer = Producer({"bootstrap.servers": servers, "linger.ms": 0})


def produce():
    # 30 messages over ~1.5 s: the reader waits between them, so its log interval passes.
    for i in range(30):
        producer.produce(topic, value=b"m%d" % i, partition=i % 2, timestamp=1700000000000 + i)
        producer.flush(10)
        time.sleep(0.05)


threading.Thread(target=produce, daemon=True).start()
it = iter(kd.KafkaDataset([topic], servers=servers, eof=False, timeout=100))
for _ in range(30):
    next(it)
"""


def test_the_periodic_log_line(kd, kafka, run_python):
    topic = kafka.new_topic(2)
    child = run_python(
        LOG_CHILD,
        args=[topic, kafka.servers],
        env={"KAFKA_DATASET_STATS_LOG_SECONDS": "0.3"},
        timeout=120,
    )
    pattern = re.compile(
        r"kafka-dataset: iterator \d+ \(%s\): (\d+) messages \([\d.]+/s\), [\d.]+ MiB "
        r"\([\d.]+ MiB/s\), lag (\d+|unknown), late 0, idle passes \d+, skipped 0" % topic
    )
    counts = [int(m.group(1)) for m in pattern.finditer(child.stderr)]
    assert len(counts) >= 2, child.stderr[-3000:]
    assert counts == sorted(counts) and 0 < counts[-1] <= 30, counts


def test_no_log_line_unless_asked(kd, kafka, run_python):
    topic = kafka.new_topic(2)
    child = run_python(LOG_CHILD, args=[topic, kafka.servers], timeout=120)
    assert "kafka-dataset: iterator" not in child.stderr
