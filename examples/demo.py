#!/usr/bin/env python
"""End-to-end demo: Kafka click stream -> KafkaDataset -> tf.data -> a tiny model, with an
iterator checkpoint mid-stream that a NEW process restores and continues from the next message.

    python examples/demo.py                      # starts a local Apache Kafka broker (KRaft)
    python examples/demo.py --bootstrap host:9092  # an existing cluster ($KAFKA_BOOTSTRAP_SERVERS)

What it shows:
  * 4 partitions of click events keyed by user, with realistic interleaved CreateTime timestamps;
    KafkaDataset merges them in event-time order (event ids are assigned in time order, so the
    merged stream must read 0, 1, 2, ... with no gap);
  * `KafkaDataset -> map(parse) -> batch` feeding a logistic-regression click model;
  * `tf.train.Checkpoint(model=..., iterator=...)` saved after N batches; a new process restores it
    and its first batch starts exactly at the next message (asserted), then trains to the end.
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

import kafka_dataset  # noqa: E402
import tensorflow as tf  # noqa: E402
from kafka_dataset import testing as kt  # noqa: E402

PARTITIONS = 4
USERS, ITEMS, HOURS = 60, 40, 24
BATCH = 64
TRAIN_BATCHES_BEFORE_CHECKPOINT = 20


# --- data ------------------------------------------------------------------------------------


def make_events(n, seed=7):
    """Click events with strictly increasing event times (Poisson arrivals, ~5/s), keyed by user.

    A hidden rule makes clicks learnable: some users and items click far more than others."""
    rng = random.Random(seed)
    user_bias = [rng.gauss(0, 1.2) for _ in range(USERS)]
    item_bias = [rng.gauss(0, 1.0) for _ in range(ITEMS)]
    t = int(time.time() * 1000) - 3_600_000  # an hour ago
    events = []
    for event_id in range(n):
        t += 1 + int(rng.expovariate(1 / 200.0))
        user, item = rng.randrange(USERS), rng.randrange(ITEMS)
        hour = (t // 3_600_000) % HOURS
        p = 1 / (1 + math.exp(-(user_bias[user] + item_bias[item] - 1.0)))
        click = int(rng.random() < p)
        events.append(
            {
                "id": event_id,
                "user": user,
                "item": item,
                "hour": hour,
                "click": click,
                "ts": t,
                "partition": user % PARTITIONS,
            }
        )
    return events


def produce_events(bootstrap, topic, events):
    records = [
        kt.Record(
            e["partition"],
            "%d,%d,%d,%d,%d" % (e["id"], e["user"], e["item"], e["hour"], e["click"]),
            "user-%d" % e["user"],
            e["ts"],
        )
        for e in events
    ]
    return kt.produce(bootstrap, topic, records)


# --- pipeline and model ----------------------------------------------------------------------


def parse(line):
    event_id, user, item, hour, click = tf.io.decode_csv(line, [[0], [0], [0], [0], [0]])
    return {"id": event_id, "user": user, "item": item, "hour": hour}, tf.cast(click, tf.float32)


def make_pipeline(bootstrap, topic):
    ds = tf.data.KafkaDataset(
        [topic], servers=bootstrap, group="demo-trainer", eof=True, timeout=200
    )
    return ds.map(parse).batch(BATCH)


class ClickModel(tf.Module):
    """Logistic regression over user, item and hour-of-day weights, trained with Adagrad."""

    def __init__(self, learning_rate=0.3):
        super().__init__()
        self.weights = [
            tf.Variable(tf.zeros([USERS]), name="user"),
            tf.Variable(tf.zeros([ITEMS]), name="item"),
            tf.Variable(tf.zeros([HOURS]), name="hour"),
            tf.Variable(0.0, name="bias"),
        ]
        self.accumulators = [
            tf.Variable(tf.fill(w.shape, 0.1), name=w.name.split(":")[0] + "_acc")
            for w in self.weights
        ]
        self.steps = tf.Variable(0, dtype=tf.int64, name="steps")
        self.learning_rate = learning_rate

    def logits(self, f):
        user, item, hour, bias = self.weights
        return (
            tf.gather(user, f["user"])
            + tf.gather(item, f["item"])
            + tf.gather(hour, f["hour"])
            + bias
        )

    @tf.function
    def train_step(self, features, labels):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(
                tf.nn.sigmoid_cross_entropy_with_logits(labels, self.logits(features))
            )
        for var, acc, grad in zip(
            self.weights, self.accumulators, tape.gradient(loss, self.weights)
        ):
            grad = tf.convert_to_tensor(grad)
            acc.assign_add(tf.square(grad))
            var.assign_sub(self.learning_rate * grad / tf.sqrt(acc))
        self.steps.assign_add(1)
        return loss


def progress(topic):
    """The reader's own counters (kafka_dataset.stats()): messages read so far (ahead of training
    by what tf.data buffers), bytes, and the lag to the partitions' high watermarks."""
    mine = [s for s in kafka_dataset.stats() if s["topics"] == [topic]]
    if not mine:
        return "no live reader"
    s = mine[0]
    return "reader: %d messages, %.0f KiB, lag %s" % (s["messages"], s["bytes"] / 1024, s["lag"])


def ids_of(batch):
    return batch[0]["id"].numpy().tolist()


# --- the two processes -----------------------------------------------------------------------


def trainer(args):
    """Phase 1: produce, train N batches, checkpoint, peek at what comes next, spawn phase 2."""
    started = time.monotonic()
    broker = (
        kt.Broker(args.bootstrap).wait_ready() if args.bootstrap else kt.broker_from_env_or_start()
    )
    try:
        print("broker: %s" % broker.describe())
        topic = kt.create_topic(broker.bootstrap, kt.unique_name("clicks"), PARTITIONS)
        events = make_events(args.events)
        delivered = produce_events(broker.bootstrap, topic, events)
        where = {e["id"]: (d.partition, d.offset, d.timestamp) for e, d in zip(events, delivered)}
        per_partition = [sum(1 for d in delivered if d.partition == p) for p in range(PARTITIONS)]
        print(
            "produced %d click events to %s, per partition %s, event time %s .. %s"
            % (
                len(events),
                topic,
                per_partition,
                time.strftime("%H:%M:%S", time.localtime(events[0]["ts"] / 1000)),
                time.strftime("%H:%M:%S", time.localtime(events[-1]["ts"] / 1000)),
            )
        )

        model = ClickModel()
        it = iter(make_pipeline(broker.bootstrap, topic))
        seen, losses = [], []
        for step in range(TRAIN_BATCHES_BEFORE_CHECKPOINT):
            features, labels = next(it)
            seen += ids_of((features, labels))
            losses.append(float(model.train_step(features, labels)))
            if step % 5 == 4:
                print(
                    "  step %3d  mean loss of the last 5 batches %.4f  (events %d..%d; %s)"
                    % (
                        step + 1,
                        sum(losses[-5:]) / 5,
                        seen[-5 * BATCH],
                        seen[-1],
                        progress(topic),
                    )
                )
        assert seen == list(range(len(seen))), "merged stream is not in event-time order"

        ckpt_dir = args.checkpoint_dir or tempfile.mkdtemp(prefix="kafka-dataset-demo-")
        path = tf.train.Checkpoint(model=model, iterator=it).save(os.path.join(ckpt_dir, "ckpt"))
        last = seen[-1]
        print(
            "checkpoint %s saved after %d events; last event before the break: id %d "
            "(partition %d, offset %d, ts %d)" % (path, len(seen), last, *where[last])
        )

        # What the uninterrupted run reads next (the checkpoint already holds the position).
        expected_next = ids_of(next(it))
        nxt = expected_next[0]
        print(
            "the uninterrupted run continues with id %d (partition %d, offset %d, ts %d)"
            % (nxt, *where[nxt])
        )

        print("--- restoring in a new process ---", flush=True)
        child = kt.run_python(
            os.path.abspath(__file__),
            [
                "--restore",
                path,
                "--bootstrap",
                broker.bootstrap,
                "--topic",
                topic,
                "--events",
                args.events,
            ],
            timeout=300,
        )
        sys.stdout.write(
            "".join(
                "  | " + line + "\n"
                for line in child.stdout.splitlines()
                if not line.startswith("RESULT ")
            )
        )
        result = json.loads(
            [line for line in child.stdout.splitlines() if line.startswith("RESULT ")][-1][7:]
        )

        first = result["first_ids"][0]
        print(
            "restored process started at id %d (partition %d, offset %d, ts %d)"
            % (first, *where[first])
        )
        assert result["first_ids"] == expected_next, (result["first_ids"][:5], expected_next[:5])
        assert result["restored_steps"] == TRAIN_BATCHES_BEFORE_CHECKPOINT
        assert seen + result["ids"] == list(range(args.events)), "lost or duplicated events"
        print(
            "OK: continued at the next message (%d -> %d); %d + %d = %d events, "
            "none lost or repeated (%.1f s after the broker was up)"
            % (last, first, len(seen), len(result["ids"]), args.events, time.monotonic() - started)
        )
    finally:
        broker.stop()


def restorer(args):
    """Phase 2 (new process): same pipeline and model, restore, check the first batch, train on."""
    model = ClickModel()
    it = iter(make_pipeline(args.bootstrap, args.topic))
    tf.train.Checkpoint(model=model, iterator=it).restore(args.restore).assert_consumed()
    restored_steps = int(model.steps.numpy())
    print("restored model at step %d and the iterator from %s" % (restored_steps, args.restore))
    ids, first_ids, losses = [], None, []
    for features, labels in it:
        batch_ids = ids_of((features, labels))
        if first_ids is None:
            first_ids = batch_ids
            print("first batch after restore: ids %d..%d" % (batch_ids[0], batch_ids[-1]))
        ids += batch_ids
        losses.append(float(model.train_step(features, labels)))
        if len(losses) % 10 == 0:
            print("  step %3d  %s" % (int(model.steps.numpy()), progress(args.topic)))
    print(
        "trained %d more batches (steps %d..%d) to the end of the stream; mean loss of the "
        "first 5 %.4f, of the last 5 %.4f"
        % (
            len(losses),
            restored_steps + 1,
            int(model.steps.numpy()),
            sum(losses[:5]) / 5,
            sum(losses[-5:]) / 5,
        )
    )
    print(
        "RESULT "
        + json.dumps({"first_ids": first_ids, "ids": ids, "restored_steps": restored_steps})
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--bootstrap",
        help="use this cluster instead of a local Apache Kafka (default: $KAFKA_BOOTSTRAP_SERVERS)",
    )
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--checkpoint-dir")
    parser.add_argument("--restore", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.events < (TRAIN_BATCHES_BEFORE_CHECKPOINT + 2) * BATCH:
        parser.error(
            "--events must be at least %d" % ((TRAIN_BATCHES_BEFORE_CHECKPOINT + 2) * BATCH)
        )
    if args.restore:
        restorer(args)
    else:
        trainer(args)


if __name__ == "__main__":
    main()
