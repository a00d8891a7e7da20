//! The process-wide stats snapshot.

use super::error::kd_error;
use super::views::kd_text;
use super::{arg_mut, boundary};

/// Writes a snapshot of every live reader's counters and partition positions, as a JSON
/// document (see docs/operations.md, "Observability"), to `*out_text` (a new text to free with
/// `kd_text_free`). Counters and positions are exact up to each reader's last emitted
/// element; watermarks are the ones librdkafka saw when the reader last took fetched
/// messages; which partitions a reader has, and whether they finished, may lag by up to
/// 0.5 s of reading.
///
/// # Safety
/// `out_text` must be writable.
#[no_mangle]
pub unsafe extern "C" fn kd_stats_json(out_text: *mut *mut kd_text) -> *mut kd_error {
    boundary(|| {
        let out_text = arg_mut(out_text, "out_text")?;
        *out_text = Box::into_raw(Box::new(kd_text {
            text: crate::stats::snapshot_json(),
        }));
        Ok(())
    })
}
