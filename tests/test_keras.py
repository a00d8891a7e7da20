"""Keras ``model.fit`` on a streaming (eof=False) KafkaDataset, through
``examples/keras_streaming.py``: a trainer killed mid-epoch and started again trains on exactly
the messages after its last checkpoint (its model's ``train_step`` records the message ids of
every trained batch, so what the test sees is what was trained on, not what was read ahead);
``fit`` with ``steps_per_epoch`` on a stream that is still being produced to finishes its steps."""

import json
import os

from helpers import first_difference, parse_result
from kafka_dataset import testing as kt

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
EXAMPLE = os.path.join(EXAMPLES, "keras_streaming.py")
BATCH, CRASH_EXIT_CODE = 32, 3


def read_trace(path):
    """The example's --trace: ({step: ids of that batch}, [steps at which it saved])."""
    batches, saves = {}, []
    with open(path) as f:
        for line in f:
            entry = json.loads(line)
            if "saved" in entry:
                saves.append(entry["saved"])
            else:
                assert entry["step"] not in batches, "step %d traced twice" % entry["step"]
                batches[entry["step"]] = entry["ids"]
    return batches, saves


def test_killed_trainer_resumes_at_the_message_after_its_checkpoint(
    kd, kafka, run_python, tmp_path
):
    topic = kt.unique_name("keras-resume")
    common = ["--bootstrap", kafka.servers, "--topic", topic]
    common += ["--checkpoint-dir", tmp_path / "ckpt", "--checkpoint-every", 4]
    common += ["--steps", 24, "--steps-per-epoch", 10]
    # Run 1 trains 14 batches (epoch 2, batch 4), saving after 4, 8 and 12, then exits hard:
    # batches 13 and 14 were trained on but never saved.
    first = run_python(
        EXAMPLE,
        common + ["--produce", 1200, "--stop-after-batches", 14, "--trace", tmp_path / "t1"],
        check=False,
        timeout=120,
    )
    assert first.returncode == CRASH_EXIT_CODE, "run 1: rc %d\n%s\n%s" % (
        first.returncode,
        first.stdout[-3000:],
        first.stderr[-5000:],
    )
    trained1, saves1 = read_trace(tmp_path / "t1")
    assert sorted(trained1) == list(range(1, 15)) and saves1 == [4, 8, 12], (trained1, saves1)
    assert "saved ckpt-12: 12 batches trained" in first.stdout, first.stdout

    # Run 2 restores ckpt-12 (model, optimizer and the iterator fit reads) and trains 13..24.
    second = run_python(EXAMPLE, common + ["--trace", tmp_path / "t2"], timeout=120)
    trained2, saves2 = read_trace(tmp_path / "t2")
    assert "restored %s" % (tmp_path / "ckpt" / "ckpt-12") in second.stdout, second.stdout
    assert sorted(trained2) == list(range(13, 25)) and saves2 == [16, 20, 24], (trained2, saves2)

    # Exact relative to the checkpoint: the first batch after the restore is the batch run 1
    # trained right after saving (one batch later would be step 14's ids, one earlier step 12's);
    # the lost batches are trained again, identically.
    assert trained2[13] == trained1[13], (trained2[13][:3], trained1[13][:3], trained1[14][:3])
    assert trained2[14] == trained1[14]
    # Saved part of run 1 + run 2 = the stream from its start, no gap, no repeat. The data was
    # all there before the reader started, so the time-ordered merge reads ids 0, 1, 2, ...
    ids = [i for step in range(1, 13) for i in trained1[step]]
    ids += [i for step in range(13, 25) for i in trained2[step]]
    assert ids == list(range(24 * BATCH)), first_difference(ids, list(range(24 * BATCH)))


LIVE = r"""
import json, os, sys, threading, time, traceback
sys.path.insert(0, sys.argv[2])
import keras
import keras_streaming as ex
from kafka_dataset import testing as kt

args = json.loads(sys.argv[1])
servers, topic, steps, epochs = args["servers"], args["topic"], args["steps"], args["epochs"]
t0 = int(time.time() * 1000) - 3_600_000
kt.create_topic(servers, topic, ex.PARTITIONS)
kt.produce(servers, topic, ex.messages(0, args["before"], t0))
produced = [args["before"]]
go = threading.Event()


def produce_the_rest():  # starts only once fit has trained on every full batch there was
    try:
        if not go.wait(60):
            raise TimeoutError("fit did not train the first batches")
        for first in range(args["before"], args["total"], args["chunk"]):
            produced.append(first + args["chunk"])  # ids below this may have been sent
            kt.produce(servers, topic, ex.messages(first, args["chunk"], t0))
    except BaseException:
        traceback.print_exc()
        os._exit(2)


class Watch(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.batches = []

    def on_train_batch_end(self, batch, logs=None):
        ids = [int(m[0]) for m in self.model.trained.numpy()]
        self.batches.append({"ids": ids, "produced": produced[-1]})
        if len(self.batches) == args["before"] // ex.BATCH:
            go.set()


model = ex.StreamModel()
model.compile(optimizer="adam", loss=keras.losses.BinaryCrossentropy(from_logits=True))
watch = Watch()
producer = threading.Thread(target=produce_the_rest, daemon=True)
producer.start()
history = model.fit(ex.make_dataset(servers, topic), epochs=epochs, steps_per_epoch=steps,
                    shuffle=False, verbose=0, callbacks=[watch])
print("RESULT " + json.dumps({"batches": watch.batches, "epochs": len(history.history["loss"]),
                              "iterations": int(model.optimizer.iterations.numpy())}))
"""


def test_fit_with_steps_per_epoch_on_a_stream_still_being_produced(kd, kafka, run_python, tmp_path):
    steps, epochs = 6, 2
    needed = steps * epochs * BATCH  # 384 messages: 100 when fit starts, 4 x 71 while it runs
    args = {
        "servers": kafka.servers,
        "topic": kt.unique_name("keras-live"),  # the child creates it
        "steps": steps,
        "epochs": epochs,
        "before": 100,
        "chunk": 71,
        "total": needed,
    }
    script = tmp_path / "live.py"  # a file, not `python -c`: AutoGraph reads train_step's source
    script.write_text(LIVE)
    out = parse_result(run_python(str(script), [json.dumps(args), EXAMPLES], timeout=120).stdout)

    assert out["iterations"] == steps * epochs and out["epochs"] == epochs, out
    batches = out["batches"]
    assert len(batches) == steps * epochs
    # Batches 1-3 were all the stream had; batch 4 needed messages produced while fit waited.
    assert [b["produced"] for b in batches[:3]] == [100] * 3, batches[:4]
    assert batches[3]["produced"] > 100 and max(batches[3]["ids"]) >= 100
    for b in batches:
        assert max(b["ids"]) < b["produced"], "trained on a message not yet produced?"
    ids = [i for b in batches for i in b["ids"]]
    # Every message produced is trained on exactly once. While producing, an idle partition may
    # be passed over, so the order across partitions is not asserted; inside one it is.
    assert sorted(ids) == list(range(needed)), first_difference(sorted(ids), list(range(needed)))
    for p in range(3):
        mine = [i for i in ids if i % 3 == p]
        assert mine == sorted(mine), "partition %d out of offset order" % p
