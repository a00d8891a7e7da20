//! Consumer configuration: the one place that parses `Key=Value` lists, validates them with
//! librdkafka, keeps secrets out of messages, and builds the consumer's `ClientConfig`.

use std::ffi::{CStr, CString};
use std::os::raw::c_char;
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::ClientConfig;

use crate::error::{Error, Result};

/// Which list an entry came from, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// `config_global`: client properties.
    Global,
    /// `config_topic`: topic properties.
    Topic,
}

impl Scope {
    fn name(self) -> &'static str {
        match self {
            Scope::Global => "config_global",
            Scope::Topic => "config_topic",
        }
    }
}

/// One `Key=Value` property.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Property {
    /// Property name as librdkafka knows it.
    pub key: String,
    /// Value, possibly a `${env:NAME}` / `${file:PATH}` reference resolved at consumer creation.
    pub value: String,
}

/// The validated consumer settings of a dataset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// `bootstrap.servers`.
    pub servers: String,
    /// `group.id`; empty = no group.
    pub group: String,
    /// User client properties, in order.
    pub global: Vec<Property>,
    /// User topic properties, in order.
    pub topic: Vec<Property>,
    /// Memory librdkafka may use for prefetched messages, over all partitions, in MiB
    /// ([`PREFETCH_BUDGET_KEY`]).
    pub prefetch_budget_mb: u64,
    /// How often whole-topic entries look for partitions added to their topics
    /// ([`DISCOVERY_INTERVAL_KEY`]); `None` when turned off.
    pub discovery_interval: Option<Duration>,
    /// The freshness policy ([`MAX_LAG_KEY`]); `None` when off.
    pub max_lag: Option<Duration>,
    /// What the group's committed offsets mean ([`COMMIT_KEY`]).
    pub commit_mode: CommitMode,
    /// How often free memory goes back to the system ([`MEMORY_TRIM_INTERVAL_KEY`]); `None`
    /// when turned off.
    pub memory_trim_interval: Option<Duration>,
}

/// What to do when a position is out of the log's range: below its start (records deleted,
/// e.g. by retention) or beyond its end (a start offset past it, a truncated or recreated
/// log): `auto.offset.reset` as the user set it, as in librdkafka. The reader applies it
/// itself, so that what it skips or rewinds is counted and logged (librdkafka's own reset is
/// silent). Without it ([`Settings::reset_policy`] is `None`): DataLoss below the log start;
/// beyond the end the partition ends with `eof`, else InvalidArgument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetPolicy {
    /// Fail (`error`): DataLoss below the log start, InvalidArgument beyond its end.
    Fail,
    /// Continue at the log start (`earliest`, `smallest`, `beginning`).
    Earliest,
    /// Continue at the log end (`latest`, `largest`, `end`).
    Latest,
}

/// The library's own `config_global` key: MiB of prefetched messages per dataset iterator,
/// split across its partitions (librdkafka's queue limits apply per partition queue).
pub const PREFETCH_BUDGET_KEY: &str = "kafka_dataset.prefetch.budget.mb";

/// Default [`PREFETCH_BUDGET_KEY`].
pub const DEFAULT_PREFETCH_BUDGET_MB: u64 = 256;

/// The library's own `config_global` key: how often (ms) an iterator with a whole-topic entry
/// and `eof=False` reads its topics' partition counts to pick up partitions added to them
/// (one metadata request per topic on the reading thread); 0 turns discovery off.
pub const DISCOVERY_INTERVAL_KEY: &str = "kafka_dataset.partition.discovery.interval.ms";

/// Default [`DISCOVERY_INTERVAL_KEY`]: new partitions are read within 10 s.
pub const DEFAULT_DISCOVERY_INTERVAL_MS: u64 = 10_000;

/// The library's own `config_global` key: skip ahead when a partition's next message is older
/// than this many ms by the wall clock (`max_lag_ms=`); 0 = off (the default).
pub const MAX_LAG_KEY: &str = "kafka_dataset.max.lag.ms";

/// The library's own `config_global` key: what the group's committed offsets mean
/// (`commit=`): `emitted` (the default) or `checkpoint`.
pub const COMMIT_KEY: &str = "kafka_dataset.commit";

/// The library's own `config_global` key: how often (ms) a reading iterator returns the C
/// allocator's free memory to the system (glibc's `malloc_trim`); 0 = never. librdkafka's
/// fetch buffers are allocated on its threads and freed on the reading thread; glibc keeps
/// what was freed in its arenas (measured: 64 partitions of 100 KB messages stayed at 61 MiB
/// above the idle process without it, 47-54 with it; bench/results/memory.md).
pub const MEMORY_TRIM_INTERVAL_KEY: &str = "kafka_dataset.memory.trim.interval.ms";

/// Default [`MEMORY_TRIM_INTERVAL_KEY`]: once a second (a call took 0.7 ms median, 8 ms at
/// most, with 256 partitions).
pub const DEFAULT_MEMORY_TRIM_INTERVAL_MS: u64 = 1_000;

/// What the committed offsets of a user-given group mean.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitMode {
    /// The positions after the emitted elements: committed periodically
    /// (`auto.commit.interval.ms`), on every save and when the iterator goes away.
    Emitted,
    /// Exactly the positions in the last saved checkpoint: committed on every save, never
    /// otherwise (Flink's `commit.offsets.on.checkpoint`).
    Checkpoint,
}

/// What a library key accepts.
enum Valid {
    /// An integer in the range, and its unit.
    Integer(std::ops::RangeInclusive<u64>, &'static str),
    /// One of these words.
    OneOf(&'static [&'static str]),
}

/// The library's own keys and their valid values (global only; removed before librdkafka sees
/// the configuration).
const LIBRARY_KEYS: &[(&str, Valid)] = &[
    (PREFETCH_BUDGET_KEY, Valid::Integer(1..=1 << 20, "MiB")),
    (
        DISCOVERY_INTERVAL_KEY,
        Valid::Integer(0..=86_400_000, "milliseconds, 0 = off"),
    ),
    (
        MAX_LAG_KEY,
        Valid::Integer(0..=31_536_000_000, "milliseconds, 0 = off"),
    ),
    (COMMIT_KEY, Valid::OneOf(&["emitted", "checkpoint"])),
    (
        MEMORY_TRIM_INTERVAL_KEY,
        Valid::Integer(0..=3_600_000, "milliseconds, 0 = off"),
    ),
];

impl Valid {
    fn accepts(&self, value: &str) -> bool {
        match self {
            Valid::Integer(range, _) => value
                .trim()
                .parse::<u64>()
                .is_ok_and(|v| range.contains(&v)),
            Valid::OneOf(words) => words.contains(&value.trim()),
        }
    }

    fn expected(&self) -> String {
        match self {
            Valid::Integer(range, unit) => {
                format!("an integer in {}..={} ({unit})", range.start(), range.end())
            }
            Valid::OneOf(words) => format!("one of {}", words.join(", ")),
        }
    }
}

/// The valid value of one of the library's own integer keys, if given.
fn library_integer(global: &[Property], key: &str) -> Option<u64> {
    last_value(global, key).and_then(|v| v.trim().parse().ok())
}

/// What one queued message is assumed to cost, so that small messages are bounded by count as
/// large ones are by bytes. Also a throughput knob: below ~32k queued messages per partition
/// librdkafka's fetcher stalls more often (bench, 8 partitions of 100 B: 16k costs ~35% more
/// CPU per message and ~10% throughput than 64k); at the default budget this keeps 64k up to
/// 8 partitions. `queued.min.messages` in `config_global` overrides it.
const QUEUED_MESSAGE_COST: u64 = 256;

/// librdkafka's default `message.max.bytes`.
const DEFAULT_MESSAGE_MAX: u64 = 1_000_000;

/// Room in a fetch request for each partition it names (about 32 bytes each in Fetch v12+).
const FETCH_REQUEST_BYTES_PER_PARTITION: u64 = 64;

/// Whether a property's value must never be shown (passwords, secrets, key material, tokens).
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "passphrase",
        "secret",
        "token",
        "jaas",
        "credential",
        "key.pem",
        "keystore",
        "oauthbearer.config",
    ]
    .iter()
    .any(|needle| key.contains(needle))
}

/// A value as it may appear in a message: secrets and references are never shown.
fn shown_value(key: &str, value: &str) -> String {
    if is_secret_key(key) {
        "<redacted>".into()
    } else {
        format!("\"{value}\"")
    }
}

fn is_reference(value: &str) -> bool {
    (value.starts_with("${env:") || value.starts_with("${file:")) && value.ends_with('}')
}

/// `group.id` used when the user gives no group (never joined, never committed to).
pub const ANONYMOUS_GROUP: &str = "kafka-dataset-anonymous";

/// Properties that the reader's semantics depend on, with the value the library sets and why:
/// the user may repeat that value (DeepRec's examples pass `enable.auto.commit=false`), not
/// change it.
const RESERVED: &[(&str, bool, &str)] = &[
    (
        "enable.partition.eof",
        true,
        "end-of-partition events drive `eof` and the idle rule",
    ),
    (
        "enable.auto.offset.store",
        false,
        "offsets advance only when an element is emitted",
    ),
    (
        "enable.auto.commit",
        false,
        "offsets advance only when an element is emitted; commits follow emitted positions",
    ),
];

/// librdkafka's reading of a boolean property value (`true`/`t`/`1`, `false`/`f`/`0`, any
/// case), or `None`.
fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "t" | "1" => Some(true),
        "false" | "f" | "0" => Some(false),
        _ => None,
    }
}

enum Check {
    Ok,
    Unknown,
    Invalid(String),
}

/// Asks librdkafka whether `key=value` is acceptable in `scope`.
fn librdkafka_check(scope: Scope, key: &CStr, value: &CStr) -> Check {
    let mut errstr = [0 as c_char; 512];
    // SAFETY: plain librdkafka calls on objects created and destroyed here; strings are
    // NUL-terminated and errstr has the size we pass.
    let res = unsafe {
        match scope {
            Scope::Global => {
                let conf = rd::rd_kafka_conf_new();
                let res = rd::rd_kafka_conf_set(
                    conf,
                    key.as_ptr(),
                    value.as_ptr(),
                    errstr.as_mut_ptr(),
                    errstr.len(),
                );
                rd::rd_kafka_conf_destroy(conf);
                res
            }
            Scope::Topic => {
                let conf = rd::rd_kafka_topic_conf_new();
                let res = rd::rd_kafka_topic_conf_set(
                    conf,
                    key.as_ptr(),
                    value.as_ptr(),
                    errstr.as_mut_ptr(),
                    errstr.len(),
                );
                rd::rd_kafka_topic_conf_destroy(conf);
                res
            }
        }
    };
    match res {
        rd::rd_kafka_conf_res_t::RD_KAFKA_CONF_OK => Check::Ok,
        rd::rd_kafka_conf_res_t::RD_KAFKA_CONF_UNKNOWN => Check::Unknown,
        _ => {
            // SAFETY: librdkafka NUL-terminates errstr.
            let why = unsafe { CStr::from_ptr(errstr.as_ptr()) }
                .to_string_lossy()
                .into_owned();
            Check::Invalid(why)
        }
    }
}

fn parse_property(scope: Scope, index: usize, item: &str) -> Result<Property> {
    let at = || format!("{}[{index}]", scope.name());
    let Some((key, value)) = item.split_once('=') else {
        // Without '=', the whole item might be a secret: show only its length.
        return Err(Error::invalid(format!(
            "{}: expected Key=Value, got an item of {} characters without '='",
            at(),
            item.len()
        )));
    };
    let key = key.trim();
    if key.is_empty() {
        return Err(Error::invalid(format!("{}: empty key before '='", at())));
    }
    if key == "plugin.library.paths" {
        // Validating it would load the named shared libraries while a dataset is merely being
        // defined (from a graph def, possibly not ours).
        return Err(Error::invalid(format!(
            "{} \"{key}\": not supported (librdkafka plugins would load shared libraries named by the dataset's inputs)",
            at()
        )));
    }
    if let Some(&(_, ours, why)) = RESERVED.iter().find(|(k, _, _)| *k == key) {
        if parse_bool(value) != Some(ours) {
            return Err(Error::invalid(format!(
                "{} \"{key}\": set to {ours} by kafka-dataset itself ({why}); only that value is accepted, got {}",
                at(),
                shown_value(key, value)
            )));
        }
    }
    if let Some((_, valid)) = LIBRARY_KEYS.iter().find(|(k, _)| *k == key) {
        if scope == Scope::Topic {
            return Err(Error::invalid(format!(
                "{} \"{key}\": belongs in config_global (it is not a topic property)",
                at()
            )));
        }
        if !valid.accepts(value) {
            return Err(Error::invalid(format!(
                "{} \"{key}\": invalid value \"{value}\": expected {}",
                at(),
                valid.expected()
            )));
        }
        return Ok(Property {
            key: key.to_string(),
            value: value.to_string(),
        });
    }
    let bad_char = || Error::invalid(format!("{} \"{key}\": contains a NUL byte", at()));
    let c_key = CString::new(key).map_err(|_| bad_char())?;
    let c_value = CString::new(value).map_err(|_| bad_char())?;
    let check = if is_reference(value) {
        // The referenced value is only read at consumer creation; check the key alone now: an
        // empty value is either accepted or refused as invalid, but only unknown keys say so.
        match librdkafka_check(scope, &c_key, c"") {
            Check::Invalid(_) => Check::Ok,
            other => other,
        }
    } else {
        librdkafka_check(scope, &c_key, &c_value)
    };
    match check {
        Check::Ok => Ok(Property {
            key: key.to_string(),
            value: value.to_string(),
        }),
        Check::Unknown => Err(Error::invalid(format!(
            "{} \"{key}\": unknown {} property",
            at(),
            if scope == Scope::Global {
                "client"
            } else {
                "topic"
            }
        ))),
        Check::Invalid(why) => {
            let why = if is_secret_key(key) {
                String::new()
            } else {
                format!(": {why}")
            };
            Err(Error::invalid(format!(
                "{} \"{key}\": invalid value {}{why}",
                at(),
                shown_value(key, value)
            )))
        }
    }
}

/// The value of the last `key` among `properties` (a later item overrides an earlier one, as
/// librdkafka applies them).
pub fn last_value<'a>(properties: &'a [Property], key: &str) -> Option<&'a str> {
    properties
        .iter()
        .rev()
        .find(|p| p.key == key)
        .map(|p| p.value.as_str())
}

/// Parses and validates a `Key=Value` list (split at the first `=`).
pub fn parse_properties(scope: Scope, items: &[String]) -> Result<Vec<Property>> {
    items
        .iter()
        .enumerate()
        .filter(|(_, item)| !item.trim().is_empty())
        .map(|(i, item)| parse_property(scope, i, item))
        .collect()
}

impl Settings {
    /// Validates everything that can be checked without a broker.
    pub fn new(servers: &str, group: &str, global: &[String], topic: &[String]) -> Result<Self> {
        let servers = servers.trim();
        if servers.is_empty() {
            return Err(Error::invalid(
                "servers is empty: give host:port[,host:port...]",
            ));
        }
        let mut global = parse_properties(Scope::Global, global)?;
        // Every value was checked by `parse_properties`.
        let prefetch_budget_mb =
            library_integer(&global, PREFETCH_BUDGET_KEY).unwrap_or(DEFAULT_PREFETCH_BUDGET_MB);
        let milliseconds = |key, default| {
            Some(library_integer(&global, key).unwrap_or(default))
                .filter(|&ms| ms > 0)
                .map(Duration::from_millis)
        };
        let discovery_interval =
            milliseconds(DISCOVERY_INTERVAL_KEY, DEFAULT_DISCOVERY_INTERVAL_MS);
        let max_lag = milliseconds(MAX_LAG_KEY, 0);
        let memory_trim_interval =
            milliseconds(MEMORY_TRIM_INTERVAL_KEY, DEFAULT_MEMORY_TRIM_INTERVAL_MS);
        let commit_mode = match last_value(&global, COMMIT_KEY).map(str::trim) {
            Some("checkpoint") => CommitMode::Checkpoint,
            _ => CommitMode::Emitted,
        };
        global.retain(|p| LIBRARY_KEYS.iter().all(|(k, _)| *k != p.key));
        // The group argument wins; without it, a group.id among the properties is the group.
        let group = match group {
            "" => last_value(&global, "group.id").unwrap_or(""),
            given => given,
        };
        Ok(Settings {
            servers: servers.to_string(),
            group: group.to_string(),
            global,
            topic: parse_properties(Scope::Topic, topic)?,
            prefetch_budget_mb,
            discovery_interval,
            max_lag,
            commit_mode,
            memory_trim_interval,
        })
    }

    /// The user's `auto.offset.reset` (topic properties win over global ones); `None` when
    /// not set.
    pub fn reset_policy(&self) -> Option<ResetPolicy> {
        let value = last_value(&self.topic, "auto.offset.reset")
            .or_else(|| last_value(&self.global, "auto.offset.reset"))
            .and_then(|v| resolve_reference("auto.offset.reset", v).ok())?;
        Some(match value.trim().to_ascii_lowercase().as_str() {
            "earliest" | "smallest" | "beginning" => ResetPolicy::Earliest,
            "latest" | "largest" | "end" => ResetPolicy::Latest,
            _ => ResetPolicy::Fail,
        })
    }

    /// Builds the consumer configuration: our defaults, then the user's properties (with
    /// `${env:..}`/`${file:..}` resolved now), then `servers`/`group`, then what our semantics
    /// require. `streams` sizes the per-partition queue budget. A metadata-only client
    /// (`consumer` false) gets no group, so closing it costs no group round trip.
    pub fn client_config(&self, streams: usize, consumer: bool) -> Result<ClientConfig> {
        let mut config = ClientConfig::new();
        // Defaults the user may override.
        config.set("client.id", "kafka-dataset");
        // librdkafka 2.x pauses fetching 1 s whenever its queue passes the minimum; never pause.
        config.set("fetch.queue.backoff.ms", "0");
        // End of partition (eof and the idle rule) is only seen when a fetch returns empty-handed:
        // a short broker wait makes that prompt.
        config.set("fetch.wait.max.ms", "100");
        // The prefetch budget: half for queued messages, half for the fetch-response buffers
        // they keep alive (a response's buffer lives until its last message is consumed, so
        // a response shared by many partitions is pinned by the slowest). With one queue per
        // partition librdkafka's limits apply per partition: split them, in bytes and (for
        // small messages) in count.
        let budget = self.prefetch_budget_mb * (1 << 20);
        let queued = budget / 2 / streams.max(1) as u64;
        // Per partition librdkafka tops the queue up when it is below its limit (L) by one
        // fetch, and the reader takes what the queue holds (up to POLL_BATCH messages) before
        // it is topped up again: at most 2 (L + F), F the largest fetch of one partition.
        // F is not max.partition.fetch.bytes: when a message does not fit, librdkafka
        // doubles the partition's fetch size up to fetch.max.bytes. So fetch.max.bytes is F:
        // L = F = a quarter of the share (F at most 1/32 of the budget), and the usual fetch
        // half of it (at most 1 MiB), which also keeps a response to about two partitions'
        // fetches when partitions are many, so one slow
        // partition pins little beside its own messages (4 MiB responses over 256 partitions
        // of 1 KB messages: 260 MiB above the budget).
        let kbytes = (queued / 4 / 1024).clamp(1, 2_097_151);
        let partition_fetch = (queued / 8).clamp(16 << 10, 1 << 20);
        let messages = (queued / QUEUED_MESSAGE_COST).clamp(1, 10_000_000);
        // librdkafka refuses a fetch.max.bytes below message.max.bytes, which for a consumer
        // only caps its own requests: lower it to match unless the user set it, never below
        // what a fetch request naming every partition needs.
        let user_message_max = last_value(&self.global, "message.max.bytes")
            .and_then(|v| v.trim().parse::<u64>().ok());
        let request_room = FETCH_REQUEST_BYTES_PER_PARTITION * streams as u64;
        let in_flight = (queued / 4)
            .min(budget / 32)
            .max(64 << 10)
            .max(request_room)
            .min(52_428_800)
            .max(user_message_max.unwrap_or(0));
        if user_message_max.is_none() && in_flight < DEFAULT_MESSAGE_MAX {
            config.set("message.max.bytes", in_flight.to_string());
        }
        config.set("fetch.max.bytes", in_flight.to_string());
        config.set("queued.max.messages.kbytes", kbytes.to_string());
        config.set("max.partition.fetch.bytes", partition_fetch.to_string());
        config.set("queued.min.messages", messages.to_string());
        for p in self.global.iter().chain(&self.topic) {
            config.set(&p.key, resolve_reference(&p.key, &p.value)?);
        }
        config.set("bootstrap.servers", &self.servers);
        // librdkafka refuses assign() without a group; a consumer that never subscribes or
        // commits does not join it, so a fixed id is harmless when the user gave none.
        if consumer {
            let group = if self.group.is_empty() {
                ANONYMOUS_GROUP
            } else {
                &self.group
            };
            config.set("group.id", group);
        }
        // Offsets advance only when an element is emitted; librdkafka never stores or commits
        // on its own, and end-of-partition events drive `eof` and the idle rule.
        config.set("enable.partition.eof", "true");
        config.set("enable.auto.commit", "false");
        config.set("enable.auto.offset.store", "false");
        // librdkafka reports a position outside the log instead of moving it silently: the
        // reader applies the user's policy (`reset_policy`), counting what it skips.
        config.set("auto.offset.reset", "error");
        Ok(config)
    }
}

/// Resolves `${env:NAME}` and `${file:PATH}`; other values pass through. Errors name the
/// property and the variable or file, never the value.
pub fn resolve_reference(key: &str, value: &str) -> Result<String> {
    if !is_reference(value) {
        return Ok(value.to_string());
    }
    let inner = &value[2..value.len() - 1];
    if let Some(name) = inner.strip_prefix("env:") {
        std::env::var(name).map_err(|_| {
            Error::invalid(format!(
                "config \"{key}\": environment variable {name} is not set"
            ))
        })
    } else {
        let path = &inner["file:".len()..];
        std::fs::read_to_string(path)
            .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
            .map_err(|e| Error::invalid(format!("config \"{key}\": cannot read file {path}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn passphrases_are_secret_and_plugins_are_refused() {
        // Found by tests/fuzz_inputs.rs: librdkafka refuses this key in our build and its
        // message carried the value.
        let e = parse_properties(
            Scope::Global,
            &items(&["sasl.oauthbearer.assertion.private.key.passphrase=hunter2"]),
        )
        .unwrap_err();
        assert!(!e.message.contains("hunter2"), "{e}");
        let e =
            parse_properties(Scope::Global, &items(&["plugin.library.paths=/tmp/x"])).unwrap_err();
        assert!(e.message.contains("plugin.library.paths"), "{e}");
    }

    #[test]
    fn splits_at_first_equals_and_accepts_known_keys() {
        let p = parse_properties(
            Scope::Global,
            &items(&["sasl.jaas.config=a=b", "fetch.wait.max.ms=10"]),
        );
        // sasl.jaas.config is not a librdkafka key, so this must fail naming it, without its value.
        let err = p.unwrap_err();
        assert!(
            err.message.contains("sasl.jaas.config") && !err.message.contains("a=b"),
            "{err}"
        );
        let p = parse_properties(
            Scope::Global,
            &items(&["client.id=x=y", "fetch.wait.max.ms=10"]),
        )
        .unwrap();
        assert_eq!(p[0].value, "x=y");
        let p = parse_properties(Scope::Topic, &items(&["auto.offset.reset=earliest"])).unwrap();
        assert_eq!(p[0].key, "auto.offset.reset");
    }

    #[test]
    fn rejects_bad_items_naming_them() {
        let e = parse_properties(Scope::Global, &items(&["no.such.key=1"])).unwrap_err();
        assert!(
            e.message
                .contains("config_global[0] \"no.such.key\": unknown"),
            "{e}"
        );
        let e = parse_properties(Scope::Global, &items(&["fetch.wait.max.ms=abc"])).unwrap_err();
        assert!(
            e.message.contains("fetch.wait.max.ms") && e.message.contains("abc"),
            "{e}"
        );
        let e =
            parse_properties(Scope::Topic, &items(&["auto.offset.reset=sideways"])).unwrap_err();
        assert!(
            e.message.contains("config_topic[0] \"auto.offset.reset\""),
            "{e}"
        );
        let e = parse_properties(Scope::Global, &items(&["novalue"])).unwrap_err();
        assert!(e.message.contains("without '='"), "{e}");
        let e =
            parse_properties(Scope::Global, &items(&["enable.partition.eof=false"])).unwrap_err();
        assert!(e.message.contains("enable.partition.eof"), "{e}");
        assert!(e.message.contains("set to true"), "{e}");
        let e =
            parse_properties(Scope::Global, &items(&["enable.auto.commit=${env:X}"])).unwrap_err();
        assert!(e.message.contains("only that value"), "{e}");
        // The value the library sets anyway is accepted, in any of librdkafka's spellings
        // (DeepRec's documented config_global).
        let ok = parse_properties(
            Scope::Global,
            &items(&[
                "enable.auto.commit=false",
                "enable.auto.offset.store=0",
                "enable.partition.eof=True",
                "heartbeat.interval.ms=2000",
            ]),
        );
        assert!(ok.is_ok(), "{ok:?}");
        assert!(Settings::new("  ", "", &[], &[]).is_err());
    }

    #[test]
    fn reader_policies_are_library_keys_checked_and_kept_from_librdkafka() {
        let settings = |global: &[&str]| Settings::new("h:1", "g", &items(global), &[]);
        let s = settings(&[]).unwrap();
        assert_eq!((s.max_lag, s.commit_mode), (None, CommitMode::Emitted));
        assert_eq!(s.discovery_interval, Some(Duration::from_secs(10)));
        assert_eq!(s.memory_trim_interval, Some(Duration::from_secs(1)));
        let s = settings(&[
            "kafka_dataset.max.lag.ms=60000",
            "kafka_dataset.commit=checkpoint",
            "kafka_dataset.partition.discovery.interval.ms=0",
            "kafka_dataset.memory.trim.interval.ms=0",
        ])
        .unwrap();
        assert_eq!(s.max_lag, Some(Duration::from_secs(60)));
        assert_eq!(s.commit_mode, CommitMode::Checkpoint);
        assert_eq!(s.discovery_interval, None);
        assert_eq!(s.memory_trim_interval, None);
        assert!(s.global.is_empty(), "{:?}", s.global);
        for (bad, needle) in [
            (
                "kafka_dataset.commit=sometimes",
                "one of emitted, checkpoint",
            ),
            ("kafka_dataset.max.lag.ms=-1", "0..=31536000000"),
            (
                "kafka_dataset.partition.discovery.interval.ms=x",
                "0..=86400000",
            ),
        ] {
            let e = settings(&[bad]).unwrap_err();
            assert!(
                e.message.contains(needle) && e.message.contains("config_global[0]"),
                "{e}"
            );
        }
        let e = Settings::new("h:1", "", &[], &items(&["kafka_dataset.commit=checkpoint"]));
        assert!(e.unwrap_err().message.contains("belongs in config_global"));
    }

    #[test]
    fn reset_policy_reads_the_users_value_and_references() {
        let policy = |topic: &[&str], global: &[&str]| {
            Settings::new("h:1", "", &items(global), &items(topic))
                .unwrap()
                .reset_policy()
        };
        assert_eq!(policy(&[], &[]), None);
        assert_eq!(
            policy(&["auto.offset.reset=error"], &[]),
            Some(ResetPolicy::Fail)
        );
        assert_eq!(
            policy(&["auto.offset.reset=smallest"], &[]),
            Some(ResetPolicy::Earliest)
        );
        assert_eq!(
            policy(&[], &["auto.offset.reset=latest"]),
            Some(ResetPolicy::Latest)
        );
        // Topic properties win over global ones.
        assert_eq!(
            policy(&["auto.offset.reset=earliest"], &["auto.offset.reset=end"]),
            Some(ResetPolicy::Earliest)
        );
        std::env::set_var("KD_TEST_RESET_POLICY", "latest");
        assert_eq!(
            policy(&["auto.offset.reset=${env:KD_TEST_RESET_POLICY}"], &[]),
            Some(ResetPolicy::Latest)
        );
        // librdkafka never resets by itself.
        let config = Settings::new("h:1", "", &[], &items(&["auto.offset.reset=earliest"]))
            .unwrap()
            .client_config(1, true)
            .unwrap();
        assert_eq!(config.get("auto.offset.reset"), Some("error"));
    }

    #[test]
    fn secrets_never_appear() {
        let e = parse_properties(
            Scope::Global,
            &items(&["sasl.mechanism=PLAIN", "ssl.key.password"]),
        )
        .unwrap_err();
        assert!(!e.message.contains("ssl.key.password"));
        // A secret with a bad value: key named, value hidden.
        let e =
            parse_properties(Scope::Global, &items(&["sasl.password=\u{0}hunter2"])).unwrap_err();
        assert!(!e.message.contains("hunter2"), "{e}");
        std::env::set_var("KD_TEST_SECRET", "hunter2");
        let p = parse_properties(
            Scope::Global,
            &items(&["sasl.password=${env:KD_TEST_SECRET}"]),
        )
        .unwrap();
        assert_eq!(
            resolve_reference(&p[0].key, &p[0].value).unwrap(),
            "hunter2"
        );
        let e = resolve_reference("sasl.password", "${env:KD_TEST_MISSING}").unwrap_err();
        assert!(e.message.contains("KD_TEST_MISSING") && e.message.contains("sasl.password"));
    }

    #[test]
    fn prefetch_budget_splits_across_partitions_and_is_checked() {
        let get = |c: &ClientConfig, k: &str| c.get(k).map(str::to_string);
        let default = Settings::new("h:1", "", &[], &[]).unwrap();
        assert_eq!(default.prefetch_budget_mb, DEFAULT_PREFETCH_BUDGET_MB);
        // 256 MiB over 64 partitions: half for queued messages, 2 MiB each: a quarter queue
        // limit, a quarter the largest fetch (fetch.max.bytes, and message.max.bytes to
        // match), the usual fetch half of that.
        let c = default.client_config(64, true).unwrap();
        assert_eq!(
            get(&c, "queued.max.messages.kbytes").as_deref(),
            Some("512")
        );
        assert_eq!(
            get(&c, "max.partition.fetch.bytes").as_deref(),
            Some("262144")
        );
        assert_eq!(get(&c, "fetch.max.bytes").as_deref(), Some("524288"));
        assert_eq!(get(&c, "message.max.bytes").as_deref(), Some("524288"));
        assert_eq!(get(&c, "queued.min.messages").as_deref(), Some("8192"));
        let many = default.client_config(256, true).unwrap();
        assert_eq!(
            get(&many, "max.partition.fetch.bytes").as_deref(),
            Some("65536")
        );
        assert_eq!(get(&many, "fetch.max.bytes").as_deref(), Some("131072"));
        // A fetch request naming 10k partitions still fits.
        let huge = default.client_config(10_000, true).unwrap();
        assert_eq!(get(&huge, "fetch.max.bytes").as_deref(), Some("640000"));

        let small = Settings::new(
            "h:1",
            "",
            &items(&[&format!("{PREFETCH_BUDGET_KEY}=64")]),
            &[],
        )
        .unwrap();
        assert_eq!(small.prefetch_budget_mb, 64);
        // Our key never reaches librdkafka, and the user's own limits still win.
        assert!(small.global.is_empty());
        let c = small.client_config(2, true).unwrap();
        assert_eq!(
            get(&c, "queued.max.messages.kbytes").as_deref(),
            Some("4096")
        );
        assert_eq!(get(&c, "fetch.max.bytes").as_deref(), Some("2097152"));
        assert_eq!(get(&c, PREFETCH_BUDGET_KEY), None);
        let own = Settings::new("h:1", "", &items(&["queued.min.messages=7"]), &[]).unwrap();
        let c = own.client_config(2, true).unwrap();
        assert_eq!(get(&c, "queued.min.messages").as_deref(), Some("7"));

        let e = Settings::new(
            "h:1",
            "",
            &[],
            &items(&[&format!("{PREFETCH_BUDGET_KEY}=64")]),
        )
        .unwrap_err();
        assert!(e.message.contains("config_global"), "{e}");
        let big = Settings::new("h:1", "", &items(&["message.max.bytes=100000000"]), &[]).unwrap();
        let c = big.client_config(2, true).unwrap();
        assert_eq!(get(&c, "fetch.max.bytes").as_deref(), Some("100000000"));
        assert_eq!(get(&c, "message.max.bytes").as_deref(), Some("100000000"));

        for bad in ["0", "-1", "lots", "", "1048577"] {
            let e = Settings::new(
                "h:1",
                "",
                &items(&[&format!("{PREFETCH_BUDGET_KEY}={bad}")]),
                &[],
            )
            .unwrap_err();
            assert!(e.message.contains(PREFETCH_BUDGET_KEY), "{e}");
        }
    }
}
