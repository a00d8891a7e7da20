"""Security served by Apache Kafka itself, in the TensorFlow process: a SASL_SSL listener
(SCRAM-SHA-512, a certificate made for this run) with ACLs checked by Kafka's StandardAuthorizer
(``secure_broker`` in conftest.py).

TLS runs in the same process as TensorFlow on purpose (docs/design.md §5: TensorFlow exports
BoringSSL symbols; the library's statically linked OpenSSL must stay local or TLS calls bind into
BoringSSL). For the same reason topics and messages are made in a child process without
TensorFlow: confluent-kafka's librdkafka, loaded next to TensorFlow, has its TLS calls bound into
BoringSSL and fails.
"""

import json
import subprocess
import time

import pytest
import tensorflow as tf
from helpers import BASE_TS
from kafka_dataset import testing as kt

PASSWORD = kt.SCRAM_USERS["alice"]

# Creates a topic of 2 partitions with 6 messages and grants `alice` what the test asks for
# (resource names "{topic}" and "{group}" stand for the test's own), over the PLAINTEXT listener
# (a super user there). Runs without TensorFlow.
SET_UP = r"""
import json, sys
from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType, ResourcePatternType,
                                   ResourceType)
from kafka_dataset import testing as kt
servers, topic, group, grants = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
kt.create_topic(servers, topic, 2)
kt.produce(servers, topic, [(i % 2, "sec-%d" % i, None, %(base)d + i) for i in range(6)])
bindings = [
    AclBinding(getattr(ResourceType, kind), name.format(topic=topic, group=group),
               ResourcePatternType.LITERAL, "User:alice", "*",
               getattr(AclOperation, operation), AclPermissionType.ALLOW)
    for kind, name, operation in grants
]
if bindings:
    admin = kt.admin_client(servers)
    for future in admin.create_acls(bindings).values():
        future.result(30)
""".replace("%(base)d", str(BASE_TS))


def set_up(broker, grants):
    """A new topic and group; ``grants``: (resource type, name, operation) allowed to alice."""
    topic, group = kt.unique_name("secure"), kt.unique_name("secure-g")
    kt.run_python(SET_UP, args=[broker.bootstrap, topic, group, json.dumps(grants)], timeout=120)
    return topic, group


def sasl_config(broker, password_item):
    return [
        "security.protocol=SASL_SSL",
        "sasl.mechanism=SCRAM-SHA-512",
        "sasl.username=alice",
        password_item,
        "ssl.ca.location=%s" % broker.ca,
    ]


def make_certificate(directory):
    """A self-signed certificate that signed nothing the broker serves."""
    cert = directory / "other-ca.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(directory / "other-ca.key"), "-out", str(cert), "-subj", "/CN=other"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert


def test_reads_over_sasl_ssl_with_a_password_from_a_file(kd, secure_broker, tmp_path):
    topic, group = set_up(
        secure_broker, [("TOPIC", "{topic}", "READ"), ("GROUP", "{group}", "READ")]
    )
    secret = tmp_path / "password"
    secret.write_text(PASSWORD)
    ds = kd.KafkaDataset(
        [topic + ":0", topic + ":1"],
        servers=secure_broker.secure_bootstrap,
        group=group,
        eof=True,
        config_global=sasl_config(secure_broker, "sasl.password=${file:%s}" % secret),
    )
    assert [v.numpy() for v in ds] == [b"sec-%d" % i for i in range(6)]


def test_a_wrong_password_is_unauthenticated_within_seconds(kd, secure_broker):
    topic, _ = set_up(secure_broker, [("TOPIC", "{topic}", "READ")])
    wrong = "not-" + PASSWORD
    ds = kd.KafkaDataset(
        [topic + ":0"],
        servers=secure_broker.secure_bootstrap,
        eof=True,
        timeout=30000,
        config_global=sasl_config(secure_broker, "sasl.password=" + wrong),
    )
    start = time.monotonic()
    with pytest.raises(tf.errors.UnauthenticatedError) as raised:
        next(iter(ds))
    elapsed = time.monotonic() - start
    assert elapsed < 10, "a refused login must not wait for the 60 s deadline: %.1f s" % elapsed
    assert wrong not in str(raised.value) and PASSWORD not in str(raised.value)


def test_an_untrusted_certificate_fails_fast_as_unauthenticated(kd, secure_broker, tmp_path):
    other_ca = make_certificate(tmp_path)
    deadline_ms = 30000
    ds = kd.KafkaDataset(
        [kt.unique_name("tls") + ":0"],
        servers=secure_broker.secure_bootstrap,
        eof=True,
        timeout=deadline_ms,
        config_global=["security.protocol=SSL", "ssl.ca.location=%s" % other_ca],
    )
    start = time.monotonic()
    with pytest.raises(tf.errors.UnauthenticatedError) as raised:
        next(iter(ds))
    elapsed = time.monotonic() - start
    # Long before the deadline: a certificate that is not trusted does not get better by waiting.
    assert elapsed < deadline_ms / 1000 / 3, elapsed
    message = str(raised.value)
    assert "certificate verify failed" in message and "127.0.0.1" in message, message


@pytest.mark.parametrize("denied", ["topic", "group"])
def test_what_the_acls_deny_is_permission_denied_naming_it(kd, secure_broker, denied):
    if denied == "topic":
        # alice may describe the topic (it exists for her) but not read it.
        topic, group = set_up(secure_broker, [("TOPIC", "{topic}", "DESCRIBE")])
        entry, named = topic + ":0", topic
    else:
        # alice may read the topic, but not use the group its `stored` start needs.
        topic, group = set_up(secure_broker, [("TOPIC", "{topic}", "READ")])
        entry, named = topic + ":0:stored", group
    ds = kd.KafkaDataset(
        [entry],
        servers=secure_broker.secure_bootstrap,
        group=group if denied == "group" else "",
        eof=True,
        timeout=30000,
        config_global=sasl_config(secure_broker, "sasl.password=" + PASSWORD),
    )
    with pytest.raises(tf.errors.PermissionDeniedError) as raised:
        list(ds)
    message = str(raised.value)
    assert named in message, message
    assert PASSWORD not in message
