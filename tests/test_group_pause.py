"""Staying in the group through pauses (issue 16 §2): a consumer-group member whose training
loop stops pulling elements for longer than ``max.poll.interval.ms`` (a long evaluation, a slow
checkpoint) is not evicted: its service thread serves the consumer while the iterator is idle.
Without it librdkafka takes the member out of the group at ``max.poll.interval.ms`` and the
member rejoins on its next read: two more rebalances, and what it emitted since its last commit
read again."""

import time

from helpers import BASE_TS

MAX_POLL_MS = 2000  # librdkafka requires max.poll.interval.ms >= session.timeout.ms
CONFIG = [
    "session.timeout.ms=2000",
    "heartbeat.interval.ms=500",
    "max.poll.interval.ms=%d" % MAX_POLL_MS,
    "auto.commit.interval.ms=100000",  # no periodic commit hides a repeat
]


def member_stats(kd, topic):
    return max((s for s in kd.stats() if topic in s["topics"]), key=lambda s: s["id"])


def test_a_pause_longer_than_max_poll_interval_keeps_the_member_in_its_group(kd, kafka):
    topic = kafka.new_topic(2)
    delivered = kafka.produce(topic, [(i % 2, "m%03d" % i, None, BASE_TS + i) for i in range(300)])
    ds = kd.KafkaDataset(
        [topic],
        servers=kafka.servers,
        group=kafka.new_group(),
        subscribe=True,
        timeout=300,
        config_global=CONFIG,
    )
    it = iter(ds)
    got = [next(it).numpy() for _ in range(100)]
    before = member_stats(kd, topic)["rebalances"]
    assert before >= 1  # the initial assignment
    # The pause under test: 2.5 x max.poll.interval.ms without a read.
    time.sleep(2.5 * MAX_POLL_MS / 1000)
    got += [next(it).numpy() for _ in range(200)]
    assert sorted(got) == sorted(d.value for d in delivered), "lost or repeated"
    assert member_stats(kd, topic)["rebalances"] == before, "the member left its group"
