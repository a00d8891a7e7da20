"""Time windows (DESIGN.md §2.1): ``@<epoch-ms>`` as the last field ends a partition before the
first message (in offset order) whose timestamp is at or after that time, and an empty partition
field means every partition, so ``"t::@T0:@T1"`` replays [T0, T1) of a whole topic, merged in
time order, ending by itself with or without ``eof``. The oracle applies that definition to the
broker's delivery reports; checkpoints are restored in another process."""

import json
import time

import pytest
import tensorflow as tf
from helpers import BASE_TS, first_difference, kway_merge, read_until_end


def window(delivered, partitions, start=None, end=None, first_offset=0):
    """Per partition (in ``partitions`` order) the ``(timestamp, offset, value)`` a window reads:
    from the first offset whose timestamp is >= ``start`` (or ``first_offset``) to just before
    the first offset whose timestamp is >= ``end``."""
    streams = []
    for p in partitions:
        log = sorted((d.offset, d.timestamp, d.value) for d in delivered if d.partition == p)
        begin = next((o for o, ts, _ in log if start is None or ts >= start), None)
        if begin is None:
            streams.append([])
            continue
        begin = max(begin, first_offset)
        stop = next((o for o, ts, _ in log if end is not None and ts >= end), None)
        streams.append(
            [(ts, o, v) for o, ts, v in log if o >= begin and (stop is None or o < stop)]
        )
    return streams


def produce_spread(kafka, topic, partitions=3, n=90):
    # Partition p holds BASE_TS + 10 * i + p for its i; every 7th message's time goes back
    # 100 ms (timestamps are not monotonic inside a partition), so offsets-for-times' "first
    # offset at or after" matters.
    records = [
        (
            i % partitions,
            "m%03d" % i,
            None,
            BASE_TS + 10 * i + (i % partitions) - 100 * (i % 7 == 0),
        )
        for i in range(n)
    ]
    return kafka.produce(topic, records)


@pytest.mark.parametrize("eof", [False, True])
def test_a_window_over_every_partition_replays_it_in_time_order_and_ends_by_itself(kd, kafka, eof):
    topic = kafka.new_topic(3)
    delivered = produce_spread(kafka, topic)
    t0, t1 = BASE_TS + 205, BASE_TS + 655
    got = read_until_end(
        kd.KafkaDataset(["%s::@%d:@%d" % (topic, t0, t1)], servers=kafka.servers, eof=eof)
    )
    expected = kway_merge(window(delivered, [0, 1, 2], t0, t1))
    assert got == expected, first_difference(got, expected)
    assert 20 < len(got) < 60


def test_a_time_end_on_one_partition_and_the_empty_partition_forms(kd, kafka):
    topic = kafka.new_topic(3)
    delivered = produce_spread(kafka, topic)
    t1 = BASE_TS + 400
    one = read_until_end(kd.KafkaDataset(["%s:1:0:@%d" % (topic, t1)], servers=kafka.servers))
    assert one == kway_merge(window(delivered, [1], None, t1))
    # "t::beginning:-1" and "t::end" are the whole topic with the other fields as usual.
    whole = read_until_end(
        kd.KafkaDataset(["%s::beginning:-1" % topic], servers=kafka.servers, eof=True)
    )
    assert whole == kway_merge(window(delivered, [0, 1, 2]))
    at_end = read_until_end(kd.KafkaDataset(["%s::end" % topic], servers=kafka.servers, eof=True))
    assert at_end == []
    # A window where a partition has no message at all is empty there, not unlimited: partition
    # 2's first message at or after t0 lies at or after t1 too.
    t0 = BASE_TS + 10 * 87 + 1
    tail = read_until_end(
        kd.KafkaDataset(["%s::@%d:@%d" % (topic, t0, t0 + 15)], servers=kafka.servers)
    )
    assert tail == kway_merge(window(delivered, [0, 1, 2], t0, t0 + 15))


def test_a_reversed_or_empty_window_is_refused_naming_the_entry(kd, kafka):
    topic = kafka.new_topic(1)
    for entry in ["%s::@%d:@%d" % (topic, BASE_TS + 5, BASE_TS), "%s:0:@7:@7" % topic]:
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"is not after start") as e:
            next(iter(kd.KafkaDataset([entry], servers=kafka.servers, eof=True)))
        assert entry in str(e.value)


def test_a_future_end_is_found_as_messages_arrive_and_survives_a_checkpoint(
    kd, kafka, tmp_path, run_python
):
    """An end no message has reached yet stays open: the partition ends at the first message
    at or after it, also in an iterator restored in another process."""
    topic = kafka.new_topic(2)
    t1 = int(time.time() * 1000) + 3_600_000
    before = kafka.produce(topic, [(i % 2, "b%02d" % i, None, t1 - 10_000 + i) for i in range(10)])
    entries = ["%s::0:@%d" % (topic, t1)]
    make = lambda: kd.KafkaDataset(entries, servers=kafka.servers, timeout=300)  # noqa: E731
    it = iter(make())
    head = [next(it).numpy() for _ in range(4)]
    path = tf.train.Checkpoint(iterator=it).write(str(tmp_path / "open-end"))
    del it
    # Partition 0 reaches the end (and then has older messages after it: not read); partition 1
    # gets one more message inside the window and then one past the end.
    after = kafka.produce(
        topic,
        [
            (0, "past-0", None, t1),
            (0, "older-after-end", None, t1 - 1),
            (1, "inside-1", None, t1 - 5),
            (1, "past-1", None, t1 + 5),
        ],
    )
    expected = kway_merge(window(before + after, [0, 1], None, t1))
    assert head == expected[:4]
    proc = run_python(
        RESTORE_AND_READ, args=[json.dumps(entries), kafka.servers, path], timeout=120
    )
    rest = [v.encode() for v in json.loads(proc.stdout.splitlines()[-1])]
    assert head + rest == expected, first_difference(head + rest, expected)
    assert b"inside-1" in rest and b"past-0" not in rest


def test_an_end_the_clock_passed_ends_a_quiet_partition_at_its_log_end(kd, kafka):
    topic = kafka.new_topic(2)
    t1 = int(time.time() * 1000) + 4_000
    delivered = kafka.produce(topic, [(i % 2, "q%d" % i, None, t1 - 1000 + i) for i in range(6)])
    got = read_until_end(
        kd.KafkaDataset(["%s::0:@%d" % (topic, t1)], servers=kafka.servers, timeout=200)
    )
    assert got == kway_merge(window(delivered, [0, 1], None, t1))
    # Not before the end time: until then a message inside the window could still arrive.
    assert time.time() * 1000 >= t1


def test_a_window_checkpoint_restores_exactly_in_another_process(kd, kafka, tmp_path, run_python):
    topic = kafka.new_topic(3)
    delivered = produce_spread(kafka, topic)
    t0, t1 = BASE_TS + 105, BASE_TS + 805
    entries = ["%s::@%d:@%d" % (topic, t0, t1)]
    expected = kway_merge(window(delivered, [0, 1, 2], t0, t1))
    it = iter(kd.KafkaDataset(entries, servers=kafka.servers, eof=False, timeout=300))
    head = [next(it).numpy() for _ in range(25)]
    path = tf.train.Checkpoint(iterator=it).write(str(tmp_path / "mid-window"))
    del it
    # Messages appended later, inside the window's times, are past its frozen end.
    kafka.produce(topic, [(p, "late-%d" % p, None, t0 + 50) for p in range(3)])
    proc = run_python(
        RESTORE_AND_READ, args=[json.dumps(entries), kafka.servers, path], timeout=120
    )
    rest = [v.encode() for v in json.loads(proc.stdout.splitlines()[-1])]
    assert head + rest == expected, first_difference(head + rest, expected)


RESTORE_AND_READ = r"""
import json, sys
import tensorflow as tf
import kafka_dataset
entries, servers, path = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
# eof=False: the window ends by itself.
it = iter(kafka_dataset.KafkaDataset(entries, servers=servers, timeout=300))
tf.train.Checkpoint(iterator=it).read(path).assert_consumed()
print(json.dumps([v.numpy().decode() for v in it]))
"""
