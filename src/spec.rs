//! The one parser of subscription entries `topic:partition:offset:last` (DESIGN.md §2.1) and
//! their resolution into streams (one per partition, chained ranges).

use crate::error::{Error, ErrorKind, Result};

/// Where a range starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// An explicit offset (>= 0).
    Offset(i64),
    /// The log start, resolved once at iterator start.
    Beginning,
    /// The log end, resolved once at iterator start.
    End,
    /// The first offset whose timestamp is >= this epoch-ms value.
    Timestamp(i64),
    /// The consumer group's committed offset (the log start when the group has none).
    Stored,
}

/// Which partitions an entry names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Partitions {
    /// One explicit partition.
    One(i32),
    /// Every partition of the topic (the `"t"` form), resolved from metadata.
    All,
}

/// Sentinel for "no last offset".
pub const UNLIMITED: i64 = -1;

/// Sentinel `last` of an empty range: a time window with no message in it (`"t:0:@T0:@T1"`
/// where no offset's timestamp falls in [T0, T1)). Every offset is past it.
pub const EMPTY: i64 = i64::MIN;

/// One parsed subscription entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The entry text as given, for error messages.
    pub text: String,
    /// Topic name.
    pub topic: String,
    /// Partition selection.
    pub partitions: Partitions,
    /// First offset to read.
    pub start: Start,
    /// Last offset to read, inclusive; [`UNLIMITED`] for none (also when `until` ends it).
    pub last: i64,
    /// `@<epoch-ms>` as the last field: the entry ends before the first message whose
    /// timestamp is >= this time.
    pub until: Option<i64>,
}

impl Entry {
    /// Whether this entry names partition `partition` of its topic.
    pub fn names(&self, partition: i32) -> bool {
        match self.partitions {
            Partitions::All => true,
            Partitions::One(p) => p == partition,
        }
    }
}

/// An inclusive offset range of one partition; `last == UNLIMITED` means open-ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// First offset.
    pub start: i64,
    /// Last offset, inclusive, [`UNLIMITED`], or [`EMPTY`].
    pub last: i64,
    /// The entry's time end (`@<epoch-ms>` as its last field), kept after `last` froze so a
    /// checkpoint names its entry. While `last` is [`UNLIMITED`] the range ends at the first
    /// message whose timestamp is >= this time (the cursor freezes `last` then).
    pub until: Option<i64>,
}

impl Range {
    /// A range from `start` to `last` (inclusive, or [`UNLIMITED`]) without a time end.
    pub fn new(start: i64, last: i64) -> Self {
        Range {
            start,
            last,
            until: None,
        }
    }

    /// Whether `offset` is past this range.
    #[inline]
    pub fn is_past(&self, offset: i64) -> bool {
        self.last != UNLIMITED && offset > self.last
    }

    /// Whether the range holds no offset.
    pub fn is_empty(&self) -> bool {
        self.last != UNLIMITED && self.last < self.start
    }

    /// The time end still to be found by reading: a time end whose `last` is not frozen yet.
    #[inline]
    pub fn open_until(&self) -> Option<i64> {
        self.until.filter(|_| self.last == UNLIMITED)
    }
}

/// The `last` of a range from `start` that ends just before `offset` ([`EMPTY`] when nothing
/// lies between).
pub fn last_before(start: i64, offset: i64) -> i64 {
    if offset > start {
        offset - 1
    } else {
        EMPTY
    }
}

/// One partition to read: its chained, disjoint ranges in offset order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSpec {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
    /// Disjoint ranges in increasing offset order.
    pub ranges: Vec<Range>,
}

impl StreamSpec {
    /// `topic:partition`, for messages.
    pub fn name(&self) -> String {
        format!("{}:{}", self.topic, self.partition)
    }
}

/// Which share of the subscribed partitions one reader owns when a job's workers split them.
/// Partition `p` of topic `t` belongs to worker `(fnv1a32(t) + p) % workers` (FNV-1a over the
/// topic name's UTF-8 bytes): each topic's partitions are dealt round-robin from a start that
/// depends on its name. The owner of a partition depends on nothing else, so workers that see
/// different partition counts (a topic grew between their starts) still never share a
/// partition, and adding partitions never moves existing ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// Number of workers sharing the partitions (>= 1).
    pub workers: u32,
    /// This worker's index, `0..workers`.
    pub index: u32,
}

impl Assignment {
    /// One reader owns everything.
    pub const SOLE: Assignment = Assignment {
        workers: 1,
        index: 0,
    };

    /// Validates `num_workers` / `worker_index`.
    pub fn new(workers: i64, index: i64) -> Result<Self> {
        if !(1..=65_536).contains(&workers) {
            return Err(Error::invalid(format!(
                "num_workers must be in 1..=65536, got {workers}"
            )));
        }
        if !(0..workers).contains(&index) {
            return Err(Error::invalid(format!(
                "worker_index must be in 0..{workers} (num_workers), got {index}"
            )));
        }
        Ok(Assignment {
            workers: workers as u32,
            index: index as u32,
        })
    }

    /// Whether this worker owns partition `partition` of `topic`.
    pub fn owns(&self, topic: &str, partition: i32) -> bool {
        let start = u64::from(fnv1a32(topic.as_bytes()));
        let position = start + u64::try_from(partition).unwrap_or(0);
        position % u64::from(self.workers) == u64::from(self.index)
    }
}

/// 32-bit FNV-1a, the documented hash of [`Assignment`].
fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash: u32, &b| {
        (hash ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

impl std::fmt::Display for Assignment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "worker {} of {}", self.index, self.workers)
    }
}

/// The streams one reader reads, and every partition the entries name (which the assignment
/// split), sorted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// This reader's streams, in the order of each partition's first entry.
    pub streams: Vec<StreamSpec>,
    /// All subscribed partitions, sorted by topic then partition.
    pub partitions: Vec<(String, i32)>,
}

/// Checks a Kafka topic name: 1..=249 characters of `[A-Za-z0-9._-]`, not `.` or `..`.
pub fn validate_topic(topic: &str) -> std::result::Result<(), String> {
    if topic.is_empty() {
        return Err("topic is empty".into());
    }
    if topic.len() > 249 {
        return Err(format!(
            "topic is {} characters long (at most 249)",
            topic.len()
        ));
    }
    if topic == "." || topic == ".." {
        return Err(format!("topic \"{topic}\" is not a legal name"));
    }
    if let Some(c) = topic
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "topic \"{topic}\" contains {c:?} (legal: letters, digits, '.', '_', '-')"
        ));
    }
    Ok(())
}

fn parse_int(field: &str) -> Option<i64> {
    let digits = field.strip_prefix('-').unwrap_or(field);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    field.parse().ok()
}

fn parse_start(field: &str) -> std::result::Result<Start, String> {
    match field {
        "beginning" => Ok(Start::Beginning),
        "end" => Ok(Start::End),
        "stored" => Ok(Start::Stored),
        _ => {
            if let Some(ms) = field.strip_prefix('@') {
                return match parse_int(ms) {
                    Some(ms) if ms >= 0 => Ok(Start::Timestamp(ms)),
                    _ => Err(format!(
                        "offset \"{field}\" is not @<epoch-ms> with a non-negative integer"
                    )),
                };
            }
            match parse_int(field) {
                Some(o) if o >= 0 => Ok(Start::Offset(o)),
                _ => Err(format!(
                    "offset \"{field}\" is not an integer >= 0, \"beginning\", \"end\", \"stored\" or \"@<epoch-ms>\""
                )),
            }
        }
    }
}

/// Parses one entry.
pub fn parse_entry(text: &str) -> std::result::Result<Entry, String> {
    let fields: Vec<&str> = text.split(':').collect();
    if fields.len() > 4 {
        return Err(format!(
            "has {} fields; expected topic[:partition[:offset[:last]]]",
            fields.len()
        ));
    }
    let topic = fields[0];
    validate_topic(topic)?;
    let partitions = match fields.get(1) {
        // `"t"` and `"t::@T0"` alike: every partition.
        None | Some(&"") => Partitions::All,
        Some(p) => match parse_int(p) {
            Some(p) if (0..=i32::MAX as i64).contains(&p) => Partitions::One(p as i32),
            _ => return Err(format!("partition \"{p}\" is not an integer >= 0")),
        },
    };
    let start = match fields.get(2) {
        None => Start::Offset(0),
        Some(f) => parse_start(f)?,
    };
    let (last, until) = match fields.get(3) {
        None => (UNLIMITED, None),
        Some(f) => match (f.strip_prefix('@'), parse_int(f)) {
            (Some(ms), _) => match parse_int(ms) {
                Some(ms) if ms >= 0 => (UNLIMITED, Some(ms)),
                _ => {
                    return Err(format!(
                        "last \"{f}\" is not @<epoch-ms> with a non-negative integer"
                    ))
                }
            },
            (None, Some(l)) if l >= UNLIMITED => (l, None),
            _ => {
                return Err(format!(
                    "last \"{f}\" is not an integer >= -1 or \"@<epoch-ms>\""
                ))
            }
        },
    };
    if let (Start::Timestamp(from), Some(until)) = (start, until) {
        if until <= from {
            return Err(format!(
                "the time window is empty or reversed: end @{until} is not after start @{from}"
            ));
        }
    }
    if let Start::Offset(o) = start {
        if last != UNLIMITED && last < o {
            return Err(format!(
                "last {last} is below offset {o} (last is inclusive; -1 = unlimited)"
            ));
        }
    }
    Ok(Entry {
        text: text.to_string(),
        topic: topic.to_string(),
        partitions,
        start,
        last,
        until,
    })
}

/// Parses all entries, naming the first bad one, and rejects overlaps that are already
/// visible before any broker is asked (explicit offsets of the same partition).
pub fn parse_entries(entries: &[String]) -> Result<Vec<Entry>> {
    if entries.is_empty() {
        return Err(Error::invalid("topics is empty: give at least one entry"));
    }
    let parsed = entries
        .iter()
        .enumerate()
        .map(|(i, text)| {
            parse_entry(text)
                .map_err(|why| Error::invalid(format!("topics[{i}] \"{text}\": {why}")))
        })
        .collect::<Result<Vec<_>>>()?;
    check_static_overlaps(&parsed)?;
    Ok(parsed)
}

fn overlap_error(a: &str, b: &str) -> Error {
    Error::invalid(format!(
        "topics entries \"{a}\" and \"{b}\" overlap: ranges of one partition must be disjoint"
    ))
}

fn check_static_overlaps(entries: &[Entry]) -> Result<()> {
    for (i, a) in entries.iter().enumerate() {
        for b in &entries[i + 1..] {
            if a.topic != b.topic {
                continue;
            }
            let overlap = match (a.partitions, b.partitions) {
                (Partitions::All, _) | (_, Partitions::All) => true,
                (Partitions::One(p), Partitions::One(q)) if p == q => {
                    match (a.start, b.start) {
                        // A time end is unknown yet: as far as it may reach, unlimited.
                        (Start::Offset(x), Start::Offset(y)) => {
                            ranges_overlap(Range::new(x, a.last), Range::new(y, b.last))
                        }
                        _ => false, // named starts are checked once resolved
                    }
                }
                _ => false,
            };
            if overlap {
                return Err(overlap_error(&a.text, &b.text));
            }
        }
    }
    Ok(())
}

fn ranges_overlap(a: Range, b: Range) -> bool {
    if a.is_empty() || b.is_empty() {
        return false;
    }
    let (lo, hi) = if a.start <= b.start { (a, b) } else { (b, a) };
    lo.last == UNLIMITED || lo.last >= hi.start
}

/// What resolution needs from the cluster; implemented over rdkafka by the consumer and by
/// fakes in tests.
pub trait Cluster {
    /// Number of partitions of `topic` (NotFound when the topic does not exist).
    fn partition_count(&mut self, topic: &str) -> Result<i32>;
    /// Resolves a named start of one partition to an offset; `last` and `until` are the
    /// entry's end (they identify the entry when several name one partition).
    fn resolve_start(
        &mut self,
        topic: &str,
        partition: i32,
        start: Start,
        last: i64,
        until: Option<i64>,
    ) -> Result<i64>;
    /// Resolves a time end of one partition read from `start`: the `last` offset before the
    /// first message whose timestamp is >= `until` ([`last_before`]); when no message has
    /// such a timestamp yet, the last offset of the log if `until` has passed by the wall
    /// clock, else [`UNLIMITED`] (the reader finds the end as messages arrive).
    fn resolve_end(&mut self, topic: &str, partition: i32, start: i64, until: i64) -> Result<i64>;
}

/// Resolves entries into the streams `assignment` owns: expands the all-partitions form,
/// checks partitions exist, freezes named starts (only of owned partitions: nothing is asked
/// of the cluster for the others), and chains the ranges of one partition in offset order.
/// Stream order is the position of each partition's first entry.
pub fn resolve_streams(
    entries: &[Entry],
    cluster: &mut dyn Cluster,
    assignment: Assignment,
) -> Result<Resolved> {
    let mut per_entry: Vec<Vec<i32>> = Vec::with_capacity(entries.len());
    for entry in entries {
        let count = cluster.partition_count(&entry.topic)?;
        per_entry.push(match entry.partitions {
            Partitions::All => (0..count).collect(),
            Partitions::One(p) if p < count => vec![p],
            Partitions::One(p) => {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!(
                    "topics entry \"{}\": partition {p} does not exist (topic \"{}\" has {count})",
                    entry.text, entry.topic
                ),
                ))
            }
        });
    }
    let mut partitions: Vec<(String, i32)> = entries
        .iter()
        .zip(&per_entry)
        .flat_map(|(e, ps)| ps.iter().map(|&p| (e.topic.clone(), p)))
        .collect();
    partitions.sort();
    partitions.dedup();

    let mut streams: Vec<StreamSpec> = Vec::new();
    let mut sources: Vec<Vec<String>> = Vec::new(); // entry texts per stream, for errors
    for (entry, entry_partitions) in entries.iter().zip(&per_entry) {
        for &partition in entry_partitions {
            if !assignment.owns(&entry.topic, partition) {
                continue;
            }
            let range = resolve_range(cluster, entry, partition)?;
            match streams
                .iter()
                .position(|s| s.topic == entry.topic && s.partition == partition)
            {
                Some(i) => {
                    streams[i].ranges.push(range);
                    sources[i].push(entry.text.clone());
                }
                None => {
                    streams.push(StreamSpec {
                        topic: entry.topic.clone(),
                        partition,
                        ranges: vec![range],
                    });
                    sources.push(vec![entry.text.clone()]);
                }
            }
        }
    }
    for (stream, texts) in streams.iter_mut().zip(&sources) {
        let mut order: Vec<usize> = (0..stream.ranges.len()).collect();
        order.sort_by_key(|&i| stream.ranges[i].start);
        // Neighbours in start order, empty ranges aside (one between two others would hide
        // their overlap).
        let filled: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&i| !stream.ranges[i].is_empty())
            .collect();
        for w in filled.windows(2) {
            if ranges_overlap(stream.ranges[w[0]], stream.ranges[w[1]]) {
                return Err(overlap_error(&texts[w[0]], &texts[w[1]]));
            }
        }
        stream.ranges = order.iter().map(|&i| stream.ranges[i]).collect();
    }
    Ok(Resolved {
        streams,
        partitions,
    })
}

/// Resolves the range `entry` reads of `partition`: freezes a named start and a time end.
pub fn resolve_range(cluster: &mut dyn Cluster, entry: &Entry, partition: i32) -> Result<Range> {
    let start = match entry.start {
        Start::Offset(o) => o,
        named => cluster.resolve_start(&entry.topic, partition, named, entry.last, entry.until)?,
    };
    if entry.last != UNLIMITED && entry.last < start {
        return Err(Error::invalid(format!(
            "topics entry \"{}\": last {} is below the resolved start offset {start} of {}:{partition}",
            entry.text, entry.last, entry.topic
        )));
    }
    let last = match entry.until {
        Some(until) => cluster.resolve_end(&entry.topic, partition, start, until)?,
        None => entry.last,
    };
    Ok(Range {
        start,
        last,
        until: entry.until,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_full_and_short_forms() {
        let e = parse_entry("t:0:5:9").unwrap();
        assert_eq!(
            (e.partitions, e.start, e.last),
            (Partitions::One(0), Start::Offset(5), 9)
        );
        let e = parse_entry("t").unwrap();
        assert_eq!(
            (e.partitions, e.start, e.last),
            (Partitions::All, Start::Offset(0), UNLIMITED)
        );
        assert_eq!(parse_entry("t:3").unwrap().start, Start::Offset(0));
        assert_eq!(parse_entry("t:3:end").unwrap().start, Start::End);
        assert_eq!(parse_entry("t:3:stored").unwrap().start, Start::Stored);
        assert_eq!(
            parse_entry("t:3:beginning:-1").unwrap().start,
            Start::Beginning
        );
        assert_eq!(
            parse_entry("t:3:@1700000000000").unwrap().start,
            Start::Timestamp(1_700_000_000_000)
        );
    }

    #[test]
    fn rejects_malformed_entries_naming_the_field() {
        for (text, needle) in [
            ("", "topic is empty"),
            (":0", "topic is empty"),
            ("t:x", "partition \"x\""),
            ("t:-1", "partition \"-1\""),
            ("t:0:abc", "offset \"abc\""),
            ("t:0:-3", "offset \"-3\""),
            ("t:0:@x", "offset \"@x\""),
            ("t:0:5:3", "last 3 is below offset 5"),
            ("t::@20:@10", "end @10 is not after start @20"),
            ("t:0:@10:@10", "end @10 is not after start @10"),
            ("t:0:0:@", "last \"@\""),
            ("t:0:0:@-5", "last \"@-5\""),
            ("t:0:0:-2", "last \"-2\""),
            ("t:0:0:1:2", "5 fields"),
            ("bad topic", "contains ' '"),
            ("..", "not a legal name"),
        ] {
            let err = parse_entry(text).unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn an_empty_partition_field_means_every_partition_and_last_may_be_a_time() {
        for (text, start) in [
            ("t::@5", Start::Timestamp(5)),
            ("t::beginning:-1", Start::Beginning),
            ("t::end", Start::End),
            ("t:", Start::Offset(0)),
        ] {
            let e = parse_entry(text).unwrap();
            assert_eq!((e.partitions, e.start), (Partitions::All, start), "{text}");
        }
        let e = parse_entry("t::@5:@9").unwrap();
        assert_eq!(
            (e.start, e.last, e.until),
            (Start::Timestamp(5), UNLIMITED, Some(9))
        );
        let e = parse_entry("t:3:0:@9").unwrap();
        assert_eq!(
            (e.partitions, e.last, e.until),
            (Partitions::One(3), UNLIMITED, Some(9))
        );
        // A time end is unknown before resolution: a later range of the partition may overlap.
        assert!(parse_entries(&strings(&["t:0:0:@9", "t:0:5:-1"])).is_err());
    }

    #[test]
    fn time_ends_freeze_into_ranges_or_stay_open() {
        // FakeCluster: the first offset with timestamp >= t is t / 10; none from t = 10000 on.
        let e = parse_entries(&strings(&["a::0:@500", "b:0:@1000:@10000"])).unwrap();
        let streams = resolve_streams(&e, &mut FakeCluster, Assignment::SOLE)
            .unwrap()
            .streams;
        let with_until = |start, last, until| Range {
            start,
            last,
            until: Some(until),
        };
        assert_eq!(streams.len(), 4);
        assert_eq!(streams[0].ranges, [with_until(0, 49, 500)]);
        assert_eq!(streams[3].ranges, [with_until(50, UNLIMITED, 10_000)]);
        // A window without messages is an empty range, never an error nor an unlimited one.
        let e = parse_entries(&strings(&["b:0:beginning:@5", "b:0:60:@300"])).unwrap();
        let ranges = &resolve_streams(&e, &mut FakeCluster, Assignment::SOLE)
            .unwrap()
            .streams[0]
            .ranges;
        assert_eq!(
            ranges,
            &[with_until(0, EMPTY, 5), with_until(60, EMPTY, 300)]
        );
        assert!(ranges.iter().all(|r| r.is_empty() && r.is_past(r.start)));
        assert_eq!(last_before(0, 0), EMPTY);
        // An empty range between two overlapping ones does not hide their overlap.
        let e = parse_entries(&strings(&[
            "b:0:beginning:150",
            "b:0:@200:@300",
            "b:0:100:200",
        ]))
        .unwrap();
        let err = resolve_streams(&e, &mut FakeCluster, Assignment::SOLE).unwrap_err();
        assert!(err.message.contains("overlap"), "{err}");
        assert_eq!(last_before(3, 9), 8);
    }

    #[test]
    fn rejects_overlaps_and_names_both_entries() {
        let err = parse_entries(&strings(&["t:0:0:10", "t:0:5:20"])).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument);
        assert!(err.message.contains("t:0:0:10") && err.message.contains("t:0:5:20"));
        assert!(parse_entries(&strings(&["t:0:0:-1", "t:0:5:20"])).is_err());
        assert!(parse_entries(&strings(&["t", "t:1:5:20"])).is_err());
        assert!(parse_entries(&strings(&["t:0:0:4", "t:0:5:-1", "t:1:0:4"])).is_ok());
        assert!(parse_entries(&[]).is_err());
    }

    struct FakeCluster;
    impl Cluster for FakeCluster {
        fn partition_count(&mut self, topic: &str) -> Result<i32> {
            match topic {
                "a" => Ok(3),
                "b" => Ok(1),
                _ => Err(Error::new(
                    ErrorKind::NotFound,
                    format!("topic \"{topic}\""),
                )),
            }
        }
        fn resolve_start(
            &mut self,
            _: &str,
            partition: i32,
            start: Start,
            _: i64,
            _: Option<i64>,
        ) -> Result<i64> {
            Ok(match start {
                Start::Beginning => 0,
                Start::End => 100 + partition as i64,
                Start::Timestamp(_) => 50,
                Start::Stored => 7,
                Start::Offset(o) => o,
            })
        }
        // Partition p holds a message with timestamp >= t at offset t / 10 (none from 1000 on).
        fn resolve_end(&mut self, _: &str, _: i32, start: i64, until: i64) -> Result<i64> {
            Ok(match until {
                ..=9_999 => last_before(start, until / 10),
                _ => UNLIMITED,
            })
        }
    }

    #[test]
    fn resolves_all_partitions_chains_and_orders_streams() {
        let entries = parse_entries(&strings(&["b:0:5:-1", "a", "b:0:0:4"])).unwrap();
        let streams = resolve_streams(&entries, &mut FakeCluster, Assignment::SOLE)
            .unwrap()
            .streams;
        let names: Vec<String> = streams.iter().map(|s| s.name()).collect();
        assert_eq!(names, ["b:0", "a:0", "a:1", "a:2"]);
        assert_eq!(
            streams[0].ranges,
            [Range::new(0, 4), Range::new(5, UNLIMITED)]
        );
    }

    #[test]
    fn resolution_errors() {
        let e = parse_entries(&strings(&["a:3"])).unwrap();
        assert_eq!(
            resolve_streams(&e, &mut FakeCluster, Assignment::SOLE)
                .unwrap_err()
                .kind,
            ErrorKind::NotFound
        );
        let e = parse_entries(&strings(&["zz:0"])).unwrap();
        assert_eq!(
            resolve_streams(&e, &mut FakeCluster, Assignment::SOLE)
                .unwrap_err()
                .kind,
            ErrorKind::NotFound
        );
        // `end` resolves to 101 on partition 1, beyond last = 10.
        let e = parse_entries(&strings(&["a:1:end:10"])).unwrap();
        assert!(resolve_streams(&e, &mut FakeCluster, Assignment::SOLE)
            .unwrap_err()
            .message
            .contains("below the resolved start"));
        // Named start resolves into an earlier open range.
        let e = parse_entries(&strings(&["a:0:0:-1", "a:0:@5"])).unwrap();
        assert!(resolve_streams(&e, &mut FakeCluster, Assignment::SOLE)
            .unwrap_err()
            .message
            .contains("overlap"));
    }

    #[test]
    fn assignment_gives_every_partition_one_owner_by_name_and_number() {
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        let entries = parse_entries(&strings(&["b:0", "a"])).unwrap();
        let mut seen = Vec::new();
        for index in 0..3 {
            let a = Assignment::new(3, index).unwrap();
            let r = resolve_streams(&entries, &mut FakeCluster, a).unwrap();
            assert_eq!(
                r.partitions,
                [
                    ("a".to_string(), 0),
                    ("a".to_string(), 1),
                    ("a".to_string(), 2),
                    ("b".to_string(), 0)
                ]
            );
            for s in &r.streams {
                let start = fnv1a32(s.topic.as_bytes()) as u64;
                assert_eq!((start + s.partition as u64) % 3, index as u64);
                seen.push(s.name());
            }
        }
        seen.sort();
        assert_eq!(seen, ["a:0", "a:1", "a:2", "b:0"]);
        // A topic's partitions go round-robin from its start: 0xe40c292c % 3 = 1.
        let owner = |p| (0..3).find(|&i| Assignment::new(3, i).unwrap().owns("a", p));
        let owners: Vec<_> = (0..3).map(owner).collect();
        assert_eq!(owners, [Some(1), Some(2), Some(0)]);
        for (workers, index) in [(0, 0), (2, 2), (2, -1), (65_537, 0)] {
            let e = Assignment::new(workers, index).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidArgument);
        }
    }
}
