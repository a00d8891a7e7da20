"""Builds libkafka_dataset.so with cargo (feature `tensorflow`, against the TensorFlow of the
Python running this build) and installs it beside the `kafka_dataset` package, without its debug
info: that stays in target/release/libkafka_dataset.so.debug, which gdb finds through the
library's .gnu_debuglink (copy it beside the installed library, or under /usr/lib/debug).

    pip install --no-build-isolation .
"""

import os
import shutil
import subprocess
import sys

from setuptools import Distribution, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))
LIBRARY = "libkafka_dataset.so"


class CargoBuildExt(build_ext):
    """Runs `cargo build --release --features tensorflow` and copies the cdylib."""

    def run(self):
        env = dict(os.environ)
        # build.rs asks this interpreter's tf.sysconfig for compile and link flags.
        env.setdefault("PYTHON", sys.executable)
        target_dir = env.setdefault("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
        subprocess.check_call(
            ["cargo", "build", "--release", "--locked", "--features", "tensorflow"],
            cwd=ROOT,
            env=env,
        )
        built = os.path.join(target_dir, "release", LIBRARY)
        stripped = split_debug_info(built)
        for dest_root in (
            {self.build_lib, os.path.join(ROOT, "python")} if self.inplace else {self.build_lib}
        ):
            dest = os.path.join(dest_root, "kafka_dataset", LIBRARY)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            # Never overwrite a library in place: processes that loaded it would crash.
            staging = dest + ".tmp"
            shutil.copyfile(stripped, staging)
            os.replace(staging, dest)


def split_debug_info(library):
    """Writes ``library``'s debug info to ``library.debug`` and returns a copy without it that
    links to that file (objcopy from binutils); the library itself is left as cargo built it."""
    debug, stripped = library + ".debug", library + ".stripped"
    subprocess.check_call(["objcopy", "--only-keep-debug", library, debug])
    subprocess.check_call(
        ["objcopy", "--strip-debug", "--add-gnu-debuglink=" + debug, library, stripped]
    )
    return stripped


class BinaryDistribution(Distribution):
    """The package ships a native library: build a platform wheel."""

    def has_ext_modules(self):
        return True


setup(
    name="kafka-dataset",
    version="0.1.0",
    description="Kafka source for tf.data: time-ordered partitions, exact checkpointed position",
    packages=["kafka_dataset"],
    package_dir={"": "python"},
    python_requires=">=3.9",
    cmdclass={"build_ext": CargoBuildExt},
    distclass=BinaryDistribution,
    zip_safe=False,
)
