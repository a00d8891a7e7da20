//! kafka-dataset core: reads Kafka partitions given as `topic:partition:offset:last`, merges
//! them in timestamp order, and saves/restores the exact position.
//!
//! Pure Rust, no TensorFlow. Layers (DESIGN.md §1): [`spec`] parses entries, [`config`]
//! validates consumer settings, [`merge`] decides the order, [`state`] encodes the position,
//! [`reader`] drives one rdkafka consumer, [`stats`] publishes its counters, and [`ffi`]
//! exposes it all through a C ABI.

#![deny(missing_docs)]

pub mod config;
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
