"""Workers splitting partitions: each of N worker processes reads a disjoint share (partition
p of topic t belongs to worker (fnv1a32(t) + p) % N), time-ordered within its share; the union
is every message exactly once; a killed worker resumes from its own checkpoint; a checkpoint only
restores into the same split; the tf.distribute helper feeds input pipelines their shares.
"""

import json
import os
import random
import subprocess
import sys

import pytest
import tensorflow as tf
from helpers import BASE_TS, parse_result

WORKERS = 4
PER_PARTITION = 12

# One training worker: reads its share to the end, or saves after `save_after` elements and
# SIGKILLs itself (no clean shutdown), or restores a checkpoint first.
WORKER = r"""
import json, os, signal, sys
import tensorflow as tf
import kafka_dataset
args = json.loads(sys.argv[1])
signal.alarm(120)  # a hung worker dies instead of hanging the test
ds = kafka_dataset.KafkaDataset(args["topics"], servers=args["servers"], eof=True, timeout=1000,
                                num_workers=args["workers"], worker_index=args["index"])
it = iter(ds)
ckpt = tf.train.Checkpoint(iterator=it)
if args.get("restore"):
    ckpt.read(args["restore"]).assert_consumed()
got = []
for value in it:
    got.append(value.numpy().decode())
    if len(got) == args.get("save_after"):
        path = ckpt.write(args["save"])
        with open(args["out"], "w") as f:
            json.dump({"got": got, "path": path}, f)
        os.kill(os.getpid(), signal.SIGKILL)
print("RESULT " + json.dumps({"got": got}))
"""


def fnv1a32(data):
    h = 0x811C9DC5
    for b in data:
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def expected_owners(topics_partitions, workers):
    """The documented split, computed independently: (fnv1a32(topic) + partition) % workers."""
    return {(t, p): (fnv1a32(t.encode()) + p) % workers for t, p in topics_partitions}


@pytest.fixture(scope="module")
def two_topics(broker):
    """Topics with 5 and 7 partitions; per partition PER_PARTITION messages with
    non-decreasing timestamps, values `topic:partition:seq:timestamp`."""
    from kafka_dataset import testing as kt

    rng = random.Random(5)
    names = []
    records = []
    for count in (5, 7):
        topic = kt.create_topic(broker.bootstrap, kt.unique_name("dist%d" % count), count)
        names.append((topic, count))
        for p in range(count):
            ts = BASE_TS
            for seq in range(PER_PARTITION):
                ts += rng.randint(0, 40)
                records.append((topic, p, "%s:%d:%d:%d" % (topic, p, seq, ts), ts))
    by_topic = {}
    for topic, p, value, ts in records:
        by_topic.setdefault(topic, []).append((p, value, None, ts))
    for topic, recs in by_topic.items():
        kt.produce(broker.bootstrap, topic, recs)
    everything = {r[2] for r in records}
    partitions = [(t, p) for t, count in names for p in range(count)]
    return {"topics": [t for t, _ in names], "all": everything, "partitions": partitions}


def start_worker(servers, topics, index, **extra):
    args = dict(servers=servers, topics=topics, workers=WORKERS, index=index, **extra)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, json.dumps(args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def finish(proc, timeout=150):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return parse_result(out)["got"]


def parse(value):
    topic, p, seq, ts = value.split(":")
    return topic, int(p), int(seq), int(ts)


def check_time_ordered(values):
    stamps = [parse(v)[3] for v in values]
    assert stamps == sorted(stamps), "a worker's output is not in timestamp order"
    # Within a partition, offsets (seq) strictly increase.
    last = {}
    for v in values:
        topic, p, seq, _ = parse(v)
        assert seq > last.get((topic, p), -1), "partition %s:%d out of order" % (topic, p)
        last[(topic, p)] = seq


@pytest.fixture(scope="module")
def full_runs(broker, two_topics, kd):
    """Two rounds of 4 concurrent worker processes reading to the end."""
    rounds = []
    for _ in range(2):
        procs = [start_worker(broker.bootstrap, two_topics["topics"], i) for i in range(WORKERS)]
        rounds.append([finish(p) for p in procs])
    return rounds


def test_workers_read_every_message_exactly_once_in_time_order(two_topics, full_runs):
    outputs = full_runs[0]
    union = [v for out in outputs for v in out]
    assert len(union) == len(set(union)), "a message was read by two workers (or twice)"
    assert set(union) == two_topics["all"]
    for out in outputs:
        check_time_ordered(out)


def test_partition_sets_are_disjoint_documented_and_stable(two_topics, full_runs):
    owners = expected_owners(two_topics["partitions"], WORKERS)
    per_round = []
    for outputs in full_runs:
        sets = [{parse(v)[:2] for v in out} for out in outputs]
        for i, s in enumerate(sets):
            assert s == {tp for tp, w in owners.items() if w == i}
        per_round.append(sets)
    assert per_round[0] == per_round[1]
    # Each topic is dealt round-robin: per topic, shares differ by at most one partition.
    for topic in two_topics["topics"]:
        counts = [sum(1 for t, _ in s if t == topic) for s in per_round[0]]
        assert max(counts) - min(counts) <= 1, counts


def test_killed_worker_resumes_from_its_own_checkpoint(broker, two_topics, full_runs, tmp_path):
    outputs = full_runs[0]
    victim = 2
    out = tmp_path / "saved.json"
    proc = start_worker(
        broker.bootstrap,
        two_topics["topics"],
        victim,
        save_after=len(outputs[victim]) // 2,
        save=str(tmp_path / "ckpt"),
        out=str(out),
    )
    proc.communicate(timeout=150)
    assert proc.returncode == -9, "the worker should have SIGKILLed itself after saving"
    saved = json.loads(out.read_text())
    resumed = finish(
        start_worker(broker.bootstrap, two_topics["topics"], victim, restore=saved["path"])
    )
    victim_output = saved["got"] + resumed
    assert victim_output == outputs[victim]
    union = [v for i, o in enumerate(outputs) if i != victim for v in o] + victim_output
    assert sorted(union) == sorted(two_topics["all"])

    # The checkpoint restores only into the same split, naming both sides.
    for workers, index in ((3, 2), (4, 1), (1, 0)):
        ds = tf.data.KafkaDataset(
            two_topics["topics"],
            servers=broker.bootstrap,
            eof=True,
            num_workers=workers,
            worker_index=index,
        )
        it = iter(ds)
        with pytest.raises(tf.errors.FailedPreconditionError) as info:
            tf.train.Checkpoint(iterator=it).read(saved["path"]).assert_consumed()
        message = str(info.value)
        assert "worker 2 of 4" in message and "worker %d of %d" % (index, workers) in message


def test_distributed_dataset_feeds_each_input_pipeline_its_share(broker, two_topics, kd):
    pipelines = 3
    union = []
    owners = expected_owners(two_topics["partitions"], pipelines)
    for i in range(pipelines):
        context = tf.distribute.InputContext(
            num_input_pipelines=pipelines, input_pipeline_id=i, num_replicas_in_sync=pipelines
        )
        ds = kd.distributed_dataset(
            context, two_topics["topics"], servers=broker.bootstrap, eof=True
        )
        policy = ds.options().experimental_distribute.auto_shard_policy
        assert policy == tf.data.experimental.AutoShardPolicy.OFF
        got = [v.numpy().decode() for v in ds]
        check_time_ordered(got)
        assert {parse(v)[:2] for v in got} == {tp for tp, w in owners.items() if w == i}
        union += got
    assert sorted(union) == sorted(two_topics["all"])
    with pytest.raises(TypeError, match="input_context"):
        kd.distributed_dataset(context, two_topics["topics"], num_workers=2)


def test_distribute_datasets_from_function_with_a_strategy(broker, two_topics, kd):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    contexts = []

    def dataset_fn(context):
        contexts.append(context)
        return kd.distributed_dataset(
            context, two_topics["topics"], servers=broker.bootstrap, eof=True
        ).batch(context.get_per_replica_batch_size(8))

    dist = strategy.distribute_datasets_from_function(dataset_fn)
    got = []
    for batch in dist:
        for local in strategy.experimental_local_results(batch):
            got += [v.decode() for v in local.numpy()]
    assert [(c.num_input_pipelines, c.input_pipeline_id) for c in contexts] == [(1, 0)]
    assert sorted(got) == sorted(two_topics["all"])


@pytest.mark.parametrize(
    "kwargs, error, needle",
    [
        ({"num_workers": 0}, tf.errors.InvalidArgumentError, "num_workers"),
        ({"num_workers": -3}, tf.errors.InvalidArgumentError, "num_workers"),
        ({"num_workers": 4, "worker_index": 4}, tf.errors.InvalidArgumentError, "worker_index"),
        ({"num_workers": 4, "worker_index": -1}, tf.errors.InvalidArgumentError, "worker_index"),
        ({"num_workers": "4"}, TypeError, "num_workers"),
        ({"num_workers": 2, "worker_index": 1.0}, TypeError, "worker_index"),
        ({"num_workers": True}, TypeError, "num_workers"),
    ],
)
def test_bad_worker_arguments_are_named(broker, kd, kwargs, error, needle):
    with pytest.raises(error, match=needle):
        kd.KafkaDataset(["t:0"], servers=broker.bootstrap, eof=True, **kwargs)


def test_more_workers_than_partitions_leaves_some_empty(broker, two_topics, kd):
    owners = expected_owners(two_topics["partitions"], 14)
    got = []
    for i in range(14):
        ds = kd.KafkaDataset(
            two_topics["topics"],
            servers=broker.bootstrap,
            eof=True,
            num_workers=14,
            worker_index=i,
        )
        values = [v.numpy().decode() for v in ds]
        assert {parse(v)[:2] for v in values} == {tp for tp, w in owners.items() if w == i}
        got += values
    assert sorted(got) == sorted(two_topics["all"])


# One MultiWorkerMirroredStrategy worker (TF_CONFIG names both processes on localhost).
MWMS_WORKER = r"""
import json, os, signal, sys
args = json.loads(sys.argv[1])
os.environ["TF_CONFIG"] = json.dumps(
    {"cluster": {"worker": args["cluster"]}, "task": {"type": "worker", "index": args["index"]}}
)
signal.alarm(150)  # a hung worker dies instead of hanging the test
import tensorflow as tf
import kafka_dataset
strategy = tf.distribute.MultiWorkerMirroredStrategy()
contexts = []

def dataset_fn(ctx):
    contexts.append((ctx.num_input_pipelines, ctx.input_pipeline_id))
    return kafka_dataset.distributed_dataset(
        ctx, args["topics"], servers=args["servers"], eof=True
    ).batch(4)

got = []
for batch in strategy.distribute_datasets_from_function(dataset_fn):
    for local in strategy.experimental_local_results(batch):
        got += [v.decode() for v in local.numpy()]
print("RESULT " + json.dumps({"got": got, "contexts": contexts}), flush=True)
"""


def test_multi_worker_mirrored_strategy_in_two_processes(broker, two_topics, kd):
    from kafka_dataset import testing as kt

    cluster = ["localhost:%d" % kt.free_port() for _ in range(2)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                MWMS_WORKER,
                json.dumps(
                    {
                        "cluster": cluster,
                        "index": i,
                        "topics": two_topics["topics"],
                        "servers": broker.bootstrap,
                    }
                ),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(2)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=170)
        assert p.returncode == 0, err[-3000:]
        results.append(parse_result(out))
    owners = expected_owners(two_topics["partitions"], 2)
    for i, r in enumerate(results):
        # The strategy gives each worker process one input pipeline of two.
        assert r["contexts"] == [[2, i]]
        assert {parse(v)[:2] for v in r["got"]} == {tp for tp, w in owners.items() if w == i}
    union = results[0]["got"] + results[1]["got"]
    assert sorted(union) == sorted(two_topics["all"])
