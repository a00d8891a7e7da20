//! Benchmark baseline: a raw rdkafka `BaseConsumer` reading whole partitions as fast as it can
//! (the ceiling `bench/run.py` compares KafkaDataset against), tuned like librdkafka should be
//! for a fast reader. Prints `messages bytes seconds peak_rss_kib` once every partition ended.
//!
//!     cargo run --release --example raw_consume -- SERVERS TOPIC PARTITIONS

use std::time::Instant;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, servers, topic, partitions] = &args[..] else {
        eprintln!("usage: raw_consume SERVERS TOPIC PARTITIONS");
        std::process::exit(2);
    };
    let partitions: i32 = partitions.parse().expect("PARTITIONS is an integer");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", "kd-bench-raw")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("queued.min.messages", "1000000")
        .set("fetch.queue.backoff.ms", "0")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).expect("assign");
    let start = Instant::now();
    let (mut messages, mut bytes, mut ended) = (0u64, 0u64, 0);
    while ended < partitions {
        match consumer.poll(std::time::Duration::from_millis(100)) {
            Some(Ok(m)) => {
                messages += 1;
                bytes += m.payload_len() as u64;
            }
            Some(Err(KafkaError::PartitionEOF(_))) => ended += 1,
            Some(Err(e)) => panic!("consume: {e}"),
            None => {}
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    // Peak RSS (VmHWM, KiB) of this process, for the benchmark's memory column.
    let peak_rss_kib = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    println!("{messages} {bytes} {seconds:.6} {peak_rss_kib}");
}
