"""A local Kafka-compatible broker and produce/read helpers, shared by the tests and the demo.

    python -m kafka_dataset.testing broker [--port 9092]   # run a tansu broker until Ctrl-C

The broker is tansu (DESIGN.md §3) on 127.0.0.1 with memory storage. ``$KAFKA_BOOTSTRAP_SERVERS``
points everything at an external cluster instead. Producing and admin use confluent-kafka
(librdkafka >= 2.x; Debian's kcat cannot talk to tansu). This module never imports TensorFlow.
"""

import argparse
import collections
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"
TANSU_ENV = "TANSU"

# Environment variables tansu's CLI reads as defaults; never let a stray one change our broker.
_TANSU_ENV_KEYS = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)

Record = collections.namedtuple("Record", "partition value key timestamp")
Record.__new__.__defaults__ = (None, None)  # key=None (null key), timestamp=None (producer clock)

Delivered = collections.namedtuple("Delivered", "partition offset timestamp key value")
Message = collections.namedtuple("Message", "partition offset timestamp key value")


class BrokerError(RuntimeError):
    pass


def wait_for(predicate, timeout, what, interval=0.05):
    """Polls ``predicate`` until it returns a truthy value (returned) or ``timeout`` s pass."""
    deadline = time.monotonic() + timeout
    last_error = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # keep polling; report the last failure on timeout
            last_error = e
        if time.monotonic() >= deadline:
            raise TimeoutError(
                "timed out after %.1fs waiting for %s%s"
                % (timeout, what, "" if last_error is None else " (last error: %r)" % (last_error,))
            )
        time.sleep(interval)


def unique_name(prefix="kd"):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:12])


def free_port(host="127.0.0.1"):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def repo_root():
    """The source tree this package lives in (python/kafka_dataset -> repo), if it is one."""
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    return root if os.path.isfile(os.path.join(root, "Cargo.toml")) else None


def tansu_candidates():
    candidates = []
    if os.environ.get(TANSU_ENV):
        candidates.append(os.environ[TANSU_ENV])
    for base in (repo_root(), os.getcwd()):
        if base:
            path = os.path.join(base, ".tools", "tansu", "bin", "tansu")
            if path not in candidates:
                candidates.append(path)
    which = shutil.which("tansu")
    if which:
        candidates.append(which)
    return candidates


def find_tansu():
    candidates = tansu_candidates()
    for path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise BrokerError(
        "tansu broker binary not found (tried %s). Install it with `cargo install tansu --locked "
        "--version 0.6.0 --features dynostore,libsql --root .tools/tansu`, set $%s to the binary, "
        "or set $%s to use an existing cluster."
        % (", ".join(candidates) or "nothing", TANSU_ENV, BOOTSTRAP_ENV)
    )


def _die_with_parent():
    """preexec_fn: the broker gets SIGTERM if the process that started it dies (no orphans)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class Broker:
    """A running broker: ``bootstrap`` ("host:port"); ``stop()`` ends it if we started it."""

    def __init__(self, bootstrap, process=None, log_path=None):
        self.bootstrap = bootstrap
        self.process = process
        self.log_path = log_path
        self._log_file = None

    @property
    def external(self):
        return self.process is None

    def log_tail(self, lines=60):
        if not self.log_path or not os.path.exists(self.log_path):
            return "(no broker log)"
        with open(self.log_path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-lines:])

    def describe(self):
        if self.external:
            return "external broker at %s" % self.bootstrap
        return "tansu pid %d at %s, log %s" % (self.process.pid, self.bootstrap, self.log_path)

    def alive(self):
        return self.external or self.process.poll() is None

    def wait_ready(self, timeout=60.0):
        """Waits until a metadata request lists at least one broker."""
        deadline = time.monotonic() + timeout
        host, port = self.bootstrap.split(",")[0].rsplit(":", 1)
        while True:
            if not self.alive():
                raise BrokerError(
                    "broker exited with status %s before it was ready (%s)\n%s"
                    % (self.process.returncode, self.describe(), self.log_tail())
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerError(
                    "broker not ready after %.0fs (%s)\n%s"
                    % (timeout, self.describe(), self.log_tail())
                )
            try:  # cheap TCP probe first: keeps librdkafka's "connection refused" noise out
                with socket.create_connection((host, int(port)), timeout=min(1.0, remaining)):
                    pass
            except OSError:
                time.sleep(0.05)
                continue
            try:
                md = admin_client(self.bootstrap).list_topics(timeout=min(5.0, max(remaining, 0.1)))
                if md.brokers:
                    return self
            except Exception:
                pass
            time.sleep(0.1)

    def stop(self, timeout=10.0):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def start_tansu(
    binary=None,
    host="127.0.0.1",
    port=None,
    log_path=None,
    ready_timeout=60.0,
    storage="memory://tansu/",
    cwd=None,
    advertised=None,
):
    """Starts tansu on ``host:port`` (a free port if None) and waits for it. ``storage`` is its
    storage engine URL (``sqlite://tansu.db`` keeps data across restarts, in ``cwd``);
    ``advertised`` the listener URL it gives clients in metadata (default: its own)."""
    binary = binary or find_tansu()
    attempts = 1 if port else 3
    for attempt in range(attempts):
        chosen = port or free_port(host)
        path = log_path
        if path is None:
            fd, path = tempfile.mkstemp(prefix="tansu-%d-" % chosen, suffix=".log")
            os.close(fd)
        log = open(path, "ab")
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV_KEYS}
        env.setdefault("RUST_LOG", "warn")
        url = "tcp://%s:%d" % (host, chosen)
        argv = [
            binary,
            "broker",
            "--cluster-id",
            "kafka-dataset-test",
            "--listener-url",
            url,
            "--advertised-listener-url",
            advertised or url,
            "--storage-engine",
            storage,
        ]
        log.write(("$ %s\n" % " ".join(argv)).encode())
        log.flush()
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        broker = Broker("%s:%d" % (host, chosen), process, path)
        broker._log_file = log
        try:
            return broker.wait_ready(ready_timeout)
        except BrokerError:
            exited_early = process.poll() is not None
            broker.stop()
            # The port may have been taken between free_port() and bind(): try another.
            if attempt + 1 == attempts or not exited_early:
                raise
    raise AssertionError("unreachable")


def broker_from_env_or_start(**kwargs):
    """``$KAFKA_BOOTSTRAP_SERVERS`` if set (an external cluster, never stopped), else tansu."""
    bootstrap = os.environ.get(BOOTSTRAP_ENV)
    if bootstrap:
        return Broker(bootstrap).wait_ready(kwargs.get("ready_timeout", 60.0))
    return start_tansu(**kwargs)


# --- clients ---------------------------------------------------------------------------------


def admin_client(bootstrap, config=None):
    from confluent_kafka.admin import AdminClient

    settings = {"bootstrap.servers": bootstrap, "socket.connection.setup.timeout.ms": 5000}
    settings.update(config or {})
    return AdminClient(settings)


def partition_count(bootstrap, topic, admin=None, timeout=5.0):
    # Not `admin or ...`: a client with nothing queued has len() 0 and would be replaced.
    admin = admin if admin is not None else admin_client(bootstrap)
    md = admin.list_topics(topic=topic, timeout=timeout)
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        return 0
    return len(t.partitions)


def create_topic(bootstrap, topic, partitions=1, timeout=30.0, config=None):
    """Creates ``topic`` and waits until its metadata shows every partition. ``config``: extra
    client properties (e.g. TLS settings)."""
    from confluent_kafka.admin import NewTopic

    admin = admin_client(bootstrap, config)  # referenced until the futures resolve (DESIGN.md §5)
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1)],
        operation_timeout=timeout,
        request_timeout=timeout,
    )
    futures[topic].result(timeout=timeout)
    wait_for(
        lambda: partition_count(bootstrap, topic, admin) == partitions,
        timeout,
        "topic %s to show %d partitions" % (topic, partitions),
    )
    return topic


def _as_bytes(v):
    if v is None or isinstance(v, bytes):
        return v
    return str(v).encode()


def produce(bootstrap, topic, records, one_record_per_batch=True, timeout=60.0):
    """Produces ``records`` (Record or (partition, value[, key[, timestamp]]) tuples) in order.

    Timestamps are CreateTime in ms. With ``one_record_per_batch`` every record is its own record
    batch (tansu 0.6.0's ListOffsets(latest) is only right then: DESIGN.md §5). Returns one
    ``Delivered`` per record, in input order; raises if any delivery failed.
    """
    from confluent_kafka import Producer

    config = {
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": False,
        "max.in.flight.requests.per.connection": 1,
        "compression.type": "none",
    }
    if one_record_per_batch:
        config.update({"batch.num.messages": 1, "linger.ms": 0})
    else:
        config.update({"linger.ms": 5})
    producer = Producer(config)
    records = [r if isinstance(r, Record) else Record(*r) for r in records]
    results = [None] * len(records)
    errors = []

    def on_delivery(index):
        def callback(err, msg):
            if err is not None:
                errors.append((index, err))
            else:
                ts = msg.timestamp()[1]
                results[index] = Delivered(
                    msg.partition(), msg.offset(), ts, msg.key(), msg.value()
                )

        return callback

    for i, r in enumerate(records):
        kwargs = {
            "value": _as_bytes(r.value),
            "partition": r.partition,
            "on_delivery": on_delivery(i),
        }
        if r.key is not None:
            kwargs["key"] = _as_bytes(r.key)
        if r.timestamp is not None:
            kwargs["timestamp"] = int(r.timestamp)
        while True:
            try:
                producer.produce(topic, **kwargs)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(timeout)
    if remaining or errors or any(r is None for r in results):
        raise BrokerError(
            "produce to %s failed: %d undelivered, errors %s"
            % (topic, remaining + sum(r is None for r in results), errors[:5])
        )
    return results


def read_partitions(bootstrap, topic, partitions, start=0, timeout=30.0):
    """Every message of each partition from ``start`` to the end of its log (plain librdkafka),
    as ``{partition: [Message, ...]}`` in offset order."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique_name("readback"),
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        consumer.assign([TopicPartition(topic, p, start) for p in partitions])
        out = {p: [] for p in partitions}
        pending = set(partitions)
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    "reading %s partitions %s did not reach the end within %.0fs"
                    % (topic, sorted(pending), timeout)
                )
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    pending.discard(msg.partition())
                    continue
                raise BrokerError("read %s failed: %s" % (topic, msg.error()))
            out[msg.partition()].append(
                Message(msg.partition(), msg.offset(), msg.timestamp()[1], msg.key(), msg.value())
            )
        return out
    finally:
        consumer.close()


def read_partition(bootstrap, topic, partition, start=0, timeout=30.0):
    """Every message of one partition from ``start`` to the end of the log."""
    return read_partitions(bootstrap, topic, [partition], start, timeout)[partition]


# --- processes -------------------------------------------------------------------------------


def package_parent():
    """The directory to put on PYTHONPATH so a child process imports this very package."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def python_env(extra=None):
    env = dict(os.environ)
    paths = [package_parent()] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if extra:
        env.update(extra)
    return env


def run_python(code_or_path, args=(), timeout=300.0, env=None, check=True, cwd=None):
    """Runs a snippet (or a script path) in a NEW interpreter (this venv's python)."""
    if os.path.isfile(code_or_path):
        argv = [sys.executable, code_or_path]
    else:
        argv = [sys.executable, "-c", code_or_path]
    argv += [str(a) for a in args]
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, env=python_env(env), cwd=cwd
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            "child python exited with %d\n--- stdout ---\n%s\n--- stderr ---\n%s"
            % (proc.returncode, proc.stdout[-8000:], proc.stderr[-8000:])
        )
    return proc


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m kafka_dataset.testing")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("broker", help="run a local tansu broker (memory storage) until Ctrl-C")
    b.add_argument("--host", default="127.0.0.1")
    b.add_argument("--port", type=int, default=9092)
    args = parser.parse_args(argv)
    fd, log_path = tempfile.mkstemp(prefix="tansu-", suffix=".log")
    os.close(fd)
    broker = start_tansu(host=args.host, port=args.port, log_path=log_path)
    print(
        "tansu broker ready at %s (log %s); Ctrl-C stops it" % (broker.bootstrap, log_path),
        flush=True,
    )

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        broker.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
