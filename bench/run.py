#!/usr/bin/env python
"""Throughput benchmark: KafkaDataset against a raw rdkafka consumer and confluent-kafka.

    .venv/bin/python bench/run.py [--messages 1000000] [--size 100] [--runs 3]

Starts a local tansu broker (or uses $KAFKA_BOOTSTRAP_SERVERS), produces `--messages` messages of
`--size` bytes with increasing CreateTime timestamps into a 1-partition and an 8-partition topic,
then measures each reader in its own process, best of `--runs`, all in this one run (the
machines are noisy: compare ratios, not absolute numbers):

  raw-rust    rdkafka BaseConsumer (examples/raw_consume.rs), tuned: the ceiling
  confluent   confluent-kafka Consumer.consume(10000), tuned the same way
  kd-eager    KafkaDataset(eof=True).batch(1024), iterated eagerly
  kd-graph    the same inside a tf.function reduce (no Python per batch)
  kd-native   KafkaDataset(eof=True, batch_size=1024): batches filled by the core, eagerly

Client CPU is user+system time of the reading process (the broker is not counted). Writes a
Markdown table to bench/results/latest.md.
"""

import argparse
import importlib.util
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Prefer the installed package (scripts/setup.sh puts the library beside it); fall back to the
# source tree. Only look, never import here: importing it imports TensorFlow, which would
# weigh on the non-TensorFlow readers' CPU and RSS.
if importlib.util.find_spec("kafka_dataset") is None:
    sys.path.insert(0, os.path.join(ROOT, "python"))

# librdkafka 2.x tuned for a fast reader (DESIGN.md §5): never pause at queued.min.messages.
TUNED = {
    "queued.min.messages": "1000000",
    "fetch.queue.backoff.ms": "0",
    "fetch.wait.max.ms": "100",
}


def produce(servers, topic, partitions, messages, size):
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": servers,
            "linger.ms": 20,
            "batch.num.messages": 10000,
            "compression.type": "none",
            "queue.buffering.max.messages": 1000000,
        }
    )
    payload = b"x" * size
    base = 1_700_000_000_000
    for i in range(messages):
        while True:
            try:
                producer.produce(topic, payload, partition=i % partitions, timestamp=base + i)
                break
            except BufferError:
                producer.poll(0.05)
    remaining = producer.flush(120)
    if remaining:
        raise RuntimeError("%d messages not delivered" % remaining)


def reader_raw(servers, topic, partitions):
    exe = os.path.join(ROOT, "target", "release", "examples", "raw_consume")
    out = subprocess.check_output([exe, servers, topic, str(partitions)], text=True)
    n, _, seconds, rss = out.split()
    RAW_PEAK_RSS[0] = int(rss)
    return int(n), float(seconds)


def reader_confluent(servers, topic, partitions):
    from confluent_kafka import Consumer, TopicPartition

    config = {
        "bootstrap.servers": servers,
        "group.id": "kd-bench-confluent",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
    }
    config.update(TUNED)
    consumer = Consumer(config)
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    start = time.perf_counter()
    n, ended = 0, 0
    while ended < partitions:
        for m in consumer.consume(10000, 0.1):
            if m.error() is None:
                n += 1
            elif m.error().code() == -191:  # _PARTITION_EOF
                ended += 1
            else:
                raise RuntimeError(m.error())
    seconds = time.perf_counter() - start
    consumer.close()
    return n, seconds


def _dataset(servers, topic, native=False):
    import kafka_dataset

    if native:
        return kafka_dataset.KafkaDataset(
            [topic], servers=servers, eof=True, timeout=1000, batch_size=1024
        )
    return kafka_dataset.KafkaDataset([topic], servers=servers, eof=True, timeout=1000).batch(1024)


def _count_eagerly(ds):
    start = time.perf_counter()
    n = 0
    for batch in ds:
        n += int(batch.shape[0])
    return n, time.perf_counter() - start


def reader_kd_eager(servers, topic, partitions):
    return _count_eagerly(_dataset(servers, topic))


def reader_kd_native(servers, topic, partitions):
    return _count_eagerly(_dataset(servers, topic, native=True))


def reader_kd_graph(servers, topic, partitions):
    import tensorflow as tf

    ds = _dataset(servers, topic)

    @tf.function
    def count():
        return ds.reduce(tf.constant(0, tf.int64), lambda acc, b: acc + tf.size(b, tf.int64))

    start = time.perf_counter()
    n = int(count())
    return n, time.perf_counter() - start


READERS = {
    "raw-rust": reader_raw,
    "confluent": reader_confluent,
    "kd-eager": reader_kd_eager,
    "kd-graph": reader_kd_graph,
    "kd-native": reader_kd_native,
}


def child(mode, servers, topic, partitions):
    """Runs one reader in this process; prints `messages seconds cpu_seconds max_rss_kib`."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if mode.startswith("kd-"):
        import kafka_dataset  # imports TensorFlow: not part of the measurement

        kafka_dataset.load_library()
    before = resource.getrusage(resource.RUSAGE_SELF)
    n, seconds = READERS[mode](servers, topic, partitions)
    after = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    cpu += children.ru_utime + children.ru_stime
    rss = _peak_rss_kib() if mode != "raw-rust" else RAW_PEAK_RSS[0]
    print("RESULT %d %.6f %.6f %d" % (n, seconds, cpu, rss))


def _peak_rss_kib(status="/proc/self/status"):
    """VmHWM: peak RSS of this process image (ru_maxrss would include the pre-exec parent)."""
    with open(status) as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


RAW_PEAK_RSS = [0]


def measure(mode, servers, topic, partitions):
    out = subprocess.check_output(
        [
            sys.executable,
            os.path.abspath(__file__),
            "--child",
            mode,
            servers,
            topic,
            str(partitions),
        ],
        text=True,
        stderr=subprocess.DEVNULL,
    )
    line = [ln for ln in out.splitlines() if ln.startswith("RESULT ")][-1]
    n, seconds, cpu, rss = line.split()[1:]
    return int(n), float(seconds), float(cpu), int(rss)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:5], int(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results", "latest.md"))
    args = parser.parse_args()

    subprocess.check_call(
        ["cargo", "build", "--release", "--quiet", "--example", "raw_consume"], cwd=ROOT
    )
    from kafka_dataset import testing as kt

    rows = []
    with kt.broker_from_env_or_start() as broker:
        servers = broker.bootstrap
        for partitions in (1, 8):
            topic = kt.unique_name("bench-%dp" % partitions)
            kt.create_topic(servers, topic, partitions)
            t = time.perf_counter()
            produce(servers, topic, partitions, args.messages, args.size)
            print(
                "produced %d x %d B into %s in %.1f s"
                % (args.messages, args.size, topic, time.perf_counter() - t),
                flush=True,
            )
            for mode in READERS:
                best = None
                for _ in range(args.runs):
                    n, seconds, cpu, rss = measure(mode, servers, topic, partitions)
                    if n != args.messages:
                        raise RuntimeError("%s read %d of %d messages" % (mode, n, args.messages))
                    if best is None or seconds < best[0]:
                        best = (seconds, cpu, rss)
                seconds, cpu, rss = best
                rows.append((partitions, mode, args.messages / seconds, cpu, rss))
                print(
                    "%dp %-10s %9.0f msg/s  cpu %.2f s  rss %d MiB"
                    % (partitions, mode, args.messages / seconds, cpu, rss // 1024),
                    flush=True,
                )

    lines = [
        "# Throughput: %d x %d-byte messages, tansu 0.6.0 on loopback, best of %d"
        % (args.messages, args.size, args.runs),
        "",
        "| partitions | reader | msg/s | MB/s | client CPU s per M msgs | peak RSS MiB"
        " | wall ratio to raw-rust |",
        "|---|---|---|---|---|---|---|",
    ]
    for partitions, mode, rate, cpu, rss in rows:
        ceiling = next(r[2] for r in rows if r[0] == partitions and r[1] == "raw-rust")
        lines.append(
            "| %d | %s | %.0f | %.1f | %.2f | %d | %.2f |"
            % (
                partitions,
                mode,
                rate,
                rate * args.size / 1e6,
                cpu * 1e6 / args.messages,
                rss // 1024,
                rate / ceiling,
            )
        )
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
