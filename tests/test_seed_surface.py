"""The seed's surface, tried as a DeepRec user would (issue 15 §1): the documented usage example
as written (``iterator_ops.Iterator.from_structure``, a ``Saver``, the restore in another
process), topics fed through a placeholder at initialization (DeepRec's and tf.contrib.kafka's
own tests), all eight arguments given positionally, and the ``config_global`` /
``config_topic`` values DeepRec users commonly pass. Every case reads real data from the
broker and compares it with what was produced."""

import pytest
import tensorflow as tf
from helpers import BASE_TS

N = 150
VALUES = [b"v%03d" % i for i in range(N)]


@pytest.fixture
def topic(kafka):
    name = kafka.new_topic(1)
    kafka.produce(name, [(0, VALUES[i], b"k%d" % i, BASE_TS + i) for i in range(N)])
    return name


SEED_EXAMPLE = r"""
import sys
import tensorflow.compat.v1 as tf
tf.disable_v2_behavior()
import kafka_dataset
from tensorflow.python.data.ops import iterator_ops

topic, servers, group, ckpt, mode = sys.argv[1:6]
kafka_dataset = tf.data.KafkaDataset(topics=[topic + ":0:0:-1"], servers=servers,
                                     group=group, timeout=100, eof=False)
iterator = iterator_ops.Iterator.from_structure(kafka_dataset.output_types)
init_op = iterator.make_initializer(kafka_dataset)
get_next = iterator.get_next()
saveable_obj = tf.data.experimental.make_saveable_from_iterator(iterator)
tf.add_to_collection(tf.GraphKeys.SAVEABLE_OBJECTS, saveable_obj)
saver = tf.train.Saver()
with tf.Session() as sess:
    sess.run(init_op)
    if mode == "save":
        for i in range(100):
            print("Data", sess.run(get_next))
        saver.save(sess, ckpt)
    else:
        saver.restore(sess, ckpt)
        for i in range(50):
            print("Data", sess.run(get_next))
"""


def printed(stdout):
    return [
        line[len("Data b'") : -1].encode()
        for line in stdout.splitlines()
        if line.startswith("Data")
    ]


def test_the_seeds_usage_example_as_written_saves_and_restores_in_another_process(
    kafka, topic, run_python, tmp_path
):
    group = kafka.new_group()
    ckpt = str(tmp_path / "ckpt" / "1")
    first = run_python(SEED_EXAMPLE, [topic, kafka.servers, group, ckpt, "save"], timeout=120)
    second = run_python(SEED_EXAMPLE, [topic, kafka.servers, group, ckpt, "restore"], timeout=120)
    assert printed(first.stdout) == VALUES[:100]
    assert printed(second.stdout) == VALUES[100:]


def test_topics_fed_through_a_placeholder_at_initialization(kd, kafka, topic):
    """DeepRec's and tf.contrib.kafka's own tests feed ``topics``, ``num_epochs`` and the batch
    size when the initializer runs, and re-run it with other entries."""
    graph = tf.Graph()
    with graph.as_default():
        topics = tf.compat.v1.placeholder(tf.string, shape=[None])
        num_epochs = tf.compat.v1.placeholder(tf.int64, shape=[])
        batch_size = tf.compat.v1.placeholder(tf.int64, shape=[])
        repeated = kd.KafkaDatasetV1(topics, servers=kafka.servers, group="", eof=True).repeat(
            num_epochs
        )
        batched = repeated.batch(batch_size)
        iterator = tf.compat.v1.data.Iterator.from_structure(batched.output_types)
        init_batch = iterator.make_initializer(batched)
        get_next = iterator.get_next()
    with tf.compat.v1.Session(graph=graph) as sess:
        for entries, epochs, size, expected in [
            ([topic + ":0:0:4"], 1, 1, VALUES[:5]),
            ([topic + ":0:5:-1"], 1, 50, VALUES[5:]),
            ([topic + ":0:0:4", topic + ":0:5:9"], 3, 4, VALUES[:10] * 3),
        ]:
            sess.run(init_batch, {topics: entries, num_epochs: epochs, batch_size: size})
            got = []
            while True:
                try:
                    batch = sess.run(get_next)
                except tf.errors.OutOfRangeError:
                    break
                assert 1 <= len(batch) <= size
                got.extend(batch)
            assert got == expected, entries


def test_all_eight_arguments_given_positionally(kd, kafka, topic):
    ds = kd.KafkaDataset(
        [topic + ":0:10:12"],
        kafka.servers,
        kafka.new_group(),
        True,
        200,
        ["heartbeat.interval.ms=2000"],
        ["auto.offset.reset=earliest"],
        True,
    )
    got = [(v.numpy(), k.numpy()) for v, k in ds]
    assert got == [(VALUES[i], b"k%d" % i) for i in (10, 11, 12)]


# Values DeepRec users pass (DeepRec's docs and issues, librdkafka's consumer examples), at the
# level they pass them. Legacy topic-level properties are accepted as librdkafka accepts them.
COMMON_GLOBAL = [
    "enable.auto.commit=false",
    "heartbeat.interval.ms=2000",
    "session.timeout.ms=30000",
    "max.poll.interval.ms=300000",
    "auto.commit.interval.ms=1000",
    "fetch.message.max.bytes=1048576",
    "max.partition.fetch.bytes=2097152",
    "fetch.min.bytes=1",
    "queued.max.messages.kbytes=65536",
    "queued.min.messages=10000",
    "api.version.request=true",
    "socket.keepalive.enable=true",
    "statistics.interval.ms=0",
    "client.id=deeprec-trainer",
    "security.protocol=plaintext",
    "enable.partition.eof=true",
    "enable.auto.offset.store=false",
    "auto.offset.reset=smallest",
]
COMMON_TOPIC = [
    "auto.offset.reset=earliest",
    "auto.offset.reset=smallest",
    "auto.offset.reset=beginning",
    "auto.offset.reset=latest",
    "auto.offset.reset=largest",
    "auto.offset.reset=end",
    "auto.offset.reset=error",
    "auto.commit.enable=false",
    "auto.commit.interval.ms=1000",
    "offset.store.method=broker",
    "consume.callback.max.messages=0",
]


@pytest.mark.parametrize(
    "config_global, config_topic",
    [([item], None) for item in COMMON_GLOBAL]
    + [(None, [item]) for item in COMMON_TOPIC]
    + [(COMMON_GLOBAL, ["auto.offset.reset=earliest", "auto.commit.enable=false"])],
)
def test_configs_deeprec_users_pass_are_accepted_and_read_everything(
    kd, kafka, topic, config_global, config_topic
):
    ds = kd.KafkaDataset(
        [topic + ":0:140:-1"],
        servers=kafka.servers,
        group=kafka.new_group(),
        eof=True,
        timeout=200,
        config_global=config_global,
        config_topic=config_topic,
    )
    assert [v.numpy() for v in ds] == VALUES[140:]


def test_a_tf2_user_gets_the_same_class_and_a_conflicting_reserved_key_is_named(kd, kafka, topic):
    """``tf.data.KafkaDataset`` after ``import kafka_dataset`` is this class in TF2; a config
    the library must refuse names the key and the value it needs."""
    assert tf.data.KafkaDataset is kd.KafkaDataset
    with pytest.raises(tf.errors.InvalidArgumentError) as e:
        next(
            iter(
                tf.data.KafkaDataset(
                    [topic], servers=kafka.servers, config_global=["enable.auto.commit=true"]
                )
            )
        )
    message = str(e.value)
    assert "enable.auto.commit" in message and "false" in message
