//! Produce: validate every batch (magic 2, CRC32C), apply the idempotent
//! producer checks, append, and answer according to acks: 0 = no answer,
//! 1 = once appended, -1 = once appended and fsynced.

use std::sync::Arc;

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::ResponseError;

use super::hub::KafkaHub;

/// The answer (None for acks=0) and the records stored.
pub async fn handle(hub: &Arc<KafkaHub>, req: ProduceRequest) -> (Option<ProduceResponse>, u64) {
    let acks = req.acks;
    let refuse = if !matches!(acks, -1..=1) {
        Some(ResponseError::InvalidRequiredAcks)
    } else if req
        .transactional_id
        .as_ref()
        .is_some_and(|t| !t.0.is_empty())
    {
        Some(ResponseError::TransactionalIdAuthorizationFailed)
    } else {
        None
    };
    let (resp, stored) = match refuse {
        Some(error) => (refuse_all(&req, error), 0),
        None => {
            let fsync = acks == -1 || hub.fsync_every_produce();
            let shared = hub.clone();
            hub.storage_io(move || append_all(&shared, req, fsync))
                .await
        }
    };
    ((acks != 0).then_some(resp), stored)
}

fn refuse_all(req: &ProduceRequest, error: ResponseError) -> ProduceResponse {
    ProduceResponse::default().with_responses(
        req.topic_data
            .iter()
            .map(|t| {
                TopicProduceResponse::default()
                    .with_name(t.name.clone())
                    .with_partition_responses(
                        t.partition_data
                            .iter()
                            .map(|p| partition_response(p.index, error.code(), -1, -1))
                            .collect(),
                    )
            })
            .collect(),
    )
}

pub(super) fn partition_response(
    index: i32,
    error: i16,
    base_offset: i64,
    log_start: i64,
) -> PartitionProduceResponse {
    PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(error)
        .with_base_offset(base_offset)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(log_start)
}

fn append_all(hub: &KafkaHub, req: ProduceRequest, fsync: bool) -> (ProduceResponse, u64) {
    let mut stored = 0;
    let responses = req
        .topic_data
        .into_iter()
        .map(|t| {
            let topic = hub.topics.get(t.name.0.as_str());
            let partitions = t
                .partition_data
                .into_iter()
                .map(|p| {
                    let Some(partition) = topic.as_ref().and_then(|t| t.partition(p.index)) else {
                        return partition_response(
                            p.index,
                            ResponseError::UnknownTopicOrPartition.code(),
                            -1,
                            -1,
                        );
                    };
                    let Some(records) = p.records else {
                        return partition_response(
                            p.index,
                            ResponseError::CorruptMessage.code(),
                            -1,
                            -1,
                        );
                    };
                    match partition.append(&records, fsync) {
                        Ok((base, count)) => {
                            stored += count;
                            partition_response(p.index, 0, base, partition.offsets().0)
                        }
                        Err(e) => {
                            hub.metrics
                                .protocol_error(crate::metrics::Protocol::Kafka, "produce_refused");
                            tracing::debug!(
                                "kafka produce to {}-{} refused: {e}",
                                t.name.0.as_str(),
                                p.index
                            );
                            partition_response(p.index, e.code(), -1, -1)
                        }
                    }
                })
                .collect();
            TopicProduceResponse::default()
                .with_name(t.name)
                .with_partition_responses(partitions)
        })
        .collect();
    (ProduceResponse::default().with_responses(responses), stored)
}
