#!/usr/bin/env python
"""Throughput and memory benchmark: KafkaDataset against a raw rdkafka consumer, confluent-kafka
and tensorflow-io, all measured in one run.

    bash bench/run.sh            # installs what it needs, then runs this
    .venv/bin/python bench/run.py [--quick]

Starts a local Apache Kafka (or uses $KAFKA_BOOTSTRAP_SERVERS) and measures each reader in its
own process, best of `--runs` (the machines are noisy: compare ratios within one run, not
absolute numbers). Client CPU is user+system time of the reading process (the broker is not
counted).

  raw-rust      rdkafka BaseConsumer (examples/raw_consume.rs), tuned: the ceiling
  confluent     confluent-kafka Consumer.consume(10000), tuned the same way
  kd-eager      KafkaDataset(eof=True).batch(1024), iterated eagerly
  kd-graph      the same inside a tf.function reduce (no Python per batch)
  kd-native     KafkaDataset(eof=True, batch_size=1024): batches filled by the core
  +tcmalloc     the same with LD_PRELOAD=libtcmalloc_minimal (TensorFlow's recommended allocator)
  tfio-*        tensorflow-io 0.37.1 in TensorFlow 2.16.2 (.venv-tf216, bench/setup_tf216.sh),
                beside KafkaDataset built for that TensorFlow (`*-tf216`)

Scenarios: 1M x 100 B and 100k x 10 KB in 1 and 8 partitions; tensorflow-io on 200k x 100 B;
one idle partition among 4 busy ones (eof=False, timeout=1000); 64 partitions with a consumer
throttled 10x below the producer, for memory against the prefetch budget; metadata=True vs
off (and off vs a `--baseline` build) on 200k x 100 B with two headers each. Writes
bench/results/latest.md and bench/results/latest.png.
"""

import argparse
import concurrent.futures
import gc
import importlib.util
import json
import os
import resource
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Prefer the installed package (scripts/setup.sh puts the library beside it); fall back to the
# source tree (the TF 2.16 venv has no install). Only look, never import here: importing it
# imports TensorFlow, which would weigh on the non-TensorFlow readers' CPU and RSS.
if importlib.util.find_spec("kafka_dataset") is None:
    sys.path.insert(0, os.path.join(ROOT, "python"))

TF216_PYTHON = os.path.join(ROOT, ".venv-tf216", "bin", "python")
TF216_LIBRARY = os.path.join(ROOT, "target", "tf216", "release", "libkafka_dataset.so")
TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"

# librdkafka 2.x tuned for a fast reader (DESIGN.md §5): never pause at queued.min.messages.
TUNED = {
    "queued.min.messages": "1000000",
    "fetch.queue.backoff.ms": "0",
    "fetch.wait.max.ms": "100",
}
# tensorflow-io's bundled librdkafka 1.5.0 with a short broker wait (its best mode here).
TFIO_CONFIG = ["fetch.wait.max.ms=10"]


def produce(
    servers,
    topic,
    partitions,
    messages,
    size,
    rate=None,
    seconds=None,
    batch=10000,
    headers=None,
    batch_stats=False,
):
    """Produces `messages` (or, with `rate`, `rate`/s for `seconds`) of `size` bytes with
    increasing CreateTime timestamps, round-robin over `partitions`, `batch` per record batch;
    `headers`: the same (name, value) list on every message. `batch_stats`: prints the largest
    record batch librdkafka reported (bytes) as `max-batch-bytes N`."""
    from confluent_kafka import Producer

    largest = [0]

    def on_stats(text):
        topics = json.loads(text).get("topics", {})
        largest[0] = max(largest[0], topics.get(topic, {}).get("batchsize", {}).get("max", 0))

    config = {
        "bootstrap.servers": servers,
        "linger.ms": 20 if batch > 1 else 0,
        "batch.num.messages": batch,
        "compression.type": "none",
        "queue.buffering.max.messages": 1000000,
    }
    if batch_stats:
        config.update({"statistics.interval.ms": 1000, "stats_cb": on_stats})
    producer = Producer(config)
    payload = b"x" * size
    base = 1_700_000_000_000
    start = time.perf_counter()
    i = 0
    while i < messages if rate is None else time.perf_counter() - start < seconds:
        if rate is not None and i >= rate * (time.perf_counter() - start):
            producer.poll(0.005)
            continue
        try:
            producer.produce(
                topic, payload, partition=i % partitions, timestamp=base + i, headers=headers
            )
            i += 1
        except BufferError:
            producer.poll(0.05)
    remaining = producer.flush(120)
    if remaining:
        raise RuntimeError("%d messages not delivered" % remaining)
    if batch_stats:
        producer.poll(1.5)  # one more statistics report
        print("max-batch-bytes %d" % largest[0], flush=True)
    return i


# --- readers: each runs in its own process and returns (messages, seconds[, extra]) ---------


def reader_raw(p):
    exe = os.path.join(ROOT, "target", "release", "examples", "raw_consume")
    out = subprocess.check_output([exe, p["servers"], p["topic"], str(p["partitions"])], text=True)
    n, _, seconds, rss = out.split()
    RAW_PEAK_RSS[0] = int(rss)
    return int(n), float(seconds)


def reader_confluent(p):
    from confluent_kafka import Consumer, TopicPartition

    config = {
        "bootstrap.servers": p["servers"],
        "group.id": "kd-bench-confluent",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
    }
    config.update(TUNED)
    consumer = Consumer(config)
    consumer.assign([TopicPartition(p["topic"], i, 0) for i in range(p["partitions"])])
    start = time.perf_counter()
    n, ended = 0, 0
    while ended < p["partitions"]:
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


def _dataset(p, native=False, **kwargs):
    import kafka_dataset

    kwargs.setdefault("eof", True)
    kwargs.setdefault("config_global", p.get("config"))
    if "workers" in p:
        kwargs.update(num_workers=p["workers"], worker_index=p["index"])
    if native:
        return kafka_dataset.KafkaDataset(
            p.get("entries") or [p["topic"]], servers=p["servers"], batch_size=1024, **kwargs
        )
    return kafka_dataset.KafkaDataset([p["topic"]], servers=p["servers"], **kwargs).batch(1024)


def _count_eagerly(ds, stop_at=None):
    """Counts elements of a batched dataset; also returns when the first batch arrived."""
    start = time.perf_counter()
    first = None
    n = 0
    for batch in ds:
        first = first or time.perf_counter()
        if isinstance(batch, dict):  # metadata=True
            batch = batch["value"]
        n += int(batch.shape[0]) if hasattr(batch, "shape") else int(batch[0].shape[0])
        if stop_at is not None and n >= stop_at:
            break
    end = time.perf_counter()
    # Wall-clock span too, so concurrent workers' runs can be joined into one interval.
    span = {"began": time.time() - (end - start), "ended": time.time()}
    return n, end - start, dict(span, after_first_s=end - (first or end))


def reader_kd_eager(p):
    return _count_eagerly(_dataset(p))


def reader_kd_native(p):
    return _count_eagerly(_dataset(p, native=True))


def reader_kd_eager_meta(p):
    return _count_eagerly(_dataset(p, metadata=True))


def reader_kd_native_meta(p):
    return _count_eagerly(_dataset(p, native=True, metadata=True))


def reader_kd_graph(p):
    import tensorflow as tf

    ds = _dataset(p)

    @tf.function
    def count():
        return ds.reduce(tf.constant(0, tf.int64), lambda acc, b: acc + tf.size(b, tf.int64))

    start = time.perf_counter()
    n = int(count())
    return n, time.perf_counter() - start


def reader_kd_idle(p):
    """Native batches over explicit entries, eof=False: stops after `messages`."""
    return _count_eagerly(_dataset(p, native=True, eof=False, timeout=1000), p["messages"])


def reader_tfio_range(p):
    import tensorflow_io as tfio

    ds = tfio.IODataset.from_kafka(
        p["topic"],
        partition=0,
        start=0,
        stop=p["messages"],
        servers=p["servers"],
        configuration=TFIO_CONFIG,
    ).batch(1024)
    return _count_eagerly(ds)


def reader_tfio_group(p):
    import tensorflow_io as tfio
    from confluent_kafka import Consumer, TopicPartition

    # tensorflow-io's group dataset starts at the committed offsets: commit the log start.
    group = "kd-bench-tfio-%d-%d" % (os.getpid(), time.time_ns())
    c = Consumer({"bootstrap.servers": p["servers"], "group.id": group})
    c.commit(
        offsets=[TopicPartition(p["topic"], i, 0) for i in range(p["partitions"])],
        asynchronous=False,
    )
    c.close()
    ds = tfio.experimental.streaming.KafkaGroupIODataset(
        topics=[p["topic"]],
        group_id=group,
        servers=p["servers"],
        stream_timeout=0,
        message_poll_timeout=5000,
        configuration=TFIO_CONFIG + ["session.timeout.ms=7000", "max.poll.interval.ms=8000"],
    ).batch(1024)
    return _count_eagerly(ds)


def reader_memory(p):
    """Partitions read 10x slower than produced, eof=False, in native batches of ~1 MB (the
    batch in hand is the consumer's, not the prefetch); samples RSS every 100 ms. Returns the
    peak RSS above the process before the iterator existed."""
    import kafka_dataset

    ds = kafka_dataset.KafkaDataset(
        [p["topic"]],
        servers=p["servers"],
        eof=False,
        timeout=1000,
        config_global=p["config"],
        batch_size=max(1, 1_000_000 // p["size"]),
    )
    baseline = _rss_kib()
    peak = [baseline]
    done = threading.Event()

    series = []

    def sample():
        while not done.wait(0.1):
            rss = _rss_kib()
            peak[0] = max(peak[0], rss)
            if not series or time.perf_counter() - series[-1][0] >= 5:
                series.append((time.perf_counter(), rss))

    threading.Thread(target=sample, daemon=True).start()
    start = time.perf_counter()
    n = 0
    for batch in ds:
        n += int(batch.shape[0])
        # Throttle to `rate` messages per second.
        ahead = n / p["rate"] - (time.perf_counter() - start)
        if ahead > 0:
            time.sleep(ahead)
        if time.perf_counter() - start >= p["seconds"]:
            break
    done.set()
    peak[0] = max(peak[0], _rss_kib())
    # RSS above the idle process every 5 s: a plateau is a bound, a slope is a leak.
    growth = [(round(t - start), (rss - baseline) // 1024) for t, rss in series]
    return (
        n,
        time.perf_counter() - start,
        {"baseline_kib": baseline, "peak_kib": peak[0], "growth_mib": growth},
    )


def memory_scenario(servers, kt, seconds, budget=128):
    """Peak RSS above the idle process against the prefetch budget (issue 16 §4): 64 and 256
    partitions, 1 KB and 100 KB messages, a producer at 20 MB/s and a consumer 10x slower.
    The bound to meet: budget + 64 MiB."""
    byte_rate = 20_000_000
    md = [
        "## Memory: prefetch budget %d MiB, producer %d MB/s, consumer 10x slower, %d s"
        % (budget, byte_rate // 1_000_000, seconds),
        "",
        "| partitions | message | peak RSS above the idle process, MiB | bound (budget + 64)"
        " | largest producer batch, KB | idle process RSS MiB | MiB above idle every 5 s |",
        "|---|---|---|---|---|---|---|",
    ]
    cases = ((64, 1000), (256, 1000), (64, 100_000), (256, 100_000))
    # KD_BENCH_MEMORY_CASES="256x100000,64x1000": only those (for experiments).
    wanted = os.environ.get("KD_BENCH_MEMORY_CASES")
    if wanted:
        cases = [tuple(int(x) for x in case.split("x")) for case in wanted.split(",")]
    for partitions, size in cases:
        rate = byte_rate // size
        topic = kt.unique_name("bench-memory")
        kt.create_topic(servers, topic, partitions)
        producer = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; sys.path.insert(0, %r); import run; run.produce(%r, %r, %d, 0,"
                " %d, rate=%d, seconds=%d, batch=%d, batch_stats=True)"
                % (
                    os.path.dirname(__file__),
                    servers,
                    topic,
                    partitions,
                    size,
                    rate,
                    seconds + 5,
                    max(1, min(10000, 1_000_000 // size)),
                ),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        params = {
            "servers": servers,
            "topic": topic,
            "config": ["kafka_dataset.prefetch.budget.mb=%d" % budget],
            "rate": rate // 10,
            "seconds": seconds,
            "size": size,
        }
        r = measure("memory", params)
        produced, _ = producer.communicate()
        batch_kb = [
            int(line.split()[1]) // 1000
            for line in produced.splitlines()
            if line.startswith("max-batch-bytes ")
        ] or [-1]
        over = (r["peak_kib"] - r["baseline_kib"]) // 1024
        print(
            "  %d partitions x %d B: peak %d MiB above idle (bound %d), largest batch %d KB"
            % (partitions, size, over, budget + 64, batch_kb[0]),
            flush=True,
        )
        md.append(
            "| %d | %s | %d | %d | %d | %d | %s |"
            % (
                partitions,
                "1 KB" if size < 10_000 else "100 KB",
                over,
                budget + 64,
                batch_kb[0],
                r["baseline_kib"] // 1024,
                " ".join(str(mib) for _, mib in r["growth_mib"]),
            )
        )
    return md


READERS = {
    "raw-rust": reader_raw,
    "confluent": reader_confluent,
    "kd-eager": reader_kd_eager,
    "kd-graph": reader_kd_graph,
    "kd-native": reader_kd_native,
    "kd-eager-meta": reader_kd_eager_meta,
    "kd-native-meta": reader_kd_native_meta,
    "kd-idle": reader_kd_idle,
    "tfio-range": reader_tfio_range,
    "tfio-group": reader_tfio_group,
    "memory": reader_memory,
}


def _rss_kib(field="VmRSS:"):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))


RAW_PEAK_RSS = [0]


def child(mode, params):
    """Runs one reader in this process; prints one `RESULT {json}` line."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if mode not in ("raw-rust", "confluent"):
        if not mode.startswith("tfio"):
            import kafka_dataset  # imports TensorFlow: not part of the measurement

            kafka_dataset.load_library()
        else:
            import tensorflow_io  # noqa: F401
        # TensorFlow's import leaves ~1M Python objects behind; a full collection during an
        # eager loop then pauses it for seconds (README, Tuning).
        gc.freeze()
    before = resource.getrusage(resource.RUSAGE_SELF)
    result = READERS[mode](params)
    n, seconds = result[:2]
    after = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    cpu += children.ru_utime + children.ru_stime
    rss = RAW_PEAK_RSS[0] if mode == "raw-rust" else _rss_kib("VmHWM:")
    out = {"messages": n, "seconds": seconds, "cpu": cpu, "rss_kib": rss}
    out.update(result[2] if len(result) > 2 else {})
    print("RESULT " + json.dumps(out), flush=True)


# Reader variants: (reader, which TensorFlow, extra environment).
VARIANTS = {
    "raw-rust": ("raw-rust", "main", {}),
    "confluent": ("confluent", "main", {}),
    "kd-eager": ("kd-eager", "main", {}),
    "kd-eager+tcmalloc": ("kd-eager", "main", {"LD_PRELOAD": TCMALLOC}),
    "kd-graph": ("kd-graph", "main", {}),
    "kd-graph+tcmalloc": ("kd-graph", "main", {"LD_PRELOAD": TCMALLOC}),
    "kd-native": ("kd-native", "main", {}),
    "tfio-range": ("tfio-range", "tf216", {}),
    "tfio-group": ("tfio-group", "tf216", {}),
    "kd-eager-tf216": ("kd-eager", "tf216", {}),
    "kd-native-tf216": ("kd-native", "tf216", {}),
}


# Set by --baseline: another build of the library, measured as the `*@baseline` variants
# beside this one in the same run (before/after comparisons of a change).
BASELINE_LIBRARY = []


def measure(variant, params, timeout=600):
    variant, _, against = variant.partition("@")
    mode, tf, extra = VARIANTS.get(variant, (variant, "main", {}))
    env = dict(os.environ, **extra)
    if against == "baseline":
        env["KAFKA_DATASET_LIBRARY"] = BASELINE_LIBRARY[0]
    python = sys.executable
    if tf == "tf216":
        python = TF216_PYTHON
        env["KAFKA_DATASET_LIBRARY"] = TF216_LIBRARY
        env["PYTHONPATH"] = os.path.join(ROOT, "python")
    out = subprocess.run(
        [python, os.path.abspath(__file__), "--child", mode, json.dumps(params)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        raise RuntimeError("%s failed:\n%s" % (variant, out.stderr[-3000:]))
    return json.loads(lines[-1][len("RESULT ") :])


def best_of_each(runs, variants, params, expect):
    """Best of `runs` per variant, measured round-robin (v1, v2, ..., v1, v2, ...): a broker
    that gets faster as it warms up (the JVM's JIT) favours no variant."""
    best = {}
    for _ in range(runs):
        for v in variants:
            r = best_of(1, v, params, expect)
            if v not in best or r["seconds"] < best[v]["seconds"]:
                best[v] = r
    return best


def best_of(runs, variant, params, expect):
    best = None
    for _ in range(runs):
        r = measure(variant, params)
        if r["messages"] != expect:
            raise RuntimeError("%s read %d of %d messages" % (variant, r["messages"], expect))
        if best is None or r["seconds"] < best["seconds"]:
            best = r
    return best


def throughput_table(title, rows, size, ceiling_of):
    lines = [
        "## " + title,
        "",
        "| partitions | reader | msg/s | MB/s | client CPU s per M msgs | peak RSS MiB"
        " | wall ratio | CPU ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        base = ceiling_of(r)
        messages = r["messages"]
        rate = messages / r["seconds"]
        lines.append(
            "| %d | %s | %.0f | %.1f | %.2f | %d | %.2f | %.2f |"
            % (
                r["partitions"],
                r["reader"],
                rate,
                rate * size / 1e6,
                r["cpu"] * 1e6 / messages,
                r["rss_kib"] // 1024,
                rate / (base["messages"] / base["seconds"]),
                (r["cpu"] / messages) / (base["cpu"] / base["messages"]),
            )
        )
    return lines


def log(rows, r):
    rows.append(r)
    print(
        "  %-22s %2dp %9.0f msg/s  cpu %6.2f s  rss %5d MiB"
        % (
            r["reader"],
            r["partitions"],
            r["messages"] / r["seconds"],
            r["cpu"],
            r["rss_kib"] // 1024,
        ),
        flush=True,
    )


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], json.loads(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="10x fewer messages, 1 run")
    parser.add_argument("--only", default=",".join(SCENARIOS))
    parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results", "latest"))
    parser.add_argument(
        "--baseline",
        metavar="LIBRARY",
        help="another libkafka_dataset.so (same TensorFlow), measured beside this build in the"
        " small and large scenarios as kd-*@baseline (bench/baseline.sh REV builds one)",
    )
    args = parser.parse_args()
    if args.baseline:
        BASELINE_LIBRARY.append(os.path.abspath(args.baseline))
    scale = 10 if args.quick else 1
    runs = 1 if args.quick else args.runs
    only = set(args.only.split(","))

    subprocess.check_call(
        ["cargo", "build", "--release", "--quiet", "--example", "raw_consume"], cwd=ROOT
    )
    from kafka_dataset import testing as kt

    results = os.path.dirname(args.output)
    os.makedirs(results, exist_ok=True)
    stamp = "best of %d, %s" % (runs, time.strftime("%Y-%m-%d"))

    def save(name, md, chart_rows=None):
        """Each scenario keeps its own section (and chart data), so a partial rerun
        (--only) updates only its part of latest.md."""
        with open(os.path.join(results, name + ".md"), "w") as f:
            f.write("\n".join(md + ["", "(%s)" % stamp, ""]))
        if chart_rows is not None:
            with open(os.path.join(results, name + ".json"), "w") as f:
                json.dump(chart_rows, f)

    with kt.broker_from_env_or_start() as broker:
        servers = broker.bootstrap

        def topic_with(name, partitions, messages, size, batch=10000):
            topic = kt.unique_name(name)
            kt.create_topic(servers, topic, partitions)
            t = time.perf_counter()
            produce(servers, topic, partitions, messages, size, batch=batch)
            print(
                "produced %d x %d B into %s (%d partitions) in %.1f s"
                % (messages, size, topic, partitions, time.perf_counter() - t),
                flush=True,
            )
            return topic

        for name, messages, size, variants in (
            (
                "small",
                1_000_000 // scale,
                100,
                [
                    "raw-rust",
                    "confluent",
                    "kd-eager",
                    "kd-eager+tcmalloc",
                    "kd-graph",
                    "kd-graph+tcmalloc",
                    "kd-native",
                ],
            ),
            ("large", 100_000 // scale, 10_000, ["raw-rust", "confluent", "kd-eager", "kd-native"]),
        ):
            if name not in only:
                continue
            if args.baseline:
                # A before/after comparison: the ceiling, this build and the baseline.
                mine = [v for v in variants if v.startswith("kd-") and "+" not in v]
                variants = ["raw-rust"] + mine + [v + "@baseline" for v in mine]
            md = []
            rows = []
            for partitions in (1, 8):
                topic = topic_with("bench-%s-%dp" % (name, partitions), partitions, messages, size)
                params = {"servers": servers, "topic": topic, "partitions": partitions}
                best = best_of_each(runs, variants, params, messages)
                for v in variants:
                    log(rows, dict(best[v], reader=v, partitions=partitions))
            md += throughput_table(
                "%d x %d-byte messages" % (messages, size),
                rows,
                size,
                lambda r, rows=rows: next(
                    x
                    for x in rows
                    if x["partitions"] == r["partitions"] and x["reader"] == "raw-rust"
                ),
            )
            one = {r["reader"]: r for r in rows if r["partitions"] == 1}
            md += (
                [""]
                + [
                    "8 partitions (time-ordered merge) vs 1 partition, %s: %.2f"
                    % (r["reader"], one[r["reader"]]["seconds"] / r["seconds"])
                    for r in rows
                    if r["partitions"] == 8 and r["reader"].startswith("kd-")
                ]
                + [""]
            )
            if args.baseline:
                md += [
                    "This build vs the baseline (%s), time and client CPU for the same messages"
                    " (below 1: this build is faster / cheaper):" % args.baseline,
                    "",
                ]
                for r in rows:
                    base = next(
                        (
                            x
                            for x in rows
                            if x["reader"] == r["reader"] + "@baseline"
                            and x["partitions"] == r["partitions"]
                        ),
                        None,
                    )
                    if base is not None:
                        md.append(
                            "- %s, %d partitions: time %.2f, CPU %.2f (this / baseline)"
                            % (
                                r["reader"],
                                r["partitions"],
                                r["seconds"] / base["seconds"],
                                r["cpu"] / base["cpu"],
                            )
                        )
                md.append("")
            save(name, md, [messages, size, rows])

        if "tfio" in only:
            messages = 200_000 // scale
            md = [
                "## tensorflow-io 0.37.1 vs KafkaDataset, both in TensorFlow 2.16.2 (100 B,"
                " 1 partition)",
                "",
                "tensorflow-io's range reader is `IODataset.from_kafka(...).batch(1024)`; its"
                " group reader (`KafkaGroupIODataset`) time includes the group join and the 5 s"
                " poll timeout that ends it. The ceiling is raw-rust on the same topic.",
                "",
            ]
            rows = []
            summary = []
            topic = topic_with("bench-tfio", 1, messages, 100)
            params = {"servers": servers, "topic": topic, "partitions": 1, "messages": messages}
            variants = ["raw-rust", "kd-native-tf216", "kd-eager-tf216", "tfio-range", "tfio-group"]
            for v in variants:
                r = best_of(runs, v, params, messages)
                log(rows, dict(r, reader=v, partitions=1, messages=messages))
            best_tfio = min(r["seconds"] for r in rows if r["reader"].startswith("tfio"))
            summary.append(
                "KafkaDataset vs tensorflow-io's best mode, wall: %.1fx with .batch(1024), %.1fx"
                " with native batches."
                % (best_tfio / rows[2]["seconds"], best_tfio / rows[1]["seconds"])
            )
            md += throughput_table(
                "Results",
                rows,
                100,
                lambda r, rows=rows: next(x for x in rows if x["reader"] == "raw-rust"),
            )
            md += [""] + summary
            save("tfio", md, [messages, 100, rows])

        if "idle" in only:
            messages = 1_000_000 // scale
            topic = kt.unique_name("bench-idle")
            kt.create_topic(servers, topic, 5)
            produce(servers, topic, 4, messages, 100)  # partition 4 stays empty
            rows = []
            for label, count in (("4 busy", 4), ("4 busy + 1 idle", 5)):
                params = {
                    "servers": servers,
                    "entries": ["%s:%d:0" % (topic, i) for i in range(count)],
                    "messages": messages,
                }
                r = best_of(runs, "kd-idle", params, messages)
                log(rows, dict(r, reader=label, partitions=count))
            busy, idle = rows
            md = (
                [
                    "## One idle partition among 4 busy ones (%d x 100 B, eof=False, timeout=1000)"
                    % messages,
                    "",
                    "| partitions | msg/s (whole run) | msg/s after the first batch"
                    " | CPU s per M msgs |",
                    "|---|---|---|---|",
                ]
                + [
                    "| %s | %.0f | %.0f | %.2f |"
                    % (
                        r["reader"],
                        messages / r["seconds"],
                        messages / r["after_first_s"],
                        r["cpu"] * 1e6 / messages,
                    )
                    for r in rows
                ]
                + [
                    "",
                    "Ratio with the idle partition: %.2f over the whole run (it includes the one"
                    " `timeout` wait before the idle partition is first passed over), %.2f after"
                    " the first batch."
                    % (
                        busy["seconds"] / idle["seconds"],
                        busy["after_first_s"] / idle["after_first_s"],
                    ),
                ]
            )
            save("idle", md)

        if "memory" in only:
            save("memory", memory_scenario(servers, kt, 20 if args.quick else 40))

        if "workers" in only:
            save("workers", workers_scenario(servers, kt, scale, runs))

        if "metadata" in only:
            save("metadata", metadata_scenario(servers, kt, scale, runs, bool(args.baseline)))

    md = [
        "# kafka-dataset benchmark (Apache Kafka 4.1.1, one KRaft node, on loopback, 2 cores)",
        "",
        "Ratios compare with the ceiling in the same run: wall ratio = reader msg/s / ceiling"
        " msg/s (higher is faster), CPU ratio = reader CPU per message / ceiling CPU per"
        " message (lower is cheaper).",
        "",
    ]
    chart = {}
    for name in SCENARIOS:
        path = os.path.join(results, name + ".md")
        if os.path.exists(path):
            with open(path) as f:
                md.append(f.read())
        if os.path.exists(os.path.join(results, name + ".json")):
            with open(os.path.join(results, name + ".json")) as f:
                chart[name] = json.load(f)
    with open(args.output + ".md", "w") as f:
        f.write("\n".join(md))
    print("\n".join(md))
    draw(chart, args.output + ".png")


SCENARIOS = ("small", "large", "tfio", "idle", "memory", "workers", "metadata")


def metadata_scenario(servers, kt, scale, runs, with_baseline):
    """Issue 15 §2: what metadata=True costs, and that metadata=False costs nothing. 200k x
    100 B in one partition, each with two headers (so "on" really reads headers). Compared in
    one run, round-robin: off vs the baseline library (the code before the feature, with
    --baseline), on vs off; eager `.batch(1024)` (one element per message: the per-element
    path) and native `batch_size=1024`."""
    messages = 200_000 // scale
    topic = kt.unique_name("bench-metadata")
    kt.create_topic(servers, topic, 1)
    produce(servers, topic, 1, messages, 100, headers=[("trace", b"0123456789"), ("n", None)])
    params = {"servers": servers, "topic": topic, "partitions": 1}
    pairs = [("kd-eager", "kd-eager-meta"), ("kd-native", "kd-native-meta")]
    variants = [v for off, on in pairs for v in (off, on)]
    if with_baseline:
        variants += [off + "@baseline" for off, _ in pairs]
    best = best_of_each(runs, variants, params, messages)
    for v in variants:
        r = best[v]
        print(
            "  %-22s %9.0f msg/s  cpu %6.2f s" % (v, messages / r["seconds"], r["cpu"]),
            flush=True,
        )
    md = [
        "## metadata=True (%d x 100 B, 1 partition, 2 headers per message)" % messages,
        "",
        "| reader | msg/s | client CPU s per M msgs | peak RSS MiB |",
        "|---|---|---|---|",
    ]
    for v in variants:
        r = best[v]
        md.append(
            "| %s | %.0f | %.2f | %d |"
            % (v, messages / r["seconds"], r["cpu"] * 1e6 / messages, r["rss_kib"] // 1024)
        )
    md += ["", "Time and client CPU for the same messages (below 1: faster / cheaper):", ""]

    def ratio(a, b, what):
        md.append(
            "- %s: time %.2f, CPU %.2f"
            % (what, best[a]["seconds"] / best[b]["seconds"], best[a]["cpu"] / best[b]["cpu"])
        )

    for off, on in pairs:
        if with_baseline:
            ratio(off, off + "@baseline", "%s, metadata off / before the feature" % off)
        ratio(on, off, "%s, metadata on / off" % off)
    return md


def workers_scenario(servers, kt, scale, runs):
    """Issue 5's measurements: startup time and RSS of one worker over 256 partitions, and
    total throughput of 1, 2, 4 worker processes splitting one 8-partition topic."""
    md = []
    topic = kt.unique_name("bench-256p")
    kt.create_topic(servers, topic, 256)
    produce(servers, topic, 256, 256_000 // scale, 100)
    params = {"servers": servers, "topic": topic, "partitions": 256}
    r = best_of(runs, "kd-native", params, 256_000 // scale)
    md += [
        "## Workers",
        "",
        "One worker over 256 partitions (%d x 100 B): first batch after %.2f s (start-up:"
        " metadata, 256 partition queues, first fetches), all read in %.2f s, peak RSS %d MiB."
        % (
            256_000 // scale,
            r["seconds"] - r["after_first_s"],
            r["seconds"],
            r["rss_kib"] // 1024,
        ),
        "",
        "| workers (processes) | total msg/s | job seconds (first read to last end)"
        " | client CPU s per M msgs |",
        "|---|---|---|---|",
    ]
    messages = 1_000_000 // scale
    topic = kt.unique_name("bench-workers")
    kt.create_topic(servers, topic, 8)
    produce(servers, topic, 8, messages, 100)
    for workers in (1, 2, 4):
        best = None
        for _ in range(runs):
            start = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(workers) as pool:
                parts = list(
                    pool.map(
                        lambda i: measure(
                            "kd-native",
                            {
                                "servers": servers,
                                "topic": topic,
                                "partitions": 8,
                                "workers": workers,
                                "index": i,
                            },
                        ),
                        range(workers),
                    )
                )
            if sum(p["messages"] for p in parts) != messages:
                raise RuntimeError(
                    "workers read %d of %d" % (sum(p["messages"] for p in parts), messages)
                )
            # From the first worker's first read to the last worker's end: the job's time.
            slowest = max(p["ended"] for p in parts) - min(p["began"] for p in parts)
            cpu = sum(p["cpu"] for p in parts)
            if best is None or slowest < best[0]:
                best = (slowest, cpu, time.perf_counter() - start)
        slowest, cpu, _ = best
        print("  %d workers: %.0f msg/s" % (workers, messages / slowest), flush=True)
        md.append(
            "| %d | %.0f | %.2f | %.2f |"
            % (workers, messages / slowest, slowest, cpu * 1e6 / messages)
        )
    md += [
        "",
        "One reader here is bound by the broker's fetch latency on its one connection (its"
        " CPU is mostly idle); each worker has its own consumer and connection, so the job's"
        " throughput grows with workers until the machine's 2 cores are full.",
    ]
    return md


def draw(chart, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no chart (bench/run.sh installs it)")
        return
    panels = [k for k in ("small", "large", "tfio") if k in chart]
    if not panels:  # e.g. --only metadata into a fresh --output directory
        return
    fig, axes = plt.subplots(len(panels), 2, figsize=(12, 3.6 * len(panels)), squeeze=False)
    for row, key in zip(axes, panels):
        messages, size, rows = chart[key]
        labels = ["%s %dp" % (r["reader"], r["partitions"]) for r in rows]
        rates = [r["messages"] / r["seconds"] / 1e3 for r in rows]
        cpu = [r["cpu"] * 1e6 / r["messages"] for r in rows]
        colors = ["#888" if not r["reader"].startswith("kd") else "#2a7" for r in rows]
        row[0].barh(labels, rates, color=colors)
        row[0].set_xlabel("thousand msg/s (wall)")
        what = "tensorflow-io comparison" if key == "tfio" else "%d x %d B" % (messages, size)
        row[0].set_title("%s: throughput" % what)
        row[1].barh(labels, cpu, color=colors)
        row[1].set_xlabel("client CPU µs per message")
        row[1].set_title("%s: CPU per message" % what)
        if key == "tfio":
            row[0].set_xscale("log")
            row[1].set_xscale("log")
        for ax in row:
            ax.invert_yaxis()
            ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    print("chart:", path)


if __name__ == "__main__":
    main()
