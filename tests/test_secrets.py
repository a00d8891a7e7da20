"""Secrets (DESIGN §2.6): `${env:NAME}` / `${file:PATH}` config values are resolved in the core
when the consumer is created, so graph defs, SavedModels and checkpoints carry only the
reference; a secret value never appears in an error message or in the process's output, even
with librdkafka's and TensorFlow's most verbose logging.
"""

import os
import re

import pytest
import tensorflow as tf
from helpers import BASE_TS

SECRET = "kd-secret-7f3a9c21"
SECRET_ENV = "KD_TEST_SECRET_VALUE"


@pytest.fixture
def topic(kafka):
    name = kafka.new_topic(1)
    kafka.produce(name, [(0, "v%d" % i, None, BASE_TS + i) for i in range(3)])
    return name


def files_under(path):
    for root, _, names in os.walk(path):
        for name in names:
            with open(os.path.join(root, name), "rb") as f:
                yield os.path.join(root, name), f.read()


def assert_no_secret(path):
    for name, data in files_under(path):
        assert SECRET.encode() not in data, "the secret is in %s" % name


def test_a_referenced_secret_is_resolved_but_never_stored(kd, kafka, topic, tmp_path, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, SECRET)
    secret_file = tmp_path / "password.txt"
    secret_file.write_text(SECRET + "\n")
    config = [
        "sasl.username=trainer",
        "sasl.password=${env:%s}" % SECRET_ENV,
        "ssl.key.password=${file:%s}" % secret_file,
    ]
    ds = kd.KafkaDataset([topic + ":0"], servers=kafka.servers, eof=True, config_global=config)
    assert [v.numpy() for v in ds] == [b"v0", b"v1", b"v2"]

    graph = ds._as_serialized_graph().numpy()
    assert SECRET.encode() not in graph
    assert ("${env:%s}" % SECRET_ENV).encode() in graph, "the reference is what is stored"

    it = iter(ds)
    next(it)
    tf.train.Checkpoint(iterator=it).write(str(tmp_path / "ckpt" / "it"))
    assert_no_secret(tmp_path / "ckpt")

    class Reader(tf.Module):
        @tf.function(input_signature=[])
        def first(self):
            return next(
                iter(
                    kd.KafkaDataset(
                        [topic + ":0"], servers=kafka.servers, eof=True, config_global=config
                    )
                )
            )

    module = Reader()
    assert module.first().numpy() == b"v0"
    tf.saved_model.save(module, str(tmp_path / "saved"))
    assert_no_secret(tmp_path / "saved")
    loaded = tf.saved_model.load(str(tmp_path / "saved"))
    assert loaded.first().numpy() == b"v0", "the loaded model resolves the reference again"


def test_a_missing_reference_names_the_variable_or_file_not_a_value(kd, kafka, topic, tmp_path):
    cases = [
        ("sasl.password=${env:KD_TEST_NO_SUCH_VARIABLE}", "KD_TEST_NO_SUCH_VARIABLE"),
        ("sasl.password=${file:%s}" % (tmp_path / "missing.txt"), "missing.txt"),
    ]
    for item, named in cases:
        ds = kd.KafkaDataset([topic + ":0"], servers=kafka.servers, eof=True, config_global=[item])
        with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(named)) as info:
            next(iter(ds))
        assert "sasl.password" in str(info.value)


def test_a_referenced_bad_value_is_refused_without_showing_it(kd, kafka, topic, monkeypatch):
    # The reference passes the build-time check; librdkafka refuses the resolved value.
    monkeypatch.setenv(SECRET_ENV, SECRET)
    ds = kd.KafkaDataset(
        [topic + ":0"],
        servers=kafka.servers,
        eof=True,
        config_global=["fetch.wait.max.ms=${env:%s}" % SECRET_ENV],
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="fetch.wait.max.ms") as info:
        next(iter(ds))
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(
    "items",
    [
        ["sasl.password=" + SECRET, "fetch.wait.max.ms=not-a-number"],
        [SECRET],  # no '=': the whole item may be the secret
        ["ssl.key.password=" + SECRET + "\0"],
        ["sasl.oauthbearer.config=" + SECRET, "no.such.key=1"],
        ["ssl.key.pem=" + SECRET, "sasl.password"],
    ],
    ids=["bad-neighbour", "no-equals", "nul-byte", "unknown-neighbour", "key-without-value"],
)
def test_errors_never_show_a_secret_value(kd, kafka, topic, items):
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        ds = kd.KafkaDataset([topic + ":0"], servers=kafka.servers, eof=True, config_global=items)
        next(iter(ds))
    assert SECRET not in str(info.value), str(info.value)


VERBOSE_CHILD = r"""
import sys
import kafka_dataset
topic, servers, password = sys.argv[1:4]
ds = kafka_dataset.KafkaDataset([topic + ":0"], servers=servers, eof=True,
                                config_global=["debug=all", "sasl.username=trainer",
                                               "sasl.password=" + password])
print("READ", [v.numpy() for v in ds])
try:
    next(iter(kafka_dataset.KafkaDataset([topic + ":0"], servers=servers, eof=True,
                                         config_global=["sasl.password=" + password,
                                                        "fetch.wait.max.ms=nope"])))
except Exception as e:
    print("ERROR", type(e).__name__, e)
"""


@pytest.mark.parametrize(
    "password, tf_logging",
    [
        # A reference: even TensorFlow's most verbose logging (which prints the op's input
        # tensors) shows only the reference.
        ("${env:%s}" % SECRET_ENV, {"TF_CPP_MIN_LOG_LEVEL": "0", "TF_CPP_MAX_VLOG_LEVEL": "3"}),
        # A literal value is a constant of the graph, which TensorFlow's VLOG prints: use
        # references for secrets. Our own output and librdkafka's (debug=all) never show it.
        (SECRET, {"TF_CPP_MIN_LOG_LEVEL": "0"}),
    ],
    ids=["reference-max-vlog", "literal"],
)
def test_the_most_verbose_logs_never_show_a_secret(run_python, kafka, topic, password, tf_logging):
    proc = run_python(
        VERBOSE_CHILD,
        args=[topic, kafka.servers, password],
        env=dict(tf_logging, **{SECRET_ENV: SECRET}),
    )
    out = proc.stdout + proc.stderr
    assert "READ [b'v0', b'v1', b'v2']" in out, out[-3000:]
    assert "ERROR InvalidArgumentError" in out, out[-3000:]
    assert SECRET not in out
