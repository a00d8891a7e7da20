"""Exactness across process kills (DESIGN §2.5): save at any point, the saving process is
killed, a NEW process restores and reads to the end; prefix + suffix == the uninterrupted run,
element for element. Also save -> restore -> save -> restore chains across processes.

Cost: importing TensorFlow takes ~3 s, so one interpreter per break point would not fit the CI
budget. The saving processes are forked from a "zygote" interpreter that has imported TensorFlow
and loaded the op library but never ran a TF op or created a Kafka client (so it has no TF
runtime or librdkafka threads to inherit). Each forked process builds its own dataset and
iterator, optionally restores the previous link of a chain, reads k elements, writes a TF2
checkpoint and SIGKILLs itself: no clean shutdown, no destructor, no flush. The restoring side is
a separate fresh interpreter that restores every checkpoint into a fresh dataset + iterator, one
after the other.
"""

import json
import os
import random

import pytest
import tensorflow as tf
from helpers import (
    BASE_TS,
    first_difference,
    kafka_state_entries,
    kway_merge,
    kway_merge_heapq,
    parse_result,
    streams_from_delivered,
)

PARTITIONS = 8
# One data set in CI (the budget); more seeds: KAFKA_DATASET_PROPERTY_SEEDS=1,2,3 pytest ...
SEEDS = [int(x) for x in os.environ.get("KAFKA_DATASET_PROPERTY_SEEDS", "20240611").split(",")]

# Forks one process per job; each is killed by SIGKILL right after it saved.
ZYGOTE = r"""
import json, os, signal, sys, traceback
import tensorflow as tf
import kafka_dataset
kafka_dataset.load_library()
args = json.loads(sys.argv[1])

def job(spec):
    signal.alarm(120)  # a hung child dies (SIGALRM) instead of hanging the test
    ds = kafka_dataset.KafkaDataset(args["topics"], servers=args["servers"], eof=True,
                                    timeout=args["timeout"])
    it = iter(ds)
    ckpt = tf.train.Checkpoint(iterator=it)
    if spec["restore"]:
        ckpt.read(spec["restore"]).assert_consumed()
    got, ended = [], False
    while len(got) < spec["read"]:
        try:
            got.append(next(it).numpy().decode())
        except StopIteration:
            ended = True
            break
    path = ckpt.write(spec["save"])
    with open(spec["out"], "w") as f:
        json.dump({"got": got, "ended": ended, "path": path}, f)
    os.kill(os.getpid(), signal.SIGKILL)  # killed: nothing after the save runs

results = []
for spec in args["jobs"]:
    pid = os.fork()
    if pid == 0:
        try:
            job(spec)
        except BaseException:
            with open(spec["out"], "w") as f:
                json.dump({"error": traceback.format_exc()}, f)
        finally:
            os._exit(3)  # only reached when job() raised
    _, status = os.waitpid(pid, 0)
    results.append({"killed": os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL,
                    "status": status})
print("RESULT " + json.dumps(results))
"""

# Reads the uninterrupted run, then restores each checkpoint into a fresh dataset + iterator and
# reads it to the end.
RESTORER = r"""
import json, sys
import tensorflow as tf
import kafka_dataset
args = json.loads(sys.argv[1])

def make():
    return kafka_dataset.KafkaDataset(args["topics"], servers=args["servers"], eof=True,
                                      timeout=args["timeout"])

def drain(it):
    out = []
    for x in it:
        out.append(x.numpy().decode())
        if len(out) > 100000:
            raise AssertionError("did not end")
    return out

full = drain(iter(make()))
suffixes = {}
for path in args["paths"]:
    it = iter(make())
    tf.train.Checkpoint(iterator=it).read(path).assert_consumed()
    suffixes[path] = drain(it)
print("RESULT " + json.dumps({"full": full, "suffixes": suffixes}))
"""


@pytest.mark.parametrize("seed", SEEDS)
def test_save_kill_restore_in_new_process_is_exact(kd, kafka, run_python, tmp_path, seed):
    rng = random.Random(seed)
    topic = kafka.new_topic(PARTITIONS)
    sizes = [rng.randint(15, 45) for _ in range(PARTITIONS)]
    sizes[rng.randrange(PARTITIONS)] = 0
    records = [
        (p, "p%d-%03d" % (p, i), None, BASE_TS + rng.randint(0, 120))
        for p, size in enumerate(sizes)
        for i in range(size)
    ]
    rng.shuffle(records)  # interleave partitions; inside a partition, i follows offset order
    delivered = kafka.produce(topic, records)

    # Entries: partitions in a shuffled order (stream index != partition number), and one
    # partition split into two chained ranges.
    order = list(range(PARTITIONS))
    rng.shuffle(order)
    split = next(p for p in order if sizes[p] >= 10)
    cut = sizes[split] // 2
    topics = []
    for p in order:
        if p == split:
            topics += ["%s:%d:0:%d" % (topic, p, cut - 1), "%s:%d:%d:-1" % (topic, p, cut)]
        else:
            topics.append("%s:%d:0:-1" % (topic, p))
    streams = []
    for p in order:
        mine = sorted((d for d in delivered if d.partition == p), key=lambda d: d.offset)
        streams.append([(d.timestamp, d.offset, d.value.decode()) for d in mine])
    expected = kway_merge(streams)
    assert expected == kway_merge_heapq(streams)
    n = len(expected)

    # Break points: 0, 1, 2, around the chained range's boundary, the last element, the end,
    # past the end (read until StopIteration, then save), and random ones: 24 in all.
    boundary = expected.index("p%d-%03d" % (split, cut - 1)) + 1
    points = {0, 1, 2, boundary - 1, boundary, boundary + 1, n - 1, n, n + 3}
    while len(points) < 24:
        points.add(rng.randrange(3, n - 1))
    points = sorted(points)

    ckdir = tmp_path / "ck"
    ckdir.mkdir()
    jobs, finals = [], {}
    for k in points:
        jobs.append(
            {
                "restore": None,
                "read": k,
                "save": str(ckdir / ("bp%d" % k)),
                "out": str(tmp_path / ("bp%d.json" % k)),
            }
        )
        finals[jobs[-1]["save"]] = ("break point %d" % k, [jobs[-1]])
    # Chains: each link restores the previous link's checkpoint in a new (forked) process,
    # reads some, saves and is killed; the last checkpoint is read to the end by the restorer.
    chains = [
        [0, 0, 5],  # save before the first element, restore + save at once, then go on
        [rng.randrange(1, n // 3), rng.randrange(1, n // 3), rng.randrange(1, n // 3)],
        [n // 2, n, 1],  # the last link starts at the end and reads past it
        [1, 1, 1, 1, 1, 1],
    ]
    for c, steps in enumerate(chains):
        previous, links = None, []
        for i, step in enumerate(steps):
            link = {
                "restore": previous,
                "read": step,
                "save": str(ckdir / ("chain%d-%d" % (c, i))),
                "out": str(tmp_path / ("chain%d-%d.json" % (c, i))),
            }
            jobs.append(link)
            links.append(link)
            previous = link["save"]
        finals[previous] = ("chain %d %r" % (c, steps), links)

    args = {"topics": topics, "servers": kafka.servers, "timeout": 300}
    killed = parse_result(
        run_python(ZYGOTE, [json.dumps(dict(args, jobs=jobs))], timeout=240).stdout
    )
    outs = {}
    for job, result in zip(jobs, killed):
        try:
            with open(job["out"]) as f:
                outs[job["save"]] = json.load(f)
        except OSError:
            outs[job["save"]] = {}
        assert "error" not in outs[job["save"]], "job %r raised:\n%s" % (
            job,
            outs[job["save"]]["error"],
        )
        assert result["killed"] and outs[job["save"]], "job %r: wait status %d, output %r" % (
            job,
            result["status"],
            outs[job["save"]],
        )

    restored = parse_result(
        run_python(RESTORER, [json.dumps(dict(args, paths=sorted(finals)))], timeout=240).stdout
    )
    full = restored["full"]
    assert full == expected, "uninterrupted run vs k-way merge: " + first_difference(full, expected)

    runs = 0
    for final, (label, links) in finals.items():
        got = []
        for link in links:
            out = outs[link["save"]]
            want = expected[len(got) : len(got) + link["read"]]
            assert out["got"] == want, "%s, link %s: %s" % (
                label,
                link["save"],
                first_difference(out["got"], want),
            )
            assert out["ended"] == (len(got) + link["read"] > n), (label, link, out["ended"])
            got += out["got"]
            # The readable per-partition positions agree with what was emitted.
            emitted = {p: 0 for p in range(PARTITIONS)}
            for value in got:
                emitted[int(value[1 : value.index("-")])] += 1
            entries = kafka_state_entries(out["path"])
            for p in range(PARTITIONS):
                key = "next_offset:%s:%d" % (topic, p)
                assert int(entries[key]) == emitted[p], (label, key, entries[key], emitted[p])
        suffix = restored["suffixes"][final]
        assert got + suffix == full, "%s: %s" % (label, first_difference(got + suffix, full))
        runs += 1
    assert runs == len(points) + len(chains)
    restores = runs + sum(len(steps) - 1 for steps in chains)
    print(
        "property test: %d messages on %d partitions; %d break points + %d chains (%d links): "
        "%d checkpoints saved by killed processes, %d restores in other processes"
        % (n, PARTITIONS, len(points), len(chains), sum(map(len, chains)), len(jobs), restores)
    )


def test_named_starts_are_frozen_in_a_checkpoint_saved_before_the_first_element(
    kd, kafka, tmp_path, run_python
):
    """`end` and `@<epoch-ms>` resolve once, when the iterator starts (offsets-for-times for
    `@`, per partition); a checkpoint saved before the first element carries the resolved
    offsets, so data appended afterwards does not move the restored starts, in this process or
    another (a fresh iterator, by contrast, resolves them anew)."""
    topic = kafka.new_topic(3)
    first = kafka.produce(topic, [(i % 3, "a%02d" % i, None, BASE_TS + 10 * i) for i in range(30)])
    # Partition 2 holds BASE_TS + 20, 50, 80, ...: the first at or after BASE_TS + 125 is
    # BASE_TS + 140 (offset 4); partition 1 starts at `@` a time past its last message.
    at = BASE_TS + 125
    entries = ["%s:0:end" % topic, "%s:1:@%d" % (topic, BASE_TS + 10_000), "%s:2:@%d" % (topic, at)]
    make = lambda: kd.KafkaDataset(entries, servers=kafka.servers, eof=True, timeout=200)  # noqa: E731

    it = iter(make())
    path = tf.train.Checkpoint(iterator=it).write(str(tmp_path / "before-first"))
    saved = kafka_state_entries(path)
    assert int(saved["next_offset:%s:0" % topic]) == 10  # `end` when the iterator started
    assert int(saved["next_offset:%s:1" % topic]) == 10  # `@` past the last message: the end
    assert int(saved["next_offset:%s:2" % topic]) == 4
    del it

    # Later messages, some with timestamps before `at`: the frozen start ignores them all.
    later = kafka.produce(
        topic, [(i % 3, "b%02d" % i, None, BASE_TS + 10 * (i - 5)) for i in range(15)]
    )
    streams = streams_from_delivered(first + later, [0, 1, 2])
    expected = kway_merge([streams[0][10:], streams[1][10:], streams[2][4:]])

    restored = iter(make())
    tf.train.Checkpoint(iterator=restored).read(path).assert_consumed()
    got = [x.numpy() for x in restored]
    assert got == expected, first_difference(got, expected)

    proc = run_python(RESTORE_AND_READ, args=[json.dumps(entries), kafka.servers, path])
    assert [v.encode() for v in json.loads(proc.stdout.splitlines()[-1])] == expected

    # A fresh iterator resolves anew: `end` and `@` past everything skip all of 0 and 1 that
    # exists now; `@at` on partition 2 finds the first message at or after `at` in offset
    # order (offset 4 still: the later ones are behind it in the log).
    fresh = [x.numpy() for x in make()]
    assert fresh == kway_merge([[], [], streams[2][4:]]), fresh


RESTORE_AND_READ = r"""
import json, sys
import tensorflow as tf
import kafka_dataset
entries, servers, path = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
it = iter(kafka_dataset.KafkaDataset(entries, servers=servers, eof=True, timeout=200))
tf.train.Checkpoint(iterator=it).read(path).assert_consumed()
print(json.dumps([v.numpy().decode() for v in it]))
"""
