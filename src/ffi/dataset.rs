//! `kd_dataset`: a validated, immutable dataset definition.

use super::error::kd_error;
use super::views::{kd_str, read_str, read_strs};
use super::{arg, arg_mut, boundary, free_handle};
use crate::dataset::DatasetSpec;
use crate::spec::Assignment;

/// A validated, immutable dataset definition; safe to share between threads.
pub struct kd_dataset {
    pub(super) spec: DatasetSpec,
}

/// The constructor arguments of a dataset, all borrowed for the duration of
/// [`kd_dataset_new`]. Arrays may be NULL when their length is 0.
#[repr(C)]
pub struct kd_dataset_options {
    /// Subscription entries `topic:partition:offset:last`.
    pub topics: *const kd_str,
    /// Number of entries.
    pub topics_len: usize,
    /// Bootstrap servers.
    pub servers: kd_str,
    /// Consumer group id; empty for none.
    pub group: kd_str,
    /// End at the end of each partition's log.
    pub eof: bool,
    /// Wait slice and idle deadline, in ms (> 0).
    pub timeout_ms: i64,
    /// Client properties `Key=Value`.
    pub config_global: *const kd_str,
    /// Number of client properties.
    pub config_global_len: usize,
    /// Topic properties `Key=Value`.
    pub config_topic: *const kd_str,
    /// Number of topic properties.
    pub config_topic_len: usize,
    /// Number of workers splitting the partitions (1 = read them all).
    pub num_workers: i64,
    /// This worker, `0..num_workers`.
    pub worker_index: i64,
    /// Join the consumer group and read the partitions it assigns (entries are topic names).
    pub subscribe: bool,
}

/// Parses and validates everything that can be checked without a broker: entries, config,
/// timeout, servers. On success writes a new dataset to `*out_dataset`.
///
/// # Safety
/// `options` must point to valid options whose views are readable for this call; `out_dataset`
/// must be writable.
#[no_mangle]
pub unsafe extern "C" fn kd_dataset_new(
    options: *const kd_dataset_options,
    out_dataset: *mut *mut kd_dataset,
) -> *mut kd_error {
    boundary(|| {
        let options = arg(options, "options")?;
        let out_dataset = arg_mut(out_dataset, "out_dataset")?;
        let spec = DatasetSpec::new(
            &read_strs(options.topics, options.topics_len, "topics")?,
            &read_str(options.servers, "servers")?,
            &read_str(options.group, "group")?,
            options.eof,
            options.timeout_ms,
            &read_strs(
                options.config_global,
                options.config_global_len,
                "config_global",
            )?,
            &read_strs(
                options.config_topic,
                options.config_topic_len,
                "config_topic",
            )?,
        )?
        .with_assignment(Assignment::new(options.num_workers, options.worker_index)?);
        let spec = if options.subscribe {
            spec.with_subscription()?
        } else {
            spec
        };
        *out_dataset = Box::into_raw(Box::new(kd_dataset { spec }));
        Ok(())
    })
}

/// Frees a dataset. NULL is ignored. Readers created from it stay valid.
///
/// # Safety
/// `dataset` must be NULL or a dataset from this library not yet freed.
#[no_mangle]
pub unsafe extern "C" fn kd_dataset_free(dataset: *mut kd_dataset) {
    free_handle(dataset)
}
