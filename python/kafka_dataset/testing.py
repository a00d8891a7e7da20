"""A local Apache Kafka broker (or cluster) and produce/read helpers, shared by the tests, the demo
and the benchmarks.

    python -m kafka_dataset.testing broker [--port 9092] [--brokers 3] [--security]

The broker is Apache Kafka 4.x in KRaft mode (docs/design.md §3), run from the jars that
``scripts/setup.sh`` puts in ``.tools/kafka/libs`` (``$KAFKA_DATASET_KAFKA_LIBS`` names another
folder), on 127.0.0.1 with free ports and a temporary log dir. ``$KAFKA_BOOTSTRAP_SERVERS`` points
everything at an external cluster instead. Producing and admin use confluent-kafka. This module
never imports TensorFlow.
"""

import argparse
import atexit
import base64
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
KAFKA_LIBS_ENV = "KAFKA_DATASET_KAFKA_LIBS"
KAFKA_HEAP_ENV = "KAFKA_DATASET_KAFKA_HEAP"

# The SASL_SSL listener's users (SCRAM-SHA-512), created when storage is formatted. "admin" is a
# super user; the others get what a test grants them with ACLs.
SCRAM_MECHANISM = "SCRAM-SHA-512"
SCRAM_USERS = {"admin": "admin-secret", "alice": "alice-secret", "bob": "bob-secret"}

Record = collections.namedtuple("Record", "partition value key timestamp headers")
# key=None (null key), timestamp=None (producer clock), headers=None (none): a list of
# (name, value) pairs, value None for a null header value.
Record.__new__.__defaults__ = (None, None, None)

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


def kafka_libs_candidates():
    candidates = []
    if os.environ.get(KAFKA_LIBS_ENV):
        candidates.append(os.environ[KAFKA_LIBS_ENV])
    for base in (repo_root(), os.getcwd()):
        if base:
            path = os.path.join(base, ".tools", "kafka", "libs")
            if path not in candidates:
                candidates.append(path)
    return candidates


def find_kafka_libs():
    """The folder of Apache Kafka's runtime jars (scripts/setup.sh fetches them)."""
    candidates = kafka_libs_candidates()
    for path in candidates:
        if os.path.isdir(path) and any(n.startswith("kafka_2.13-") for n in os.listdir(path)):
            return path
    raise BrokerError(
        "Apache Kafka's jars not found (tried %s). Fetch them with `bash scripts/setup.sh` "
        "(Maven, scripts/kafka/pom.xml), set $%s to a folder of them, or set $%s to use an "
        "existing cluster." % (", ".join(candidates) or "nothing", KAFKA_LIBS_ENV, BOOTSTRAP_ENV)
    )


def find_java():
    """Java 17+ (Kafka 4.x needs it): $JAVA_HOME/bin/java, else java on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home and os.access(os.path.join(home, "bin", "java"), os.X_OK):
        return os.path.join(home, "bin", "java")
    java = shutil.which("java")
    if not java:
        raise BrokerError("java not found: Apache Kafka 4.x needs Java 17+ (scripts/setup.sh)")
    return java


def _die_with_parent():
    """preexec_fn: the broker gets SIGKILL if the process that started it dies (no orphan JVM,
    even when a test run is killed)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


_LOG4J2 = """\
status = error
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.out.ref = OUT
logger.coordinator.name = org.apache.kafka.coordinator.group
logger.coordinator.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def make_certificates(directory):
    """A CA and a server certificate for 127.0.0.1/localhost, made with openssl for this run.
    Returns ``(ca_pem, keystore_pem)``: the keystore holds the key and the chain (Kafka reads
    it as ``ssl.keystore.type=PEM``)."""

    def openssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", "ca.key",
            "-out", "ca.pem", "-subj", "/CN=kafka-dataset test CA")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
            "server.csr", "-subj", "/CN=localhost")  # fmt: skip
    with open(os.path.join(directory, "san.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-out", "server.pem",
            "-extfile", "san.ext")  # fmt: skip
    keystore = os.path.join(directory, "keystore.pem")
    with open(keystore, "w") as out:
        for name in ("server.key", "server.pem", "ca.pem"):
            with open(os.path.join(directory, name)) as f:
                out.write(f.read())
    return os.path.join(directory, "ca.pem"), keystore


class KafkaNode:
    """One combined controller+broker JVM of a cluster; its ports and log dir survive a
    restart."""

    def __init__(self, node_id, directory, port, controller_port, secure_port=None):
        self.node_id = node_id
        self.directory = directory
        self.port = port
        self.controller_port = controller_port
        self.secure_port = secure_port
        self.properties = os.path.join(directory, "server.properties")
        self.log_path = os.path.join(directory, "broker.log")
        self.process = None
        self._log_file = None

    @property
    def bootstrap(self):
        return "127.0.0.1:%d" % self.port

    def alive(self):
        return self.process is not None and self.process.poll() is None

    def start(self, java, classpath, heap):
        self._close_log()
        self._log_file = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [java, "-Xms%s" % heap, "-Xmx%s" % heap, "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
             "-Djava.awt.headless=true",
             "-Dlog4j2.configurationFile=" + os.path.join(self.directory, "log4j2.properties"),
             "-cp", classpath, "kafka.Kafka", self.properties],
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=self.directory,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )  # fmt: skip

    def stop(self, timeout=30.0):
        """A clean shutdown (SIGTERM: the broker hands over leadership), SIGKILL if it hangs."""
        self.terminate()
        self.wait_stopped(timeout)

    def terminate(self):
        if self.alive():
            self.process.terminate()

    def wait_stopped(self, timeout):
        """Waits for a terminated node to exit; SIGKILL after ``timeout`` s."""
        if self.alive():
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        self._close_log()

    def kill(self):
        """SIGKILL: a crash, nothing handed over."""
        if self.alive():
            self.process.kill()
            self.process.wait(30)
        self._close_log()

    def _close_log(self):
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


_running = []  # every Broker this process started and has not stopped (stopped at exit)


@atexit.register
def _stop_all():
    for broker in list(_running):
        broker.stop()


class Broker:
    """A running broker or cluster: ``bootstrap`` ("host:port,..."); ``stop()`` ends it if we
    started it. With security on, ``secure_bootstrap`` is the SASL_SSL listener and
    ``client_config(user)`` the librdkafka settings that reach it."""

    def __init__(self, bootstrap, nodes=(), directory=None, java=None, classpath=None, heap=None,
                 ca=None):  # fmt: skip
        self.bootstrap = bootstrap
        self.nodes = list(nodes)
        self.directory = directory
        self.ca = ca
        self._java, self._classpath, self._heap = java, classpath, heap

    @property
    def external(self):
        return not self.nodes

    @property
    def log_path(self):
        return self.nodes[0].log_path if self.nodes else None

    @property
    def secure_bootstrap(self):
        if not self.nodes or self.nodes[0].secure_port is None:
            raise BrokerError("this broker was started without security=True")
        return ",".join("127.0.0.1:%d" % n.secure_port for n in self.nodes)

    def client_config(self, user="admin", password=None):
        """librdkafka properties for the SASL_SSL listener as ``user`` (dict)."""
        return {
            "security.protocol": "sasl_ssl",
            "sasl.mechanism": SCRAM_MECHANISM,
            "sasl.username": user,
            "sasl.password": SCRAM_USERS[user] if password is None else password,
            "ssl.ca.location": self.ca,
        }

    def log_tail(self, lines=60):
        tails = []
        for node in self.nodes:
            if os.path.exists(node.log_path):
                with open(node.log_path, "rb") as f:
                    text = f.read().decode("utf-8", "replace")
                tail = "\n".join(text.splitlines()[-lines:])
                tails.append("--- node %d (%s)\n%s" % (node.node_id, node.log_path, tail))
        return "\n".join(tails) or "(no broker log)"

    def describe(self):
        if self.external:
            return "external cluster at %s" % self.bootstrap
        return "Apache Kafka, %d node(s) at %s, logs under %s" % (
            len(self.nodes), self.bootstrap, self.directory)  # fmt: skip

    def alive(self):
        return self.external or all(n.alive() for n in self.nodes)

    def node_for(self, topic, partition, timeout=10.0):
        """The node leading ``topic``'s ``partition`` now."""
        md = admin_client(self.bootstrap).list_topics(topic=topic, timeout=timeout)
        leader = md.topics[topic].partitions[partition].leader
        return next(n for n in self.nodes if n.node_id == leader)

    def restart_nodes(self, *nodes, ready_timeout=90.0):
        """Starts stopped or killed nodes again (same ports, same log dirs) and waits until the
        cluster lists every node."""
        for node in nodes:
            node.start(self._java, self._classpath, self._heap)
        self.wait_ready(ready_timeout)

    def wait_ready(self, timeout=90.0):
        """Waits until a metadata request lists every node of ours (any broker if external)."""
        deadline = time.monotonic() + timeout
        want = len(self.nodes) or 1
        while True:
            dead = [n for n in self.nodes if n.process is not None and not n.alive()]
            if dead:
                raise BrokerError(
                    "broker node %d exited with status %s before the cluster was ready (%s)\n%s"
                    % (dead[0].node_id, dead[0].process.returncode, self.describe(),
                       self.log_tail())
                )  # fmt: skip
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerError(
                    "broker not ready after %.0fs (%s)\n%s"
                    % (timeout, self.describe(), self.log_tail())
                )
            live = [n for n in self.nodes if n.alive()] or [None]
            host, port = (live[0].bootstrap if live[0] else self.bootstrap.split(",")[0]).rsplit(
                ":", 1
            )
            try:  # cheap TCP probe first: keeps librdkafka's "connection refused" noise out
                with socket.create_connection((host, int(port)), timeout=min(1.0, remaining)):
                    pass
            except OSError:
                time.sleep(0.1)
                continue
            try:
                md = admin_client(self.bootstrap).list_topics(timeout=min(5.0, max(remaining, 0.1)))
                if len(md.brokers) >= want:
                    return self
            except Exception:
                pass
            time.sleep(0.2)

    def stop(self, timeout=30.0):
        """Stops every node at once (one by one, the last ones would wait for a controller
        quorum that is gone) and removes the log dirs; ``timeout=0``: SIGKILL."""
        for node in self.nodes:
            node.kill() if timeout == 0 else node.terminate()
        for node in self.nodes:
            node.wait_stopped(timeout)
        if self in _running:
            _running.remove(self)
        if self.directory and self.nodes:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def _node_properties(node, voters, data_dir, replicas, security, ca_keystore):
    listeners = ["PLAINTEXT://127.0.0.1:%d" % node.port]
    advertised = list(listeners)
    protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
    if security:
        listeners.append("SASL_SSL://127.0.0.1:%d" % node.secure_port)
        advertised.append("SASL_SSL://127.0.0.1:%d" % node.secure_port)
        protocols.append("SASL_SSL:SASL_SSL")
    listeners.append("CONTROLLER://127.0.0.1:%d" % node.controller_port)
    min_isr = 2 if replicas >= 3 else 1
    props = {
        "process.roles": "broker,controller",
        "node.id": node.node_id,
        "controller.quorum.voters": voters,
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listeners": ",".join(listeners),
        "advertised.listeners": ",".join(advertised),
        "listener.security.protocol.map": ",".join(protocols),
        "log.dirs": data_dir,
        "num.partitions": 1,
        "default.replication.factor": replicas,
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": replicas,
        "offsets.topic.num.partitions": 5,
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": min_isr,
        "transaction.state.log.num.partitions": 5,
        "share.coordinator.state.topic.replication.factor": replicas,
        "share.coordinator.state.topic.min.isr": min_isr,
        # A test names its topics; a typo must be NotFound, not a new topic.
        "auto.create.topics.enable": "false",
        "group.initial.rebalance.delay.ms": 0,
        "group.min.session.timeout.ms": 1000,
        # Test data carries CreateTimes from the past (helpers.BASE_TS is in 2023): time-based
        # retention would delete it within minutes. Deletion is a test's own act (DeleteRecords).
        "log.retention.ms": -1,
        # The compaction tests wait for the cleaner; a short back-off keeps that wait short.
        "log.cleaner.backoff.ms": 500,
    }
    if security:
        props.update({
            "sasl.enabled.mechanisms": SCRAM_MECHANISM,
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config":
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": ca_keystore[1],
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            # The PLAINTEXT listener (tests' set-up, inter-broker, controller) is ANONYMOUS.
            "super.users": "User:ANONYMOUS;User:admin",
        })  # fmt: skip
    return "".join("%s=%s\n" % kv for kv in props.items())


def start_kafka(
    brokers=1, security=False, port=None, heap=None, ready_timeout=90.0, directory=None
):
    """Starts Apache Kafka in KRaft mode: ``brokers`` combined controller+broker nodes on free
    127.0.0.1 ports, storage formatted with a fresh cluster id in a temporary folder (removed by
    ``stop()``), replication factor ``brokers`` (``min.insync.replicas=2`` from 3 nodes). With
    ``security`` each node also serves SASL_SSL (SCRAM-SHA-512 users ``SCRAM_USERS``, a
    certificate made for this run) and checks ACLs (``admin`` and PLAINTEXT are super users).
    ``port``: the first node's PLAINTEXT port (default: a free one). Waits until metadata lists
    every node."""
    libs = find_kafka_libs()
    java = find_java()
    classpath = os.path.join(libs, "*")
    heap = heap or os.environ.get(KAFKA_HEAP_ENV) or "512m"
    directory = directory or tempfile.mkdtemp(prefix="kafka-")
    # Kafka's own Uuid.randomUuid() never starts with '-': the storage tool's argument parser
    # would take such an id for an option (1 in 64 broker starts failed to format).
    cluster_id = "-"
    while cluster_id.startswith("-"):
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    ca_keystore = make_certificates(directory) if security else None
    nodes = [
        KafkaNode(i + 1, os.path.join(directory, "node-%d" % (i + 1)),
                  port if (port and i == 0) else free_port(), free_port(),
                  free_port() if security else None)
        for i in range(brokers)
    ]  # fmt: skip
    voters = ",".join("%d@127.0.0.1:%d" % (n.node_id, n.controller_port) for n in nodes)
    formats = []
    for node in nodes:
        os.makedirs(node.directory)
        with open(node.properties, "w") as f:
            f.write(_node_properties(node, voters, os.path.join(node.directory, "data"), brokers,
                                     security, ca_keystore))  # fmt: skip
        with open(os.path.join(node.directory, "log4j2.properties"), "w") as f:
            f.write(_LOG4J2)
        argv = [java, "-Xmx256m", "-cp", classpath, "kafka.tools.StorageTool", "format",
                "--ignore-formatted", "-t", cluster_id, "-c", node.properties]  # fmt: skip
        if security:
            for user, password in SCRAM_USERS.items():
                argv += ["--add-scram", "%s=[name=%s,password=%s]" % (SCRAM_MECHANISM, user,
                                                                        password)]  # fmt: skip
        formats.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    for node, proc in zip(nodes, formats):
        out = proc.communicate(timeout=120)[0].decode("utf-8", "replace")
        if proc.returncode != 0:
            shutil.rmtree(directory, ignore_errors=True)
            raise BrokerError("formatting node %d's storage failed:\n%s" % (node.node_id, out))
    broker = Broker(",".join(n.bootstrap for n in nodes), nodes, directory, java, classpath, heap,
                    ca_keystore[0] if ca_keystore else None)  # fmt: skip
    _running.append(broker)
    try:
        for node in nodes:
            node.start(java, classpath, heap)
        return broker.wait_ready(ready_timeout)
    except BaseException:
        broker.stop(timeout=0)
        raise


def broker_from_env_or_start(**kwargs):
    """``$KAFKA_BOOTSTRAP_SERVERS`` if set (an external cluster, never stopped), else a local
    Apache Kafka (``start_kafka(**kwargs)``)."""
    bootstrap = os.environ.get(BOOTSTRAP_ENV)
    if bootstrap:
        return Broker(bootstrap).wait_ready(kwargs.get("ready_timeout", 90.0))
    return start_kafka(**kwargs)


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


def create_topic(bootstrap, topic, partitions=1, timeout=30.0, config=None, topic_config=None):
    """Creates ``topic`` (the cluster's default replication factor) and waits until its metadata
    shows every partition. ``config``: extra client properties (e.g. security settings);
    ``topic_config``: topic properties (e.g. ``{"cleanup.policy": "compact"}``)."""
    from confluent_kafka.admin import NewTopic

    admin = admin_client(
        bootstrap, config
    )  # referenced until the futures resolve (docs/design.md §5)
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, config=dict(topic_config or {}))],
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


def produce(bootstrap, topic, records, compression="lz4", linger_ms=5, timeout=60.0, config=None):
    """Produces ``records`` (Record or (partition, value[, key[, timestamp[, headers]]]) tuples)
    in order, the way real producers do: idempotent, batched (``linger_ms``, many records per
    batch) and compressed (``compression``: none, gzip, snappy, lz4 or zstd).

    Timestamps are CreateTime in ms. Returns one ``Delivered`` per record, in input order;
    raises if any delivery failed. ``config``: extra producer properties.
    """
    from confluent_kafka import Producer

    config = dict(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "compression.type": compression,
            "linger.ms": linger_ms,
        },
        **(config or {}),
    )
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
        if r.headers:
            kwargs["headers"] = [(name, _as_bytes(value)) for name, value in r.headers]
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
    b = sub.add_parser("broker", help="run a local Apache Kafka (KRaft) until Ctrl-C")
    b.add_argument("--port", type=int, default=9092, help="first node's PLAINTEXT port")
    b.add_argument("--brokers", type=int, default=1, help="nodes (replication factor = nodes)")
    b.add_argument(
        "--security",
        action="store_true",
        help="also serve SASL_SSL (SCRAM-SHA-512) with ACLs on every node",
    )
    args = parser.parse_args(argv)

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    broker = start_kafka(brokers=args.brokers, security=args.security, port=args.port)
    try:
        print("Apache Kafka ready at %s (%s)" % (broker.bootstrap, broker.describe()), flush=True)
        if args.security:
            print(
                "SASL_SSL at %s, CA %s, users %s"
                % (broker.secure_bootstrap, broker.ca, ", ".join(SCRAM_USERS)),
                flush=True,
            )
        print("Ctrl-C stops it", flush=True)
        while broker.alive():
            time.sleep(0.5)
        print("a broker node exited:\n" + broker.log_tail(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        broker.stop()


if __name__ == "__main__":
    sys.exit(main())
