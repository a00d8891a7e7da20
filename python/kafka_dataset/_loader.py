"""Finds and loads ``libkafka_dataset.so`` (the op library) exactly once.

The library is looked up beside this module; the environment variable
``KAFKA_DATASET_LIBRARY`` overrides the path (a file, or a directory holding
``libkafka_dataset.so``). Loading is lazy: ``import kafka_dataset`` works without
the library (so the ``tf.data`` aliases exist and ``python -m kafka_dataset``
can diagnose), and the first ``KafkaDataset(...)`` loads it.
"""

import mmap
import os
import threading

ENV_VAR = "KAFKA_DATASET_LIBRARY"
LIBRARY_NAME = "libkafka_dataset.so"
OP_NAME = "KdKafkaDataset"
OP_FUNCTION = "kd_kafka_dataset"

# The C++ shim embeds `KAFKA_DATASET_BUILT_FOR_TENSORFLOW=<version>` (see build.rs).
BUILD_TAG = b"KAFKA_DATASET_BUILT_FOR_TENSORFLOW="

_lock = threading.Lock()
_ops = None


class LibraryError(ImportError):
    """The op library is missing, does not load, or registers no KdKafkaDataset op."""


def library_path():
    """The path the loader will try: ``$KAFKA_DATASET_LIBRARY`` or the file beside this module."""
    override = os.environ.get(ENV_VAR)
    if override:
        override = os.path.expanduser(override)
        if os.path.isdir(override):
            return os.path.join(override, LIBRARY_NAME)
        return override
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), LIBRARY_NAME)


def built_for_tensorflow(path=None):
    """The TensorFlow version the library at `path` (default: `library_path()`) was built
    against, read from the file without loading it; None when it carries no tag."""
    path = path or library_path()
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        at = data.find(BUILD_TAG)
        if at < 0:
            return None
        start = at + len(BUILD_TAG)
        end = data.find(b"\0", start, start + 64)
        return data[start:end].decode("ascii", "replace") if end > start else None


def _minor(version):
    return tuple(version.split(".")[:2])


def version_mismatch(path=None):
    """Why the library at `path` (default: `library_path()`) cannot load into this TensorFlow,
    or None: a library built for one TensorFlow minor version does not load in another (C++
    ABI, op registry). None too when the file is missing or carries no version."""
    import tensorflow as tf

    path = path or library_path()
    try:
        built = built_for_tensorflow(path)
    except (OSError, ValueError):  # missing, unreadable, or empty: load_library explains
        return None
    if built is None or _minor(built) == _minor(tf.__version__):
        return None
    return (
        "kafka_dataset: %s was built for TensorFlow %s, but this is TensorFlow %s; a library "
        "built for one TensorFlow minor version does not load in another. Install the "
        "kafka-dataset wheel built for TensorFlow %s, or rebuild from source with "
        "`pip install --no-build-isolation .`"
        % (path, built, tf.__version__, ".".join(_minor(tf.__version__)))
    )


def load_library():
    """Loads the op library (once per process) and returns its generated op module."""
    global _ops
    if _ops is not None:
        return _ops
    with _lock:
        if _ops is not None:
            return _ops
        path = library_path()
        source = (
            ("from $%s" % ENV_VAR)
            if os.environ.get(ENV_VAR)
            else "beside the kafka_dataset package"
        )
        if not os.path.isfile(path):
            raise LibraryError(
                "kafka_dataset: the op library %s was not found (looked %s: %s). Build and install "
                "it with `pip install --no-build-isolation .` from the project root, or point $%s "
                "at a built libkafka_dataset.so." % (LIBRARY_NAME, source, path, ENV_VAR)
            )
        import tensorflow as tf  # deferred: importing TF is slow and not needed for path queries

        # Say which versions, instead of an undefined-symbol error or a crash.
        mismatch = version_mismatch(path)
        if mismatch:
            raise LibraryError(mismatch)
        try:
            ops = tf.load_op_library(path)
        except Exception as e:  # tf raises NotFoundError / RuntimeError with the dlopen message
            raise LibraryError(
                "kafka_dataset: failed to load the op library %s: %s (a library built against "
                "another TensorFlow minor version does not load; this is TensorFlow %s)"
                % (path, e, tf.__version__)
            ) from e
        if not hasattr(ops, OP_FUNCTION):
            raise LibraryError(
                "kafka_dataset: %s loaded but registers no %s op (was the C++ shim linked "
                "+whole-archive?)" % (path, OP_NAME)
            )
        _ops = ops
        return _ops
