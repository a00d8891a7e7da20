"""The freshness policy ``max_lag_ms`` (issue 16 §1): when a partition's next message is older
than the window by the wall clock, the reader jumps to the first offset inside the window
(offsets-for-times) instead of training on stale data; the skipped offsets are counted per
partition; nothing is skipped while the reader keeps up; a checkpoint saved after a skip
restores exactly, in another process."""

import json
import time

import tensorflow as tf
from helpers import first_difference, kway_merge, streams_from_delivered

HOUR = 3_600_000


def newest_stats(kd, topic):
    return max((s for s in kd.stats() if topic in s["topics"]), key=lambda s: s["id"])


def test_a_backlog_older_than_the_window_is_skipped_counted_and_checkpointed(
    kd, kafka, tmp_path, run_python
):
    topic = kafka.new_topic(2)
    now = int(time.time() * 1000)
    old = [(p, "old-%d-%02d" % (p, i), None, now - 2 * HOUR + i) for p in (0, 1) for i in range(40)]
    # Fresh data, with one straggler whose timestamp is old: the policy jumps over a stale
    # backlog, it does not filter single messages (offsets-for-times finds the window's start).
    fresh = [(i % 2, "new-%02d" % i, None, now - 60_000 + 10 * i) for i in range(30)]
    fresh[13] = (1, "straggler", None, now - 3 * HOUR)
    delivered = kafka.produce(topic, old + fresh)
    fresh_delivered = delivered[len(old) :]
    expected = kway_merge(streams_from_delivered(fresh_delivered, [0, 1]))

    make = lambda: kd.KafkaDataset([topic], servers=kafka.servers, timeout=300, max_lag_ms=HOUR)  # noqa: E731
    it = iter(make())
    head = [next(it).numpy() for _ in range(10)]
    assert head == expected[:10], first_difference(head, expected[:10])
    stats = newest_stats(kd, topic)
    assert stats["stale_offsets"] == 80
    assert sorted(p["stale_offsets"] for p in stats["partitions"]) == [40, 40]
    path = tf.train.Checkpoint(iterator=it).write(str(tmp_path / "after-skip"))
    rest = [next(it).numpy() for _ in range(len(expected) - 10)]
    assert head + rest == expected, first_difference(head + rest, expected)
    assert newest_stats(kd, topic)["stale_offsets"] == 80
    del it

    # Restored in another process, with or without the policy: the skip is in the position.
    for policy in ["3600000", "0"]:
        proc = run_python(RESTORE, [topic, kafka.servers, path, policy, str(len(expected) - 10)])
        restored = [v.encode() for v in json.loads(proc.stdout.splitlines()[-1])]
        assert restored == expected[10:], first_difference(restored, expected[10:])


RESTORE = r"""
import json, sys
import tensorflow as tf
import kafka_dataset
topic, servers, path, max_lag, n = sys.argv[1:6]
it = iter(kafka_dataset.KafkaDataset([topic], servers=servers, timeout=300,
                                     max_lag_ms=int(max_lag)))
tf.train.Checkpoint(iterator=it).read(path).assert_consumed()
print(json.dumps([next(it).numpy().decode() for _ in range(int(n))]))
"""


def test_nothing_is_skipped_while_the_reader_keeps_up(kd, kafka):
    topic = kafka.new_topic(2)
    it = iter(kd.KafkaDataset([topic], servers=kafka.servers, timeout=300, max_lag_ms=60_000))
    got, produced = [], []
    for round_ in range(3):
        now = int(time.time() * 1000)
        batch = [(i % 2, "r%d-%02d" % (round_, i), None, now + i) for i in range(20)]
        produced += kafka.produce(topic, batch)
        got += [next(it).numpy() for _ in range(len(batch))]
    assert sorted(got) == sorted(d.value for d in produced)
    assert newest_stats(kd, topic)["stale_offsets"] == 0
