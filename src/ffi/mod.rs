//! The C ABI (conventions of rustls-ffi): `kd_<object>_<verb>`, opaque handles with
//! `_new`/`_free`, every fallible call returns an owned `kd_error*` (NULL = ok), out-params are
//! written only on success, NULL arguments are errors, and one `catch_unwind` boundary turns a
//! panic into an Internal error. Borrowed views stay valid until the next call on the same
//! handle.
//!
//! One file per object: [`error`] (`kd_error`, the status codes), [`views`] (borrowed
//! `{data,len}` views, owned text), [`dataset`], [`reader`], [`stats`]. The helpers every call
//! shares live here: the panic boundary, the NULL check and the `_free`.

#![allow(non_camel_case_types)]

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::{Error, ErrorKind};

pub mod dataset;
pub mod error;
pub mod reader;
pub mod stats;
pub mod views;

pub use dataset::*;
pub use error::*;
pub use reader::*;
pub use stats::*;
pub use views::*;

/// The one panic boundary: runs `f`, turning an `Err` or a panic into an owned `kd_error*`.
fn boundary(f: impl FnOnce() -> Result<(), Error>) -> *mut kd_error {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => std::ptr::null_mut(),
        Ok(Err(err)) => error::new_error(err),
        Err(payload) => error::new_error(Error::new(
            ErrorKind::Internal,
            format!(
                "kafka-dataset bug (Rust panic): {}",
                panic_message(payload.as_ref())
            ),
        )),
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// The error for a NULL argument, naming it.
fn null_argument(name: &str) -> Error {
    Error::invalid(format!("kafka-dataset C API: argument `{name}` is NULL"))
}

/// The one NULL check for pointer arguments read by a call: `ptr` as a reference, or
/// InvalidArgument naming the argument.
///
/// # Safety
/// `ptr` must be NULL or valid for reads for `'a`.
unsafe fn arg<'a, T>(ptr: *const T, name: &str) -> Result<&'a T, Error> {
    ptr.as_ref().ok_or_else(|| null_argument(name))
}

/// [`arg`] for handles a call changes and out-params it writes.
///
/// # Safety
/// `ptr` must be NULL or valid for writes for `'a`, and not aliased.
unsafe fn arg_mut<'a, T>(ptr: *mut T, name: &str) -> Result<&'a mut T, Error> {
    ptr.as_mut().ok_or_else(|| null_argument(name))
}

/// The one `_free`: drops a handle made by `Box::into_raw`; NULL is ignored, and a panic in a
/// destructor stays on this side of the ABI.
///
/// # Safety
/// `ptr` must be NULL or a handle of type `T` from this library not yet freed.
unsafe fn free_handle<T>(ptr: *mut T) {
    if !ptr.is_null() {
        let _ = catch_unwind(AssertUnwindSafe(|| drop(Box::from_raw(ptr))));
    }
}

/// Test-only (feature `test-hooks`, never in a release build of the library): panics inside
/// the panic boundary with `message`, so a test can check that a Rust panic reaches C as an
/// Internal error and the process lives on.
///
/// # Safety
/// `message` must be a valid view.
#[cfg(feature = "test-hooks")]
#[no_mangle]
pub unsafe extern "C" fn kd_test_panic(message: kd_str) -> *mut kd_error {
    boundary(|| {
        let message = views::read_str(message, "message")?;
        panic!("{message}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::raw::c_char;

    fn s(text: &str) -> kd_str {
        kd_str {
            data: text.as_ptr() as *const c_char,
            len: text.len(),
        }
    }

    unsafe fn take(err: *mut kd_error) -> (kd_code, String) {
        assert!(!err.is_null(), "expected an error");
        let view = kd_error_message(err);
        let message =
            String::from_utf8_lossy(std::slice::from_raw_parts(view.data as *const u8, view.len))
                .into_owned();
        let code = kd_error_code(err);
        kd_error_free(err);
        (code, message)
    }

    fn options(topics: &[kd_str], timeout_ms: i64) -> kd_dataset_options {
        kd_dataset_options {
            topics: topics.as_ptr(),
            topics_len: topics.len(),
            servers: s("localhost:9092"),
            group: s(""),
            eof: true,
            timeout_ms,
            config_global: std::ptr::null(),
            config_global_len: 0,
            config_topic: std::ptr::null(),
            config_topic_len: 0,
            num_workers: 1,
            worker_index: 0,
            subscribe: false,
        }
    }

    #[test]
    fn a_panic_becomes_an_internal_error() {
        let err = boundary(|| panic!("boom {}", 42));
        let (code, message) = unsafe { take(err) };
        assert_eq!(code, kd_code::KD_CODE_INTERNAL);
        assert!(message.contains("boom 42"), "{message}");
    }

    #[test]
    fn dataset_new_validates_and_writes_out_param_only_on_success() {
        unsafe {
            let topics = [s("t:0:5:3")];
            let mut out: *mut kd_dataset = std::ptr::null_mut();
            let (code, message) = take(kd_dataset_new(&options(&topics, 100), &mut out));
            assert_eq!(code, kd_code::KD_CODE_INVALID_ARGUMENT);
            assert!(message.contains("t:0:5:3"), "{message}");
            assert!(out.is_null());
            let (code, _) = take(kd_dataset_new(&options(&[s("t")], 0), &mut out));
            assert_eq!(code, kd_code::KD_CODE_INVALID_ARGUMENT);
            assert!(kd_dataset_new(&options(&[s("t:0")], 100), &mut out).is_null());
            assert!(!out.is_null());
            kd_dataset_free(out);
        }
    }

    #[test]
    fn null_arguments_are_errors_not_crashes() {
        unsafe {
            let (code, _) = take(kd_dataset_new(std::ptr::null(), std::ptr::null_mut()));
            assert_eq!(code, kd_code::KD_CODE_INVALID_ARGUMENT);
            let mut status = kd_next_status::KD_NEXT_END;
            let mut count = 0usize;
            let (code, _) = take(kd_reader_next_batch(
                std::ptr::null_mut(),
                1,
                1,
                &mut status,
                &mut count,
            ));
            assert_eq!(code, kd_code::KD_CODE_INVALID_ARGUMENT);
            let (code, _) = take(kd_reader_new(std::ptr::null(), std::ptr::null_mut()));
            assert_eq!(code, kd_code::KD_CODE_INVALID_ARGUMENT);
            let bad_utf8 = [0xffu8, 0xfe];
            let topics = [kd_str {
                data: bad_utf8.as_ptr() as *const c_char,
                len: 2,
            }];
            let mut out: *mut kd_dataset = std::ptr::null_mut();
            let (code, message) = take(kd_dataset_new(&options(&topics, 100), &mut out));
            assert_eq!(code, kd_code::KD_CODE_INVALID_ARGUMENT);
            assert!(message.contains("topics[0]"), "{message}");
            kd_error_free(std::ptr::null_mut());
            kd_dataset_free(std::ptr::null_mut());
            kd_reader_free(std::ptr::null_mut());
            kd_text_free(std::ptr::null_mut());
        }
    }
}
