"""Consumer-group mode (`subscribe=True`): members of one group split a topic's partitions as
the group assigns them and hand them over on rebalances. Nothing is lost; a clean join or leave
repeats nothing (a revoked partition's emitted position is committed before it moves); a member
that dies repeats at most what it emitted after its last commit.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import tensorflow as tf
from helpers import BASE_TS
from kafka_dataset import testing as kt

PARTITIONS = 6
PER_PARTITION = 150

# One group member: reads with eof=True, writes every value to `out` as it goes (one line per
# element, flushed), sleeps `delay` s per element (so that rebalances happen mid-read; with
# `slow_while` = [path, n], only while the file `path` has fewer than n lines), and
# after `leave_after` elements either leaves cleanly (the iterator is destroyed) or, with
# `kill`, SIGKILLs itself. With `save_after` it writes a checkpoint first; with `restore` it
# restores one.
MEMBER = r"""
import json, os, signal, sys, time
import tensorflow as tf
import kafka_dataset
args = json.loads(sys.argv[1])
def lines(path):
    try:
        with open(path) as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0
signal.alarm(90)  # a hung member dies instead of hanging the test
ds = kafka_dataset.KafkaDataset(args["topics"], servers=args["servers"], group=args["group"],
                                eof=True, timeout=300, subscribe=True,
                                config_global=args.get("config", []))
it = iter(ds)
ckpt = tf.train.Checkpoint(iterator=it)
if args.get("restore"):
    ckpt.read(args["restore"]).assert_consumed()
out = open(args["out"], "a", buffering=1)
count = 0
for value in it:
    out.write(value.numpy().decode() + "\n")
    count += 1
    if count == args.get("save_after"):
        ckpt.write(args["save"])
    if count == args.get("leave_after"):
        if args.get("kill"):
            os.kill(os.getpid(), signal.SIGKILL)
        break
    slow_while = args.get("slow_while")
    if slow_while is None or lines(slow_while[0]) < slow_while[1]:
        time.sleep(args.get("delay", 0))
del ckpt, it
out.write("DONE\n")
"""


@pytest.fixture
def group_topic(kafka):
    """A topic of PARTITIONS partitions, PER_PARTITION messages each, value
    `partition:offset` (offsets checked against the broker's delivery reports)."""
    topic = kafka.new_topic(PARTITIONS)
    records = [
        (p, "%d:%d" % (p, i), None, BASE_TS + i * 10 + p)
        for i in range(PER_PARTITION)
        for p in range(PARTITIONS)
    ]
    # Batched and compressed: partitions change hands at offsets inside record batches.
    delivered = kafka.produce(topic, records)
    for (p, value, _, _), d in zip(records, delivered):
        assert "%d:%d" % (d.partition, d.offset) == value, "offsets must start at 0"
    return topic, {r[1] for r in records}


def start_member(tmp_path, name, servers, topic, group, **extra):
    out = tmp_path / (name + ".txt")
    args = dict(servers=servers, topics=[topic], group=group, out=str(out), **extra)
    proc = subprocess.Popen(
        [sys.executable, "-c", MEMBER, json.dumps(args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=kt.python_env({"TF_CPP_MIN_LOG_LEVEL": "3"}),
    )
    return proc, out


def lines(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line for line in f.read().splitlines() if line]


def values_of(path):
    return [v for v in lines(path) if v != "DONE"]


def finish(proc, timeout=150):
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def partitions_of(values):
    return {int(v.split(":")[0]) for v in values}


def check_offset_order(values, who):
    """Within one member, each partition's offsets only increase."""
    last = {}
    for v in values:
        p, offset = map(int, v.split(":"))
        assert offset > last.get(p, -1), "%s: partition %d went back to %d" % (who, p, offset)
        last[p] = offset


def sweep(kd, servers, topic, group):
    """What a next run reads: every partition from the group's committed offset to the end
    (with eof=True a member ends once the partitions it owns are read, so partitions handed
    back late are left to the next run). Reads fixed partitions at their `stored` start, so
    it does not depend on the broker's group coordination."""
    entries = ["%s:%d:stored" % (topic, p) for p in range(PARTITIONS)]
    ds = kd.KafkaDataset(entries, servers=servers, group=group, eof=True)
    return [v.numpy().decode() for v in ds]


def test_a_member_joins_then_leaves_nothing_lost_nothing_repeated(kafka, kd, group_topic, tmp_path):
    topic, everything = group_topic
    group, servers = kafka.new_group(), kafka.servers
    # a reads slowly until c has left (100 values and DONE), so that it still reads when c
    # joins and when c's partitions come back.
    slow = [str(tmp_path / "c.txt"), 101]
    a = start_member(tmp_path, "a", servers, topic, group, delay=0.03, slow_while=slow)
    kt.wait_for(lambda: values_of(a[1]), 60, "member a reading")
    c = start_member(tmp_path, "c", servers, topic, group, delay=0.02, leave_after=100)
    for proc, _ in (c, a):
        code, err = finish(proc)
        assert code == 0, err[-3000:]
    assert lines(c[1])[-1] == "DONE", "c left cleanly"
    got = {"a": values_of(a[1]), "c": values_of(c[1])}
    for name, values in got.items():
        check_offset_order(values, name)
    got["sweeper"] = sweep(kd, servers, topic, group)
    union = [v for values in got.values() for v in values]
    assert set(union) == everything, "lost: %s" % sorted(everything - set(union))[:10]
    repeated = len(union) - len(set(union))
    assert repeated == 0, "a clean join and leave must repeat nothing, %d repeated" % repeated
    # Partitions really moved: c took some of a's, and gave them back when it left.
    assert len(got["c"]) == 100
    assert partitions_of(got["c"]) & partitions_of(got["a"]), "no partition moved"
    assert committed(servers, group, topic) == {p: PER_PARTITION for p in range(PARTITIONS)}


def test_two_members_a_third_joins_then_leaves_nothing_lost(kafka, kd, group_topic, tmp_path):
    """Three members, clean joins and leaves: nothing lost and nothing repeated (each revoked
    partition's emitted position is committed before it moves)."""
    topic, everything = group_topic
    group, servers = kafka.new_group(), kafka.servers
    slow = [str(tmp_path / "c.txt"), 101]
    a = start_member(tmp_path, "a", servers, topic, group, delay=0.03, slow_while=slow)
    b = start_member(tmp_path, "b", servers, topic, group, delay=0.03, slow_while=slow)
    kt.wait_for(lambda: values_of(a[1]) and values_of(b[1]), 60, "members a and b reading")
    c = start_member(tmp_path, "c", servers, topic, group, delay=0.02, leave_after=100)
    for proc, _ in (c, a, b):
        code, err = finish(proc)
        assert code == 0, err[-3000:]
    assert lines(c[1])[-1] == "DONE", "c left cleanly"
    got = {name: values_of(out) for name, out in (("a", a[1]), ("b", b[1]), ("c", c[1]))}
    for name, values in got.items():
        check_offset_order(values, name)
    assert len(got["c"]) == 100 and got["a"] and got["b"]
    got["sweeper"] = sweep(kd, servers, topic, group)
    union = [v for values in got.values() for v in values]
    assert set(union) == everything, "lost: %s" % sorted(everything - set(union))[:10]
    assert committed(servers, group, topic) == {p: PER_PARTITION for p in range(PARTITIONS)}
    repeated = len(union) - len(set(union))
    assert repeated == 0, "a clean join and leave must repeat nothing, %d repeated" % repeated


def committed(servers, group, topic):
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": servers, "group.id": group})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        consumer.close()


def test_a_member_killed_repeats_only_what_it_emitted_after_its_last_commit(
    kafka, kd, group_topic, tmp_path
):
    topic, everything = group_topic
    group = kafka.new_group()
    servers = kafka.servers
    # Short session so the group notices the dead member quickly; commits every 200 ms.
    config = ["session.timeout.ms=6000", "heartbeat.interval.ms=500", "auto.commit.interval.ms=200"]
    slow = [str(tmp_path / "c.txt"), 100]
    a = start_member(
        tmp_path, "a", servers, topic, group, delay=0.03, config=config, slow_while=slow
    )
    kt.wait_for(lambda: values_of(a[1]), 60, "member a reading")
    c = start_member(
        tmp_path, "c", servers, topic, group, delay=0.02, config=config, leave_after=100, kill=True
    )
    code, _ = finish(c[0])
    assert code == -signal.SIGKILL
    # Read right away: the group hands c's partitions to a only after the session timeout.
    at_death = committed(servers, group, topic)
    code, err = finish(a[0])
    assert code == 0, err[-3000:]
    got_a = values_of(a[1]) + sweep(kd, servers, topic, group)
    got_c = values_of(c[1])
    assert len(got_c) == 100 and partitions_of(got_c)
    union = got_a + got_c
    assert set(union) == everything, "lost: %s" % sorted(everything - set(union))[:10]
    repeated = {v for v in got_c if v in set(got_a)}
    # The bound: only what c emitted at or after the offset committed for its partition.
    uncommitted = {v for v in got_c if int(v.split(":")[1]) >= at_death[int(v.split(":")[0])]}
    assert repeated <= uncommitted, sorted(repeated - uncommitted)[:10]
    assert len(union) - len(set(union)) == len(repeated)


@pytest.mark.parametrize("committed_at", ["behind", "ahead"])
def test_a_restored_member_starts_at_its_checkpoint_or_the_committed_offset_if_later(
    kafka, kd, group_topic, tmp_path, committed_at
):
    topic, everything = group_topic
    group = kafka.new_group()
    save = str(tmp_path / "ckpt")
    # Commits only on save and close (1 h interval); a short session, so that the killed
    # member is out of the group in seconds.
    config = [
        "auto.commit.interval.ms=3600000",
        "session.timeout.ms=6000",
        "heartbeat.interval.ms=500",
    ]
    first = start_member(
        tmp_path,
        "first",
        kafka.servers,
        topic,
        group,
        config=config,
        save_after=300,
        save=save,
        leave_after=400,
        kill=True,
    )
    code, _ = finish(first[0])
    assert code == -signal.SIGKILL
    got_first = values_of(first[1])
    assert len(got_first) == 400
    # The save committed the checkpoint's positions; move the group's offsets so that the
    # restore has to decide: back to 0 (the checkpoint is later: it wins), or to where the
    # killed member was (later than the checkpoint: the group's offsets win, nothing rewinds).
    if committed_at == "behind":
        positions = {p: 0 for p in range(PARTITIONS)}
    else:
        positions = {p: 0 for p in range(PARTITIONS)}
        for v in got_first:
            p, offset = map(int, v.split(":"))
            positions[p] = max(positions[p], offset + 1)
    # The killed member stays in the group until its session expires; only an empty group
    # takes a commit from outside it (a broker that took it earlier would also be free to keep
    # the dead member as leader when the second one joins).
    kt.wait_for(lambda: group_is_empty(kafka.servers, group), 30, "the killed member to time out")
    commit_offsets(kafka.servers, group, topic, positions)
    assert committed(kafka.servers, group, topic) == positions
    second = start_member(
        tmp_path, "second", kafka.servers, topic, group, config=config, restore=save
    )
    code, err = finish(second[0])
    assert code == 0, err[-3000:]
    got_second = values_of(second[1])
    if committed_at == "behind":
        # Exactly after the 300 saved: the 100 emitted after the save come again.
        assert set(got_first[:300]) | set(got_second) == everything
        assert set(got_first[:300]).isdisjoint(got_second)
        assert set(got_first[300:]) <= set(got_second)
    else:
        assert sorted(got_first + got_second) == sorted(everything)


def group_is_empty(servers, group):
    """True once the broker reports ``group`` with no members."""
    from confluent_kafka import ConsumerGroupState

    admin = kt.admin_client(servers)
    description = admin.describe_consumer_groups([group], request_timeout=10)[group].result(10)
    return description.state == ConsumerGroupState.EMPTY and not description.members


def commit_offsets(servers, group, topic, positions):
    """Commits `positions` for `group` from outside it (the group must be empty)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": servers, "group.id": group})
    try:
        offsets = [TopicPartition(topic, p, o) for p, o in positions.items()]
        consumer.commit(offsets=offsets, asynchronous=False)
    finally:
        consumer.close()


def test_bad_subscribe_arguments_are_invalid_argument(kafka, kd):
    topic = kafka.new_topic(1)
    cases = [
        (dict(group=""), "needs a consumer group"),
        (dict(group="g", num_workers=2, worker_index=0), "num_workers"),
        (dict(group="g", topics=[topic + ":0"]), '"%s:0"' % topic),
        (dict(group="g", topics=[topic + ":0:5"]), "topic name"),
    ]
    for extra, needle in cases:
        kwargs = dict(topics=[topic], servers=kafka.servers, subscribe=True)
        kwargs.update(extra)
        with pytest.raises(tf.errors.InvalidArgumentError, match=needle):
            ds = kd.KafkaDataset(**kwargs)
            next(iter(ds))
    with pytest.raises(TypeError, match="subscribe must be a Python bool"):
        kd.KafkaDataset([topic], servers=kafka.servers, group="g", subscribe="yes")


def test_a_group_checkpoint_restores_only_into_the_same_group(kafka, kd, tmp_path):
    topic = kafka.new_topic(2)
    kafka.produce(topic, [(p, "v%d" % i, None, BASE_TS + i) for i in range(4) for p in range(2)])
    group = kafka.new_group()
    member = kd.KafkaDataset([topic], servers=kafka.servers, group=group, eof=True, subscribe=True)
    it = iter(member)
    next(it)
    path = tf.train.Checkpoint(iterator=it).write(str(tmp_path / "member"))
    del it
    fixed = iter(kd.KafkaDataset([topic], servers=kafka.servers, group=group, eof=True))
    with pytest.raises(tf.errors.FailedPreconditionError, match="subscribe=True"):
        tf.train.Checkpoint(iterator=fixed).read(path)
    other = iter(
        kd.KafkaDataset([topic], servers=kafka.servers, group=group + "x", eof=True, subscribe=True)
    )
    with pytest.raises(tf.errors.FailedPreconditionError, match=group + "x"):
        tf.train.Checkpoint(iterator=other).read(path)
    # The dataset is fine afterwards, and the same group restores.
    same = iter(member)
    tf.train.Checkpoint(iterator=same).read(path).assert_consumed()
    rest = [v.numpy().decode() for v in same]
    assert len(rest) == 7, rest


def test_the_group_split_reads_every_message_once_with_native_batches(kafka, kd):
    """Two members in one process, each iterated on its own thread, native batches: together
    they read every message once; both take part (the group split the partitions)."""
    topic = kafka.new_topic(4)
    records = [(p, "%d:%d" % (p, i), None, BASE_TS + i) for i in range(150) for p in range(4)]
    kafka.produce(topic, records)
    group = kafka.new_group()
    got = {0: [], 1: []}
    errors = []

    def member(k):
        try:
            ds = kd.KafkaDataset(
                [topic], servers=kafka.servers, group=group, eof=True, subscribe=True, batch_size=8
            )
            for batch in ds:
                got[k].extend(v.decode() for v in batch.numpy())
                # Slow until the other member has read something: it joins, and the group
                # moves partitions to it, while this one is still reading.
                time.sleep(0 if got[1 - k] else 0.1)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=member, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and not any(t.is_alive() for t in threads), errors
    union = got[0] + got[1]
    assert sorted(union) == sorted(r[1] for r in records)
    assert got[0] and got[1], "one member read everything"
