"""The Python package: loader, aliases, the seed constructor, Python-side type errors."""

import inspect
import os

import kafka_dataset
import pytest
import tensorflow as tf
from kafka_dataset import _loader

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


def test_library_that_is_not_a_library_is_a_clear_error(run_python, tmp_path):
    bogus = tmp_path / "libkafka_dataset.so"
    bogus.write_bytes(b"not an ELF file")
    proc = run_python(
        "import kafka_dataset\n"
        "try:\n"
        "    kafka_dataset.load_library()\n"
        "except kafka_dataset.LibraryError as e:\n"
        "    print('ERROR', e)\n",
        env={_loader.ENV_VAR: str(bogus)},
    )
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
