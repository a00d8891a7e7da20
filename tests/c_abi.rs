//! The C ABI exercised the way C calls it (DESIGN.md §4): NULL handles, arguments and
//! out-params are errors naming the argument, out-params are written only on success,
//! `*_free(NULL)` is a no-op, errors own a UTF-8 message that frees without leaking, and
//! borrowed `{data, len}` views are read by their length only.
//!
//! A counting global allocator (per thread, so parallel tests do not disturb each other) turns
//! "freeing works" into a real leak check for errors and datasets.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::os::raw::c_char;
use std::ptr;
use std::time::{Duration, Instant};

use kafka_dataset::ffi::*;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

// ---------------------------------------------------------------------------------------------
// Counting allocator: live bytes and blocks allocated by the current thread.

struct Counting;

thread_local! {
    static LIVE: Cell<(isize, isize)> = const { Cell::new((0, 0)) };
}

fn track(bytes: isize, blocks: isize) {
    let _ = LIVE.try_with(|live| {
        let (b, n) = live.get();
        live.set((b + bytes, n + blocks));
    });
}

/// (live bytes, live blocks) of this thread.
fn live() -> (isize, isize) {
    LIVE.with(|live| live.get())
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            track(layout.size() as isize, 1);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            track(layout.size() as isize, 1);
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        System.dealloc(p, layout);
        track(-(layout.size() as isize), -1);
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let q = System.realloc(p, layout, new_size);
        if !q.is_null() {
            track(new_size as isize - layout.size() as isize, 0);
        }
        q
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

// ---------------------------------------------------------------------------------------------
// Helpers, written as a C caller would use the API.

const INVALID: kd_code = kd_code::KD_CODE_INVALID_ARGUMENT;

/// A view of `text`, not NUL-terminated (Rust strings are not).
fn s(text: &str) -> kd_str {
    kd_str {
        data: text.as_ptr() as *const c_char,
        len: text.len(),
    }
}

fn raw(bytes: &[u8]) -> kd_str {
    kd_str {
        data: bytes.as_ptr() as *const c_char,
        len: bytes.len(),
    }
}

/// A pointer that is never dereferenced, to pre-fill out-params with.
fn sentinel<T>() -> *mut T {
    ptr::without_provenance_mut(0x5eed_0000)
}

/// Reads an error like C would (code, then message by its length), frees it, and checks the
/// message is non-empty UTF-8 whose view is stable across calls.
unsafe fn take(err: *mut kd_error) -> (kd_code, String) {
    assert!(!err.is_null(), "expected an error, got success");
    let code = kd_error_code(err);
    let view = kd_error_message(err);
    assert!(!view.data.is_null() && view.len > 0, "empty error message");
    let again = kd_error_message(err);
    assert_eq!((again.data, again.len), (view.data, view.len));
    assert_eq!(kd_error_code(err), code);
    let bytes = std::slice::from_raw_parts(view.data as *const u8, view.len);
    let message = std::str::from_utf8(bytes)
        .expect("error message is UTF-8")
        .to_owned();
    kd_error_free(err);
    (code, message)
}

/// Asserts `err` has `code` and a message containing every needle; returns the message.
#[track_caller]
fn expect_err(err: *mut kd_error, code: kd_code, needles: &[&str]) -> String {
    let (got, message) = unsafe { take(err) };
    assert_eq!(got, code, "{message}");
    for needle in needles {
        assert!(message.contains(needle), "{needle:?} not in {message:?}");
    }
    message
}

#[track_caller]
fn expect_ok(err: *mut kd_error) {
    if !err.is_null() {
        let (code, message) = unsafe { take(err) };
        panic!("expected success, got {code:?}: {message}");
    }
}

/// Valid options reading `topics` from a port nobody listens on (dataset creation never
/// connects).
fn options(topics: &[kd_str]) -> kd_dataset_options {
    kd_dataset_options {
        topics: topics.as_ptr(),
        topics_len: topics.len(),
        servers: s("127.0.0.1:1"),
        group: s(""),
        eof: true,
        timeout_ms: 1000,
        config_global: ptr::null(),
        config_global_len: 0,
        config_topic: ptr::null(),
        config_topic_len: 0,
        num_workers: 1,
        worker_index: 0,
        subscribe: false,
    }
}

/// `kd_dataset_new`, checking that `out_dataset` is written exactly when it succeeds.
#[track_caller]
fn new_dataset(options: &kd_dataset_options) -> Result<*mut kd_dataset, *mut kd_error> {
    let mut out = sentinel::<kd_dataset>();
    let err = unsafe { kd_dataset_new(options, &mut out) };
    if err.is_null() {
        assert!(
            !out.is_null() && out != sentinel(),
            "out_dataset not written"
        );
        Ok(out)
    } else {
        assert_eq!(out, sentinel(), "out_dataset written on error");
        Err(err)
    }
}

#[track_caller]
fn dataset_fails(options: &kd_dataset_options, needles: &[&str]) -> String {
    match new_dataset(options) {
        Ok(d) => {
            unsafe { kd_dataset_free(d) };
            panic!("expected InvalidArgument naming {needles:?}, got a dataset");
        }
        Err(err) => expect_err(err, INVALID, needles),
    }
}

/// A message view whose every field is recognizable, to detect writes.
fn sentinel_view() -> kd_message_view {
    kd_message_view {
        value: kd_bytes {
            data: sentinel(),
            len: 7,
        },
        key: kd_bytes {
            data: sentinel(),
            len: 8,
        },
        topic: kd_str {
            data: sentinel(),
            len: 9,
        },
        partition: -77,
        offset: -78,
        timestamp: -79,
    }
}

fn is_sentinel_view(v: &kd_message_view) -> bool {
    let t = sentinel_view();
    (v.value.data, v.value.len, v.key.data, v.key.len) == (t.value.data, 7, t.key.data, 8)
        && (v.topic.data, v.topic.len) == (t.topic.data, 9)
        && (v.partition, v.offset, v.timestamp) == (-77, -78, -79)
}

/// A header view whose every field is recognizable, to detect writes.
fn sentinel_header() -> kd_header_view {
    kd_header_view {
        name: kd_bytes {
            data: sentinel(),
            len: 5,
        },
        value: kd_bytes {
            data: sentinel(),
            len: 6,
        },
        value_is_null: true,
    }
}

fn is_sentinel_header(h: &kd_header_view) -> bool {
    let t = sentinel_header();
    (
        h.name.data,
        h.name.len,
        h.value.data,
        h.value.len,
        h.value_is_null,
    ) == (t.name.data, 5, t.value.data, 6, true)
}

/// Storage for a `kd_next_status` out-param holding a value no success can write, as a C
/// caller's uninitialized variable would.
struct StatusSlot(u32);

const STATUS_UNSET: u32 = 0xa5a5_a5a5;

impl StatusSlot {
    fn new() -> Self {
        assert_eq!(std::mem::size_of::<kd_next_status>(), 4, "C enum size");
        StatusSlot(STATUS_UNSET)
    }

    fn ptr(&mut self) -> *mut kd_next_status {
        &mut self.0 as *mut u32 as *mut kd_next_status
    }

    fn untouched(&self) -> bool {
        self.0 == STATUS_UNSET
    }

    fn get(&self) -> kd_next_status {
        match self.0 {
            0 => kd_next_status::KD_NEXT_ELEMENT,
            1 => kd_next_status::KD_NEXT_PENDING,
            2 => kd_next_status::KD_NEXT_END,
            other => panic!("status not written or invalid: {other:#x}"),
        }
    }
}

unsafe fn str_of(v: kd_str) -> String {
    let bytes = std::slice::from_raw_parts(v.data as *const u8, v.len);
    String::from_utf8(bytes.to_vec()).expect("UTF-8 view")
}

unsafe fn bytes_of(v: kd_bytes) -> Vec<u8> {
    if v.len == 0 {
        return Vec::new();
    }
    std::slice::from_raw_parts(v.data, v.len).to_vec()
}

// ---------------------------------------------------------------------------------------------
// Coverage guard.

/// Every function the header declares is exercised below; a new one needs a test here.
#[test]
fn every_header_function_is_covered() {
    const COVERED: &[&str] = &[
        "kd_error_code",
        "kd_error_message",
        "kd_error_free",
        "kd_dataset_new",
        "kd_dataset_free",
        "kd_reader_new",
        "kd_reader_save",
        "kd_reader_commit",
        "kd_reader_next_batch",
        "kd_reader_batch_messages",
        "kd_reader_batch_headers",
        "kd_reader_stream_count",
        "kd_reader_stream_position",
        "kd_reader_restore",
        "kd_reader_free",
        "kd_stats_json",
        "kd_text_view",
        "kd_text_free",
    ];
    let header = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("include/kafka_dataset.h"),
    )
    .expect("header");
    let mut declared: Vec<&str> = header
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .filter_map(|l| {
            // The identifier right before the first '(' of a declaration line.
            let head = &l[..l.find('(')?];
            let start = head
                .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(0, |i| i + 1);
            Some(&head[start..]).filter(|name| name.starts_with("kd_"))
        })
        .collect();
    declared.sort_unstable();
    let mut covered = COVERED.to_vec();
    covered.sort_unstable();
    assert_eq!(declared, covered);
}

// ---------------------------------------------------------------------------------------------
// Errors and free functions.

#[test]
fn free_functions_accept_null() {
    unsafe {
        kd_error_free(ptr::null_mut());
        kd_dataset_free(ptr::null_mut());
        kd_reader_free(ptr::null_mut());
        kd_text_free(ptr::null_mut());
        let empty = kd_text_view(ptr::null());
        assert!(empty.data.is_null() && empty.len == 0);
    }
}

#[test]
fn error_accessors() {
    unsafe {
        assert_eq!(kd_error_code(ptr::null()), kd_code::KD_CODE_INTERNAL);
        let empty = kd_error_message(ptr::null());
        assert!(empty.data.is_null());
        assert_eq!(empty.len, 0);

        let err = kd_dataset_new(ptr::null(), ptr::null_mut());
        let message = expect_err(err, INVALID, &["`options`", "NULL"]);
        assert!(!message.contains('\0'));
    }
}

#[test]
fn errors_free_back_to_the_baseline() {
    let topics = [s("bad:entry:x")];
    let opts = options(&topics);
    let make = |i: usize| unsafe {
        if i % 2 == 0 {
            kd_dataset_new(ptr::null(), ptr::null_mut())
        } else {
            kd_dataset_new(&opts, ptr::null_mut())
        }
    };
    // Warm up lazily initialized runtime state before taking the baseline.
    for i in 0..4 {
        unsafe { kd_error_free(make(i)) };
    }
    let baseline = live();
    // The counter sees errors while they are alive...
    let held: Vec<*mut kd_error> = (0..100).map(make).collect();
    assert!(held.iter().all(|e| !e.is_null()));
    let (bytes, blocks) = live();
    assert!(
        blocks >= baseline.1 + 100 && bytes > baseline.0,
        "{baseline:?} -> {:?}",
        live()
    );
    for e in held {
        unsafe { kd_error_free(e) };
    }
    assert_eq!(live(), baseline, "100 held errors freed");
    // ...and thousands created, read and freed leave nothing behind.
    for i in 0..10_000 {
        let err = make(i);
        unsafe {
            assert_eq!(kd_error_code(err), INVALID);
            assert!(kd_error_message(err).len > 0);
            kd_error_free(err);
        }
    }
    assert_eq!(live(), baseline, "10k errors freed");
}

#[test]
fn datasets_free_back_to_the_baseline() {
    let topics = [s("a:0:5:9"), s("b"), s("c:1:beginning")];
    let global = [s("client.id=leak-check"), s("fetch.wait.max.ms=50")];
    let topic_cfg = [s("auto.offset.reset=earliest")];
    let opts = kd_dataset_options {
        config_global: global.as_ptr(),
        config_global_len: global.len(),
        config_topic: topic_cfg.as_ptr(),
        config_topic_len: topic_cfg.len(),
        group: s("g"),
        ..options(&topics)
    };
    let bad_topics = [s("a:0"), s("no good")];
    let bad = options(&bad_topics);
    let cycle = || {
        let d = new_dataset(&opts).map_err(expect_ok).unwrap();
        unsafe { kd_dataset_free(d) };
        let err = new_dataset(&bad).expect_err("bad entry");
        unsafe { kd_error_free(err) };
    };
    for _ in 0..4 {
        cycle();
    }
    let baseline = live();
    for _ in 0..2_000 {
        cycle();
    }
    assert_eq!(live(), baseline);
}

// ---------------------------------------------------------------------------------------------
// kd_dataset_new.

#[test]
fn dataset_new_null_arguments() {
    let topics = [s("t")];
    let opts = options(&topics);
    unsafe {
        let mut out = sentinel::<kd_dataset>();
        expect_err(
            kd_dataset_new(ptr::null(), &mut out),
            INVALID,
            &["`options`"],
        );
        assert_eq!(out, sentinel());
        expect_err(
            kd_dataset_new(&opts, ptr::null_mut()),
            INVALID,
            &["`out_dataset`"],
        );
    }
    // NULL arrays and views with a non-zero length.
    let nulls = [
        (
            kd_dataset_options {
                topics: ptr::null(),
                topics_len: 2,
                ..options(&topics)
            },
            "`topics`",
        ),
        (
            kd_dataset_options {
                config_global: ptr::null(),
                config_global_len: 1,
                ..options(&topics)
            },
            "`config_global`",
        ),
        (
            kd_dataset_options {
                config_topic: ptr::null(),
                config_topic_len: 3,
                ..options(&topics)
            },
            "`config_topic`",
        ),
        (
            kd_dataset_options {
                servers: kd_str {
                    data: ptr::null(),
                    len: 5,
                },
                ..options(&topics)
            },
            "`servers`",
        ),
        (
            kd_dataset_options {
                group: kd_str {
                    data: ptr::null(),
                    len: 1,
                },
                ..options(&topics)
            },
            "`group`",
        ),
    ];
    for (opts, name) in &nulls {
        dataset_fails(opts, &[name, "NULL"]);
    }
    let second_null = [
        s("t"),
        kd_str {
            data: ptr::null(),
            len: 2,
        },
    ];
    dataset_fails(&options(&second_null), &["`topics[1]`"]);
}

#[test]
fn dataset_new_rejects_bad_options_naming_the_item() {
    let good = [s("t")];
    dataset_fails(&options(&[]), &["topics is empty"]);
    // An empty array may have a NULL pointer; it is then the same empty list.
    dataset_fails(
        &kd_dataset_options {
            topics: ptr::null(),
            topics_len: 0,
            ..options(&good)
        },
        &["topics is empty"],
    );
    let entries = [
        ("t:x", "partition \"x\""),
        ("t:0:soon", "offset \"soon\""),
        ("t:0:5:3", "last 3"),
        ("bad topic", "' '"),
        ("t:0:1:2:3", "5 fields"),
        ("", "topic is empty"),
    ];
    for (entry, why) in entries {
        let topics = [s("ok:0"), s(entry)];
        dataset_fails(
            &options(&topics),
            &["topics[1]", &format!("\"{entry}\""), why],
        );
    }
    for timeout_ms in [0, -1, i64::MIN, i32::MAX as i64 + 1] {
        let message = dataset_fails(
            &kd_dataset_options {
                timeout_ms,
                ..options(&good)
            },
            &["timeout"],
        );
        assert!(message.contains(&timeout_ms.to_string()), "{message}");
    }
    let configs: [(&str, &[&str]); 5] = [
        (
            "no.such.key=1",
            &["\"no.such.key\"", "unknown client property"],
        ),
        (
            "fetch.wait.max.ms=soon",
            &["\"fetch.wait.max.ms\"", "invalid value"],
        ),
        ("no-equals-sign", &["expected Key=Value"]),
        ("=1", &["empty key"]),
        (
            "enable.auto.commit=true",
            &["\"enable.auto.commit\"", "by kafka-dataset itself"],
        ),
    ];
    for (item, needles) in configs {
        let global = [s("client.id=x"), s(item)];
        let opts = kd_dataset_options {
            config_global: global.as_ptr(),
            config_global_len: global.len(),
            ..options(&good)
        };
        let message = dataset_fails(&opts, &[&["config_global[1]"], needles].concat());
        assert!(!message.contains("no-equals-sign"), "{message}");
    }
    let topic_cfg = [s("no.such.topic.key=1")];
    dataset_fails(
        &kd_dataset_options {
            config_topic: topic_cfg.as_ptr(),
            config_topic_len: 1,
            ..options(&good)
        },
        &[
            "config_topic[0]",
            "\"no.such.topic.key\"",
            "unknown topic property",
        ],
    );
    for servers in ["", "   "] {
        dataset_fails(
            &kd_dataset_options {
                servers: s(servers),
                ..options(&good)
            },
            &["servers is empty"],
        );
    }
    for (workers, index, needle) in [
        (0, 0, "num_workers"),
        (65_537, 0, "num_workers"),
        (2, 2, "worker_index"),
        (2, -1, "worker_index"),
    ] {
        dataset_fails(
            &kd_dataset_options {
                num_workers: workers,
                worker_index: index,
                ..options(&good)
            },
            &[needle],
        );
    }
    dataset_fails(
        &kd_dataset_options {
            subscribe: true,
            ..options(&good)
        },
        &["subscribe=True", "group"],
    );
    let stored = [s("t:0:stored")];
    dataset_fails(&options(&stored), &["\"t:0:stored\"", "consumer group"]);
}

#[test]
fn dataset_new_accepts_valid_options() {
    let topics = [s("t"), s("u:3:@1700000000000:-1"), s("v:0:end")];
    let global = [s("client.id=abi"), s("   "), s("socket.timeout.ms=5000")];
    let whole_topic = [s("t")];
    let variants = [
        options(&topics),
        kd_dataset_options {
            eof: false,
            timeout_ms: i32::MAX as i64,
            config_global: global.as_ptr(),
            config_global_len: global.len(),
            num_workers: 4,
            worker_index: 3,
            ..options(&topics)
        },
        kd_dataset_options {
            group: s("g"),
            subscribe: true,
            ..options(&whole_topic)
        },
    ];
    for opts in &variants {
        match new_dataset(opts) {
            Ok(d) => unsafe { kd_dataset_free(d) },
            Err(e) => expect_ok(e),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Borrowed views: read by length, never past it.

/// `bytes` copied so that they end exactly where an unreadable page begins: reading one byte
/// past the view faults.
struct Guarded {
    base: *mut u8,
    page: usize,
    len: usize,
}

impl Guarded {
    fn new(bytes: &[u8]) -> Self {
        unsafe {
            let page = libc::sysconf(libc::_SC_PAGESIZE) as usize;
            assert!(bytes.len() <= page);
            let base = libc::mmap(
                ptr::null_mut(),
                2 * page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(base, libc::MAP_FAILED);
            let base = base as *mut u8;
            assert_eq!(
                libc::mprotect(base.add(page) as *mut _, page, libc::PROT_NONE),
                0
            );
            let start = base.add(page - bytes.len());
            ptr::copy_nonoverlapping(bytes.as_ptr(), start, bytes.len());
            Guarded {
                base,
                page,
                len: bytes.len(),
            }
        }
    }

    fn view(&self) -> kd_str {
        kd_str {
            data: unsafe { self.base.add(self.page - self.len) } as *const c_char,
            len: self.len,
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        unsafe { libc::munmap(self.base as *mut _, 2 * self.page) };
    }
}

#[test]
fn views_end_at_their_length() {
    // Every string argument ends at a guard page.
    let topic = Guarded::new(b"t:0:5:9");
    let servers = Guarded::new(b"127.0.0.1:1");
    let group = Guarded::new(b"g");
    let global = Guarded::new(b"client.id=abi");
    let topic_cfg = Guarded::new(b"auto.offset.reset=earliest");
    let topics = [topic.view()];
    let global_items = [global.view()];
    let topic_items = [topic_cfg.view()];
    let opts = kd_dataset_options {
        servers: servers.view(),
        group: group.view(),
        config_global: global_items.as_ptr(),
        config_global_len: 1,
        config_topic: topic_items.as_ptr(),
        config_topic_len: 1,
        ..options(&topics)
    };
    let d = new_dataset(&opts).map_err(expect_ok).unwrap();
    unsafe { kd_dataset_free(d) };
    // An empty view may point anywhere, even at unreadable memory.
    let empty = Guarded::new(b"");
    let opts = kd_dataset_options {
        group: empty.view(),
        ..options(&topics)
    };
    let d = new_dataset(&opts).map_err(expect_ok).unwrap();
    unsafe { kd_dataset_free(d) };
    // A bad entry at a guard page is named without reading past it.
    let bad = Guarded::new(b"t:zz");
    dataset_fails(&options(&[bad.view()]), &["topics[0]", "\"t:zz\""]);
}

#[test]
fn views_ignore_the_bytes_after_their_length() {
    // Each buffer continues with bytes that would make the item invalid if read.
    let topic_buf = b"t:0:oops";
    let servers_buf = b"127.0.0.1:1\0garbage";
    let config_buf = b"client.id=abi\xff";
    let topics = [raw(&topic_buf[..3])];
    let global = [raw(&config_buf[..13])];
    let opts = kd_dataset_options {
        servers: raw(&servers_buf[..11]),
        config_global: global.as_ptr(),
        config_global_len: 1,
        ..options(&topics)
    };
    let d = new_dataset(&opts).map_err(expect_ok).unwrap();
    unsafe { kd_dataset_free(d) };
    // An error names the item as far as its length goes.
    let buf = b"t:zzSECRET";
    let message = dataset_fails(&options(&[raw(&buf[..4])]), &["\"t:zz\""]);
    assert!(!message.contains("SECRET"), "{message}");
    // A length that cuts a UTF-8 sequence short is not UTF-8.
    let e_acute = "té".as_bytes();
    dataset_fails(&options(&[raw(&e_acute[..2])]), &["topics[0]", "UTF-8"]);
}

#[test]
fn embedded_nul_bytes_are_data_not_terminators() {
    // A NUL inside an entry is an illegal topic character, not the end of the string.
    let message = dataset_fails(&options(&[raw(b"t\0x:0")]), &["topics[0]", "'\\0'"]);
    assert!(message.contains("x:0"), "{message}");
    let global = [raw(b"client.id=a\0b")];
    dataset_fails(
        &kd_dataset_options {
            config_global: global.as_ptr(),
            config_global_len: 1,
            ..options(&[s("t")])
        },
        &["config_global[0]", "NUL byte"],
    );
}

#[test]
fn non_utf8_views_are_invalid_arguments_naming_the_argument() {
    let bad_bytes: [&[u8]; 4] = [
        b"t\xff",
        b"\xc3\x28",
        b"\xed\xa0\x80",
        b"\xf8\x88\x80\x80\x80",
    ];
    for bad in bad_bytes {
        let good = [s("t")];
        let topics = [s("t"), s("u"), raw(bad)];
        dataset_fails(&options(&topics), &["topics[2]", "UTF-8"]);
        dataset_fails(
            &kd_dataset_options {
                servers: raw(bad),
                ..options(&good)
            },
            &["servers", "UTF-8"],
        );
        dataset_fails(
            &kd_dataset_options {
                group: raw(bad),
                ..options(&good)
            },
            &["group", "UTF-8"],
        );
        let items = [raw(bad)];
        dataset_fails(
            &kd_dataset_options {
                config_global: items.as_ptr(),
                config_global_len: 1,
                ..options(&good)
            },
            &["config_global[0]", "UTF-8"],
        );
        let items = [s("auto.offset.reset=earliest"), raw(bad)];
        dataset_fails(
            &kd_dataset_options {
                config_topic: items.as_ptr(),
                config_topic_len: 2,
                ..options(&good)
            },
            &["config_topic[1]", "UTF-8"],
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Reader functions with NULL handles (no broker needed).

#[test]
fn reader_functions_reject_a_null_reader_without_writing() {
    let topics = [s("t")];
    let dataset = new_dataset(&options(&topics)).map_err(expect_ok).unwrap();
    unsafe {
        let mut reader = sentinel::<kd_reader>();
        expect_err(
            kd_reader_new(ptr::null(), &mut reader),
            INVALID,
            &["`dataset`"],
        );
        assert_eq!(reader, sentinel());
        // Checked before connecting: no broker listens on the dataset's port.
        expect_err(
            kd_reader_new(dataset, ptr::null_mut()),
            INVALID,
            &["`out_reader`"],
        );
        kd_dataset_free(dataset);

        let null = ptr::null_mut::<kd_reader>();
        let mut status = StatusSlot::new();

        let mut count = 4242usize;
        expect_err(
            kd_reader_next_batch(null, 8, 0, status.ptr(), &mut count),
            INVALID,
            &["`reader`"],
        );
        assert!(status.untouched() && count == 4242);

        let mut views = [sentinel_view(), sentinel_view()];
        for n in [0, 1, 2] {
            expect_err(
                kd_reader_batch_messages(null, views.as_mut_ptr(), n),
                INVALID,
                &["`reader`"],
            );
        }
        assert!(views.iter().all(is_sentinel_view));

        let mut counts = [4242usize; 2];
        let mut headers = [sentinel_header(), sentinel_header()];
        let mut total = 4242usize;
        expect_err(
            kd_reader_batch_headers(
                null,
                2,
                counts.as_mut_ptr(),
                headers.as_mut_ptr(),
                2,
                &mut total,
            ),
            INVALID,
            &["`reader`"],
        );
        assert_eq!((counts, total), ([4242, 4242], 4242));
        assert!(headers.iter().all(is_sentinel_header));

        let mut state = kd_bytes {
            data: sentinel(),
            len: 99,
        };
        expect_err(kd_reader_save(null, &mut state), INVALID, &["`reader`"]);
        assert_eq!((state.data, state.len), (sentinel::<u8>() as *const u8, 99));
        expect_err(kd_reader_commit(null), INVALID, &["`reader`"]);

        expect_err(
            kd_reader_stream_count(null, &mut count),
            INVALID,
            &["`reader`"],
        );
        assert_eq!(count, 4242);

        let mut position = kd_stream_position {
            topic: kd_str {
                data: sentinel(),
                len: 5,
            },
            partition: -5,
            next_offset: -6,
            finished: true,
        };
        expect_err(
            kd_reader_stream_position(null, 0, &mut position),
            INVALID,
            &["`reader`"],
        );
        assert_eq!(
            (position.topic.len, position.partition, position.next_offset),
            (5, -5, -6)
        );

        let bytes = b"KDST";
        expect_err(
            kd_reader_restore(null, bytes.as_ptr(), bytes.len()),
            INVALID,
            &["`reader`"],
        );
        expect_err(
            kd_reader_restore(null, ptr::null(), 0),
            INVALID,
            &["`reader`"],
        );
    }
}

// ---------------------------------------------------------------------------------------------
// A live reader on librdkafka's mock cluster.

const TOPIC: &str = "abi";

/// (partition, offset, timestamp, key, value) in merge (timestamp) order.
const MESSAGES: [(i32, i64, i64, &str, &str); 5] = [
    (0, 0, 1000, "k0", "v0"),
    (1, 0, 1001, "k1", "w0"),
    (0, 1, 1002, "k2", "v1"),
    (1, 1, 1003, "", "w1"),
    (0, 2, 1004, "k4", "v2"),
];

struct Cluster {
    mock: MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
}

impl Cluster {
    fn new() -> Self {
        let mock = MockCluster::new(1).expect("mock cluster");
        mock.create_topic(TOPIC, 2, 1).expect("topic");
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", mock.bootstrap_servers())
            .set("linger.ms", "0")
            .create()
            .expect("producer");
        for (partition, _, ts, key, value) in MESSAGES {
            let mut record = BaseRecord::to(TOPIC)
                .partition(partition)
                .payload(value)
                .timestamp(ts);
            if !key.is_empty() {
                record = record.key(key);
            }
            producer.send(record).map_err(|(e, _)| e).expect("send");
        }
        producer.flush(Duration::from_secs(10)).expect("flush");
        Cluster { mock }
    }

    /// A reader over the whole topic through the C ABI.
    fn reader(&self) -> *mut kd_reader {
        let servers = self.mock.bootstrap_servers();
        let topics = [s(TOPIC)];
        let dataset = new_dataset(&kd_dataset_options {
            servers: s(&servers),
            ..options(&topics)
        })
        .map_err(expect_ok)
        .unwrap();
        let mut reader = sentinel::<kd_reader>();
        expect_ok(unsafe { kd_reader_new(dataset, &mut reader) });
        assert!(!reader.is_null() && reader != sentinel());
        // Readers outlive their dataset.
        unsafe { kd_dataset_free(dataset) };
        reader
    }
}

type Element = (i32, i64, i64, Vec<u8>, Vec<u8>);

fn expected() -> Vec<Element> {
    MESSAGES
        .iter()
        .map(|&(p, o, ts, k, v)| (p, o, ts, k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

unsafe fn element(v: &kd_message_view) -> Element {
    assert_eq!(str_of(v.topic), TOPIC, "topic view has exactly its length");
    (
        v.partition,
        v.offset,
        v.timestamp,
        bytes_of(v.key),
        bytes_of(v.value),
    )
}

/// One `kd_reader_next_batch` call (100 ms wait) that must succeed: its status and count.
unsafe fn next_batch(reader: *mut kd_reader, max_elements: usize) -> (kd_next_status, usize) {
    let mut status = StatusSlot::new();
    let mut count = 4242usize;
    expect_ok(kd_reader_next_batch(
        reader,
        max_elements,
        100,
        status.ptr(),
        &mut count,
    ));
    (status.get(), count)
}

/// One element (a batch of one) or the end, within 30 s.
unsafe fn next(reader: *mut kd_reader) -> Option<Element> {
    let stop = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < stop, "no element or end within 30 s");
        let (status, count) = next_batch(reader, 1);
        match status {
            kd_next_status::KD_NEXT_ELEMENT => {
                assert_eq!(count, 1);
                let mut view = sentinel_view();
                expect_ok(kd_reader_batch_messages(reader, &mut view, 1));
                return Some(element(&view));
            }
            kd_next_status::KD_NEXT_PENDING => assert_eq!(count, 0),
            kd_next_status::KD_NEXT_END => {
                assert_eq!(count, 0, "a count at the end");
                return None;
            }
        }
    }
}

unsafe fn read_all(reader: *mut kd_reader) -> Vec<Element> {
    std::iter::from_fn(|| next(reader)).collect()
}

unsafe fn save(reader: *mut kd_reader) -> Vec<u8> {
    let mut state = kd_bytes {
        data: ptr::null(),
        len: 0,
    };
    expect_ok(kd_reader_save(reader, &mut state));
    assert!(state.len > 0);
    bytes_of(state)
}

#[test]
fn live_reader_null_out_params_and_bad_indexes_change_nothing() {
    let cluster = Cluster::new();
    let reader = cluster.reader();
    unsafe {
        let mut status = StatusSlot::new();
        let mut count = 4242usize;
        expect_err(
            kd_reader_next_batch(reader, 8, 100, ptr::null_mut(), &mut count),
            INVALID,
            &["`out_status`"],
        );
        assert_eq!(count, 4242);
        expect_err(
            kd_reader_next_batch(reader, 8, 100, status.ptr(), ptr::null_mut()),
            INVALID,
            &["`out_count`"],
        );
        assert!(status.untouched());

        expect_err(
            kd_reader_save(reader, ptr::null_mut()),
            INVALID,
            &["`out_state`"],
        );
        // Without a group a commit is a no-op, before and after reading.
        expect_ok(kd_reader_commit(reader));
        expect_err(
            kd_reader_stream_count(reader, ptr::null_mut()),
            INVALID,
            &["`out_count`"],
        );
        expect_err(
            kd_reader_stream_position(reader, 0, ptr::null_mut()),
            INVALID,
            &["`out_position`"],
        );

        // No batch yet: asking for elements fails and writes nothing; zero elements need no
        // array.
        let mut views = [sentinel_view(), sentinel_view()];
        expect_err(
            kd_reader_batch_messages(reader, views.as_mut_ptr(), 1),
            INVALID,
            &["1 batch elements", "has 0"],
        );
        assert!(views.iter().all(is_sentinel_view));
        expect_ok(kd_reader_batch_messages(reader, ptr::null_mut(), 0));

        let mut n = 4242usize;
        expect_ok(kd_reader_stream_count(reader, &mut n));
        assert_eq!(n, 2);
        for index in 0..n {
            let mut position = std::mem::zeroed::<kd_stream_position>();
            position.finished = true;
            expect_ok(kd_reader_stream_position(reader, index, &mut position));
            assert_eq!(str_of(position.topic), TOPIC);
            assert_eq!(
                (position.partition, position.next_offset, position.finished),
                (index as i32, 0, false)
            );
        }
        let mut position = kd_stream_position {
            topic: kd_str {
                data: sentinel(),
                len: 5,
            },
            partition: -5,
            next_offset: -6,
            finished: true,
        };
        for index in [2, usize::MAX] {
            expect_err(
                kd_reader_stream_position(reader, index, &mut position),
                INVALID,
                &[&format!("stream index {index}"), "2 streams"],
            );
        }
        assert_eq!(
            (
                position.topic.data,
                position.topic.len,
                position.partition,
                position.next_offset,
                position.finished
            ),
            (sentinel::<c_char>() as *const c_char, 5, -5, -6, true)
        );

        // Failed restores leave the position alone.
        let before = save(reader);
        expect_err(
            kd_reader_restore(reader, ptr::null(), 3),
            INVALID,
            &["`state`"],
        );
        for garbage in [
            &b""[..],
            b"KDST",
            b"not a state at all",
            &before[..before.len() - 1],
        ] {
            expect_err(
                kd_reader_restore(reader, garbage.as_ptr(), garbage.len()),
                kd_code::KD_CODE_FAILED_PRECONDITION,
                &["checkpoint"],
            );
        }
        assert_eq!(save(reader), before);

        // None of the failed calls consumed anything.
        assert_eq!(read_all(reader), expected());
        kd_reader_free(reader);
    }
}

#[test]
fn live_reader_reads_saves_and_restores_through_the_abi() {
    let cluster = Cluster::new();
    let reader = cluster.reader();
    unsafe {
        let start = save(reader);
        let first = next(reader).expect("first element");
        assert_eq!(first, expected()[0]);
        let after_first = save(reader);
        assert_ne!(after_first, start);

        // The rest in batches of at most 2, read through kd_reader_batch_messages.
        let mut got = vec![first];
        let stop = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < stop, "no end within 30 s");
            let (status, count) = next_batch(reader, 2);
            match status {
                kd_next_status::KD_NEXT_ELEMENT => {
                    assert!((1..=2).contains(&count), "count {count}");
                    let mut views = [sentinel_view(), sentinel_view(), sentinel_view()];
                    expect_err(
                        kd_reader_batch_messages(reader, views.as_mut_ptr(), count + 1),
                        INVALID,
                        &["batch"],
                    );
                    assert!(views.iter().all(is_sentinel_view));
                    expect_ok(kd_reader_batch_messages(reader, views.as_mut_ptr(), count));
                    for v in &views[..count] {
                        got.push(element(v));
                    }
                    assert!(views[count..].iter().all(is_sentinel_view));
                }
                kd_next_status::KD_NEXT_PENDING => assert_eq!(count, 0),
                kd_next_status::KD_NEXT_END => {
                    assert_eq!(count, 0);
                    break;
                }
            }
        }
        assert_eq!(got, expected());
        // The end repeats.
        assert_eq!(next(reader), None);
        let end = save(reader);

        // Back to after the first element, then to the start, then to the end.
        expect_ok(kd_reader_restore(
            reader,
            after_first.as_ptr(),
            after_first.len(),
        ));
        assert_eq!(read_all(reader), expected()[1..]);
        expect_ok(kd_reader_restore(reader, start.as_ptr(), start.len()));
        assert_eq!(read_all(reader), expected());
        expect_ok(kd_reader_restore(reader, end.as_ptr(), end.len()));
        assert_eq!(next(reader), None);
        kd_reader_free(reader);
    }
}

/// `kd_reader_next_batch` documents a batch of 1..=`max_elements`; with `max_elements` 0 a C
/// caller sizes its array for 0 views and must not be told there is 1.
#[test]
fn next_batch_never_reports_more_than_max_elements() {
    let cluster = Cluster::new();
    let reader = cluster.reader();
    unsafe {
        let stop = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < stop, "no element within 30 s");
            let mut status = StatusSlot::new();
            let mut count = 4242usize;
            let err = kd_reader_next_batch(reader, 0, 100, status.ptr(), &mut count);
            if !err.is_null() {
                expect_err(err, INVALID, &["max_elements"]);
                assert!(status.untouched() && count == 4242);
                break;
            }
            assert!(count == 0, "max_elements 0, count {count}");
            if status.get() != kd_next_status::KD_NEXT_PENDING {
                break;
            }
        }
        kd_reader_free(reader);
    }
}

// ---------------------------------------------------------------------------------------------
// The panic boundary.

/// The state format's CRC-32 (IEEE, reflected), to forge states that pass the checksum.
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

/// A pointer handed to the watchdog thread.
struct SendPtr<T>(*mut T);

// SAFETY: the reader is used by one thread at a time: the caller waits for the restore or,
// past the limit, never touches the reader again.
unsafe impl<T> Send for SendPtr<T> {}

/// `kd_reader_restore` on another thread; `None` if it has not returned within `limit` (the
/// reader is then abandoned to that thread).
fn restore_within(
    reader: *mut kd_reader,
    state: Vec<u8>,
    limit: Duration,
) -> Option<*mut kd_error> {
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = SendPtr(reader);
    std::thread::spawn(move || {
        let reader = reader;
        let err = unsafe { kd_reader_restore(reader.0, state.as_ptr(), state.len()) };
        let _ = tx.send(SendPtr(err));
    });
    rx.recv_timeout(limit).ok().map(|err| err.0)
}

/// Byte ranges of a version-4 state holding the partition numbers of its `partitions` list
/// (the partitions the reader owned), parsed by the documented layout: magic, version, group
/// text, workers, index, count, then `count` × (text, i32). Texts are a u32 length + bytes.
fn owned_partition_fields(state: &[u8]) -> Vec<std::ops::Range<usize>> {
    assert_eq!(&state[..6], b"KDST\x04\x00", "a version-4 state");
    let u32_at = |at: usize| u32::from_le_bytes(state[at..at + 4].try_into().unwrap()) as usize;
    let mut at = 6;
    at += 4 + u32_at(at); // group
    at += 8; // workers, index
    let count = u32_at(at);
    at += 4;
    (0..count)
        .map(|_| {
            at += 4 + u32_at(at); // topic
            at += 4;
            at - 4..at
        })
        .collect()
}

/// A saved state after one element, with its owned partition `index` replaced by `partition`
/// and the checksum recomputed.
fn forge_owned_partition(good: &[u8], index: usize, partition: i32) -> Vec<u8> {
    let field = owned_partition_fields(good)[index].clone();
    let mut forged = good[..good.len() - 4].to_vec();
    forged[field].copy_from_slice(&partition.to_le_bytes());
    let crc = crc32(&forged);
    forged.extend_from_slice(&crc.to_le_bytes());
    forged
}

const RESTORE_LIMIT: Duration = Duration::from_secs(20);

/// No public entry point panics (or hangs) on hostile input: every single-byte corruption
/// of a real state that still passes the checksum is either restored or refused, promptly,
/// with an error that is not Internal (the code a caught panic becomes). The owned-partition
/// numbers are left out here: see `forged_partition_numbers_are_refused_promptly`.
#[test]
fn forged_states_never_reach_the_panic_boundary() {
    let cluster = Cluster::new();
    let reader = cluster.reader();
    unsafe {
        assert!(next(reader).is_some());
        let good = save(reader);
        let body_len = good.len() - 4;
        assert_eq!(
            crc32(&good[..body_len]).to_le_bytes(),
            good[body_len..],
            "the state's checksum is the CRC-32 this test forges"
        );
        let skipped = owned_partition_fields(&good);
        assert_eq!(skipped.len(), 2, "both partitions owned");
        let (mut restored, mut refused) = (0, 0);
        for at in (0..body_len).filter(|at| !skipped.iter().any(|r| r.contains(at))) {
            for value in [0x00, 0xff, good[at] ^ 0x01] {
                if value == good[at] {
                    continue;
                }
                let mut forged = good[..body_len].to_vec();
                forged[at] = value;
                forged.extend_from_slice(&crc32(&forged).to_le_bytes());
                let Some(err) = restore_within(reader, forged, RESTORE_LIMIT) else {
                    panic!("byte {at} = {value:#x}: restore still running after {RESTORE_LIMIT:?}");
                };
                if err.is_null() {
                    restored += 1;
                    continue;
                }
                refused += 1;
                let (code, message) = take(err);
                assert_ne!(
                    code,
                    kd_code::KD_CODE_INTERNAL,
                    "byte {at} = {value:#x}: {message}"
                );
            }
        }
        assert!(
            refused > 0 && restored > 0,
            "{refused} refused, {restored} restored"
        );
        // The reader still works after all of that.
        expect_ok(kd_reader_restore(reader, good.as_ptr(), good.len()));
        assert_eq!(read_all(reader), expected()[1..]);
        kd_reader_free(reader);
    }
}

/// A forged partition number in a checkpoint (whose whole-topic entry it would expand into
/// millions of partitions, or whose `+ 1` would overflow at `i32::MAX`) is refused promptly as
/// not matching, never Internal, and a refused restore changes nothing. Before the fix,
/// 2^20 made `kd_reader_restore` spin for hours and `i32::MAX` panicked in debug builds.
#[test]
fn forged_partition_numbers_are_refused_promptly() {
    let cluster = Cluster::new();
    let reader = cluster.reader();
    unsafe {
        assert!(next(reader).is_some());
        let good = save(reader);
        for partition in [i32::MAX, 1 << 20, 1 << 24] {
            let forged = forge_owned_partition(&good, 1, partition);
            let Some(err) = restore_within(reader, forged, RESTORE_LIMIT) else {
                panic!("partition {partition}: restore still running after {RESTORE_LIMIT:?}");
            };
            expect_err(err, kd_code::KD_CODE_FAILED_PRECONDITION, &["checkpoint"]);
            assert_eq!(save(reader), good, "a refused restore changes nothing");
        }
        kd_reader_free(reader);
    }
}

/// The boundary can only turn a panic into an error if panics unwind (DESIGN.md §5); the
/// release profile (the one the TensorFlow library ships with) must keep `panic = "unwind"`.
#[test]
fn release_profile_unwinds() {
    let manifest = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"),
    )
    .expect("Cargo.toml");
    let release = manifest
        .split("[profile.release]")
        .nth(1)
        .expect("a [profile.release] section");
    let section = release.split("\n[").next().unwrap_or(release);
    let panic = section
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("panic"))
        .expect("panic set explicitly in [profile.release]");
    assert_eq!(panic.replace(' ', ""), "panic=\"unwind\"");
}

/// A Rust panic inside the C ABI (the test-only `kd_test_panic`, feature `test-hooks`) comes
/// back as an Internal error naming the panic, and the process goes on working.
#[cfg(feature = "test-hooks")]
#[test]
fn a_panic_inside_the_abi_is_an_internal_error_and_the_process_lives() {
    for round in 0..3 {
        let (code, message) = unsafe { take(kd_test_panic(s("deliberate test panic"))) };
        assert_eq!(code, kd_code::KD_CODE_INTERNAL, "round {round}");
        assert!(message.contains("deliberate test panic"), "{message}");
    }
    // The ABI still works afterwards.
    let (code, _) = unsafe { take(kd_test_panic(raw(b"\xff\xfe"))) };
    assert_eq!(
        code,
        kd_code::KD_CODE_INVALID_ARGUMENT,
        "bad view checked before panicking"
    );
}

#[test]
fn stats_show_a_live_readers_counters_and_free_back_to_the_baseline() {
    let cluster = Cluster::new();
    let reader = cluster.reader();
    unsafe {
        assert_eq!(read_all(reader).len(), MESSAGES.len());
        expect_err(kd_stats_json(ptr::null_mut()), INVALID, &["out_text"]);

        let before = live();
        let mut text = sentinel::<kd_text>();
        expect_ok(kd_stats_json(&mut text));
        assert!(!text.is_null() && text != sentinel());
        let json = str_of(kd_text_view(text));
        kd_text_free(text);

        // This reader, after its end: every message and key/value byte counted, nothing
        // left to read.
        let bytes: usize = MESSAGES.iter().map(|m| m.3.len() + m.4.len()).sum();
        let summary = format!(
            "\"topics\":[\"{TOPIC}\"],\"group\":\"\",\"messages\":{},\"bytes\":{bytes},\"late_elements\":0,\"idle_passes\":0,\"skipped_offsets\":0,\"rewound_offsets\":0,\"stale_offsets\":0,\"rebalances\":0,\"lag\":0,",
            MESSAGES.len()
        );
        assert!(json.contains(&summary), "{summary} not in {json}");
        for (partition, next_offset) in [(0, 3), (1, 2)] {
            let entry = format!(
                "{{\"topic\":\"{TOPIC}\",\"partition\":{partition},\"next_offset\":{next_offset},\"high_watermark\":{next_offset},\"lag\":0,\"finished\":true,"
            );
            assert!(json.contains(&entry), "{entry} not in {json}");
        }
        drop((json, summary));
        assert_eq!(live(), before, "the text freed everything it allocated");
        kd_reader_free(reader);
    }
}

// ---------------------------------------------------------------------------------------------
// Headers (metadata=True in the shim).

/// A header as C reads it: name, value (`None` = null).
type HeaderOf = (Vec<u8>, Option<Vec<u8>>);
/// A header as the test produces it.
type HeaderIn = (&'static str, Option<&'static [u8]>);

#[test]
fn batch_headers_keep_order_duplicates_and_null_vs_empty() {
    use rdkafka::message::{Header, OwnedHeaders};
    let mock = MockCluster::new(1).expect("mock cluster");
    mock.create_topic("abi-headers", 1, 1).expect("topic");
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap_servers())
        .set("linger.ms", "50")
        .create()
        .expect("producer");
    let sets: Vec<Vec<HeaderIn>> = vec![
        vec![
            ("a", Some(b"1")),
            ("n", None),
            ("e", Some(b"")),
            ("a", Some(b"\x00\xff")),
        ],
        vec![],
        vec![("x", Some(b"y"))],
    ];
    for (i, set) in sets.iter().enumerate() {
        let mut headers = OwnedHeaders::new();
        for &(key, value) in set {
            headers = headers.insert(Header { key, value });
        }
        let payload = format!("v{i}");
        let mut record = BaseRecord::<(), _>::to("abi-headers")
            .partition(0)
            .payload(&payload)
            .timestamp(1000 + i as i64);
        if !set.is_empty() {
            record = record.headers(headers);
        }
        producer.send(record).map_err(|(e, _)| e).expect("send");
    }
    producer.flush(Duration::from_secs(10)).expect("flush");
    let expected: Vec<Vec<HeaderOf>> = sets
        .iter()
        .map(|set| {
            set.iter()
                .map(|&(k, v)| (k.as_bytes().to_vec(), v.map(<[u8]>::to_vec)))
                .collect()
        })
        .collect();

    let servers = mock.bootstrap_servers();
    let topics = [s("abi-headers")];
    let dataset = new_dataset(&kd_dataset_options {
        servers: s(&servers),
        ..options(&topics)
    })
    .map_err(expect_ok)
    .unwrap();
    let mut reader = sentinel::<kd_reader>();
    unsafe {
        expect_ok(kd_reader_new(dataset, &mut reader));
        kd_dataset_free(dataset);
        let mut got: Vec<Vec<HeaderOf>> = Vec::new();
        let stop = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < stop, "no end within 30 s");
            let (status, count) = next_batch(reader, 8);
            match status {
                kd_next_status::KD_NEXT_ELEMENT => {}
                kd_next_status::KD_NEXT_PENDING => continue,
                kd_next_status::KD_NEXT_END => break,
            }
            // More elements than the batch: an error, nothing written.
            let mut counts = vec![4242usize; count + 1];
            let mut total = 4242usize;
            expect_err(
                kd_reader_batch_headers(
                    reader,
                    count + 1,
                    counts.as_mut_ptr(),
                    ptr::null_mut(),
                    0,
                    &mut total,
                ),
                INVALID,
                &["headers of", "batch elements"],
            );
            assert!(total == 4242 && counts.iter().all(|&c| c == 4242));
            expect_err(
                kd_reader_batch_headers(
                    reader,
                    count,
                    counts.as_mut_ptr(),
                    ptr::null_mut(),
                    0,
                    ptr::null_mut(),
                ),
                INVALID,
                &["`out_total`"],
            );
            expect_err(
                kd_reader_batch_headers(
                    reader,
                    count,
                    ptr::null_mut(),
                    ptr::null_mut(),
                    0,
                    &mut total,
                ),
                INVALID,
                &["`out_header_counts`"],
            );
            assert_eq!(total, 4242);
            // No room: the counts and the total, headers untouched.
            let mut one = [sentinel_header()];
            expect_ok(kd_reader_batch_headers(
                reader,
                count,
                counts.as_mut_ptr(),
                one.as_mut_ptr(),
                0,
                &mut total,
            ));
            assert_eq!(total, counts[..count].iter().sum::<usize>());
            assert!(is_sentinel_header(&one[0]));
            if total > 0 {
                expect_err(
                    kd_reader_batch_headers(
                        reader,
                        count,
                        counts.as_mut_ptr(),
                        ptr::null_mut(),
                        total,
                        &mut total,
                    ),
                    INVALID,
                    &["`out_headers`"],
                );
            }
            // Room for all of them.
            let mut headers: Vec<kd_header_view> =
                (0..total + 1).map(|_| sentinel_header()).collect();
            let mut again = 0usize;
            expect_ok(kd_reader_batch_headers(
                reader,
                count,
                counts.as_mut_ptr(),
                headers.as_mut_ptr(),
                headers.len(),
                &mut again,
            ));
            assert_eq!(again, total);
            assert!(is_sentinel_header(&headers[total]), "wrote past the total");
            let mut at = 0;
            for &n in &counts[..count] {
                got.push(
                    headers[at..at + n]
                        .iter()
                        .map(|h| {
                            let value = bytes_of(h.value);
                            assert!(!h.value_is_null || value.is_empty());
                            (bytes_of(h.name), (!h.value_is_null).then_some(value))
                        })
                        .collect(),
                );
                at += n;
            }
        }
        assert_eq!(got, expected);
        kd_reader_free(reader);
    }
}
