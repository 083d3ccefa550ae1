//! Fetch (with long polling) and ListOffsets.
//!
//! A fetch reads every partition asked for; when fewer than `min_bytes`
//! came back it waits, until `max_wait_ms` at most, for any of those
//! partitions' high watermark to move, then reads again.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::select_all;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{
    FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse, TopicName,
};
use kafka_protocol::ResponseError;
use tokio::time::Instant;

use super::hub::KafkaHub;
use super::topic::Partition;
use crate::metrics::Protocol;
use crate::storage::{batch, StorageError};

/// Longest long poll honoured, whatever the client asks.
const MAX_WAIT_CAP: Duration = Duration::from_secs(30);

struct Wanted {
    topic: TopicName,
    partitions: Vec<(i32, Option<Arc<Partition>>, i64, usize)>,
}

struct Read {
    topics: Vec<FetchableTopicResponse>,
    bytes: usize,
    errors: bool,
}

fn read_all(wanted: &[Wanted], max_bytes: usize) -> Read {
    let mut budget = max_bytes;
    let mut bytes: usize = 0;
    let mut errors = false;
    let topics = wanted
        .iter()
        .map(|w| {
            let partitions = w
                .partitions
                .iter()
                .map(|(index, partition, offset, partition_max)| {
                    let data = PartitionData::default()
                        .with_partition_index(*index)
                        .with_last_stable_offset(-1)
                        .with_log_start_offset(-1)
                        .with_high_watermark(-1)
                        .with_preferred_read_replica(kafka_protocol::messages::BrokerId(-1));
                    let Some(partition) = partition else {
                        errors = true;
                        return data.with_error_code(ResponseError::UnknownTopicOrPartition.code());
                    };
                    let (start, end) = partition.offsets();
                    let data = data
                        .with_high_watermark(end)
                        .with_last_stable_offset(end)
                        .with_log_start_offset(start);
                    // After the budget is spent the partition is still reported, without records.
                    let limit = (*partition_max).min(budget);
                    let records = if limit == 0 && bytes > 0 {
                        Ok(Bytes::new())
                    } else {
                        partition.read(*offset, limit.max(1))
                    };
                    match records {
                        Ok(records) => {
                            bytes = bytes.saturating_add(records.len());
                            budget = budget.saturating_sub(records.len());
                            data.with_records(Some(records))
                        }
                        Err(StorageError::OffsetOutOfRange { .. }) => {
                            errors = true;
                            data.with_error_code(ResponseError::OffsetOutOfRange.code())
                        }
                        Err(e) => {
                            errors = true;
                            tracing::error!("kafka fetch from {}-{index}: {e}", w.topic.0.as_str());
                            data.with_error_code(ResponseError::KafkaStorageError.code())
                        }
                    }
                })
                .collect();
            FetchableTopicResponse::default()
                .with_topic(w.topic.clone())
                .with_partitions(partitions)
        })
        .collect();
    Read {
        topics,
        bytes,
        errors,
    }
}

/// What one request asks for, once duplicates are merged: each (topic,
/// partition) is answered once, for its first entry in the request (as
/// Kafka's own request parsing keeps one entry per partition), so listing a
/// partition many times does not multiply the bytes read or returned.
/// Returns the wanted partitions and how many entries were duplicates.
fn wanted(hub: &KafkaHub, req: FetchRequest) -> (Vec<Wanted>, usize) {
    let partition_cap = hub.config.max_partition_fetch_bytes;
    let mut seen: HashSet<(TopicName, i32)> = HashSet::new();
    let mut duplicates = 0;
    let wanted = req
        .topics
        .into_iter()
        .filter_map(|t| {
            let topic = hub.topics.get(t.topic.0.as_str());
            let partitions: Vec<_> = t
                .partitions
                .into_iter()
                .filter(|p| {
                    let fresh = seen.insert((t.topic.clone(), p.partition));
                    duplicates += usize::from(!fresh);
                    fresh
                })
                .map(|p| {
                    (
                        p.partition,
                        topic
                            .as_ref()
                            .and_then(|t| t.partition(p.partition))
                            .cloned(),
                        p.fetch_offset,
                        // Negative: nothing beyond the first batch.
                        usize::try_from(p.partition_max_bytes)
                            .unwrap_or(0)
                            .min(partition_cap),
                    )
                })
                .collect();
            (!partitions.is_empty()).then_some(Wanted {
                partitions,
                topic: t.topic,
            })
        })
        .collect();
    (wanted, duplicates)
}

/// The records budget of one response: the client's `max_bytes` (negative:
/// the first batch only), never more than `kafka.fetch_max_bytes`.
fn response_budget(client_max_bytes: i32, broker_max: usize) -> usize {
    usize::try_from(client_max_bytes)
        .unwrap_or(0)
        .min(broker_max)
        .max(1)
}

/// The answer and the records it carries.
pub async fn handle(hub: &Arc<KafkaHub>, req: FetchRequest) -> (FetchResponse, u64) {
    let deadline = Instant::now()
        + Duration::from_millis(u64::try_from(req.max_wait_ms).unwrap_or(0)).min(MAX_WAIT_CAP);
    let min_bytes = usize::try_from(req.min_bytes).unwrap_or(0);
    let max_bytes = response_budget(req.max_bytes, hub.config.fetch_max_bytes);
    let (wanted, duplicates) = wanted(hub, req);
    if duplicates > 0 {
        hub.metrics
            .protocol_error(Protocol::Kafka, "fetch_duplicate_partition");
    }
    let wanted = Arc::new(wanted);
    // Subscribed before the first read, so an append in between is not missed.
    let mut watches: Vec<_> = wanted
        .iter()
        .flat_map(|w| {
            w.partitions
                .iter()
                .filter_map(|(_, p, _, _)| p.as_ref().map(|p| p.watch()))
        })
        .collect();
    loop {
        let w = wanted.clone();
        let read = hub.storage_io(move || read_all(&w, max_bytes)).await;
        let done = read.bytes >= min_bytes
            || read.errors
            || watches.is_empty()
            || Instant::now() >= deadline;
        if done {
            let records: u64 = read
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter())
                .filter_map(|p| p.records.as_ref())
                .map(|r| batch::count_records(r))
                .sum();
            return (
                FetchResponse::default().with_responses(read.topics),
                records,
            );
        }
        let changed = select_all(watches.iter_mut().map(|w| Box::pin(w.changed())));
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            // Timed out: one last read answers with whatever is there now.
            let w = wanted.clone();
            let read = hub.storage_io(move || read_all(&w, max_bytes)).await;
            let records = read
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter())
                .filter_map(|p| p.records.as_ref())
                .map(|r| batch::count_records(r))
                .sum();
            return (
                FetchResponse::default().with_responses(read.topics),
                records,
            );
        }
    }
}

/// Timestamps with a special meaning in ListOffsets.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;

pub async fn list_offsets(hub: &Arc<KafkaHub>, req: ListOffsetsRequest) -> ListOffsetsResponse {
    let shared = hub.clone();
    hub.storage_io(move || {
        let topics = req
            .topics
            .into_iter()
            .map(|t| {
                let topic = shared.topics.get(t.name.0.as_str());
                let partitions = t
                    .partitions
                    .into_iter()
                    .map(|p| {
                        let resp = ListOffsetsPartitionResponse::default()
                            .with_partition_index(p.partition_index)
                            .with_timestamp(-1)
                            .with_offset(-1)
                            .with_leader_epoch(-1);
                        let Some(partition) =
                            topic.as_ref().and_then(|t| t.partition(p.partition_index))
                        else {
                            return resp
                                .with_error_code(ResponseError::UnknownTopicOrPartition.code());
                        };
                        let (start, end) = partition.offsets();
                        match p.timestamp {
                            LATEST => resp.with_offset(end),
                            EARLIEST => resp.with_offset(start),
                            ts if ts < 0 => {
                                resp.with_error_code(ResponseError::UnsupportedVersion.code())
                            }
                            ts => match partition.offset_for_timestamp(ts) {
                                Ok(Some(offset)) => resp.with_offset(offset).with_timestamp(ts),
                                Ok(None) => resp,
                                Err(_) => {
                                    resp.with_error_code(ResponseError::KafkaStorageError.code())
                                }
                            },
                        }
                    })
                    .collect();
                ListOffsetsTopicResponse::default()
                    .with_name(t.name)
                    .with_partitions(partitions)
            })
            .collect();
        ListOffsetsResponse::default().with_topics(topics)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_budget_is_the_smaller_of_client_and_broker_and_never_zero() {
        assert_eq!(response_budget(i32::MAX, 55 << 20), 55 << 20);
        assert_eq!(response_budget(4096, 55 << 20), 4096);
        // Negative or zero: the first batch only.
        assert_eq!(response_budget(-1, 55 << 20), 1);
        assert_eq!(response_budget(0, 55 << 20), 1);
    }
}
