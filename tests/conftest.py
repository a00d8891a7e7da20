"""Fixtures: one broker per session (a local Apache Kafka, or $KAFKA_BOOTSTRAP_SERVERS), brokers of
their own for the security and failover tests, the op library, helpers.

A missing ``libkafka_dataset.so`` FAILS every test that needs it (fixture ``kd``); set
``KAFKA_DATASET_ALLOW_MISSING_LIBRARY=1`` to skip those tests instead while developing.
Every test runs under a watchdog (``KAFKA_DATASET_TEST_TIMEOUT`` s, default 300) that dumps all
thread stacks and exits if a read blocks forever.
"""

import faulthandler
import os
import re
import sys

import pytest

try:
    import kafka_dataset  # noqa: F401
except ImportError:  # running from the source tree without PYTHONPATH=python
    sys.path.insert(
        0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python")
    )

from kafka_dataset import testing as kt  # noqa: E402

ALLOW_MISSING_LIBRARY_ENV = "KAFKA_DATASET_ALLOW_MISSING_LIBRARY"
TEST_TIMEOUT = float(os.environ.get("KAFKA_DATASET_TEST_TIMEOUT", "300"))

_session_broker = None


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "library: needs libkafka_dataset.so; a missing library is a failure, not a skip"
    )


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "kd" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.library)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and _session_broker is not None and not _session_broker.external:
        report.sections.append(
            ("broker log (%s)" % _session_broker.log_path, _session_broker.log_tail(80))
        )


@pytest.fixture(autouse=True)
def _watchdog():
    faulthandler.dump_traceback_later(TEST_TIMEOUT, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="session")
def broker():
    """The session's broker: Apache Kafka (KRaft, one node) on free 127.0.0.1 ports unless
    $KAFKA_BOOTSTRAP_SERVERS."""
    global _session_broker
    try:
        b = kt.broker_from_env_or_start()
    except (kt.BrokerError, TimeoutError) as e:
        pytest.fail("cannot start/reach a Kafka broker: %s" % e, pytrace=False)
    _session_broker = b
    try:
        yield b
    finally:
        _session_broker = None
        b.stop()


@pytest.fixture(scope="session")
def kd():
    """The kafka_dataset package with its op library loaded."""
    import kafka_dataset

    try:
        kafka_dataset.load_library()
    except kafka_dataset.LibraryError as e:
        if os.environ.get(ALLOW_MISSING_LIBRARY_ENV) == "1":
            pytest.skip(str(e))
        pytest.fail(str(e), pytrace=False)
    return kafka_dataset


class KafkaEnv:
    """Per-test helpers bound to the session broker; topic names are unique per test."""

    def __init__(self, broker, test_name):
        self.broker = broker
        self.servers = broker.bootstrap
        self._prefix = (re.sub(r"[^A-Za-z0-9._-]+", "-", test_name).strip("-") or "t")[:60]

    def new_topic(self, partitions=1, suffix="", topic_config=None):
        name = kt.unique_name(self._prefix + suffix)
        return kt.create_topic(self.servers, name, partitions, topic_config=topic_config)

    def produce(self, topic, records, **options):
        """Batched and compressed like a real producer (``kt.produce``'s options)."""
        return kt.produce(self.servers, topic, records, **options)

    def read(self, topic, partition, start=0):
        return kt.read_partition(self.servers, topic, partition, start)

    def new_group(self):
        return kt.unique_name(self._prefix + "-g")


@pytest.fixture
def kafka(broker, request):
    if not broker.alive():
        pytest.fail("the session broker died:\n" + broker.log_tail(), pytrace=False)
    return KafkaEnv(broker, request.node.name)


@pytest.fixture
def run_python():
    """Runs a Python snippet in a NEW interpreter that imports this same kafka_dataset package."""
    return kt.run_python


def own_broker(**options):
    """A broker of the test's own (``kt.start_kafka(**options)``), stopped afterwards; skips when
    $KAFKA_BOOTSTRAP_SERVERS names an external cluster (it is not ours to restart or secure)."""
    if os.environ.get(kt.BOOTSTRAP_ENV):
        pytest.skip("starts a broker of its own; $%s names an external cluster" % kt.BOOTSTRAP_ENV)
    try:
        return kt.start_kafka(**options)
    except (kt.BrokerError, TimeoutError) as e:
        pytest.fail("cannot start a Kafka broker: %s" % e, pytrace=False)


@pytest.fixture(scope="module")
def secure_broker():
    """One node serving SASL_SSL (SCRAM-SHA-512, a certificate made for this run) with ACLs."""
    b = own_broker(security=True)
    yield b
    b.stop()


@pytest.fixture(scope="module")
def cluster():
    """Three nodes, replication factor 3, min.insync.replicas=2."""
    b = own_broker(brokers=3)
    yield b
    b.stop()
