#!/usr/bin/env python
"""Keras `model.fit` on a live (eof=False) Kafka stream; the stream position is checkpointed
with the model, so a killed trainer restarted on the same checkpoint directory continues at the
next message after its last checkpoint.

    python examples/keras_streaming.py      # local Kafka: run 1 crashes mid-epoch, run 2 resumes
    python examples/keras_streaming.py --bootstrap host:9092 --topic t --produce 3000 \
        --checkpoint-dir ckpt --steps 60 --stop-after-batches 25   # crashes after batch 25
    python examples/keras_streaming.py --bootstrap host:9092 --topic t --checkpoint-dir ckpt \
        --steps 60                                                 # resumes after batch 20

Where the position comes from (Keras 3, TF backend): `fit` refuses a `tf.data.Iterator`, and
wrapping one in a Python generator makes Keras read 2 batches ahead for its type signature and
then prefetch more, so a checkpoint of that iterator would skip batches. Given the *dataset*,
Keras (default strategy) makes one iterator per `fit`, kept across epochs when
`steps_per_epoch` is set, adds no buffering of its own, and its `train_function(iterator)`
takes exactly `steps_per_execution` (1) batches per call. The callback below checkpoints that
very iterator from `on_train_batch_end`: model after batch k, iterator at the first message of
batch k+1. Buffers inside tf.data (here the fused map-and-batch keeps batches in flight, so the
Kafka offsets in the checkpoint are ahead of the trained ones) are part of the iterator's
checkpoint and come first after a restore, so they cost nothing.
"""

import argparse
import json
import math
import os
import random
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

try:
    import kafka_dataset  # noqa: F401
except ImportError:  # run from a source checkout without installing
    sys.path.insert(
        0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python")
    )

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from kafka_dataset import testing as kt  # noqa: E402

BATCH, FEATURES, PARTITIONS = 32, 3, 3
CRASH_EXIT_CODE = 3


def messages(first, n, t0):
    """CSV messages `id,partition,offset,x0,x1,x2,label` for ids first..first+n-1 of a new topic;
    ids follow the timestamps, so the time-ordered stream reads ids 0, 1, 2, ..."""
    records = []
    for i in range(first, first + n):
        rng, p = random.Random(i), i % PARTITIONS
        x = [rng.uniform(-1, 1) for _ in range(FEATURES)]
        y = int(1.5 * x[0] - 2 * x[1] + 0.5 * x[2] + rng.gauss(0, 0.3) > 0)
        value = ",".join(map(str, [i, p, i // PARTITIONS] + ["%.4f" % v for v in x] + [y]))
        records.append(kt.Record(p, value, None, t0 + 10 * i))
    return records


def produce(bootstrap, topic, n):
    kt.create_topic(bootstrap, topic, PARTITIONS)
    t0 = int(time.time() * 1000) - 3_600_000
    delivered = kt.produce(bootstrap, topic, messages(0, n, t0))  # batched, lz4
    assert all(d.offset == i // PARTITIONS for i, d in enumerate(delivered)), "topic not new"


def parse(line):
    cols = tf.io.decode_csv(line, [[0]] * 3 + [[0.0]] * (FEATURES + 1))
    meta = tf.cast(tf.stack(cols[:3]), tf.int64)  # id, partition, offset: for the log
    return {"x": tf.stack(cols[3:-1]), "meta": meta}, cols[-1:]


def make_dataset(bootstrap, topic):
    ds = tf.data.KafkaDataset([topic], servers=bootstrap, eof=False, timeout=500)
    return ds.map(parse).batch(BATCH, drop_remainder=True)


class StreamModel(keras.Model):
    """Logistic regression whose train_step also records which messages it trained on."""

    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(1)
        self.trained = self.add_weight(
            shape=(BATCH, 3), dtype="int64", initializer="zeros", trainable=False, name="trained"
        )

    def call(self, x):
        return self.dense(x)

    def train_step(self, data):
        features, y = data
        self.trained.assign(features["meta"])
        return super().train_step((features["x"], y))


class IteratorCheckpoint(keras.callbacks.Callback):
    """Restores the latest checkpoint in `directory` (model and optimizer now, the iterator when
    fit first uses it: before its first batch), then saves all three every `every` batches."""

    def __init__(self, model, directory, every):
        super().__init__()
        self.every, self.iterator = every, None
        self.ckpt = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
        self.manager = tf.train.CheckpointManager(self.ckpt, directory, max_to_keep=3)
        self.status = None
        if self.manager.latest_checkpoint:
            self.status = self.ckpt.restore(self.manager.latest_checkpoint)
            self.status.assert_existing_objects_matched()

    def on_train_begin(self, logs=None):
        self.inner = self.model.train_function

        def train_function(iterator):  # Keras passes its iterator, once per batch
            if self.iterator is None:
                self.iterator = self.ckpt.iterator = iterator  # restores its saved position
                if self.status:
                    self.status.assert_consumed()
            elif iterator is not self.iterator:
                raise RuntimeError("fit made a second iterator: pass steps_per_epoch")
            return self.inner(iterator)

        self.model.train_function = train_function

    def on_train_end(self, logs=None):
        self.model.train_function = self.inner

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if step % self.every == 0:
            self.saved(self.manager.save(checkpoint_number=step), step, logs)

    def saved(self, path, step, logs):
        pass


class StreamTrainer(IteratorCheckpoint):
    """Adds progress lines, the id trace, a simulated crash and the overall step limit."""

    def __init__(self, model, args):
        super().__init__(model, args.checkpoint_dir, args.checkpoint_every)
        self.args, self.batches, self.next_offsets = args, 0, {}
        self.trace = open(args.trace, "a", buffering=1) if args.trace else None

    def on_train_batch_end(self, batch, logs=None):
        meta = self.model.trained.numpy().tolist()  # (id, partition, offset) just trained on
        for _, partition, offset in meta:
            self.next_offsets[partition] = offset + 1
        self.batches += 1
        step = int(self.model.optimizer.iterations.numpy())
        if self.batches == 1:
            print("first batch of this run: step %d, ids %d..%d" % (step, meta[0][0], meta[-1][0]))
        if self.trace:
            self.trace.write(json.dumps({"step": step, "ids": [m[0] for m in meta]}) + "\n")
        super().on_train_batch_end(batch, logs)  # saves every `every` batches
        if self.batches == self.args.stop_after_batches:
            print("simulated crash after %d batches (step %d)" % (self.batches, step), flush=True)
            os._exit(CRASH_EXIT_CODE)
        self.model.stop_training = step >= self.args.steps

    def saved(self, path, step, logs):
        offsets = " ".join("p%d=%d" % kv for kv in sorted(self.next_offsets.items()))
        print(
            "saved %s: %d batches trained, loss %.3f, next offsets %s"
            % (os.path.basename(path), step, float(logs["loss"]), offsets),
            flush=True,
        )
        if self.trace:
            self.trace.write(json.dumps({"saved": step}) + "\n")


def train(args):
    if args.produce:
        produce(args.bootstrap, args.topic, args.produce)
        print("produced %d messages to %s" % (args.produce, args.topic))
    model = StreamModel()
    model.compile(
        optimizer=keras.optimizers.Adam(0.05),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
        metrics=[keras.metrics.BinaryAccuracy(threshold=0.0)],
    )
    model(tf.zeros([1, FEATURES]))  # builds the weights,
    model.optimizer.build(model.trainable_variables)  # and the optimizer's, before a restore
    trainer = StreamTrainer(model, args)
    done = int(model.optimizer.iterations.numpy())
    print("restored %s" % trainer.manager.latest_checkpoint if trainer.status else "no checkpoint")
    if done >= args.steps:
        return
    history = model.fit(
        make_dataset(args.bootstrap, args.topic),
        epochs=math.ceil((args.steps - done) / args.steps_per_epoch),
        steps_per_epoch=args.steps_per_epoch,
        shuffle=False,
        verbose=0,
        callbacks=[trainer],
    )
    accuracy = history.history["binary_accuracy"][-1]
    print("trained to step %d, accuracy %.3f" % (args.steps, accuracy))


def demo(args):
    """No broker given: start a local Kafka, then train in a process that crashes and one that
    resumes."""
    broker = kt.start_kafka()
    try:
        argv = ["--bootstrap", broker.bootstrap, "--topic", args.topic, "--steps", args.steps]
        argv += ["--checkpoint-dir", args.checkpoint_dir or tempfile.mkdtemp(prefix="keras-")]
        crash = args.stop_after_batches or args.steps // 2 - 3
        for title, extra in (
            ("run 1: crashes after %d batches" % crash, ["--produce", args.produce or 3000]),
            ("run 2: resumes from the last checkpoint", []),
        ):
            print("--- %s ---" % title, flush=True)
            stop = ["--stop-after-batches", crash] if extra else []
            child = kt.run_python(os.path.abspath(__file__), argv + extra + stop, check=False)
            print(child.stdout.rstrip() + "\n(exit code %d)" % child.returncode, flush=True)
            if child.returncode not in (0, CRASH_EXIT_CODE):
                sys.exit(child.stderr[-3000:])
    finally:
        broker.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default=os.environ.get(kt.BOOTSTRAP_ENV))
    parser.add_argument("--topic", default="keras-stream")
    parser.add_argument("--produce", type=int, default=0, help="create --topic with N messages")
    parser.add_argument("--checkpoint-dir", help="required with --bootstrap")
    parser.add_argument("--checkpoint-every", type=int, default=10, help="batches")
    parser.add_argument("--steps", type=int, default=60, help="batches to train in total")
    parser.add_argument("--steps-per-epoch", type=int, default=20)
    parser.add_argument("--stop-after-batches", type=int, default=0, help="then os._exit")
    parser.add_argument("--trace", help="append each trained batch's ids here (JSON lines)")
    args = parser.parse_args()
    if not args.bootstrap:
        return demo(args)
    if not args.checkpoint_dir:
        parser.error("--checkpoint-dir is required with --bootstrap")
    train(args)


if __name__ == "__main__":
    main()
