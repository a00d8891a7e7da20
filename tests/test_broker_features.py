"""What Apache Kafka's log holds besides plain batches, read exactly: every compression codec,
records deleted below a saved position (DeleteRecords, as retention does), transactions with
committed and aborted batches and their control markers, and compacted topics with offset gaps.
The oracles are the broker's delivery reports and a plain confluent-kafka read of the log."""

import pytest
import tensorflow as tf
from confluent_kafka import Producer, TopicPartition
from helpers import (
    BASE_TS,
    first_difference,
    kafka_state_entries,
    kway_merge,
    read_until_end,
    streams_from_delivered,
)
from kafka_dataset import testing as kt

CODECS = ["gzip", "snappy", "lz4", "zstd"]


def test_every_compression_codec_reads(kd, kafka):
    topic = kafka.new_topic(len(CODECS))
    delivered = []
    for p, codec in enumerate(CODECS):
        records = [(p, "%s-%03d" % (codec, i), None, BASE_TS + 4 * i + p) for i in range(300)]
        delivered += kafka.produce(topic, records, compression=codec, linger_ms=20)
    entries = ["%s:%d" % (topic, p) for p in range(len(CODECS))]
    got = read_until_end(kd.KafkaDataset(entries, servers=kafka.servers, eof=True))
    expected = kway_merge(streams_from_delivered(delivered, list(range(len(CODECS)))))
    assert got == expected, first_difference(got, expected)


def delete_records(servers, topic, partition, before):
    admin = kt.admin_client(servers)
    futures = admin.delete_records([TopicPartition(topic, partition, before)])
    for future in futures.values():
        future.result(30)


def iterator_stats(kd, topic):
    """The stats of the newest live iterator reading ``topic``."""
    return max((s for s in kd.stats() if topic in s["topics"]), key=lambda s: s["id"])


def test_records_deleted_below_a_saved_position_are_data_loss_or_skipped_and_counted(
    kd, kafka, tmp_path
):
    topic = kafka.new_topic(1)
    delivered = kafka.produce(topic, [(0, "r%02d" % i, None, BASE_TS + i) for i in range(40)])
    values = [d.value for d in delivered]
    entries = [topic + ":0"]
    it = iter(kd.KafkaDataset(entries, servers=kafka.servers, eof=True))
    assert [next(it).numpy() for _ in range(10)] == values[:10]
    path = tf.train.Checkpoint(iterator=it).write(str(tmp_path / "at-10"))
    del it
    delete_records(kafka.servers, topic, 0, 25)

    lost = iter(kd.KafkaDataset(entries, servers=kafka.servers, eof=True))
    with pytest.raises(tf.errors.DataLossError) as raised:
        tf.train.Checkpoint(iterator=lost).read(path).assert_consumed()
        next(lost)
    message = str(raised.value)
    assert "%s:0" % topic in message and "offset 10" in message and "25..40" in message, message
    del lost

    for policy, first in (("earliest", 25), ("latest", 40)):
        ds = kd.KafkaDataset(
            entries,
            servers=kafka.servers,
            eof=True,
            config_topic=["auto.offset.reset=" + policy],
        )
        reset = iter(ds)
        tf.train.Checkpoint(iterator=reset).read(path).assert_consumed()
        got = [v.numpy() for v in reset]
        assert got == values[first:], policy
        stats = iterator_stats(kd, topic)
        assert stats["skipped_offsets"] == first - 10, (policy, stats)
        assert stats["partitions"][0]["skipped_offsets"] == first - 10, (policy, stats)
        del reset


def transactional_producer(servers):
    producer = Producer(
        {
            "bootstrap.servers": servers,
            "transactional.id": kt.unique_name("tx"),
            "linger.ms": 5,
            "compression.type": "lz4",
        }
    )
    producer.init_transactions(30)
    return producer


def produce_transaction(producer, topic, records, commit):
    """Produces ``records`` ((partition, value, timestamp)) in one transaction, committed or
    aborted; returns ``(partition, offset, value, timestamp)`` per record."""
    out = []

    def report(err, msg):
        assert err is None, err
        out.append((msg.partition(), msg.offset(), msg.value(), msg.timestamp()[1]))

    producer.begin_transaction()
    for p, value, ts in records:
        producer.produce(topic, value=value.encode(), partition=p, timestamp=ts, on_delivery=report)
    producer.flush(30)
    if commit:
        producer.commit_transaction(30)
    else:
        producer.abort_transaction(30)
    return out


def test_transactions_committed_exactly_once_aborted_never_markers_end_ranges(kd, kafka, tmp_path):
    topic = kafka.new_topic(2)
    producer = transactional_producer(kafka.servers)
    sent = []
    for t, commit in enumerate([True, False, True, False, True]):
        records = [
            (i % 2, "t%d-%s-%02d" % (t, "c" if commit else "a", i), BASE_TS + 100 * t + i)
            for i in range(12)
        ]
        sent.append((commit, produce_transaction(producer, topic, records, commit)))
    committed = [r for commit, rs in sent if commit for r in rs]
    aborted = {r[2] for commit, rs in sent if not commit for r in rs}
    streams = [sorted((ts, off, v) for p, off, v, ts in committed if p == part) for part in (0, 1)]
    expected = kway_merge(streams)
    entries = ["%s:0" % topic, "%s:1" % topic]
    make = lambda **kw: kd.KafkaDataset(entries, servers=kafka.servers, **kw)  # noqa: E731

    got = read_until_end(make(eof=True))
    assert got == expected, first_difference(got, expected)
    assert not aborted & set(got)

    # A range whose last offset is a control marker (the commit marker right after the first
    # transaction's records on partition 0) ends, without eof: the marker is never delivered.
    first_tx_p0 = [off for p, off, _, _ in sent[0][1] if p == 0]
    marker = max(first_tx_p0) + 1
    ranged = kd.KafkaDataset(
        ["%s:0:0:%d" % (topic, marker)], servers=kafka.servers, eof=False, timeout=60000
    )
    assert read_until_end(ranged) == [v for ts, off, v in streams[0] if off < marker]

    # Save inside the first committed transaction, before the aborted one; restore in a new
    # iterator: exactly the rest.
    it = iter(make(eof=True))
    head = [next(it).numpy() for _ in range(5)]
    path = tf.train.Checkpoint(iterator=it).write(str(tmp_path / "before-abort"))
    del it
    restored = iter(make(eof=True))
    tf.train.Checkpoint(iterator=restored).read(path).assert_consumed()
    rest = [v.numpy() for v in restored]
    assert head + rest == expected, first_difference(head + rest, expected)


def test_compacted_topic_ranges_over_gaps_end_and_restore_exactly(kd, kafka, tmp_path):
    topic = kafka.new_topic(
        1,
        topic_config={
            "cleanup.policy": "compact",
            "segment.ms": "100",
            "min.cleanable.dirty.ratio": "0.001",
            "min.compaction.lag.ms": "0",
            "delete.retention.ms": "100",
        },
    )
    # 5 keys rewritten 20 times: compaction keeps the last value of each key.
    kafka.produce(topic, [(0, "v%03d" % i, "k%d" % (i % 5), BASE_TS + i) for i in range(100)])

    def survivors():
        # A later write rolls the segment (segment.ms) so the cleaner may compact the rest.
        kafka.produce(topic, [(0, "roll", "roll", BASE_TS + 1000)])
        log = kafka.read(topic, 0)
        return log if len([m for m in log if m.value != b"roll"]) <= 10 else None

    log = kt.wait_for(survivors, 90, "the log cleaner to compact %s" % topic, interval=1.0)
    offsets = [m.offset for m in log]
    gaps = [o for o in range(offsets[-1]) if o not in set(offsets)]
    assert gaps, "compaction left no gap"
    values = {m.offset: m.value for m in log}

    # A range that starts and ends on removed offsets reads the survivors inside it and ends,
    # without eof.
    lo, hi = gaps[0], max(g for g in gaps if g < 95)
    ranged = kd.KafkaDataset(
        ["%s:0:%d:%d" % (topic, lo, hi)], servers=kafka.servers, eof=False, timeout=60000
    )
    assert read_until_end(ranged) == [values[o] for o in offsets if lo <= o <= hi]

    # Restore exactly past a gap, in a new iterator.
    everything = [values[o] for o in offsets]
    entries = ["%s:0:0:%d" % (topic, offsets[-1])]
    make = lambda: kd.KafkaDataset(entries, servers=kafka.servers, eof=True)  # noqa: E731
    it = iter(make())
    head = [next(it).numpy() for _ in range(3)]
    path = tf.train.Checkpoint(iterator=it).write(str(tmp_path / "in-compacted"))
    assert int(kafka_state_entries(path)["next_offset:%s:0" % topic]) == offsets[2] + 1
    del it
    restored = iter(make())
    tf.train.Checkpoint(iterator=restored).read(path).assert_consumed()
    rest = read_all_iter(restored)
    assert head + rest == everything, first_difference(head + rest, everything)


def read_all_iter(iterator):
    return [v.numpy() for v in iterator]
