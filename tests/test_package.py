"""The Python package: loader, aliases, the seed constructor, Python-side type errors."""

import inspect
import json
import os

import kafka_dataset
import pytest
import tensorflow as tf
from kafka_dataset import _loader
from kafka_dataset import testing as kt

SEED_PARAMETERS = [
    ("topics", inspect.Parameter.empty),
    ("servers", "localhost"),
    ("group", ""),
    ("eof", False),
    ("timeout", 1000),
    ("config_global", None),
    ("config_topic", None),
    ("message_key", False),
]


@pytest.mark.parametrize("cls", [kafka_dataset.KafkaDatasetV2, kafka_dataset.KafkaDatasetV1])
def test_constructor_is_the_seed_constructor(cls):
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    positional = [(p.name, p.default) for p in params if p.kind == p.POSITIONAL_OR_KEYWORD]
    assert positional == SEED_PARAMETERS
    # Anything else is keyword-only (reserved extensions).
    assert [p.kind for p in params[len(SEED_PARAMETERS) :]] == [inspect.Parameter.VAR_KEYWORD]


def test_aliases_after_import():
    import tensorflow.compat.v1 as tf1
    import tensorflow.compat.v2 as tf2

    assert tf.data.KafkaDataset is kafka_dataset.KafkaDatasetV2
    assert tf2.data.KafkaDataset is kafka_dataset.KafkaDatasetV2
    assert tf.compat.v1.data.KafkaDataset is kafka_dataset.KafkaDatasetV1
    assert tf1.data.KafkaDataset is kafka_dataset.KafkaDatasetV1
    assert kafka_dataset.KafkaDataset is kafka_dataset.KafkaDatasetV2
    assert issubclass(kafka_dataset.KafkaDatasetV2, tf.data.Dataset)
    assert issubclass(kafka_dataset.KafkaDatasetV1, tf.compat.v1.data.Dataset)


def test_unknown_extension_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match="no_such_extension"):
        kafka_dataset.KafkaDataset(["t:0"], no_such_extension=True)
    with pytest.raises(TypeError, match="bogus"):
        kafka_dataset.KafkaDatasetV1(["t:0"], bogus=1)


def test_library_path_env_override(monkeypatch, tmp_path):
    monkeypatch.delenv(_loader.ENV_VAR, raising=False)
    assert kafka_dataset.library_path() == os.path.join(
        os.path.dirname(os.path.abspath(kafka_dataset.__file__)), "libkafka_dataset.so"
    )
    monkeypatch.setenv(_loader.ENV_VAR, str(tmp_path / "x.so"))
    assert kafka_dataset.library_path() == str(tmp_path / "x.so")
    monkeypatch.setenv(_loader.ENV_VAR, str(tmp_path))  # a directory holding the library
    assert kafka_dataset.library_path() == str(tmp_path / "libkafka_dataset.so")


def test_missing_library_is_a_clear_error_naming_the_path(run_python, tmp_path):
    missing = str(tmp_path / "nowhere" / "libkafka_dataset.so")
    proc = run_python(
        "import kafka_dataset, tensorflow as tf\n"
        "assert tf.data.KafkaDataset is kafka_dataset.KafkaDataset  # import works without it\n"
        "try:\n"
        "    kafka_dataset.KafkaDataset(['t:0'])\n"
        "except kafka_dataset.LibraryError as e:\n"
        "    print('ERROR', e)\n",
        env={_loader.ENV_VAR: missing},
    )
    assert "ERROR" in proc.stdout, proc.stdout + proc.stderr
    assert missing in proc.stdout
    assert _loader.ENV_VAR in proc.stdout


def load_in_child(run_python, library):
    """Loads `library` in a new interpreter; prints ``ERROR <message>`` on a LibraryError."""
    return run_python(
        "import kafka_dataset\n"
        "try:\n"
        "    kafka_dataset.load_library()\n"
        "except kafka_dataset.LibraryError as e:\n"
        "    print('ERROR', e)\n",
        env={_loader.ENV_VAR: str(library)},
    )


def test_library_that_is_not_a_library_is_a_clear_error(run_python, tmp_path):
    bogus = tmp_path / "libkafka_dataset.so"
    bogus.write_bytes(b"not an ELF file")
    proc = load_in_child(run_python, bogus)
    assert "ERROR" in proc.stdout and str(bogus) in proc.stdout, proc.stdout + proc.stderr


def test_library_loads_and_registers_the_op(kd):
    ops = kd.load_library()
    assert ops is kd.load_library()
    assert hasattr(ops, "kd_kafka_dataset")


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(topics=["t:0", 5]), "topics[1]"),
        (dict(topics=None), "topics"),
        (dict(topics="t:0", message_key="yes"), "message_key"),
        (dict(topics="t:0", eof="no"), "eof"),
        (dict(topics="t:0", timeout=1.5), "timeout"),
        (dict(topics="t:0", timeout=True), "timeout"),
        (dict(topics="t:0", config_global=["a=1", None]), "config_global[1]"),
    ],
)
def test_python_type_errors_name_the_argument(kwargs, name):
    # Raised before the op library is needed.
    with pytest.raises(TypeError) as info:
        kafka_dataset.KafkaDataset(**kwargs)
    assert name in str(info.value)


def test_element_spec_and_v1_output_types(kd):
    # Building the dataset validates the spec; it does not contact a broker.
    v2 = kd.KafkaDataset(["t:0:0:4"], servers="127.0.0.1:1")
    assert v2.element_spec == tf.TensorSpec([], tf.string)
    v2k = kd.KafkaDataset("t:0", servers="127.0.0.1:1", message_key=True)
    assert v2k.element_spec == (tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.string))

    v1 = kd.KafkaDatasetV1(["t:0:0:4"], servers="127.0.0.1:1")
    assert v1.output_types == tf.string
    assert v1.output_shapes == tf.TensorShape([])
    v1k = kd.KafkaDatasetV1(["t:0"], servers="127.0.0.1:1", message_key=True)
    assert v1k.output_types == (tf.string, tf.string)
    assert tf.compat.v1.data.get_output_types(v2k) == (tf.string, tf.string)


def test_v1_class_in_graph_mode_via_compat_v1_namespace(kd):
    import tensorflow.compat.v1 as tf1

    with tf.Graph().as_default():
        ds = tf1.data.KafkaDataset(topics=["t:0:0:-1"], group="g", timeout=100, eof=False)
        assert isinstance(ds, kd.KafkaDatasetV1)
        assert ds.output_types == tf.string
        iterator = tf1.data.Iterator.from_structure(ds.output_types)
        iterator.make_initializer(ds)
        assert iterator.get_next().dtype == tf.string


def test_a_library_built_for_another_tensorflow_names_both_versions(kd, run_python, tmp_path):
    built = kafka_dataset.built_for_tensorflow()
    assert built == tf.__version__, "the library records the TensorFlow it was built against"
    # The same library, its recorded version changed to another minor version (same length).
    other = ("1.0." + "0" * len(built))[: len(built)]
    data = open(kafka_dataset.library_path(), "rb").read()
    tag = _loader.BUILD_TAG + built.encode() + b"\0"
    assert data.count(tag) == 1
    copy = tmp_path / "libkafka_dataset.so"
    copy.write_bytes(data.replace(tag, _loader.BUILD_TAG + other.encode() + b"\0"))
    proc = load_in_child(run_python, copy)
    assert "ERROR" in proc.stdout, proc.stdout + proc.stderr
    assert "built for TensorFlow %s" % other in proc.stdout, proc.stdout
    assert "this is TensorFlow %s" % tf.__version__ in proc.stdout, proc.stdout
    # Already at import: a warning naming both.
    warning = [line for line in proc.stderr.splitlines() if "RuntimeWarning" in line]
    assert warning and "built for TensorFlow %s" % other in warning[0], proc.stderr[-2000:]
    assert "this is TensorFlow %s" % tf.__version__ in warning[0]


WHEEL_CHILD = r"""
import os, sys
site, servers, topic = sys.argv[1:4]
import kafka_dataset
assert kafka_dataset.__file__.startswith(site), kafka_dataset.__file__
assert kafka_dataset.library_path().startswith(site), kafka_dataset.library_path()
ds = kafka_dataset.KafkaDataset([topic + ":0"], servers=servers, eof=True)
print("READ", [v.numpy().decode() for v in ds])
"""


def test_pip_wheel_builds_a_platform_wheel_whose_library_loads(kd, kafka, run_python, tmp_path):
    import subprocess
    import sys
    import zipfile

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q",
         "-w", str(out), root],
        check=True, timeout=900, capture_output=True,
    )  # fmt: skip
    (wheel,) = out.glob("*.whl")
    # A platform wheel for this interpreter: the library is native code.
    py = "cp%d%d" % sys.version_info[:2]
    assert wheel.name.startswith(
        "kafka_dataset-%s-%s-%s-linux_" % (kafka_dataset.__version__, py, py)
    )
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        for member in ["libkafka_dataset.so", "__init__.py", "stats.py", "inspect.py"]:
            assert "kafka_dataset/" + member in names, names
        library_size = z.getinfo("kafka_dataset/libkafka_dataset.so").file_size
        z.extractall(site)
    # Shipped without debug info (67 MB with it); the debug info is a file of its own.
    assert library_size < 25 * 2**20, library_size
    assert os.path.getsize(os.path.join(root, "target", "release", "libkafka_dataset.so.debug")) > (
        2 * library_size
    )
    # auditwheel: with TensorFlow's own library excluded (the user's TensorFlow provides it),
    # the wheel is manylinux: nothing else outside the manylinux policy is linked.
    repaired = tmp_path / "manylinux"
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    subprocess.run(
        [sys.executable, "-m", "auditwheel", "repair", "--exclude", "libtensorflow_framework.so.2",
         "-w", str(repaired), str(wheel)],
        check=True, timeout=300, capture_output=True, env=env,
    )  # fmt: skip
    (manylinux,) = repaired.glob("*.whl")
    assert "-manylinux_" in manylinux.name, manylinux.name
    shown = subprocess.run(
        [sys.executable, "-m", "auditwheel", "show", "--json", str(manylinux)],
        check=True, timeout=300, capture_output=True, text=True, env=env,
    )  # fmt: skip
    audit = json.loads(shown.stdout)
    assert audit["sym_tag"].startswith("manylinux_"), audit
    assert list(audit["external_libs"]) == ["libtensorflow_framework.so.2"], audit
    topic = kafka.new_topic(1)
    kafka.produce(topic, [(0, b"w%d" % i, None, 1700000000000 + i) for i in range(3)])
    env = {"PYTHONPATH": str(site)}
    env = {k: v for k, v in kt.python_env(env).items() if k != _loader.ENV_VAR}
    env["PYTHONPATH"] = str(site)  # only the wheel's copy, not the source tree
    proc = subprocess.run(
        [sys.executable, "-c", WHEEL_CHILD, str(site), kafka.servers, topic],
        capture_output=True, text=True, timeout=300, env=env, cwd=str(tmp_path),
    )  # fmt: skip
    assert "READ ['w0', 'w1', 'w2']" in proc.stdout, proc.stdout + proc.stderr[-3000:]
