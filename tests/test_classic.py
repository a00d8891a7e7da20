"""tf.contrib.kafka's classic cases on a 1-partition topic holding D0..D9, and DESIGN §2.1 forms."""

import pytest
import tensorflow as tf
from helpers import BASE_TS, GraphReader, eager_values

D = [b"D%d" % i for i in range(10)]


@pytest.fixture
def topic(kafka):
    """A 1-partition topic holding D0..D9 at offsets 0..9, CreateTime BASE_TS + 10*i."""
    name = kafka.new_topic(1)
    delivered = kafka.produce(name, [(0, D[i], None, BASE_TS + 10 * i) for i in range(10)])
    assert [(d.offset, d.timestamp) for d in delivered] == [
        (i, BASE_TS + 10 * i) for i in range(10)
    ]
    return name


def test_first_five(kd, kafka, topic):
    ds = kd.KafkaDataset([topic + ":0:0:4"], servers=kafka.servers, eof=True, timeout=200)
    assert eager_values(ds) == D[:5]


def test_first_five_bounded_entry_ends_by_itself_without_eof(kd, kafka, topic):
    """`last` is inclusive and a bounded entry ends at it even with eof=False (§2.1, §2.3)."""
    with GraphReader(
        lambda: kd.KafkaDatasetV1([topic + ":0:0:4"], servers=kafka.servers, eof=False, timeout=200)
    ) as r:
        assert r.init().read_to_end(timeout_ms=15_000) == D[:5]


def test_rest_with_eof(kd, kafka, topic):
    ds = kd.KafkaDataset([topic + ":0:5:-1"], servers=kafka.servers, eof=True, timeout=200)
    assert eager_values(ds) == D[5:]


def test_both_entries_chain(kd, kafka, topic):
    ds = kd.KafkaDataset(
        [topic + ":0:0:4", topic + ":0:5:-1"], servers=kafka.servers, eof=True, timeout=200
    )
    assert eager_values(ds) == D


def test_chained_entries_listed_out_of_order_chain_in_offset_order(kd, kafka, topic):
    ds = kd.KafkaDataset(
        [topic + ":0:5:-1", topic + ":0:0:4"], servers=kafka.servers, eof=True, timeout=200
    )
    assert eager_values(ds) == D


def test_both_entries_repeated_ten_times(kd, kafka, topic):
    ds = kd.KafkaDataset(
        [topic + ":0:0:4", topic + ":0:5:-1"], servers=kafka.servers, eof=True, timeout=200
    ).repeat(10)
    assert eager_values(ds) == D * 10


def test_both_entries_batched_by_five(kd, kafka, topic):
    ds = kd.KafkaDataset(
        [topic + ":0:0:4", topic + ":0:5:-1"], servers=kafka.servers, eof=True, timeout=200
    ).batch(5)
    assert eager_values(ds) == [D[:5], D[5:]]


def test_classic_cases_in_tf1_graph_mode(kd, kafka, topic):
    cases = [
        ([topic + ":0:0:4"], D[:5]),
        ([topic + ":0:5:-1"], D[5:]),
        ([topic + ":0:0:4", topic + ":0:5:-1"], D),
    ]
    for entries, expected in cases:
        with GraphReader(
            lambda: kd.KafkaDatasetV1(entries, servers=kafka.servers, eof=True, timeout=200)
        ) as r:
            assert r.init().read_to_end() == expected, entries
            # Re-initializing the same iterator starts over.
            assert r.init().read_to_end() == expected, entries


@pytest.mark.parametrize(
    "entry, expected",
    [
        ("{t}", D),  # every partition
        ("{t}:0", D),  # offset omitted = 0
        ("{t}:0:0:-1", D),
        ("{t}:0:3:3", D[3:4]),  # last inclusive: exactly one message
        ("{t}:0:9:20", D[9:]),  # last beyond the log end: eof ends it at the end
        ("{t}:0:beginning", D),
        ("{t}:0:end", []),  # resolved once at iterator start: nothing new arrives
        ("{t}:0:beginning:2", D[:3]),
    ],
)
def test_entry_forms(kd, kafka, topic, entry, expected):
    ds = kd.KafkaDataset([entry.format(t=topic)], servers=kafka.servers, eof=True, timeout=200)
    assert eager_values(ds) == expected


def test_topics_as_a_single_string(kd, kafka, topic):
    ds = kd.KafkaDataset(topic + ":0:2:4", servers=kafka.servers, eof=True, timeout=200)
    assert eager_values(ds) == D[2:5]


def test_topics_as_a_tensor(kd, kafka, topic):
    ds = kd.KafkaDataset(
        tf.constant([topic + ":0:0:1"]), servers=kafka.servers, eof=True, timeout=200
    )
    assert eager_values(ds) == D[:2]


def test_start_at_timestamp(kd, kafka, topic):
    """`@<epoch-ms>`: the first offset whose timestamp >= t (the broker's offsets-for-times)."""
    ds = kd.KafkaDataset(
        ["%s:0:@%d" % (topic, BASE_TS + 55)], servers=kafka.servers, eof=True, timeout=200
    )
    assert eager_values(ds) == D[6:]


def test_servers_as_a_list(kd, kafka, topic):
    """The seed documents `servers` as "a list of bootstrap servers"."""
    ds = kd.KafkaDataset([topic + ":0:0:2"], servers=[kafka.servers], eof=True, timeout=200)
    assert eager_values(ds) == D[:3]


def test_config_is_applied_split_at_the_first_equals_and_arguments_win(kd, kafka, topic):
    """§2.6: valid librdkafka properties pass; `Key=Value` splits at the first '='; the
    `servers` and `group` arguments win over the same keys in config_global."""
    ds = kd.KafkaDataset(
        [topic + ":0:0:4"],
        servers=kafka.servers,
        group=kafka.new_group(),
        eof=True,
        timeout=200,
        config_global=[
            "fetch.wait.max.ms=10",
            "client.id=kd=test=client",
            "bootstrap.servers=127.0.0.1:1",
            "group.id=someone-else",
        ],
        config_topic=["auto.offset.reset=earliest"],
    )
    assert eager_values(ds) == D[:5]


def test_deeprecs_documented_config_global_is_accepted(kd, kafka, topic):
    """DeepRec's documented example repeats a property the library sets anyway
    (`enable.auto.commit=false`): accepted, and the read is unchanged. Only a conflicting value
    of a reserved property is refused, naming the key and why."""
    ds = kd.KafkaDataset(
        [topic + ":0:0:4"],
        servers=kafka.servers,
        group=kafka.new_group(),
        eof=True,
        timeout=200,
        config_global=["enable.auto.commit=false", "heartbeat.interval.ms=2000"],
    )
    assert eager_values(ds) == D[:5]
    with pytest.raises(tf.errors.InvalidArgumentError, match="enable.auto.commit.*set to false"):
        kd.KafkaDataset(
            [topic + ":0:0:4"],
            servers=kafka.servers,
            config_global=["enable.auto.commit=true"],
        )
