#!/usr/bin/env python
"""Soak: many iterator create/destroy cycles, then long streaming with a live producer and
repeated save / restore / cancel cycles. Checks that nothing is lost or repeated across every cycle
and that RSS, open file descriptors and threads stay flat. Not part of the test run (it takes
minutes); its figures go into the issue notes and the README.

    .venv/bin/python bench/soak.py [--minutes 10] [--cycles 1000]

Starts a local Apache Kafka broker (or uses $KAFKA_BOOTSTRAP_SERVERS). Writes bench/results/soak.md
and bench/results/soak.json. Exits non-zero when a continuity check fails or a resource grows
(last fifth of the samples above the first fifth by more than the stated tolerance).
"""

import argparse
import gc
import importlib.util
import json
import os
import random
import statistics
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results")
PARTITIONS = 4
RATE = 500  # default messages per second, all partitions together (--rate)
# Tolerances for "flat": RSS may settle upwards a little (allocator arenas, TF caches).
RSS_TOLERANCE_MB = 40
FD_TOLERANCE = 4
THREAD_TOLERANCE = 4


def process_stats():
    with open("/proc/self/status") as f:
        status = dict(line.split(":", 1) for line in f if ":" in line)
    rss_mb = int(status["VmRSS"].split()[0]) / 1024
    threads = int(status["Threads"])
    fds = len(os.listdir("/proc/self/fd"))
    return rss_mb, fds, threads


def closing_threads():
    """Threads closing a dropped iterator's consumer (named kafka-dataset-close by the core)."""
    count = 0
    for task in os.listdir("/proc/self/task"):
        try:
            with open("/proc/self/task/%s/comm" % task) as f:
                count += f.read().startswith("kafka-dataset")
        except OSError:
            pass  # the thread ended meanwhile
    return count


class Producer(threading.Thread):
    """Produces `partition:seq` values at `rate` per second with increasing timestamps."""

    def __init__(self, servers, topic, rate):
        super().__init__(daemon=True)
        self.rate = rate
        from confluent_kafka import Producer as KafkaProducer

        self.topic = topic
        self.producer = KafkaProducer(
            {
                "bootstrap.servers": servers,
                # Batched and compressed like a real producer: restores land inside batches.
                "linger.ms": 5,
                "compression.type": "lz4",
                "enable.idempotence": True,
                # In order: the continuity check expects seq order to be offset order.
                "acks": "all",
                "max.in.flight.requests.per.connection": 1,
            }
        )
        self.stop = threading.Event()
        self.sent = 0

    def run(self):
        seq = [0] * PARTITIONS
        start = time.monotonic()
        while not self.stop.is_set():
            due = int((time.monotonic() - start) * self.rate)
            while self.sent < due:
                p = self.sent % PARTITIONS
                value = "%d:%d" % (p, seq[p])
                self.producer.produce(
                    self.topic,
                    value=value.encode(),
                    partition=p,
                    timestamp=1_700_000_000_000 + self.sent,
                )
                seq[p] += 1
                self.sent += 1
            self.producer.poll(0)
            time.sleep(0.01)
        self.producer.flush(30)


class Continuity:
    """Per partition, the next sequence number every element must carry: no gap, no repeat."""

    def __init__(self):
        self.next = [0] * PARTITIONS
        self.elements = 0

    def check(self, value):
        p, seq = map(int, value.split(":"))
        if seq != self.next[p]:
            raise AssertionError(
                "partition %d: got seq %d, expected %d (%s)"
                % (p, seq, self.next[p], "repeat" if seq < self.next[p] else "gap")
            )
        self.next[p] += 1
        self.elements += 1


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--cycles", type=int, default=1000, help="create/destroy cycles")
    parser.add_argument("--output", default=RESULTS)
    parser.add_argument(
        "--rate", type=int, default=RATE, help="messages per second the producer writes"
    )
    args = parser.parse_args(argv)

    # The installed package (scripts/setup.sh puts the library beside it), else the source tree.
    if importlib.util.find_spec("kafka_dataset") is None:
        sys.path.insert(0, os.path.join(ROOT, "python"))
    import kafka_dataset
    import tensorflow as tf
    from kafka_dataset import testing as kt

    gc.freeze()  # TensorFlow's ~1M objects: keep full collections out of the timings
    rng = random.Random(7)
    with kt.broker_from_env_or_start() as broker:
        servers = broker.bootstrap

        def dataset(entries):
            return kafka_dataset.KafkaDataset(entries, servers=servers, eof=False, timeout=200)

        # Iterator create/destroy cycles (each reads one element), after a warm-up, on a small
        # topic of their own, first.
        small = kt.create_topic(servers, kt.unique_name("soak-cycles"), PARTITIONS)
        kt.produce(
            servers,
            small,
            [(p, "%d:0" % p, None, 1_700_000_000_000 + p) for p in range(PARTITIONS)],
        )
        cycle_entries = ["%s:%d" % (small, p) for p in range(PARTITIONS)]
        for _ in range(20):
            next(iter(dataset(cycle_entries)))
        time.sleep(2)  # background consumer closes finish
        before = process_stats()
        cycle_start = time.monotonic()
        for _ in range(args.cycles):
            next(iter(dataset(cycle_entries)))
        time.sleep(3)
        after = process_stats()
        cycle_seconds = time.monotonic() - cycle_start

        topic = kt.create_topic(servers, kt.unique_name("soak"), PARTITIONS)
        entries = ["%s:%d" % (topic, p) for p in range(PARTITIONS)]
        producer = Producer(servers, topic, args.rate)
        producer.start()

        continuity = Continuity()
        samples = []  # (seconds, rss MiB, fds, threads)
        counts = {"save": 0, "restore": 0, "cancel": 0, "iterators": 0}
        ckpt_dir = os.path.join(args.output, "soak-ckpt")
        start = time.monotonic()
        deadline = start + args.minutes * 60
        it = iter(dataset(entries))
        counts["iterators"] += 1
        path, at_save, last_action = None, None, "start"
        # Quiet samples, once a minute: the iterator saved and dropped, its consumer's
        # background close finished (threads back to the count without it), then restored.
        # The samples after each action catch closes in flight (a dropped iterator's
        # consumer closes on a thread of its own), so flatness is judged on these.
        quiet = []
        quiet_due = start

        def quiet_sample():
            nonlocal it
            path = tf.train.Checkpoint(iterator=it).write(os.path.join(ckpt_dir, "quiet"))
            del it
            gc.collect()
            settle = time.monotonic() + 10
            while time.monotonic() < settle and closing_threads():
                time.sleep(0.05)
            quiet.append((time.monotonic() - start,) + process_stats())
            it = iter(dataset(entries))
            tf.train.Checkpoint(iterator=it).read(path).assert_consumed()
            counts["iterators"] += 1

        while time.monotonic() < deadline:
            if time.monotonic() >= quiet_due:
                quiet_sample()
                quiet_due += 60
            try:
                for _ in range(rng.randint(200, 3000)):
                    continuity.check(next(it).numpy().decode())
            except AssertionError as e:
                raise AssertionError("%s, after %s (counts %s)" % (e, last_action, counts))
            action = rng.choice(["save", "save-restore", "cancel-restore", "continue"])
            last_action = action
            if action.startswith("save"):
                path = tf.train.Checkpoint(iterator=it).write(os.path.join(ckpt_dir, "it"))
                at_save = list(continuity.next)
                counts["save"] += 1
            if action.endswith("restore") and path:
                # Drop the live iterator (after a cancel: some elements read past the save are
                # thrown away), then resume from the checkpoint: continuity resumes there.
                counts["cancel"] += action == "cancel-restore"
                del it
                it = iter(dataset(entries))
                counts["iterators"] += 1
                tf.train.Checkpoint(iterator=it).read(path).assert_consumed()
                counts["restore"] += 1
                continuity.next = list(at_save)
            samples.append((time.monotonic() - start,) + process_stats())
        quiet_sample()
        # How far the reader is behind the producer when the stream stops.
        lag_at_end = producer.sent - sum(continuity.next)
        producer.stop.set()
        producer.join(60)
        del it
        stream_seconds = time.monotonic() - start

    fifth = max(1, len(samples) // 5)
    first = [statistics.median(col) for col in zip(*[s[1:] for s in samples[:fifth]])]
    last = [statistics.median(col) for col in zip(*[s[1:] for s in samples[-fifth:]])]
    # Quiet samples: the first two against the last two (medians).
    quiet_first = [statistics.median(col) for col in zip(*[q[1:] for q in quiet[:2]])]
    quiet_last = [statistics.median(col) for col in zip(*[q[1:] for q in quiet[-2:]])]
    growth = [b - a for a, b in zip(quiet_first, quiet_last)]
    cycle_growth = [b - a for a, b in zip(before, after)]
    flat = (
        growth[0] <= RSS_TOLERANCE_MB
        and growth[1] <= FD_TOLERANCE
        and growth[2] <= THREAD_TOLERANCE
        and cycle_growth[0] <= RSS_TOLERANCE_MB
        and cycle_growth[1] <= FD_TOLERANCE
        and cycle_growth[2] <= THREAD_TOLERANCE
    )
    result = {
        "minutes": round(stream_seconds / 60, 1),
        "rate": args.rate,
        "produced": producer.sent,
        "lag_at_end": lag_at_end,
        "elements_checked": continuity.elements,
        "counts": counts,
        "stream_first_fifth": dict(zip(["rss_mb", "fds", "threads"], first)),
        "stream_last_fifth": dict(zip(["rss_mb", "fds", "threads"], last)),
        "stream_max_rss_mb": max(s[1] for s in samples),
        "quiet_samples": [
            dict(zip(["seconds", "rss_mb", "fds", "threads"], [round(x, 1) for x in q]))
            for q in quiet
        ],
        "cycles": args.cycles,
        "cycle_seconds": round(cycle_seconds, 1),
        "cycles_before": dict(zip(["rss_mb", "fds", "threads"], before)),
        "cycles_after": dict(zip(["rss_mb", "fds", "threads"], after)),
        "flat": flat,
    }
    os.makedirs(args.output, exist_ok=True)
    with open(os.path.join(args.output, "soak.json"), "w") as f:
        json.dump(result, f, indent=1)
    lines = [
        "# Soak",
        "",
        "%d iterator create/destroy cycles in %.0f s; then %.1f min streaming at %d msg/s "
        "(%d produced), %d elements checked for continuity (no gap, no repeat) across %d "
        "saves, %d restores, %d cancels; the reader ended %d messages behind the producer."
        % (
            args.cycles,
            cycle_seconds,
            result["minutes"],
            args.rate,
            producer.sent,
            continuity.elements,
            counts["save"],
            counts["restore"],
            counts["cancel"],
            lag_at_end,
        ),
        "",
        "| | RSS MiB | open fds | threads |",
        "|---|---|---|---|",
        "| streaming, quiet samples: first two (median) | %.0f | %d | %d |" % tuple(quiet_first),
        "| streaming, quiet samples: last two (median) | %.0f | %d | %d |" % tuple(quiet_last),
        "| streaming, first fifth of all samples (median) | %.0f | %d | %d |" % tuple(first),
        "| streaming, last fifth of all samples (median) | %.0f | %d | %d |" % tuple(last),
        "| before %d create/destroy cycles | %.0f | %d | %d |" % ((args.cycles,) + before),
        "| after them | %.0f | %d | %d |" % after,
        "",
        "Quiet samples (one a minute: iterator saved and dropped, its consumer's close "
        "finished, then restored), MiB / fds / threads: "
        + ", ".join("%.0f/%d/%d" % q[1:] for q in quiet)
        + ".",
        "",
        "Flat (quiet samples and cycles: RSS +%d MiB, fds +%d, threads +%d at most): %s."
        % (RSS_TOLERANCE_MB, FD_TOLERANCE, THREAD_TOLERANCE, "yes" if flat else "NO"),
    ]
    with open(os.path.join(args.output, "soak.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if flat else 1


if __name__ == "__main__":
    sys.exit(main())
