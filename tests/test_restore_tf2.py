"""TF2 save/restore across processes (DESIGN §2.5): ``tf.train.Checkpoint(iterator=iter(ds))``
managed by ``tf.train.CheckpointManager``, with the elements consumed inside a ``tf.function``
training loop that saves between calls. The saving process is killed after work it did not
save; a new process restores the latest checkpoint (and an older one) and continues exactly."""

import json

from helpers import BASE_TS, first_difference, kway_merge, parse_result, streams_from_delivered

COMMON = r"""
import json, os, signal, sys
import tensorflow as tf
import kafka_dataset
args = json.loads(sys.argv[1])

def make():
    return kafka_dataset.KafkaDataset(args["topics"], servers=args["servers"], eof=True,
                                      timeout=300)

def model(iterator):
    # Training-style state next to the iterator: a step counter and a running "loss".
    step = tf.Variable(0, dtype=tf.int64)
    seen = tf.Variable(0, dtype=tf.int64)
    ckpt = tf.train.Checkpoint(iterator=iterator, step=step, seen=seen)
    manager = tf.train.CheckpointManager(ckpt, args["dir"], max_to_keep=2)

    @tf.function
    def train(it, n):
        values = tf.TensorArray(tf.string, size=n)
        for i in tf.range(n):  # the iterator is consumed inside the graph
            x = next(it)
            seen.assign_add(tf.cast(tf.strings.length(x), tf.int64))
            values = values.write(i, x)
        step.assign_add(1)
        return values.stack()

    def run(it, n):
        return [v.decode() for v in train(it, tf.constant(n, tf.int32)).numpy()]

    return step, seen, ckpt, manager, run
"""

SAVE = (
    COMMON
    + r"""
it = iter(make())
step, seen, ckpt, manager, run = model(it)
got, saves = [], []
for n in args["steps"]:
    got += run(it, n)
    saves.append({"path": manager.save(), "count": len(got), "step": int(step.numpy()),
                  "seen": int(seen.numpy())})
lost = run(it, 4)  # trained on, never saved: lost with the process
print("RESULT " + json.dumps({"got": got, "saves": saves, "lost": lost}), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
)

RESTORE = (
    COMMON
    + r"""
out = {}
for which in ("latest", "older"):
    it = iter(make())  # a fresh dataset and iterator per restore
    step, seen, ckpt, manager, run = model(it)
    out["kept"] = manager.checkpoints
    if which == "latest":
        path = manager.restore_or_initialize()
    else:
        path = manager.checkpoints[0]
        ckpt.restore(path).assert_consumed()
    restored = {"path": path, "step": int(step.numpy()), "seen": int(seen.numpy())}
    rest = run(it, args["remaining"][which])
    try:
        extra = next(it).numpy().decode()
    except StopIteration:
        extra = None
    out[which] = dict(restored, rest=rest, extra=extra)
print("RESULT " + json.dumps(out))
"""
)


def test_checkpoint_manager_and_tf_function_loop_across_processes(kd, kafka, run_python, tmp_path):
    partitions, total = 3, 45
    topic = kafka.new_topic(partitions)
    records = [
        (i % partitions, "m%02d" % i, None, BASE_TS + 10 * i - (25 if i % 5 == 0 else 0))
        for i in range(total)
    ]
    delivered = kafka.produce(topic, records)
    expected = [
        v.decode() for v in kway_merge(streams_from_delivered(delivered, range(partitions)))
    ]
    steps = [5, 7, 1, 6]  # saves after 5, 12, 13, 19 elements; max_to_keep=2 keeps the last two
    args = {
        "topics": [topic],
        "servers": kafka.servers,
        "dir": str(tmp_path / "ckpts"),
        "steps": steps,
    }
    # Scripts as files, not `python -c`: AutoGraph needs the source of the tf.function.
    save_py, restore_py = tmp_path / "save.py", tmp_path / "restore.py"
    save_py.write_text(SAVE)
    restore_py.write_text(RESTORE)
    proc = run_python(str(save_py), [json.dumps(args)], check=False, timeout=180)
    assert proc.returncode == -9, "saver should have been SIGKILLed: rc %d\n%s" % (
        proc.returncode,
        proc.stderr[-4000:],
    )
    saved = parse_result(proc.stdout)
    counts = [s["count"] for s in saved["saves"]]
    assert counts == [5, 12, 13, 19]
    assert saved["got"] == expected[:19], first_difference(saved["got"], expected[:19])
    assert saved["lost"] == expected[19:23]

    latest, older = saved["saves"][-1], saved["saves"][-2]
    args["remaining"] = {"latest": total - latest["count"], "older": total - older["count"]}
    out = parse_result(run_python(str(restore_py), [json.dumps(args)], timeout=180).stdout)

    assert out["kept"] == [older["path"], latest["path"]], out["kept"]
    for which, save in (("latest", latest), ("older", older)):
        got = out[which]
        assert got["path"] == save["path"]
        assert (got["step"], got["seen"]) == (save["step"], save["seen"]), (which, got, save)
        want = expected[save["count"] :]
        assert got["rest"] == want, "%s: %s" % (which, first_difference(got["rest"], want))
        assert got["extra"] is None, "%s: read %r past the end" % (which, got["extra"])
        assert saved["got"][: save["count"]] + got["rest"] == expected
