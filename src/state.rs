//! The one state codec: a versioned, self-describing, checksummed encoding of the reader's
//! position (DESIGN.md §2.5), and the identity check run before a restore.

use crate::error::{Error, ErrorKind, Result};
use crate::spec::{
    resolve_streams, Assignment, Cluster, Entry, Partitions, Range, Start, StreamSpec, EMPTY,
    UNLIMITED,
};

const MAGIC: &[u8; 4] = b"KDST";
/// Current format version. Version 2 added the worker assignment and the subscribed
/// partitions, version 3 the consumer group of a `subscribe` reader, version 4 each range's
/// time end; older states still decode (version 1: one reader owning everything; 1 and 2: no
/// group membership; 1 to 3: no time ends).
pub const FORMAT_VERSION: u16 = 4;

/// A range's time end as saved: none.
const NO_TIME_END: i64 = -1;

/// The saved position of one stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamState {
    /// The resolved stream (named starts frozen).
    pub spec: StreamSpec,
    /// The next offset not yet emitted.
    pub next_offset: i64,
    /// The stream produced its last element.
    pub finished: bool,
    /// Largest timestamp emitted so far (-1 before any), used for messages without one.
    pub partition_time: i64,
}

/// The saved position of a reader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    /// The consumer group whose member saved this (`subscribe` mode: the group assigned the
    /// partitions, and `streams` are the ones it owned then); `None` for fixed partitions.
    pub group: Option<String>,
    /// Which share of the partitions the reader owned.
    pub assignment: Assignment,
    /// Every partition the entries named (sorted), which the assignment split.
    pub partitions: Vec<(String, i32)>,
    /// One entry per owned stream, in stream order.
    pub streams: Vec<StreamState>,
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// A name as the decoder's `Cursor::text` reads it: u32 length, then the UTF-8 bytes.
fn put_text(out: &mut Vec<u8>, topic: &str) {
    out.extend_from_slice(&(topic.len() as u32).to_le_bytes());
    out.extend_from_slice(topic.as_bytes());
}

/// Encodes `state`.
pub fn encode(state: &State) -> Vec<u8> {
    encode_version(state, FORMAT_VERSION)
}

/// Encodes `state` in format `version` (2..=[`FORMAT_VERSION`]; older versions for tests of
/// the decoder, whatever they cannot hold is left out).
fn encode_version(state: &State, version: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + state.streams.len() * 64);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    if version >= 3 {
        put_text(&mut out, state.group.as_deref().unwrap_or(""));
    }
    out.extend_from_slice(&state.assignment.workers.to_le_bytes());
    out.extend_from_slice(&state.assignment.index.to_le_bytes());
    out.extend_from_slice(&(state.partitions.len() as u32).to_le_bytes());
    for (topic, partition) in &state.partitions {
        put_text(&mut out, topic);
        out.extend_from_slice(&partition.to_le_bytes());
    }
    out.extend_from_slice(&(state.streams.len() as u32).to_le_bytes());
    for s in &state.streams {
        put_text(&mut out, &s.spec.topic);
        out.extend_from_slice(&s.spec.partition.to_le_bytes());
        out.extend_from_slice(&(s.spec.ranges.len() as u32).to_le_bytes());
        for r in &s.spec.ranges {
            out.extend_from_slice(&r.start.to_le_bytes());
            out.extend_from_slice(&r.last.to_le_bytes());
            if version >= 4 {
                out.extend_from_slice(&r.until.unwrap_or(NO_TIME_END).to_le_bytes());
            }
        }
        out.extend_from_slice(&s.next_offset.to_le_bytes());
        out.push(s.finished as u8);
        out.extend_from_slice(&s.partition_time.to_le_bytes());
    }
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.data.len() < n {
            return Err(corrupt("truncated"));
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn text(&mut self) -> Result<String> {
        let len = self.u32()? as usize;
        std::str::from_utf8(self.take(len)?)
            .map(str::to_string)
            .map_err(|_| corrupt("a topic or group name is not UTF-8"))
    }
}

fn corrupt(why: &str) -> Error {
    Error::new(
        ErrorKind::FailedPrecondition,
        format!("kafka-dataset checkpoint state is corrupted: {why}"),
    )
}

/// Decodes a state, rejecting foreign, corrupted, truncated and future-version bytes.
pub fn decode(bytes: &[u8]) -> Result<State> {
    if bytes.len() < MAGIC.len() + 2 + 4 + 4 || &bytes[..4] != MAGIC {
        return Err(corrupt(
            "not a kafka-dataset state (bad magic or too short)",
        ));
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if !(1..=FORMAT_VERSION).contains(&version) {
        return Err(Error::new(
            ErrorKind::FailedPrecondition,
            format!(
                "kafka-dataset checkpoint state has format version {version}; this library reads versions 1 to {FORMAT_VERSION}"
            ),
        ));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32(body) != u32::from_le_bytes(crc.try_into().unwrap()) {
        return Err(corrupt("checksum mismatch"));
    }
    let mut c = Cursor { data: &body[6..] };
    let mut group = None;
    if version >= 3 {
        group = Some(c.text()?).filter(|g| !g.is_empty());
    }
    let mut assignment = Assignment::SOLE;
    let mut partitions = Vec::new();
    if version >= 2 {
        let (workers, index) = (c.u32()?, c.u32()?);
        assignment = Assignment::new(workers.into(), index.into())
            .map_err(|_| corrupt("bad worker assignment"))?;
        let n = c.u32()? as usize;
        // Each entry takes at least 8 bytes: never reserve more than the input can hold.
        partitions.reserve(n.min(c.data.len() / 8));
        for _ in 0..n {
            partitions.push((c.text()?, c.i32()?));
        }
    }
    let n = c.u32()? as usize;
    let mut streams = Vec::with_capacity(n.min(c.data.len() / 29));
    for _ in 0..n {
        let topic = c.text()?;
        let partition = c.i32()?;
        let nranges = c.u32()? as usize;
        let mut ranges = Vec::with_capacity(nranges.min(c.data.len() / 16));
        for _ in 0..nranges {
            let (start, last) = (c.i64()?, c.i64()?);
            let until = if version >= 4 {
                match c.i64()? {
                    NO_TIME_END => None,
                    ms if ms >= 0 => Some(ms),
                    _ => return Err(corrupt("bad time end")),
                }
            } else {
                None
            };
            ranges.push(Range { start, last, until });
        }
        let next_offset = c.i64()?;
        let finished = match c.take(1)?[0] {
            0 => false,
            1 => true,
            _ => return Err(corrupt("bad finished flag")),
        };
        let partition_time = c.i64()?;
        streams.push(StreamState {
            spec: StreamSpec {
                topic,
                partition,
                ranges,
            },
            next_offset,
            finished,
            partition_time,
        });
    }
    if !c.data.is_empty() {
        return Err(corrupt("trailing bytes"));
    }
    if version == 1 {
        // One reader owned every partition it read.
        partitions = streams
            .iter()
            .map(|s| (s.spec.topic.clone(), s.spec.partition))
            .collect();
        partitions.sort();
        partitions.dedup();
    }
    Ok(State {
        group,
        assignment,
        partitions,
        streams,
    })
}

/// Answers resolution from a checkpoint's frozen streams, so that re-resolving the dataset's
/// entries must reproduce exactly the saved streams.
struct Frozen<'a> {
    partitions: &'a [(String, i32)],
    saved: &'a [StreamSpec],
    numeric_starts: Vec<(String, i32, i64)>,
    used: Vec<(usize, usize)>,
}

impl Cluster for Frozen<'_> {
    fn partition_count(&mut self, topic: &str) -> Result<i32> {
        self.partitions
            .iter()
            .filter(|(t, _)| t == topic)
            .map(|(_, p)| p.saturating_add(1))
            .max()
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::FailedPrecondition,
                    format!("checkpoint does not match the dataset: it has no stream of topic \"{topic}\""),
                )
            })
    }

    fn resolve_start(
        &mut self,
        topic: &str,
        partition: i32,
        _: Start,
        last: i64,
        until: Option<i64>,
    ) -> Result<i64> {
        // A named start froze into a saved range start that no explicit entry accounts for.
        for (si, s) in self.saved.iter().enumerate() {
            if s.topic != topic || s.partition != partition {
                continue;
            }
            for (ri, r) in s.ranges.iter().enumerate() {
                let same_end = match until {
                    Some(_) => r.until == until,
                    None => r.until.is_none() && r.last == last,
                };
                let claimed = |o: i64| {
                    self.numeric_starts
                        .iter()
                        .any(|(t, p, n)| t == topic && *p == partition && *n == o)
                };
                if !claimed(r.start) && same_end && !self.used.contains(&(si, ri)) {
                    self.used.push((si, ri));
                    return Ok(r.start);
                }
            }
        }
        Err(Error::new(
            ErrorKind::FailedPrecondition,
            format!(
                "checkpoint does not match the dataset: no saved range for {topic}:{partition}"
            ),
        ))
    }

    fn resolve_end(&mut self, topic: &str, partition: i32, start: i64, until: i64) -> Result<i64> {
        self.saved
            .iter()
            .filter(|s| s.topic == topic && s.partition == partition)
            .flat_map(|s| &s.ranges)
            .find(|r| r.start == start && r.until == Some(until))
            .map(|r| r.last)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::FailedPrecondition,
                    format!(
                        "checkpoint does not match the dataset: no saved range of {topic}:{partition} ends at @{until}"
                    ),
                )
            })
    }
}

fn describe(streams: &[StreamSpec]) -> String {
    streams
        .iter()
        .map(|s| {
            let ranges: Vec<String> = s
                .ranges
                .iter()
                .map(|r| match (r.until, r.last) {
                    (Some(until), UNLIMITED) => format!("{}..@{until}", r.start),
                    (_, EMPTY) => format!("{}..(empty)", r.start),
                    _ => format!("{}..{}", r.start, r.last),
                })
                .collect();
            format!("{}[{}]", s.name(), ranges.join(","))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Checks that `state` was saved by this worker of this dataset: the same assignment, and
/// streams that `entries` resolve to (same topics, partitions, order and ranges), naming the
/// first difference.
pub fn check_identity(entries: &[Entry], assignment: Assignment, state: &State) -> Result<()> {
    if let Some(group) = &state.group {
        return Err(Error::new(
            ErrorKind::FailedPrecondition,
            format!(
                "checkpoint does not match the dataset: it was saved by a member of consumer group \"{group}\" (subscribe=True), this dataset reads the partitions its entries name"
            ),
        ));
    }
    if state.assignment != assignment {
        return Err(Error::new(
            ErrorKind::FailedPrecondition,
            format!(
                "checkpoint does not match the dataset: it was saved by {}, this dataset is {} (partitions are split by worker count; restore each worker from its own checkpoint with the same num_workers)",
                state.assignment, assignment
            ),
        ));
    }
    // A whole-topic entry was saved with every partition of its topic, 0..n: checked first, so
    // that a forged partition number cannot make the resolution below expand millions of them.
    for e in entries.iter().filter(|e| e.partitions == Partitions::All) {
        let mut listed = state.partitions.iter().filter(|(t, _)| *t == e.topic);
        if !listed.all({
            let mut next = 0;
            move |(_, p)| {
                next += 1;
                *p == next - 1
            }
        }) {
            return Err(Error::new(
                ErrorKind::FailedPrecondition,
                format!(
                    "checkpoint does not match the dataset: entry \"{}\" reads every partition of its topic, but the checkpoint does not hold partitions 0..n of it",
                    e.text
                ),
            ));
        }
    }
    let saved: Vec<StreamSpec> = state.streams.iter().map(|s| s.spec.clone()).collect();
    let saved = &saved[..];
    let numeric_starts = entries
        .iter()
        .filter_map(|e| match (e.partitions, e.start) {
            (crate::spec::Partitions::One(p), Start::Offset(o)) => Some((e.topic.clone(), p, o)),
            _ => None,
        })
        .collect();
    let mut frozen = Frozen {
        partitions: &state.partitions,
        saved,
        numeric_starts,
        used: Vec::new(),
    };
    let entry_list = || {
        entries
            .iter()
            .map(|e| e.text.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let resolved = resolve_streams(entries, &mut frozen, assignment).map_err(|e| {
        // "Partition does not exist" would speak of the checkpoint's partitions, not the
        // topic's: leave such details out.
        let detail = match e.kind {
            ErrorKind::NotFound => String::new(),
            _ => format!(" ({})", e.message),
        };
        Error::new(
            ErrorKind::FailedPrecondition,
            format!(
                "checkpoint does not match the dataset: the checkpoint holds streams {} but the dataset's entries are {}{detail}",
                describe(saved),
                entry_list(),
            ),
        )
    })?;
    if resolved.partitions != state.partitions {
        let only = |a: &[(String, i32)], b: &[(String, i32)]| {
            let names: Vec<String> = a
                .iter()
                .filter(|p| !b.contains(p))
                .map(|(t, p)| format!("{t}:{p}"))
                .collect();
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(" ")
            }
        };
        return Err(Error::new(
            ErrorKind::FailedPrecondition,
            format!(
                "checkpoint does not match the dataset: partitions only in the checkpoint: {}; only in the dataset's entries ({}): {}",
                only(&state.partitions, &resolved.partitions),
                entry_list(),
                only(&resolved.partitions, &state.partitions)
            ),
        ));
    }
    let expected = resolved.streams;
    if expected.len() != saved.len() {
        return Err(Error::new(
            ErrorKind::FailedPrecondition,
            format!(
                "checkpoint does not match the dataset: it has {} streams ({}), the dataset {} ({})",
                saved.len(),
                describe(saved),
                expected.len(),
                describe(&expected)
            ),
        ));
    }
    for (i, (want, got)) in expected.iter().zip(saved).enumerate() {
        if want != got {
            return Err(Error::new(
                ErrorKind::FailedPrecondition,
                format!(
                    "checkpoint does not match the dataset: stream {i} is {} in the checkpoint but {} in the dataset",
                    describe(std::slice::from_ref(got)),
                    describe(std::slice::from_ref(want))
                ),
            ));
        }
    }
    Ok(())
}

/// Checks that `state` was saved by a member of `group` (`subscribe` mode) reading topics
/// among `entries`: the partitions it owned then are where the next owner may resume.
pub fn check_group_identity(entries: &[Entry], group: &str, state: &State) -> Result<()> {
    let mismatch = |what: String| {
        Error::new(
            ErrorKind::FailedPrecondition,
            format!("checkpoint does not match the dataset: {what}"),
        )
    };
    match state.group.as_deref() {
        None => Err(mismatch(format!(
            "it was saved by a reader of fixed partitions, this dataset is a member of consumer group \"{group}\" (subscribe=True)"
        ))),
        Some(saved) if saved != group => Err(mismatch(format!(
            "it was saved by a member of consumer group \"{saved}\", this dataset joins group \"{group}\""
        ))),
        Some(_) => match state
            .streams
            .iter()
            .find(|s| !entries.iter().any(|e| e.topic == s.spec.topic))
        {
            Some(s) => Err(mismatch(format!(
                "it holds a position in {}, whose topic the dataset does not subscribe to",
                s.spec.name()
            ))),
            None => Ok(()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::parse_entries;

    fn stream(topic: &str, partition: i32, ranges: &[(i64, i64)]) -> StreamSpec {
        StreamSpec {
            topic: topic.into(),
            partition,
            ranges: ranges
                .iter()
                .map(|&(start, last)| Range::new(start, last))
                .collect(),
        }
    }

    /// A state of one reader owning `streams` (a version 1 state decodes to this).
    fn sole(streams: Vec<StreamSpec>) -> State {
        let mut partitions: Vec<(String, i32)> = streams
            .iter()
            .map(|s| (s.topic.clone(), s.partition))
            .collect();
        partitions.sort();
        partitions.dedup();
        State {
            group: None,
            assignment: Assignment::SOLE,
            partitions,
            streams: streams
                .into_iter()
                .map(|spec| StreamState {
                    next_offset: spec.ranges.first().map_or(0, |r| r.start),
                    spec,
                    finished: false,
                    partition_time: -1,
                })
                .collect(),
        }
    }

    fn sample() -> State {
        State {
            group: None,
            assignment: Assignment {
                workers: 3,
                index: 1,
            },
            partitions: vec![("a".into(), 0), ("a".into(), 1), ("b.x".into(), 2)],
            streams: vec![
                StreamState {
                    spec: stream("a", 0, &[(0, 4), (5, -1)]),
                    next_offset: 3,
                    finished: false,
                    partition_time: 17,
                },
                StreamState {
                    spec: stream("b.x", 2, &[(9, -1)]),
                    next_offset: 9,
                    finished: true,
                    partition_time: -1,
                },
            ],
        }
    }

    #[test]
    fn round_trips() {
        assert_eq!(decode(&encode(&sample())).unwrap(), sample());
        let empty = sole(vec![]);
        assert_eq!(decode(&encode(&empty)).unwrap(), empty);
    }

    #[test]
    fn rejects_every_truncation_and_bit_flip() {
        let bytes = encode(&sample());
        for n in 0..bytes.len() {
            let e = decode(&bytes[..n]).unwrap_err();
            assert_eq!(e.kind, ErrorKind::FailedPrecondition);
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(decode(&b).is_err(), "flip at {i} accepted");
        }
    }

    #[test]
    fn rejects_future_versions_by_number() {
        let mut b = encode(&sample());
        b[4] = 5;
        assert!(decode(&b).unwrap_err().message.contains("format version 5"));
    }

    #[test]
    fn round_trips_a_group_members_state() {
        let member = State {
            group: Some("trainers".into()),
            ..sole(vec![stream("a", 3, &[(120, -1)])])
        };
        assert_eq!(decode(&encode(&member)).unwrap(), member);
    }

    #[test]
    fn decodes_version_2_states() {
        // Version 2: no group name, no time ends.
        let v2 = encode_version(&sample(), 2);
        assert_eq!(&v2[4..6], &[2, 0]);
        assert_eq!(decode(&v2).unwrap(), sample());
        // Version 3: no time ends.
        let v3 = encode_version(&sample(), 3);
        assert_eq!(v3.len() + 8 * 3, encode(&sample()).len(), "3 ranges");
        assert_eq!(decode(&v3).unwrap(), sample());
    }

    #[test]
    fn identity_accepts_frozen_time_ends_of_the_same_entries_only() {
        let entries = parse_entries(&["a:0:100:-1".into(), "a:1:beginning:@500".into()]).unwrap();
        let timed = |last, until| StreamSpec {
            topic: "a".into(),
            partition: 1,
            ranges: vec![Range {
                start: 3,
                last,
                until: Some(until),
            }],
        };
        let state = |first: StreamSpec, second: StreamSpec| sole(vec![first, second]);
        for (first, second) in [
            (stream("a", 0, &[(100, -1)]), timed(49, 500)),
            // The end still open, or an empty window.
            (stream("a", 0, &[(100, -1)]), timed(UNLIMITED, 500)),
            (stream("a", 0, &[(100, -1)]), timed(EMPTY, 500)),
        ] {
            check_identity(&entries, Assignment::SOLE, &state(first, second)).unwrap();
        }
        for (first, second) in [
            (stream("a", 0, &[(101, -1)]), timed(49, 500)),
            (stream("a", 0, &[(40, -1)]), timed(49, 500)),
            (stream("a", 0, &[(100, -1)]), timed(49, 600)),
            (stream("a", 0, &[(100, -1)]), stream("a", 1, &[(3, 49)])),
        ] {
            let e = check_identity(&entries, Assignment::SOLE, &state(first, second)).unwrap_err();
            assert_eq!(e.kind, ErrorKind::FailedPrecondition, "{e}");
        }
    }

    #[test]
    fn round_trips_time_ends_and_empty_ranges() {
        let mut state = sample();
        state.streams[0].spec.ranges = vec![
            Range {
                start: 0,
                last: EMPTY,
                until: Some(5),
            },
            Range {
                start: 7,
                last: UNLIMITED,
                until: Some(1_700_000_000_000),
            },
        ];
        assert_eq!(decode(&encode(&state)).unwrap(), state);
    }

    #[test]
    fn group_identity_names_the_group_and_the_mode() {
        let entries = parse_entries(&["a".into(), "b".into()]).unwrap();
        let member = State {
            group: Some("g1".into()),
            ..sole(vec![stream("a", 3, &[(120, -1)])])
        };
        check_group_identity(&entries, "g1", &member).unwrap();
        let e = check_group_identity(&entries, "g2", &member).unwrap_err();
        assert!(
            e.message.contains("\"g1\"") && e.message.contains("\"g2\""),
            "{e}"
        );
        let only_b = parse_entries(&["b".into()]).unwrap();
        let e = check_group_identity(&only_b, "g1", &member).unwrap_err();
        assert!(e.message.contains("a:3"), "{e}");
        let fixed = sole(vec![stream("a", 3, &[(0, -1)])]);
        let e = check_group_identity(&entries, "g1", &fixed).unwrap_err();
        assert!(e.message.contains("fixed partitions"), "{e}");
        let e = check_identity(&entries, Assignment::SOLE, &member).unwrap_err();
        assert_eq!(e.kind, ErrorKind::FailedPrecondition);
        assert!(e.message.contains("subscribe=True"), "{e}");
    }

    #[test]
    fn decodes_version_1_states() {
        // Written by version 1 (kafka-dataset before worker assignment): stream a:0 with
        // ranges 0..4 and 5..-1 at next offset 3, partition time 17.
        let v1 = V1_SAMPLE
            .split_whitespace()
            .map(|h| u8::from_str_radix(h, 16).unwrap())
            .collect::<Vec<u8>>();
        let state = decode(&v1).unwrap();
        assert_eq!(state.assignment, Assignment::SOLE);
        assert_eq!(state.partitions, [("a".to_string(), 0)]);
        assert_eq!(state.streams.len(), 1);
        assert_eq!(state.streams[0].spec, stream("a", 0, &[(0, 4), (5, -1)]));
        assert_eq!(
            (
                state.streams[0].next_offset,
                state.streams[0].partition_time
            ),
            (3, 17)
        );
    }

    const V1_SAMPLE: &str = "4b 44 53 54 01 00 01 00 00 00 01 00 00 00 61 00 00 00 00 02 00 00 00 00 00 00 00 00 00 00 00 04 00 00 00 00 00 00 00 05 00 00 00 00 00 00 00 ff ff ff ff ff ff ff ff 03 00 00 00 00 00 00 00 00 11 00 00 00 00 00 00 00 9a 02 0d 25";

    #[test]
    fn identity_matches_named_starts_by_their_last_offset() {
        let entries = parse_entries(&["t:0:@500:-1".into(), "t:0:@100:40".into()]).unwrap();
        let saved = sole(vec![stream("t", 0, &[(3, 40), (50, -1)])]);
        check_identity(&entries, Assignment::SOLE, &saved).unwrap();
    }

    #[test]
    fn identity_accepts_own_resolution_and_names_differences() {
        let entries =
            parse_entries(&["a:0:0:4".into(), "a:0:5:-1".into(), "b.x:2:end".into()]).unwrap();
        let saved = sole(sample().streams.into_iter().map(|s| s.spec).collect());
        check_identity(&entries, Assignment::SOLE, &saved).unwrap();
        let other =
            parse_entries(&["a:0:0:4".into(), "a:0:5:-1".into(), "b.x:1:end".into()]).unwrap();
        let e = check_identity(&other, Assignment::SOLE, &saved).unwrap_err();
        assert_eq!(e.kind, ErrorKind::FailedPrecondition);
        let other =
            parse_entries(&["a:0:0:3".into(), "a:0:5:-1".into(), "b.x:2:end".into()]).unwrap();
        assert!(check_identity(&other, Assignment::SOLE, &saved)
            .unwrap_err()
            .message
            .contains("a:0[0..4,5..-1]"));
        let other = parse_entries(&["c:0".into()]).unwrap();
        assert!(check_identity(&other, Assignment::SOLE, &saved)
            .unwrap_err()
            .message
            .contains("topic \"c\""));
        let reordered =
            parse_entries(&["b.x:2:end".into(), "a:0:0:4".into(), "a:0:5:-1".into()]).unwrap();
        assert!(check_identity(&reordered, Assignment::SOLE, &saved).is_err());
    }

    #[test]
    fn identity_refuses_another_assignment() {
        let entries = parse_entries(&["a".into(), "b".into()]).unwrap();
        let all = vec![("a".into(), 0), ("a".into(), 1), ("b".into(), 0)];
        // Worker 1 of 2 owns a:1 and b:0 (FNV-1a of "a" is even, of "b" odd).
        let state = State {
            group: None,
            assignment: Assignment {
                workers: 2,
                index: 1,
            },
            partitions: all.clone(),
            streams: sole(vec![stream("a", 1, &[(0, -1)]), stream("b", 0, &[(0, -1)])]).streams,
        };
        let mine = Assignment::new(2, 1).unwrap();
        check_identity(&entries, mine, &state).unwrap();
        for (workers, index) in [(2, 0), (3, 1), (1, 0)] {
            let e = check_identity(&entries, Assignment::new(workers, index).unwrap(), &state)
                .unwrap_err();
            assert_eq!(e.kind, ErrorKind::FailedPrecondition);
            assert!(
                e.message.contains("worker 1 of 2")
                    && e.message.contains(&format!("worker {index} of {workers}")),
                "{e}"
            );
        }
        // Another subscribed set splits differently.
        let more = parse_entries(&["a".into(), "b".into(), "c:0".into()]).unwrap();
        assert!(check_identity(&more, mine, &state).is_err());
    }
}
