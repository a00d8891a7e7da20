//! Bounded, deterministic fuzzing of the parsers that take untrusted input: subscription
//! entries (`spec::parse_entries`), `Key=Value` config items (`config::parse_properties`) and
//! checkpoint bytes (`state::decode`).
//!
//! Why not cargo-fuzz: it needs nightly Rust and CI has stable only. This is an ordinary
//! integration test: a small xorshift mutator (flips, overwrites, inserts, deletions, dictionary
//! tokens, splices) mutates the seed corpus committed in `fuzz/corpus/<target>/`. Every input
//! comes from an RNG seeded with the target, the corpus file index and the iteration, so a run
//! tries the same inputs in the same order; only how many fit in the budget varies.
//!
//! Corpus formats: `entries` and `config` files are text, one entry or item per line (one
//! trailing newline ignored); `state` files are raw encodings.
//!
//! Budget per target: `KAFKA_DATASET_FUZZ_SECONDS` (default 3), or exactly
//! `KAFKA_DATASET_FUZZ_ITERATIONS` mutated inputs when that is set. Run longer with
//!     KAFKA_DATASET_FUZZ_SECONDS=600 cargo test --release --test fuzz_inputs
//! A failure prints the target, corpus file, iteration, RNG seed and the input in hex: save the
//! bytes as a new file in `fuzz/corpus/<target>/` to keep it as a regression seed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use kafka_dataset::config::{is_secret_key, parse_properties, Scope};
use kafka_dataset::spec::{parse_entries, parse_entry, validate_topic, Entry, Partitions, Start};
use kafka_dataset::spec::{Assignment, Range, StreamSpec, UNLIMITED};
use kafka_dataset::state::{decode, encode, State, StreamState, FORMAT_VERSION};
use kafka_dataset::ErrorKind;

/// Largest single allocation `state::decode` may make, whatever the input says. (It reserves
/// at most 64Ki elements for a count field: about 5 MiB of streams for a 30-byte input.)
const DECODE_ALLOC_LIMIT: usize = 16 << 20;
const DECODE_TIME_LIMIT: Duration = Duration::from_millis(500);

// Records this thread's largest allocation, so the state target can bound decode's.
thread_local!(static LARGEST: Cell<usize> = const { Cell::new(0) });
struct Recording;
// SAFETY: every call is forwarded unchanged to the system allocator (`alloc_zeroed` defaults
// to `alloc`).
unsafe impl GlobalAlloc for Recording {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        record(size);
        System.realloc(ptr, layout, size)
    }
}
fn record(size: usize) {
    let _ = LARGEST.try_with(|m| m.set(m.get().max(size)));
}
#[global_allocator]
static ALLOCATOR: Recording = Recording;

/// Writes to stderr directly, which `cargo test` shows without `--nocapture`.
macro_rules! report {
    ($($arg:tt)*) => {
        let _ = writeln!(std::io::stderr(), $($arg)*);
    };
}

/// xorshift64* seeded through splitmix64.
struct Rng(u64);
impl Rng {
    fn new(seed: u64) -> Self {
        let z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        Rng((z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// One fuzz target: its dictionary, how it builds an input from a seed, and its properties.
struct Target {
    name: &'static str,
    dict: &'static [&'static [u8]],
    /// Turns a corpus seed into the base to mutate (may replace it).
    base: fn(&mut Rng, Vec<u8>) -> Vec<u8>,
    /// Runs after mutation.
    post: fn(&mut Rng, &mut Vec<u8>),
    check: fn(&[u8]),
}

fn mutate(rng: &mut Rng, data: &mut Vec<u8>, dict: &[&[u8]], corpus: &[Vec<u8>]) {
    for _ in 0..1 + rng.below(4) {
        let (len, at) = (data.len(), rng.below(data.len() + 1));
        match rng.below(10) {
            0 if at < len => data[at] ^= 1 << rng.below(8),
            1 if at < len => data[at] = rng.next() as u8,
            2 => data.insert(at, rng.next() as u8),
            3 => drop(data.drain(at..(at + 1 + rng.below(8)).min(len))),
            4 => drop(data.splice(at..at, rng.pick(dict).iter().copied())),
            5 => {
                let token = rng.pick(dict);
                let end = (at + token.len()).min(len);
                drop(data.splice(at..end, token.iter().copied()));
            }
            6 if len > 1 => data.swap(at.min(len - 1), rng.below(len)),
            7 => data.truncate(at),
            8 => {
                let end = (at + 1 + rng.below(64)).min(len);
                let chunk = data[at..end].to_vec();
                drop(data.splice(at..at, chunk));
            }
            _ => {
                let other = rng.pick(corpus);
                let from = rng.below(other.len() + 1);
                data.truncate(at);
                data.extend_from_slice(&other[from..]);
            }
        }
    }
    data.truncate(8192);
}

fn fuzz(target: &Target) {
    let dir = format!("{}/fuzz/corpus/{}", env!("CARGO_MANIFEST_DIR"), target.name);
    let listing = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir}: {e}"));
    let mut files: Vec<_> = listing.map(|f| f.unwrap().path()).collect();
    files.sort();
    let corpus: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    assert!(!corpus.is_empty(), "empty corpus {dir}");
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<f64>().ok());
    let seconds = env("KAFKA_DATASET_FUZZ_SECONDS").unwrap_or(3.0);
    let iterations = env("KAFKA_DATASET_FUZZ_ITERATIONS").map(|n| n as u64);
    let fnv = |h: u64, b: u8| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    let name_hash = target.name.bytes().fold(0xcbf2_9ce4_8422_2325, fnv);
    let started = Instant::now();
    let mut done = 0u64;
    // Iterations 0..corpus.len() check the seeds as committed; the rest mutate them.
    for k in 0u64.. {
        let mutated = k >= corpus.len() as u64;
        let budget_left = match iterations {
            Some(n) => done < n,
            None => started.elapsed().as_secs_f64() < seconds,
        };
        if mutated && !budget_left {
            break;
        }
        let file = (k % corpus.len() as u64) as usize;
        let seed = name_hash ^ ((file as u64) << 40) ^ k;
        let mut input = corpus[file].clone();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            if mutated {
                let mut rng = Rng::new(seed);
                input = (target.base)(&mut rng, input.clone());
                mutate(&mut rng, &mut input, target.dict, &corpus);
                (target.post)(&mut rng, &mut input);
            }
            (target.check)(&input);
        }));
        if let Err(panic) = outcome {
            let (name, path, len) = (target.name, files[file].display(), input.len());
            let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
            report!("fuzz {name}: FAILED at iteration {k} (seed file {path}, mutated: {mutated}, rng seed {seed:#x})");
            report!("  input ({len} bytes): {hex}");
            report!("  keep it: echo {hex} | xxd -r -p > {dir}/regression-{seed:x}");
            resume_unwind(panic);
        }
        done += u64::from(mutated);
    }
    let (name, seeds, took) = (target.name, corpus.len(), started.elapsed());
    report!("fuzz {name}: {seeds} seeds + {done} mutated inputs in {took:.2?}");
}

fn keep(_: &mut Rng, seed: Vec<u8>) -> Vec<u8> {
    seed
}
fn nothing(_: &mut Rng, _: &mut Vec<u8>) {}

/// A corpus file (or mutated input) as lines: lossy UTF-8, one trailing newline ignored.
fn lines(input: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(input);
    let text = text.strip_suffix('\n').unwrap_or(&text);
    text.split('\n').map(str::to_string).collect()
}

// ---- entries ---------------------------------------------------------------------------------

/// Separators, named starts, edge numbers, unicode digits and letters, NUL, a long topic.
#[rustfmt::skip]
const ENTRY_TOKENS: &[&[u8]] = &[
    b":", b"@", b"-", b"-1", b"0", b"\n", b"beginning", b"end", b"stored", b"2147483647",
    b"2147483648", b"9223372036854775807", b"9223372036854775808", b"-0", b"+1", b" ",
    "é".as_bytes(), "🦀".as_bytes(), "٣".as_bytes(), b"\0", b"..", b"::", b":@", b"::@1:@2", &[b'a'; 250],
];

#[test]
fn fuzz_entries() {
    fuzz(&Target {
        name: "entries",
        dict: ENTRY_TOKENS,
        base: keep,
        post: nothing,
        check: |input| {
            let entries = lines(input);
            for entry in &entries {
                check_entries(std::slice::from_ref(entry));
            }
            check_entries(&entries);
        },
    });
}

/// Errors are InvalidArgument and name the entry in full: the first one that fails alone, by
/// index, or else the two overlapping entries. Parsed entries are the text's fields.
fn check_entries(entries: &[String]) {
    let parsed = match parse_entries(entries) {
        Ok(parsed) => parsed,
        Err(e) => {
            assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
            match entries.iter().position(|text| parse_entry(text).is_err()) {
                Some(i) => {
                    let tag = format!("topics[{i}]");
                    let named = e.message.contains(&tag) && e.message.contains(&entries[i]);
                    assert!(named, "{e}: does not name {tag}");
                }
                None => {
                    let quoted = |t: &&String| e.message.contains(&format!("\"{t}\""));
                    let named = entries.iter().filter(quoted).count();
                    assert!(named >= 2, "{e}: does not name the two entries");
                }
            }
            return;
        }
    };
    assert_eq!(parsed.len(), entries.len());
    for (entry, text) in parsed.iter().zip(entries) {
        check_fields(entry, text);
    }
}

fn check_fields(e: &Entry, text: &str) {
    let fields: Vec<&str> = text.split(':').collect();
    let int = |f: &str| f.parse::<i64>().ok();
    assert_eq!((e.text.as_str(), e.topic.as_str()), (text, fields[0]));
    assert!(validate_topic(&e.topic).is_ok(), "{text:?}");
    let partition = match (e.partitions, fields.get(1)) {
        (Partitions::All, None | Some(&"")) => -1,
        (Partitions::One(p), Some(f)) if p >= 0 && int(f) == Some(p.into()) => p,
        other => panic!("{text:?}: partitions {other:?}"),
    };
    let timestamp = |f: &str| f.strip_prefix('@').and_then(int);
    let start = match (e.start, fields.get(2).copied()) {
        (Start::Offset(0), None) => "0".to_string(),
        (Start::Offset(o), Some(f)) if o >= 0 && int(f) == Some(o) => o.to_string(),
        (Start::Timestamp(t), Some(f)) if t >= 0 && timestamp(f) == Some(t) => format!("@{t}"),
        (Start::Beginning, Some("beginning")) | (Start::End, Some("end")) => fields[2].into(),
        (Start::Stored, Some("stored")) => fields[2].into(),
        other => panic!("{text:?}: start {other:?}"),
    };
    let last = match (e.last, e.until, fields.get(3)) {
        (UNLIMITED, None, None) => UNLIMITED.to_string(),
        (l, None, Some(f)) if l >= UNLIMITED && int(f) == Some(l) => l.to_string(),
        (UNLIMITED, Some(t), Some(f)) if t >= 0 && timestamp(f) == Some(t) => format!("@{t}"),
        other => panic!("{text:?}: last {other:?}"),
    };
    if let (Start::Timestamp(from), Some(until)) = (e.start, e.until) {
        assert!(until > from, "{text:?}: empty time window");
    }
    if let Start::Offset(o) = e.start {
        assert!(e.last == UNLIMITED || e.last >= o, "{text:?}: empty range");
    }
    if partition >= 0 {
        // The canonical spelling parses to the same entry.
        let again = parse_entry(&format!("{}:{partition}:{start}:{last}", e.topic));
        let parsed = |e: Entry| (e.partitions, e.start, e.last, e.until);
        assert_eq!(again.map(parsed), Ok(parsed(e.clone())), "{text:?}");
    }
}

// ---- config ----------------------------------------------------------------------------------

/// Secret keys, references, NUL, '=', newlines (new items), a long key.
#[rustfmt::skip]
const CONFIG_TOKENS: &[&[u8]] = &[
    b"=", b"\n", b"\0", b" ", b"}", b"${env:", b"${file:", b"${env:KD_FUZZ}", b"hunter2",
    b"sasl.password=", b"ssl.key.password=", b"sasl.oauthbearer.config=", b"PASSWORD",
    b"ssl.keystore.password", b"fetch.wait.max.ms=", b"client.id=", b"enable.auto.commit=",
    b"kafka_dataset.prefetch.budget.mb=", b"99999999999999999999", "é".as_bytes(), &[b'k'; 300],
];

#[test]
fn fuzz_config() {
    fuzz(&Target {
        name: "config",
        dict: CONFIG_TOKENS,
        base: keep,
        post: nothing,
        check: |input| {
            let items = lines(input);
            check_items(Scope::Global, &items);
            check_items(Scope::Topic, &items);
        },
    });
}

/// Errors are InvalidArgument and name the first item that fails alone by list and index (and
/// by key when it has one). The message depends on neither the value of a secret item nor the
/// content of an item without '=': replacing those by filler of the same length (keeping NULs,
/// which decide the outcome) leaves it unchanged, so they cannot appear in it.
fn split(item: &str) -> Option<(&str, &str)> {
    item.split_once('=').map(|(key, value)| (key.trim(), value))
}

fn check_items(scope: Scope, items: &[String]) {
    let list = format!("config_{scope:?}[").to_lowercase();
    let e = match parse_properties(scope, items) {
        Err(e) => e,
        Ok(properties) => {
            // Every non-blank item is a property, split at its first '='.
            let given = items.iter().filter(|item| !item.trim().is_empty());
            for (p, item) in properties.iter().zip(given) {
                assert_eq!(Some((p.key.as_str(), p.value.as_str())), split(item));
            }
            return;
        }
    };
    assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
    let index = e
        .message
        .strip_prefix(&list)
        .and_then(|m| m.split_once(']'));
    let i = index
        .and_then(|(i, _)| i.parse::<usize>().ok())
        .expect("list[index]");
    let alone = |item: &String| parse_properties(scope, std::slice::from_ref(item));
    let first = items[..i].iter().all(|item| alone(item).is_ok());
    assert!(first, "{e}: not the first bad item");
    assert!(alone(&items[i]).is_err(), "{e}: item {i} alone is fine");
    if let Some((key, _)) = split(&items[i]) {
        let named = key.is_empty() || e.message.contains(key);
        assert!(named, "{e}: key not named");
    }
    // `${env:..}`/`${file:..}` references are checked by key only: keep them.
    let reference =
        |v: &str| (v.starts_with("${env:") || v.starts_with("${file:")) && v.ends_with('}');
    let filler = |text: &str| text.replace(|c| c != '\0', "x");
    let hidden: Vec<String> = items
        .iter()
        .map(|item| match item.split_once('=') {
            None if !item.trim().is_empty() => "x".repeat(item.len()),
            Some((key, value)) if is_secret_key(key.trim()) && !reference(value) => {
                format!("{key}={}", filler(value))
            }
            _ => item.clone(),
        })
        .collect();
    let shown = parse_properties(scope, &hidden).map_err(|e| e.message);
    assert_eq!(shown, Err(e.message), "leaks what it must not");
}

// ---- state -----------------------------------------------------------------------------------

/// Huge and boundary length fields, flag bytes, bytes that break UTF-8, the magic.
#[rustfmt::skip]
const STATE_TOKENS: &[&[u8]] = &[
    &[0xff; 4], &[0xff, 0xff, 0xff, 0x7f], &[0, 0, 0, 0x80], &[0, 0, 1, 0], &[0; 4], &[0xff; 8],
    &[0, 0, 0, 0, 0, 0, 0, 0x80], &[1], &[2], &[0x80], &[0xc3], b"KDST",
];

#[test]
fn fuzz_state() {
    fuzz(&Target {
        name: "state",
        dict: STATE_TOKENS,
        // Half the inputs are fresh encodings of random states, which must round-trip exactly.
        base: |rng, seed| {
            if rng.below(2) == 0 {
                return seed;
            }
            let state = random_state(rng);
            let bytes = encode(&state);
            assert_eq!(decode(&bytes).as_ref(), Ok(&state), "round trip");
            bytes
        },
        // Most mutants get a valid checksum, or decode would stop at the checksum.
        post: |rng, input| {
            if input.len() >= 4 && rng.below(4) != 0 {
                let body = input.len() - 4;
                let crc = crc32(&input[..body]).to_le_bytes();
                input[body..].copy_from_slice(&crc);
            }
        },
        check: check_state,
    });
}

/// Decode is fast, allocates little and fails only with FailedPrecondition. What decodes
/// re-encodes to the same bytes when it is in the current format; an older format re-encodes
/// to the current one (the only one `encode` writes), which decodes to the same state.
fn check_state(input: &[u8]) {
    LARGEST.set(0);
    let started = Instant::now();
    let decoded = decode(input);
    let (took, largest) = (started.elapsed(), LARGEST.get());
    assert!(
        largest <= DECODE_ALLOC_LIMIT,
        "decode allocated {largest} B at once"
    );
    assert!(took <= DECODE_TIME_LIMIT, "decode took {took:?}");
    match decoded {
        Err(e) => assert_eq!(e.kind, ErrorKind::FailedPrecondition, "{e}"),
        Ok(state) => {
            let again = encode(&state);
            if input[4..6] == FORMAT_VERSION.to_le_bytes() {
                assert_eq!(again, input, "decoded {state:?} but re-encodes differently");
            } else {
                assert_eq!(decode(&again), Ok(state), "upgraded state differs");
            }
        }
    }
}

/// The codec's checksum (CRC-32/ISO-HDLC, as zlib's crc32).
fn crc32(data: &[u8]) -> u32 {
    !data.iter().fold(!0u32, |mut crc, &b| {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
        crc
    })
}

/// A state `encode` can write and `decode` read back. Not `group: Some("")`: the empty name is
/// how "no group" is written, so it reads back as `None`.
fn random_state(rng: &mut Rng) -> State {
    fn text(rng: &mut Rng) -> String {
        let len = rng.below(12);
        match rng.below(6) {
            0 => String::new(),
            1 => "tøpic🦀".into(),
            2 => "x".repeat(300),
            _ => (0..len)
                .map(|_| char::from(*rng.pick(b"ab.-_09:\"\\")))
                .collect(),
        }
    }
    fn int(rng: &mut Rng) -> i64 {
        let random = rng.next() as i64;
        [0, -1, i64::MIN, i64::MAX, random % 1000, random][rng.below(6)]
    }
    let workers = [1, 2, 65_536, 1 + rng.below(65_536) as u32][rng.below(4)];
    let group = Some(text(rng)).filter(|g| !g.is_empty() && rng.below(2) == 0);
    let partition = |rng: &mut Rng| (text(rng), int(rng) as i32);
    let partitions = (0..rng.below(5)).map(|_| partition(rng)).collect();
    let streams = (0..rng.below(5))
        .map(|_| StreamState {
            spec: StreamSpec {
                topic: text(rng),
                partition: int(rng) as i32,
                ranges: (0..rng.below(4))
                    .map(|_| Range {
                        start: int(rng),
                        last: int(rng),
                        until: (rng.below(2) == 1).then(|| int(rng).max(0)),
                    })
                    .collect(),
            },
            next_offset: int(rng),
            finished: rng.below(2) == 1,
            partition_time: int(rng),
        })
        .collect();
    let index = rng.below(workers as usize) as u32;
    let assignment = Assignment { workers, index };
    State {
        group,
        assignment,
        partitions,
        streams,
    }
}
