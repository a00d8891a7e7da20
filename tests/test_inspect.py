"""`python -m kafka_dataset inspect` and `kafka_dataset.inspect`: the next offsets saved in TF2,
TF1 Saver and pipeline checkpoints, checked against positions computed independently from the
merge oracle AND against what a restored iterator actually reads next; live lag with --servers;
errors are one line and exit 2."""

import importlib
import json
import subprocess
import sys

import pytest
import tensorflow as tf
from helpers import BASE_TS, GraphReader, first_difference, kway_merge, parse_result
from kafka_dataset import testing as kt

PARTITIONS = 3
TOTAL = 45
START = {0: 0, 1: 3, 2: 0}  # partition 1 is read from offset 3: next offsets are not counts


class Scenario:
    """A 3-partition topic with explicit timestamps; the dataset reads ``t:0``, ``t:1:3:-1``,
    ``t:2`` to the end (eof)."""

    def __init__(self, kafka):
        self.servers = kafka.servers
        self.topic = kafka.new_topic(PARTITIONS)
        records = []
        for i in range(TOTAL):
            p = (i * 7 + i // 3) % PARTITIONS
            ts = BASE_TS + 10 * i + (5 if i % 4 == 0 else 0) - (15 if i % 9 == 0 and i else 0)
            records.append((p, "m%03d-p%d" % (i, p), None, ts))
        delivered = kafka.produce(self.topic, records)
        self.produced = {p: sum(1 for d in delivered if d.partition == p) for p in START}
        # value -> (partition, offset), and the oracle's order over the subscribed ranges
        self.where = {d.value: (d.partition, d.offset) for d in delivered}
        streams = [
            sorted((d.timestamp, d.offset, d.value) for d in delivered if d.partition == p)
            for p in START
        ]
        streams = [[m for m in s if m[1] >= START[p]] for p, s in zip(START, streams)]
        self.expected = kway_merge(streams)
        self.entries = ["%s:%d:%d:-1" % (self.topic, p, START[p]) for p in START]

    def dataset(self, kd):
        return kd.KafkaDataset(self.entries, servers=self.servers, eof=True, timeout=300)

    def next_offsets(self, consumed):
        """{partition: first offset not among the first ``consumed`` merged messages}."""
        out = dict(START)
        for value in self.expected[:consumed]:
            p, offset = self.where[value]
            assert offset >= out[p], "oracle emitted partition %d out of order" % p
            out[p] = offset + 1
        return out

    def first_offsets(self, values):
        """{partition: offset of its first message in ``values``}."""
        out = {}
        for value in values:
            p, offset = self.where[value]
            out.setdefault(p, offset)
        return out


def _env():
    return kt.python_env()


def _start_cli(*args):
    argv = [sys.executable, "-m", "kafka_dataset", "inspect"] + [str(a) for a in args]
    return subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()
    )


def _finish(proc):
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def _cli(*args):
    return _finish(_start_cli(*args))


def _cli_json(*args):
    code, out, err = _cli(*(args + ("--json",)))
    assert code == 0, "exit %d\nstdout:\n%s\nstderr:\n%s" % (code, out, err[-4000:])
    return json.loads(out)


def _main(capsys, *args):
    """The CLI in this process (cheaper than a new interpreter): (exit code, stdout, stderr)."""
    cli = importlib.import_module("kafka_dataset.__main__")
    capsys.readouterr()
    code = cli.main(["inspect"] + [str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _only_iterator(doc):
    assert len(doc["iterators"]) == 1, doc
    return doc["iterators"][0]


def _offsets(partitions):
    return {p["partition"]: p["next_offset"] for p in partitions}


def _error_lines(err):
    lines = [line for line in err.splitlines() if line.startswith("kafka_dataset inspect:")]
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    return lines[0]


def test_tf2_checkpoint_offsets_are_where_a_restored_iterator_continues(
    kd, kafka, tmp_path, capsys
):
    s = Scenario(kafka)
    k = 17
    it = iter(s.dataset(kd))
    head = [next(it).numpy() for _ in range(k)]
    assert head == s.expected[:k], first_difference(head, s.expected[:k])
    prefix = tf.train.Checkpoint(iterator=it).write(str(tmp_path / "tf2" / "ckpt"))

    proc = _start_cli(tmp_path / "tf2", "--json")  # a directory: its only checkpoint
    rest = [x.numpy() for x in it]  # meanwhile: the checkpointed iterator, continued
    code, out, err = _finish(proc)
    assert code == 0, err[-4000:]
    doc = json.loads(out)
    assert doc["checkpoint"] == prefix
    entry = _only_iterator(doc)
    assert entry["key"] == "iterator/.ATTRIBUTES/ITERATOR_STATE"
    assert entry["iterator"].endswith("::KdKafka"), entry
    assert [(p["topic"], p["partition"]) for p in entry["partitions"]] == [
        (s.topic, p) for p in START
    ]
    offsets = _offsets(entry["partitions"])
    assert offsets == s.next_offsets(k)

    # A new iterator restored from the checkpoint reads exactly those offsets next.
    restored = iter(s.dataset(kd))
    tf.train.Checkpoint(iterator=restored).read(prefix).assert_consumed()
    tail = [x.numpy() for x in restored]
    assert tail == s.expected[k:] == rest, first_difference(tail, s.expected[k:])
    first = s.first_offsets(tail)
    assert first == {p: o for p, o in offsets.items() if p in first}
    assert set(first) == {p for p in START if offsets[p] < s.produced[p]}

    # The same positions as a table, and through the Python API.
    code, out, err = _main(capsys, prefix)
    assert code == 0, err[-4000:]
    lines = out.splitlines()
    assert lines[0] == "checkpoint %s" % prefix
    header = lines.index(next(line for line in lines if line.startswith("topic")))
    assert lines[header].split() == ["topic", "partition", "next_offset"]
    rows = [line.split() for line in lines[header + 1 :] if line.strip()]
    assert rows == [[s.topic, str(p), str(offsets[p])] for p in START]
    api = importlib.import_module("kafka_dataset.inspect").read_positions(prefix)
    assert [(r["topic"], r["partition"], r["next_offset"]) for r in api] == [
        (s.topic, p, offsets[p]) for p in START
    ]


def test_tf1_saver_checkpoint(kd, kafka, tmp_path):
    s = Scenario(kafka)
    k = 11
    with GraphReader(lambda: s.dataset(kd), saveable=True) as reader:
        reader.init()
        head = list(reader.take(k))
        assert head == s.expected[:k], first_difference(head, s.expected[:k])
        prefix = reader.save(tmp_path / "tf1" / "model.ckpt")

    # A TF1 program (eager disabled) using the Python API, beside the CLI on the directory.
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import json, sys\n"
            "import tensorflow.compat.v1 as tf\n"
            "tf.disable_eager_execution()\n"
            "from kafka_dataset import inspect\n"
            "print('RESULT ' + json.dumps(inspect.read_positions(sys.argv[1])))\n",
            prefix,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    entry = _only_iterator(_cli_json(tmp_path / "tf1"))  # resolved by the 'checkpoint' file
    assert entry["key"].endswith("_STATE"), entry
    offsets = _offsets(entry["partitions"])
    assert offsets == s.next_offsets(k)

    code, out, err = _finish(child)
    assert code == 0, err[-4000:]
    graph_mode = parse_result(out)
    assert {r["partition"]: r["next_offset"] for r in graph_mode} == offsets
    assert {r["key"] for r in graph_mode} == {entry["key"]}

    with GraphReader(lambda: s.dataset(kd), saveable=True) as reader:
        reader.restore(prefix)
        tail = reader.read_to_end()
    assert tail == s.expected[k:], first_difference(tail, s.expected[k:])
    first = s.first_offsets(tail)
    assert first == {p: offsets[p] for p in first} and len(first) == PARTITIONS


def test_pipeline_checkpoint(kd, kafka, tmp_path):
    s = Scenario(kafka)
    batches = 2

    def pipeline():
        return s.dataset(kd).map(lambda v: tf.strings.join([v, "!"])).batch(8).prefetch(1)

    it = iter(pipeline())
    got = [v for _ in range(batches) for v in next(it).numpy()]
    expected = [v + b"!" for v in s.expected]
    assert got == expected[: 8 * batches]
    prefix = tf.train.Checkpoint(iterator=it).write(str(tmp_path / "pipe" / "ckpt"))

    entry = _only_iterator(_cli_json(prefix))
    assert "::" in entry["iterator"].replace("Iterator::Root::", "", 1), entry  # nested
    offsets = _offsets(entry["partitions"])
    # The source is ahead of the pipeline's output by what prefetch/batch hold (saved in the
    # same checkpoint; how much depends on timing and tf.data's autotuning): the offsets are
    # those after the first `read` merged messages, for some `read` at or past what was
    # emitted; the restore below checks that the buffered ones come out first.
    read = sum(offsets[p] - START[p] for p in START)
    assert 8 * batches <= read <= len(s.expected), (read, offsets)
    assert offsets == s.next_offsets(read)

    restored = iter(pipeline())
    tf.train.Checkpoint(iterator=restored).read(prefix).assert_consumed()
    tail = [v for batch in restored for v in batch.numpy()]
    assert tail == expected[8 * batches :], first_difference(tail, expected[8 * batches :])
    if read < len(s.expected):  # else the buffers held everything: nothing left to fetch
        from_kafka = [v[:-1] for v in tail[read - 8 * batches :]]  # after the buffered ones
        first = s.first_offsets(from_kafka)
        assert first == {p: offsets[p] for p in first} and first


def test_servers_lag(kd, kafka, tmp_path, capsys):
    s = Scenario(kafka)
    k = 20
    it = iter(s.dataset(kd))
    for _ in range(k):
        next(it)
    prefix = tf.train.Checkpoint(iterator=it).write(str(tmp_path / "ckpt"))
    doc = _cli_json(prefix, "--servers", s.servers, "--config", "client.id=kd-inspect-test")

    expected_next = s.next_offsets(k)
    lag = {p: s.produced[p] - expected_next[p] for p in START}
    assert doc["servers"] == s.servers
    entry = _only_iterator(doc)
    for row in entry["partitions"]:
        p = row["partition"]
        assert row["next_offset"] == expected_next[p]
        assert (row["low"], row["high"]) == (0, s.produced[p]), row
        assert row["lag"] == lag[p], row
    assert entry["total_lag"] == doc["total_lag"] == sum(lag.values()) == TOTAL - k - START[1]

    code, out, err = _main(capsys, prefix, "--servers", s.servers)
    assert code == 0, err[-4000:]
    lines = out.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("topic")))
    assert lines[header].split() == ["topic", "partition", "next_offset", "low", "high", "lag"]
    rows = [line.split() for line in lines[header + 1 : header + 1 + PARTITIONS]]
    assert rows == [
        [s.topic, str(p), str(expected_next[p]), "0", str(s.produced[p]), str(lag[p])]
        for p in START
    ]
    assert "total lag %d" % sum(lag.values()) in lines

    # --config reaches the client: an unknown property is refused, in one line, exit 2.
    code, out, err = _main(capsys, prefix, "--servers", s.servers, "--config", "no.such.prop=1")
    assert code == 2 and not out
    assert "no.such.prop" in _error_lines(err)


def test_several_iterators_are_reported_separately(kd, kafka, tmp_path, capsys):
    s = Scenario(kafka)
    first, second = iter(s.dataset(kd)), iter(s.dataset(kd).prefetch(2))
    for _ in range(5):
        next(first)
    for _ in range(30):
        next(second)
    prefix = tf.train.Checkpoint(a=first, b=second, step=tf.Variable(3)).write(
        str(tmp_path / "ckpt")
    )
    cli = importlib.import_module("kafka_dataset.__main__")
    assert cli.main(["inspect", prefix, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    by_key = {e["key"]: _offsets(e["partitions"]) for e in doc["iterators"]}
    assert set(by_key) == {"a/.ATTRIBUTES/ITERATOR_STATE", "b/.ATTRIBUTES/ITERATOR_STATE"}
    assert by_key["a/.ATTRIBUTES/ITERATOR_STATE"] == s.next_offsets(5)
    read = sum(by_key["b/.ATTRIBUTES/ITERATOR_STATE"][p] - START[p] for p in START)
    assert 30 <= read <= 32 and by_key["b/.ATTRIBUTES/ITERATOR_STATE"] == s.next_offsets(read)


def test_errors_are_one_line_and_exit_2(kd, tmp_path, monkeypatch, capsys):
    it = iter(tf.data.Dataset.range(10).map(lambda x: x * 2))
    next(it)
    plain = tf.train.Checkpoint(iterator=it).write(str(tmp_path / "range" / "ckpt"))
    missing = tmp_path / "no" / "such-ckpt"

    # A real process: exit status 2, one line naming the path, no traceback.
    code, out, err = _cli(missing)
    assert code == 2 and not out
    line = _error_lines(err)
    assert str(missing) in line and "no such checkpoint" in line, line

    code, out, err = _main(capsys, plain, "--json")
    assert code == 2 and not out
    line = _error_lines(err)
    assert plain in line and "no KafkaDataset" in line, line

    (tmp_path / "empty").mkdir()
    code, out, err = _main(capsys, tmp_path / "empty")
    assert code == 2 and not out and str(tmp_path / "empty") in _error_lines(err)

    # --servers without confluent-kafka: a clear message, not an ImportError.
    monkeypatch.setitem(sys.modules, "confluent_kafka", None)
    code, out, err = _main(capsys, plain, "--servers", "127.0.0.1:1")
    assert code == 2 and not out
    assert "pip install confluent-kafka to use --servers" in _error_lines(err)

    inspect = importlib.import_module("kafka_dataset.inspect")
    with pytest.raises(inspect.InspectError, match="no KafkaDataset"):
        inspect.read_positions(plain)


def test_config_references_are_resolved_and_errors_show_no_value(monkeypatch, tmp_path):
    from kafka_dataset import inspect as kinspect

    monkeypatch.setenv("KD_INSPECT_SECRET", "s3cret-env")
    secret_file = tmp_path / "password"
    secret_file.write_text("s3cret-file\n")
    assert kinspect._resolve_reference("sasl.password", "${env:KD_INSPECT_SECRET}") == "s3cret-env"
    assert kinspect._resolve_reference("sasl.password", "${file:%s}" % secret_file) == "s3cret-file"
    assert kinspect._resolve_reference("client.id", "plain") == "plain"
    monkeypatch.delenv("KD_INSPECT_SECRET")
    with pytest.raises(kinspect.InspectError, match="KD_INSPECT_SECRET") as e:
        kinspect._resolve_reference("sasl.password", "${env:KD_INSPECT_SECRET}")
    assert "sasl.password" in str(e.value) and "s3cret" not in str(e.value)
    with pytest.raises(kinspect.InspectError, match="sasl.password"):
        kinspect._resolve_reference("sasl.password", "${file:%s}" % (tmp_path / "missing"))
