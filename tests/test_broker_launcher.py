"""The local broker launcher (`python -m kafka_dataset.testing broker`): it starts Apache Kafka in
KRaft mode, answers metadata, and leaves no JVM behind on any exit path: Ctrl-C / SIGTERM and a
SIGKILL of the launcher itself (a killed test run)."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from kafka_dataset import testing as kt


def jvms_under(directory):
    """Pids of the broker JVMs whose command line names ``directory``."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"kafka.Kafka" in argv and any(directory.encode() in a for a in argv):
            pids.append(int(pid))
    return pids


def start_launcher(*args):
    if os.environ.get(kt.BOOTSTRAP_ENV):
        pytest.skip("starts brokers of its own")
    proc = subprocess.Popen(
        [sys.executable, "-m", "kafka_dataset.testing", "broker", "--port", str(kt.free_port())]
        + list(args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=kt.python_env(),
    )
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("Apache Kafka ready at "):
            bootstrap = line.split()[4]
            directory = line.rsplit("logs under ", 1)[1].rstrip(")\n")
            return proc, bootstrap, directory
    proc.kill()
    raise AssertionError("the launcher did not get ready:\n" + "".join(lines))


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_the_launcher_serves_a_cluster_and_leaves_no_jvm_behind(how):
    proc, bootstrap, directory = start_launcher("--brokers", "3")
    try:
        assert len(jvms_under(directory)) == 3
        admin = kt.admin_client(bootstrap)
        assert len(admin.list_topics(timeout=10).brokers) == 3
    finally:
        proc.send_signal(how)
        proc.wait(60)
    kt.wait_for(lambda: not jvms_under(directory), 30, "the broker JVMs to exit")
    if how == signal.SIGTERM:
        # A clean exit also removes the temporary log dirs.
        assert proc.returncode == 0 and not os.path.exists(directory)
    else:
        # Nothing can clean up after a SIGKILL: the test does.
        shutil.rmtree(directory, ignore_errors=True)
