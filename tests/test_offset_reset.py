"""``auto.offset.reset`` at both ends of the log (DESIGN.md §2.6), as DeepRec users set it in
``config_topic`` (the seed's own example is ``["auto.offset.reset=earliest"]``): an explicit
policy moves a position beyond the log end back (earliest: the log start, latest: its end),
counted as rewound offsets; ``error`` refuses. A start beyond the end is found when the iterator
starts. Without a policy: the partition ends there with ``eof``, else InvalidArgument naming the
entry. Positions below the log start are covered in test_broker_features."""

import pytest
import tensorflow as tf
from helpers import BASE_TS, read_until_end
from kafka_dataset import testing as kt


def values(delivered):
    return [d.value for d in delivered]


def partition_stats(kd, topic):
    newest = max((s for s in kd.stats() if topic in s["topics"]), key=lambda s: s["id"])
    return newest, newest["partitions"][0]


def reset(policy):
    return ["auto.offset.reset=%s" % policy]


def test_a_start_beyond_the_log_end_follows_an_explicit_policy(kd, kafka):
    topic = kafka.new_topic(1)
    first = kafka.produce(topic, [(0, "a%d" % i, None, BASE_TS + i) for i in range(5)])
    entry = ["%s:0:50" % topic]
    make = lambda policy, eof: kd.KafkaDataset(  # noqa: E731
        entry, servers=kafka.servers, eof=eof, timeout=300, config_topic=reset(policy)
    )

    # earliest (DeepRec's documented example): the whole log, counted as rewound.
    it = iter(make("earliest", True))
    assert [v.numpy() for v in it] == values(first)
    totals, partition = partition_stats(kd, topic)
    assert (totals["rewound_offsets"], partition["rewound_offsets"]) == (50, 50)
    assert partition["skipped_offsets"] == 0

    # latest: the log end as it was when the iterator started. Messages produced after that,
    # up to and past offset 50, are read from offset 5 on: found at the start, not at the
    # broker's first answer (which would now accept offset 50).
    it = iter(make("latest", False))
    later = kafka.produce(topic, [(0, "b%02d" % i, None, BASE_TS + 10 + i) for i in range(60)])
    assert [next(it).numpy() for _ in range(60)] == values(later)
    assert partition_stats(kd, topic)[1]["rewound_offsets"] == 45


@pytest.mark.parametrize("policy", [None, "error"])
def test_a_start_beyond_the_log_end_without_a_reset_policy(kd, kafka, policy):
    topic = kafka.new_topic(1)
    kafka.produce(topic, [(0, "a%d" % i, None, BASE_TS + i) for i in range(5)])
    entry = "%s:0:50" % topic
    config = reset(policy) if policy else None
    make = lambda eof: kd.KafkaDataset(  # noqa: E731
        [entry], servers=kafka.servers, eof=eof, config_topic=config
    )
    if policy is None:
        # The documented default: with eof the partition ends where it starts.
        assert read_until_end(make(True)) == []
    for eof in [False] if policy is None else [False, True]:
        with pytest.raises(tf.errors.InvalidArgumentError) as e:
            iter(make(eof))
        message = str(e.value)
        assert entry in message and "offset 50 is beyond the end of the log" in message
        assert "next offset 5" in message


def recreate(kafka, topic, partitions):
    admin = kt.admin_client(kafka.servers)
    for future in admin.delete_topics([topic]).values():
        future.result(30)
    kt.wait_for(
        lambda: topic not in admin.list_topics(timeout=5).topics, 30, "%s to be deleted" % topic
    )

    def created():
        try:
            kt.create_topic(kafka.servers, topic, partitions)
            return True
        except Exception:  # noqa: BLE001 - the deletion may still be finishing on the broker
            return False

    kt.wait_for(created, 60, "%s to be created again" % topic, interval=0.5)


@pytest.mark.parametrize("policy", ["earliest", "latest", None])
def test_a_restored_position_beyond_a_recreated_log_follows_the_policy(kd, kafka, tmp_path, policy):
    """The topic was deleted and created again with fewer messages than the checkpoint read:
    the saved position lies beyond the new log's end."""
    topic = kafka.new_topic(1)
    kafka.produce(topic, [(0, "old%02d" % i, None, BASE_TS + i) for i in range(30)])
    config = reset(policy) if policy else None
    make = lambda eof: kd.KafkaDataset(  # noqa: E731
        [topic], servers=kafka.servers, eof=eof, timeout=300, config_topic=config
    )
    it = iter(make(True))
    assert len([next(it) for _ in range(20)]) == 20
    path = tf.train.Checkpoint(iterator=it).write(str(tmp_path / "at-20"))
    del it
    recreate(kafka, topic, 1)
    new = kafka.produce(topic, [(0, "new%d" % i, None, BASE_TS + 100 + i) for i in range(5)])

    restored = iter(make(True))
    tf.train.Checkpoint(iterator=restored).read(path).assert_consumed()
    got = read_until_end(restored)
    if policy == "earliest":
        assert got == values(new)
        assert partition_stats(kd, topic)[1]["rewound_offsets"] == 20
    elif policy == "latest":
        assert got == []
        assert partition_stats(kd, topic)[1]["rewound_offsets"] == 15
    else:
        assert got == []  # eof: the documented default ends the partition there
        restored = iter(make(False))
        tf.train.Checkpoint(iterator=restored).read(path).assert_consumed()
        with pytest.raises(tf.errors.InvalidArgumentError, match="offset 20 is beyond the end"):
            next(restored)


def test_a_reset_policy_never_turns_a_clean_end_into_an_error(kd, kafka):
    """Chained entries whose later range starts beyond the log end: the later range never moves
    back before its start, so with or without a policy the partition ends there with eof."""
    topic = kafka.new_topic(1)
    delivered = kafka.produce(topic, [(0, "a%02d" % i, None, BASE_TS + i) for i in range(20)])
    entries = ["%s:0:0:4" % topic, "%s:0:1000" % topic]
    for policy in [None, "earliest", "latest"]:
        ds = kd.KafkaDataset(
            entries,
            servers=kafka.servers,
            eof=True,
            timeout=300,
            config_topic=reset(policy) if policy else None,
        )
        assert read_until_end(ds) == values(delivered[:5]), policy


def test_a_window_that_is_empty_or_finished_at_the_start_is_not_reset(kd, kafka):
    """A start beyond the log end whose window is empty anyway (its end lies in the past
    before any message) reads nothing, with any policy, and is no error."""
    topic = kafka.new_topic(1)
    kafka.produce(topic, [(0, "a%02d" % i, None, BASE_TS + i) for i in range(20)])
    for policy in ["earliest", "latest", None]:
        ds = kd.KafkaDataset(
            ["%s:0:5000:@%d" % (topic, BASE_TS + 5)],
            servers=kafka.servers,
            timeout=300,
            config_topic=reset(policy) if policy else None,
        )
        assert read_until_end(ds) == [], policy


def test_subscribe_refuses_a_time_end(kd, kafka):
    topic = kafka.new_topic(1)
    with pytest.raises(tf.errors.InvalidArgumentError, match="with subscribe=True each entry"):
        iter(
            kd.KafkaDataset(
                ["%s::0:@%d" % (topic, BASE_TS)],
                servers=kafka.servers,
                group=kafka.new_group(),
                subscribe=True,
            )
        )
