//! kafka-dataset core: reads Kafka partitions given as `topic:partition:offset:last`, merges
//! them in timestamp order, and saves/restores the exact position.
//!
//! Pure Rust, no TensorFlow. Layers (DESIGN.md §1): [`spec`] parses entries, [`config`]
//! validates consumer settings, [`cursor`] keeps each partition's position in its ranges,
//! [`merge`] decides the order, [`state`] encodes the position, `client` talks to Kafka
//! (consumer creation, look-ups, the error-code table), [`reader`] drives one consumer,
//! [`stats`] publishes its counters, and [`ffi`] exposes it all through a C ABI.

#![deny(missing_docs)]

mod client;
pub mod config;
pub mod cursor;
pub mod dataset;
pub mod error;
pub mod ffi;
pub mod merge;
pub mod queue;
pub mod reader;
pub mod spec;
pub mod state;
pub mod stats;

pub use dataset::DatasetSpec;
pub use error::{Error, ErrorKind, Result};
pub use reader::{Message, Next, Reader};
pub use spec::Assignment;

#[cfg(feature = "test-hooks")]
pub use client::consumers_created_on_this_thread;
