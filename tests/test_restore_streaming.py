"""Save/restore while streaming (eof=False, DESIGN §2.5): a producer keeps writing sequence
numbered messages while the iterator reads, saves, reads on (work that is then lost), and while
a NEW process restores the checkpoint and reads up to the producer's last message. Every
sequence number arrives exactly once: no gap, no repeat."""

import json
import os
import subprocess
import sys
import threading

from helpers import BASE_TS, GraphReader, parse_result
from kafka_dataset import testing as kt

PARTITIONS = 3
TIMEOUT_MS = 200

# Restores with the same graph (helpers.GraphReader, the seed's Saver flow), then reads until it
# has seen the end marker and every sequence number below it; then one more read must block.
RESTORE = r"""
import json, sys, time
args = json.loads(sys.argv[1])
sys.path.insert(0, args["tests_dir"])
import tensorflow as tf
import kafka_dataset
from helpers import GraphReader

reader = GraphReader(lambda: kafka_dataset.KafkaDatasetV1(
    args["topics"], servers=args["servers"], eof=False, timeout=args["timeout"]), saveable=True)
reader.restore(args["ckpt"])
open(args["flag"], "w").close()  # tells the test that the restore is done
have = set(args["prefix"])
got, end, error = [], None, None
while end is None or not all(s in have for s in range(end + 1)):
    try:
        value = reader.next(timeout_ms=30000).decode()
    except tf.errors.DeadlineExceededError:
        error = "blocked 30 s after %d elements; end marker %r; missing %r" % (
            len(got), end, sorted(set(range(max(have) + 1)) - have)[:20])
        break
    got.append(value)
    have.add(int(value.split("-")[1]))
    if value.endswith("-end"):
        end = int(value.split("-")[1])
extra = None
if error is None:
    try:  # everything was read: the next read must block (nothing repeated after the end)
        extra = reader.next(timeout_ms=1500).decode()
    except tf.errors.DeadlineExceededError:
        pass
print("RESULT " + json.dumps({"got": got, "end": end, "error": error, "extra": extra}))
"""


class SequenceProducer(threading.Thread):
    """Produces ``p<partition>-<seq>`` round-robin over the partitions in small flushed chunks
    (timestamps follow ``seq``) until ``finish()``, then one ``-end`` marker."""

    def __init__(self, servers, topic, chunk=6):
        super().__init__(daemon=True)
        self.servers, self.topic, self.chunk = servers, topic, chunk
        self.produced = 0  # sequence numbers 0..produced-1 are on the broker
        self.error = None
        self._finish = threading.Event()

    def _send(self, seqs, last=False):
        suffix = "-end" if last else ""
        records = [
            (s % PARTITIONS, "p%d-%d%s" % (s % PARTITIONS, s, suffix), None, BASE_TS + s)
            for s in seqs
        ]
        kt.produce(self.servers, self.topic, records)
        self.produced = seqs[-1] + 1

    def run(self):
        try:
            while not self._finish.wait(0.02):  # paced, not a wait for a condition
                self._send(list(range(self.produced, self.produced + self.chunk)))
            self._send([self.produced], last=True)
        except Exception as e:  # reported by the test
            self.error = e

    def wait_for_more(self, count, timeout=30.0):
        target = self.produced + count
        kt.wait_for(lambda: self.produced >= target or self.error, timeout, "the producer")
        assert self.error is None, self.error

    def finish(self, timeout=30.0):
        self._finish.set()
        self.join(timeout)
        assert not self.is_alive(), "the producer did not finish"
        assert self.error is None, self.error
        return self.produced - 1  # the end marker's sequence number


def _seq(value):
    return int(value.split("-")[1])


def test_streaming_save_and_restore_in_a_new_process_while_producing(kd, kafka, tmp_path):
    topic = kafka.new_topic(PARTITIONS)
    topics = ["%s:%d" % (topic, p) for p in range(PARTITIONS)]
    producer = SequenceProducer(kafka.servers, topic)
    producer.start()
    try:
        producer.wait_for_more(12)

        def make():
            return kd.KafkaDatasetV1(topics, servers=kafka.servers, eof=False, timeout=TIMEOUT_MS)

        (tmp_path / "ckpt").mkdir()
        with GraphReader(make, saveable=True) as reader:
            reader.init()
            prefix = [v.decode() for v in reader.take(40, timeout_ms=30_000)]
            assert producer.is_alive()  # the producer runs across the save
            ckpt = reader.save(tmp_path / "ckpt" / "stream")
            lost = [v.decode() for v in reader.take(15, timeout_ms=30_000)]  # not saved

        flag = tmp_path / "restored"
        args = {
            "tests_dir": os.path.dirname(os.path.abspath(__file__)),
            "topics": topics,
            "servers": kafka.servers,
            "timeout": TIMEOUT_MS,
            "ckpt": ckpt,
            "flag": str(flag),
            "prefix": [_seq(v) for v in prefix],
        }
        child = subprocess.Popen(
            [sys.executable, "-c", RESTORE, json.dumps(args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=kt.python_env(),
        )
        try:
            try:
                kt.wait_for(
                    lambda: flag.exists() or child.poll() is not None, 120, "the child's restore"
                )
            finally:
                if not flag.exists():  # the child died or hung before restoring
                    child.kill()
                    out, err = child.communicate(30)
                    raise AssertionError("restore failed:\n%s\n%s" % (out[-3000:], err[-6000:]))
            producer.wait_for_more(30)  # keep producing while the restored iterator reads
            end = producer.finish()
            out, err = child.communicate(timeout=150)
        finally:
            if child.poll() is None:
                child.kill()
                child.communicate(30)
        assert child.returncode == 0, "child exited %d:\n%s" % (child.returncode, err[-6000:])
    finally:
        if producer.is_alive():
            producer.finish()

    result = parse_result(out)
    assert result["error"] is None, result["error"]
    assert result["end"] == end, (result["end"], end)
    assert result["extra"] is None, "read %r after the last message" % result["extra"]
    delivered = prefix + result["got"]
    seqs = [_seq(v) for v in delivered]
    repeated = sorted({s for s in seqs if seqs.count(s) > 1})
    assert not repeated, "repeated after restore: %r" % repeated[:20]
    gaps = sorted(set(range(end + 1)) - set(seqs))
    assert not gaps, "lost across save/restore: %r" % gaps[:20]
    assert len(seqs) == end + 1
    for p in range(PARTITIONS):  # inside a partition: offset order, i.e. increasing seq
        mine = [s for v, s in zip(delivered, seqs) if v.startswith("p%d-" % p)]
        assert mine == sorted(mine), "partition %d out of order: %r" % (p, mine[:30])
    # The work done after the save was lost with its iterator and is read again after restore.
    assert set(map(_seq, lost)) <= set(map(_seq, result["got"])), lost
    assert len(result["got"]) >= len(lost) + 30, len(result["got"])
    print(
        "streaming: %d messages; %d read and saved, %d read after the save (lost), %d read by "
        "the restoring process" % (end + 1, len(prefix), len(lost), len(result["got"]))
    )
