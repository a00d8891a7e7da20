//! Reader tests against librdkafka's mock cluster (in-process brokers with fault injection).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use kafka_dataset::{DatasetSpec, ErrorKind, Next, Reader};
use rand::{Rng, SeedableRng};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

const WAIT: Duration = Duration::from_millis(100);

struct Cluster {
    mock: MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    producer: BaseProducer,
}

impl Cluster {
    fn new(topic: &str, partitions: i32) -> Self {
        Self::with_brokers(topic, partitions, 1)
    }

    /// `brokers` brokers (ids 1..=brokers); the topic is replicated on all of them.
    fn with_brokers(topic: &str, partitions: i32, brokers: i32) -> Self {
        let mock = MockCluster::new(brokers).expect("mock cluster");
        mock.create_topic(topic, partitions, brokers)
            .expect("topic");
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", mock.bootstrap_servers())
            .set("linger.ms", "0")
            .create()
            .expect("producer");
        Cluster { mock, producer }
    }

    fn servers(&self) -> String {
        self.mock.bootstrap_servers()
    }

    /// Queues `value` for `topic:partition` with CreateTime `ts`; [`Cluster::flush`] delivers.
    fn produce(&self, topic: &str, partition: i32, ts: i64, key: Option<&str>, value: &str) {
        let mut record = BaseRecord::to(topic)
            .partition(partition)
            .payload(value)
            .timestamp(ts);
        if let Some(k) = key {
            record = record.key(k);
        }
        self.producer
            .send(record)
            .map_err(|(e, _)| e)
            .expect("send");
    }

    /// Waits until every queued message is delivered.
    fn flush(&self) {
        self.producer.flush(Duration::from_secs(10)).expect("flush");
    }
}

fn spec(servers: &str, topics: &[&str], eof: bool, timeout_ms: i64) -> DatasetSpec {
    let topics: Vec<String> = topics.iter().map(|s| s.to_string()).collect();
    DatasetSpec::new(&topics, servers, "", eof, timeout_ms, &[], &[]).expect("valid spec")
}

/// One element: (partition, offset, timestamp, value).
type Element = (i32, i64, i64, String);

/// Reads until the end (eof=true) or `limit` elements, failing after `deadline`.
fn read(reader: &mut Reader, limit: usize, deadline: Duration) -> Vec<Element> {
    let stop = Instant::now() + deadline;
    let mut out = Vec::new();
    while out.len() < limit {
        assert!(
            Instant::now() < stop,
            "no end after {deadline:?}; got {} elements",
            out.len()
        );
        match reader.next(WAIT).expect("next") {
            Next::Element => {
                let (m, s) = reader.current();
                let value = String::from_utf8(m.value().unwrap_or_default().to_vec()).unwrap();
                out.push((s.partition, m.offset, m.timestamp, value));
            }
            Next::Pending => {}
            Next::End => break,
        }
    }
    out
}

/// Independent k-way merge of per-partition lists by (timestamp, stream index, offset).
fn expected_merge(per_partition: &[Vec<(i64, i64, String)>], order: &[i32]) -> Vec<Element> {
    let mut heap = BinaryHeap::new();
    let mut cursor = vec![0usize; order.len()];
    for (i, &p) in order.iter().enumerate() {
        if let Some((off, ts, _)) = per_partition[p as usize].first() {
            heap.push(Reverse((*ts, i, *off)));
        }
    }
    let mut out = Vec::new();
    while let Some(Reverse((_, i, _))) = heap.pop() {
        let p = order[i];
        let (off, ts, v) = per_partition[p as usize][cursor[i]].clone();
        out.push((p, off, ts, v));
        cursor[i] += 1;
        if let Some((off, ts, _)) = per_partition[p as usize].get(cursor[i]) {
            heap.push(Reverse((*ts, i, *off)));
        }
    }
    out
}

fn random_partitions(
    cluster: &Cluster,
    topic: &str,
    partitions: i32,
    per: usize,
    seed: u64,
) -> Vec<Vec<(i64, i64, String)>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut data = vec![Vec::new(); partitions as usize];
    for p in 0..partitions {
        let mut ts = 1_700_000_000_000i64;
        for offset in 0..per as i64 {
            // Small steps make cross-partition ties likely; one step goes backwards.
            ts += rng.gen_range(0..3);
            let t = if offset == 3 { ts - 10 } else { ts };
            let value = format!("p{p}-o{offset}");
            cluster.produce(topic, p, t, None, &value);
            data[p as usize].push((offset, t, value));
        }
    }
    cluster.flush();
    data
}

#[test]
fn eof_read_is_the_exact_k_way_merge() {
    let c = Cluster::new("orders", 4);
    let data = random_partitions(&c, "orders", 4, 25, 7);
    // Stream order = first entry position: 2, 0, 3, 1.
    let mut r = Reader::new(&spec(
        &c.servers(),
        &["orders:2", "orders:0", "orders:3", "orders:1"],
        true,
        1000,
    ))
    .unwrap();
    let got = read(&mut r, usize::MAX, Duration::from_secs(30));
    assert_eq!(got, expected_merge(&data, &[2, 0, 3, 1]));
}

#[test]
fn save_then_restore_continues_at_the_next_message() {
    let c = Cluster::new("events", 3);
    random_partitions(&c, "events", 3, 20, 11);
    let s = spec(&c.servers(), &["events"], true, 1000);
    let full = read(
        &mut Reader::new(&s).unwrap(),
        usize::MAX,
        Duration::from_secs(30),
    );
    assert_eq!(full.len(), 60);
    for cut in [0usize, 1, 17, 59, 60] {
        let mut first = Reader::new(&s).unwrap();
        let prefix = read(&mut first, cut, Duration::from_secs(30));
        let state = first.save().to_vec();
        drop(first);
        let mut second = Reader::new(&s).unwrap();
        second.restore(&state).unwrap();
        let suffix = read(&mut second, usize::MAX, Duration::from_secs(30));
        assert_eq!([prefix, suffix].concat(), full, "cut at {cut}");
    }
}

/// Position apart from connection: resolving costs one short-lived probe, a restore creates no
/// client, and the first read creates the one consumer; restoring a reader that was reading
/// drops its consumer and the next read makes one.
#[cfg(feature = "test-hooks")]
#[test]
fn a_restore_replaces_only_the_position() {
    use kafka_dataset::consumers_created_on_this_thread as created;
    let c = Cluster::new("clients", 2);
    random_partitions(&c, "clients", 2, 20, 5);
    let s = spec(&c.servers(), &["clients"], true, 1000);
    let wait = Duration::from_secs(30);
    let full = read(&mut Reader::new(&s).unwrap(), usize::MAX, wait);
    let mut first = Reader::new(&s).unwrap();
    let prefix = read(&mut first, 7, wait);
    let state = first.save().to_vec();

    let before = created();
    let mut second = Reader::new(&s).unwrap();
    assert_eq!(created() - before, 1, "the probe that resolves the entries");
    second.restore(&state).unwrap();
    assert_eq!(created() - before, 1, "a restore creates no client");
    let suffix = read(&mut second, usize::MAX, wait);
    assert_eq!(created() - before, 2, "the first read creates the consumer");
    assert_eq!([prefix.clone(), suffix].concat(), full);

    let before = created();
    first.restore(&state).unwrap();
    let again = read(&mut first, usize::MAX, wait);
    assert_eq!(
        created() - before,
        1,
        "one consumer after restoring a reading reader"
    );
    assert_eq!([prefix, again].concat(), full);
}

#[test]
fn chained_ranges_and_inclusive_last() {
    let c = Cluster::new("d", 1);
    for i in 0..10 {
        c.produce("d", 0, 1000 + i, None, &format!("D{i}"));
    }
    c.flush();
    let values = |entries: &[&str]| -> Vec<String> {
        let mut r = Reader::new(&spec(&c.servers(), entries, true, 500)).unwrap();
        read(&mut r, usize::MAX, Duration::from_secs(20))
            .into_iter()
            .map(|e| e.3)
            .collect()
    };
    assert_eq!(values(&["d:0:0:4"]), ["D0", "D1", "D2", "D3", "D4"]);
    assert_eq!(values(&["d:0:5:-1"]), ["D5", "D6", "D7", "D8", "D9"]);
    assert_eq!(values(&["d:0:5:-1", "d:0:0:4"]).len(), 10);
    assert_eq!(values(&["d:0:1:2", "d:0:7:8"]), ["D1", "D2", "D7", "D8"]);
}

#[test]
fn idle_partition_costs_the_timeout_once_not_per_element() {
    let c = Cluster::new("busy", 3);
    for i in 0..60 {
        c.produce("busy", i % 2, 5000 + i as i64, None, "x");
    }
    c.flush();
    // Partition 2 stays empty: caught up, so it may hold the merge back for `timeout` once.
    let mut r = Reader::new(&spec(&c.servers(), &["busy"], false, 300)).unwrap();
    let start = Instant::now();
    let got = read(&mut r, 60, Duration::from_secs(20));
    assert_eq!(got.len(), 60);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    // Streaming: data produced after the read started arrives, in order.
    c.produce("busy", 2, 9000, None, "late-arrival");
    c.flush();
    let more = read(&mut r, 1, Duration::from_secs(10));
    assert_eq!(more[0].3, "late-arrival");
}

#[test]
fn broker_outage_blocks_without_error_and_recovers() {
    let c = Cluster::new("flaky", 1);
    c.produce("flaky", 0, 1, None, "before");
    c.flush();
    let mut r = Reader::new(&spec(&c.servers(), &["flaky"], false, 200)).unwrap();
    assert_eq!(read(&mut r, 1, Duration::from_secs(10))[0].3, "before");
    c.mock.broker_down(1).unwrap();
    // While the broker is down, next() returns Pending within its wait, never an error.
    let t = Instant::now();
    assert_eq!(r.next(Duration::from_millis(300)).unwrap(), Next::Pending);
    assert!(t.elapsed() < Duration::from_secs(2));
    c.mock.broker_up(1).unwrap();
    c.produce("flaky", 0, 2, None, "after");
    c.flush();
    assert_eq!(read(&mut r, 1, Duration::from_secs(30))[0].3, "after");
}

#[test]
fn unknown_topic_and_partition_are_not_found() {
    let c = Cluster::new("known", 2);
    let err = Reader::new(&spec(&c.servers(), &["known:5"], true, 100))
        .err()
        .unwrap();
    assert_eq!(err.kind, ErrorKind::NotFound);
    assert!(err.message.contains("known:5"), "{}", err.message);
    let err = Reader::new(&spec(&c.servers(), &["missing-topic:0"], true, 100))
        .err()
        .unwrap();
    assert_eq!(err.kind, ErrorKind::NotFound, "{}", err.message);
    assert!(err.message.contains("missing-topic"), "{}", err.message);
}

#[test]
fn restore_refuses_other_streams() {
    let c = Cluster::new("a", 2);
    let mut r = Reader::new(&spec(&c.servers(), &["a:0"], true, 100)).unwrap();
    let state = r.save().to_vec();
    let mut other = Reader::new(&spec(&c.servers(), &["a:1"], true, 100)).unwrap();
    let err = other.restore(&state).unwrap_err();
    assert_eq!(err.kind, ErrorKind::FailedPrecondition);
    assert!(
        err.message.contains("a:0") && err.message.contains("a:1"),
        "{}",
        err.message
    );
    let err = other.restore(b"garbage").unwrap_err();
    assert_eq!(err.kind, ErrorKind::FailedPrecondition);
}

#[test]
fn unreachable_brokers_are_unavailable_after_a_bounded_deadline() {
    // A port nothing listens on: bind, read the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let start = Instant::now();
    let err = Reader::new(&spec(&format!("127.0.0.1:{port}"), &["t:0"], true, 100))
        .err()
        .unwrap();
    assert_eq!(err.kind, ErrorKind::Unavailable, "{}", err.message);
    assert!(err.message.contains("unreachable"), "{}", err.message);
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn position_below_the_log_start_is_data_loss_unless_a_reset_policy_is_set() {
    // The mock cluster keeps at most 5 MB (and 100k batches) per partition: producing more
    // moves the log start exactly like retention does.
    let c = Cluster::new("retained", 1);
    let payload = "x".repeat(100_000);
    for i in 0..120i64 {
        c.produce("retained", 0, i, None, &payload);
    }
    c.flush();
    let mut r = Reader::new(&spec(&c.servers(), &["retained:0:0"], true, 100)).unwrap();
    let stop = Instant::now() + Duration::from_secs(30);
    let err = loop {
        assert!(Instant::now() < stop, "no DataLoss");
        match r.next(WAIT) {
            Err(e) => break e,
            Ok(Next::Element) => panic!("read a deleted offset: {}", r.current().0.offset),
            Ok(_) => {}
        }
    };
    assert_eq!(err.kind, ErrorKind::DataLoss, "{}", err.message);
    assert!(
        err.message.contains("retained:0") && err.message.contains("offset 0"),
        "{}",
        err.message
    );
    // Opting into a reset policy skips to the log start instead.
    let topics = vec!["retained:0:0".to_string()];
    let reset = vec!["auto.offset.reset=earliest".to_string()];
    let s = DatasetSpec::new(&topics, &c.servers(), "", true, 100, &[], &reset).unwrap();
    let mut r = Reader::new(&s).unwrap();
    let first = read(&mut r, 1, Duration::from_secs(30));
    let log_start = first[0].1;
    assert!(log_start > 0, "first offset {log_start}");
    // ... and counts exactly what it skipped: offsets 0..log_start.
    assert_eq!(r.counters().skipped, log_start as u64);
    assert_eq!(r.counters().messages, 1);
    // A bounded range counts only the offsets it wanted: 2..=4 of the deleted ones.
    let topics = vec![
        "retained:0:2:4".to_string(),
        "retained:0:100:-1".to_string(),
    ];
    let s = DatasetSpec::new(&topics, &c.servers(), "", true, 100, &[], &reset).unwrap();
    let mut r = Reader::new(&s).unwrap();
    let first = read(&mut r, 1, Duration::from_secs(30));
    assert_eq!(
        first[0].1,
        100.max(log_start),
        "continues in the next range"
    );
    assert_eq!(
        r.counters().skipped,
        3 + (log_start - 100).max(0) as u64,
        "log start {log_start}"
    );
    // `latest` skips to the log end: with eof nothing is left to read.
    let latest = vec!["auto.offset.reset=latest".to_string()];
    let s = DatasetSpec::new(&topics[..1], &c.servers(), "", true, 100, &[], &latest).unwrap();
    let mut r = Reader::new(&s).unwrap();
    assert!(read(&mut r, 1, Duration::from_secs(30)).is_empty());
    assert_eq!(r.counters().skipped, 3);
}

#[test]
fn a_group_gets_the_offsets_of_emitted_messages_committed() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let c = Cluster::new("progress", 2);
    for i in 0..40 {
        c.produce("progress", i % 2, 100 + i as i64, None, "m");
    }
    c.flush();
    let topics = vec!["progress".to_string()];
    let s = DatasetSpec::new(&topics, &c.servers(), "trainers", true, 100, &[], &[]).unwrap();
    let mut r = Reader::new(&s).unwrap();
    let got = read(&mut r, 5, Duration::from_secs(10));
    r.commit_position();
    let next = |p: i32| {
        got.iter()
            .filter(|e| e.0 == p)
            .map(|e| e.1 + 1)
            .max()
            .unwrap_or(0)
    };
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", c.servers())
        .set("group.id", "trainers")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition("progress", 0);
    tpl.add_partition("progress", 1);
    let stop = Instant::now() + Duration::from_secs(20);
    loop {
        let committed = probe
            .committed_offsets(tpl.clone(), Duration::from_secs(5))
            .unwrap();
        let offsets: Vec<Offset> = (0..2)
            .map(|p| committed.find_partition("progress", p).unwrap().offset())
            .collect();
        if offsets == [Offset::Offset(next(0)), Offset::Offset(next(1))] {
            break;
        }
        for (p, o) in offsets.iter().enumerate() {
            if let Offset::Offset(o) = o {
                assert!(
                    *o <= next(p as i32),
                    "committed {o} beyond emitted on partition {p}"
                );
            }
        }
        assert!(Instant::now() < stop, "commit never arrived: {offsets:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(r);
    // The `stored` start resumes where the group's commits left off.
    let topics = vec!["progress:1:stored".to_string()];
    let s = DatasetSpec::new(&topics, &c.servers(), "trainers", true, 100, &[], &[]).unwrap();
    let resumed = read(&mut Reader::new(&s).unwrap(), 1, Duration::from_secs(10));
    assert_eq!(resumed[0].1, next(1));
    let err = DatasetSpec::new(&topics, &c.servers(), "", true, 100, &[], &[]).unwrap_err();
    assert!(
        err.message.contains("needs a consumer group"),
        "{}",
        err.message
    );
}

#[test]
fn a_start_beyond_the_log_end_ends_with_eof_and_is_refused_without() {
    let c = Cluster::new("short", 1);
    for i in 0..3 {
        c.produce("short", 0, i, None, "m");
    }
    c.flush();
    let mut r = Reader::new(&spec(&c.servers(), &["short:0:50"], true, 100)).unwrap();
    assert!(read(&mut r, usize::MAX, Duration::from_secs(10)).is_empty());
    // Found when the iterator starts, not at the broker's first answer.
    let err = Reader::new(&spec(&c.servers(), &["short:0:50"], false, 100))
        .err()
        .expect("no error for an offset beyond the end");
    assert_eq!(err.kind, ErrorKind::InvalidArgument, "{}", err.message);
    assert!(
        err.message.contains("\"short:0:50\"")
            && err.message.contains("offset 50 is beyond the end")
            && err.message.contains("next offset 3"),
        "{}",
        err.message
    );
}

#[test]
fn an_explicit_reset_moves_a_start_beyond_the_log_end_back_and_counts_it() {
    let c = Cluster::new("short", 1);
    for i in 0..3 {
        c.produce("short", 0, i, None, "m");
    }
    c.flush();
    let with_policy = |policy: &str, eof: bool| {
        let s = DatasetSpec::new(
            &["short:0:50".to_string()],
            &c.servers(),
            "",
            eof,
            100,
            &[],
            &[format!("auto.offset.reset={policy}")],
        )
        .unwrap();
        Reader::new(&s)
    };
    let mut r = with_policy("earliest", true).unwrap();
    let got = read(&mut r, usize::MAX, Duration::from_secs(10));
    assert_eq!(got.iter().map(|m| m.1).collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(r.counters().rewound, 50);
    let mut r = with_policy("latest", true).unwrap();
    assert!(read(&mut r, usize::MAX, Duration::from_secs(10)).is_empty());
    assert_eq!(
        (r.counters().rewound, r.position(0).unwrap().next_offset),
        (47, 3)
    );
    // `error` refuses even with eof, where the default ends the partition.
    let err = with_policy("error", true).err().expect("refused");
    assert_eq!(err.kind, ErrorKind::InvalidArgument, "{}", err.message);
    assert!(
        err.message.contains("auto.offset.reset=error"),
        "{}",
        err.message
    );
}

#[test]
fn native_batches_concatenate_to_the_merge_and_save_exactly() {
    let c = Cluster::new("batches", 3);
    random_partitions(&c, "batches", 3, 30, 5);
    let s = spec(&c.servers(), &["batches"], true, 500);
    let full = read(
        &mut Reader::new(&s).unwrap(),
        usize::MAX,
        Duration::from_secs(30),
    );
    let mut r = Reader::new(&s).unwrap();
    let mut got = Vec::new();
    let stop = Instant::now() + Duration::from_secs(30);
    let mut saved = None;
    loop {
        assert!(Instant::now() < stop, "no end");
        match r.next_batch(8, WAIT).unwrap() {
            Next::Element => {
                let batch: Vec<(i32, i64)> =
                    r.batch().map(|(m, s)| (s.partition, m.offset)).collect();
                assert!((1..=8).contains(&batch.len()));
                got.extend(batch);
                if saved.is_none() && got.len() >= 20 {
                    saved = Some((got.len(), r.save().to_vec()));
                }
            }
            Next::Pending => {}
            Next::End => break,
        }
    }
    let order: Vec<(i32, i64)> = full.iter().map(|e| (e.0, e.1)).collect();
    assert_eq!(got, order);
    let (at, state) = saved.unwrap();
    let mut restored = Reader::new(&s).unwrap();
    restored.restore(&state).unwrap();
    let rest: Vec<(i32, i64)> = read(&mut restored, usize::MAX, Duration::from_secs(30))
        .iter()
        .map(|e| (e.0, e.1))
        .collect();
    assert_eq!(rest, order[at..]);
}

#[test]
fn a_worker_without_partitions_ends_only_with_eof() {
    let c = Cluster::new("few", 2);
    c.produce("few", 0, 1000, None, "a");
    c.produce("few", 1, 1001, None, "b");
    c.flush();
    // 5 workers over 2 partitions: find the workers that own nothing.
    let empty: Vec<i64> = (0..5)
        .filter(|&i| {
            let a = kafka_dataset::Assignment::new(5, i).unwrap();
            !(0..2).any(|p| a.owns("few", p))
        })
        .collect();
    assert_eq!(empty.len(), 3);
    for eof in [true, false] {
        let s = spec(&c.servers(), &["few"], eof, 100)
            .with_assignment(kafka_dataset::Assignment::new(5, empty[0]).unwrap());
        let mut r = Reader::new(&s).unwrap();
        let next = r.next(Duration::from_millis(300)).unwrap();
        // An unlimited read never ends, even with nothing to read.
        assert_eq!(next, if eof { Next::End } else { Next::Pending });
    }
}

/// Produces messages `from..to` round-robin over `partitions` partitions of `topic`, with
/// increasing timestamps; returns per partition its `(offset, timestamp, value)` list, offsets
/// continuing from `offsets`.
fn numbered(
    cluster: &Cluster,
    topic: &str,
    partitions: i32,
    range: std::ops::Range<i64>,
    data: &mut Vec<Vec<(i64, i64, String)>>,
) {
    data.resize(partitions as usize, Vec::new());
    for i in range {
        let p = (i % partitions as i64) as i32;
        let value = format!("m{i:04}");
        let ts = 1_700_000_000_000 + i * 5;
        cluster.produce(topic, p, ts, None, &value);
        let offset = data[p as usize].len() as i64;
        data[p as usize].push((offset, ts, value));
    }
    cluster.flush();
}

/// A long idle deadline: with eof=false no partition is passed over during a fault, so the
/// output must be exactly the merge. One extra message per partition (the last `partitions`
/// produced) keeps every partition's head ahead of what is read.
fn exact_unlimited(servers: &str, topic: &str, partitions: i32) -> Reader {
    let entries: Vec<String> = (0..partitions).map(|p| format!("{topic}:{p}")).collect();
    let entries: Vec<&str> = entries.iter().map(String::as_str).collect();
    Reader::new(&spec(servers, &entries, false, 60_000)).unwrap()
}

#[test]
fn a_broker_outage_mid_stream_loses_and_repeats_nothing() {
    let c = Cluster::new("outage", 3);
    let mut data = Vec::new();
    numbered(&c, "outage", 3, 0..150, &mut data);
    let mut r = exact_unlimited(&c.servers(), "outage", 3);
    let mut got = read(&mut r, 60, Duration::from_secs(10));
    c.mock.broker_down(1).unwrap();
    // What was fetched before the outage may still be emitted; nothing fails.
    for _ in 0..5 {
        if r.next(WAIT).unwrap() == Next::Element {
            let (m, s) = r.current();
            let value = String::from_utf8(m.value().unwrap().to_vec()).unwrap();
            got.push((s.partition, m.offset, m.timestamp, value));
        }
    }
    c.mock.broker_up(1).unwrap();
    numbered(&c, "outage", 3, 150..303, &mut data);
    let rest = read(&mut r, 300 - got.len(), Duration::from_secs(60));
    got.extend(rest);
    let expected = expected_merge(&data, &[0, 1, 2]);
    assert_eq!(got, expected[..300]);
}

#[test]
fn transient_fetch_list_offsets_and_metadata_errors_are_retried() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let c = Cluster::new("transient", 2);
    let mut data = Vec::new();
    numbered(&c, "transient", 2, 0..80, &mut data);
    let retriable = [
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
    ];
    c.mock
        .request_errors(RDKafkaApiKey::Metadata, &retriable[1..]);
    c.mock
        .request_errors(RDKafkaApiKey::ListOffsets, &retriable);
    c.mock.request_errors(RDKafkaApiKey::Fetch, &retriable);
    // Named starts need ListOffsets; everything goes through the errors above.
    let s = spec(
        &c.servers(),
        &["transient:0:beginning", "transient:1:beginning"],
        true,
        100,
    );
    let mut r = Reader::new(&s).unwrap();
    let got = read(&mut r, usize::MAX, Duration::from_secs(60));
    assert_eq!(got, expected_merge(&data, &[0, 1]));
    // More errors in the middle of a read.
    numbered(&c, "transient", 2, 80..160, &mut data);
    let mut r = exact_unlimited(&c.servers(), "transient", 2);
    let mut got = read(&mut r, 50, Duration::from_secs(10));
    c.mock.request_errors(RDKafkaApiKey::Fetch, &retriable);
    c.mock.request_errors(
        RDKafkaApiKey::Fetch,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR__TRANSPORT],
    );
    numbered(&c, "transient", 2, 160..162, &mut data);
    got.extend(read(&mut r, 160 - 50, Duration::from_secs(60)));
    assert_eq!(got, expected_merge(&data, &[0, 1])[..160]);
}

#[test]
fn a_reader_follows_leader_moves() {
    let c = Cluster::with_brokers("moving", 2, 3);
    let mut data = Vec::new();
    numbered(&c, "moving", 2, 0..100, &mut data);
    let mut r = exact_unlimited(&c.servers(), "moving", 2);
    let mut got = read(&mut r, 30, Duration::from_secs(10));
    for (round, leader) in [2, 3, 1].into_iter().enumerate() {
        c.mock.partition_leader("moving", 0, Some(leader)).unwrap();
        c.mock
            .partition_leader("moving", 1, Some(leader % 3 + 1))
            .unwrap();
        let from = 100 + round as i64 * 50;
        numbered(&c, "moving", 2, from..from + 50, &mut data);
        got.extend(read(&mut r, 50, Duration::from_secs(60)));
    }
    numbered(&c, "moving", 2, 250..252, &mut data);
    got.extend(read(&mut r, 250 - got.len(), Duration::from_secs(60)));
    assert_eq!(got, expected_merge(&data, &[0, 1])[..250]);
}
