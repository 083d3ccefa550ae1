//! CreateTopics, DeleteTopics and DescribeConfigs.

use std::sync::Arc;

use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, TopicName,
};
use kafka_protocol::ResponseError;

use super::config::FlushPolicy;
use super::hub::{KafkaHub, NODE_ID};
use super::metadata::str_bytes;
use super::topic::valid_topic_name;
use crate::metrics::Protocol;

pub async fn create_topics(hub: &Arc<KafkaHub>, req: CreateTopicsRequest) -> CreateTopicsResponse {
    let shared = hub.clone();
    // The file work runs on a blocking thread, and Topics::create holds the
    // topics lock only to reserve and to publish a name, never across it.
    hub.storage_io(move || {
        let hub = shared;
        let topics = req
            .topics
            .into_iter()
            .map(|t| {
                let name = t.name.0.as_str().to_string();
                let partitions = if t.num_partitions == -1 {
                    hub.config.default_partitions as i32
                } else {
                    t.num_partitions
                };
                let result = CreatableTopicResult::default()
                    .with_name(t.name.clone())
                    .with_num_partitions(partitions)
                    .with_replication_factor(1);
                let refuse = |e: ResponseError, message: &str| {
                    result
                        .clone()
                        .with_error_code(e.code())
                        .with_error_message(Some(str_bytes(message)))
                        .with_num_partitions(-1)
                        .with_replication_factor(-1)
                };
                if !valid_topic_name(&name) {
                    return refuse(
                        ResponseError::InvalidTopicException,
                        "topic names are 1-249 of [A-Za-z0-9._-]",
                    );
                }
                if !t.assignments.is_empty() {
                    hub.metrics
                        .protocol_error(Protocol::Kafka, "invalid_partitions");
                    return refuse(
                        ResponseError::InvalidPartitions,
                        "manual replica assignments are not supported",
                    );
                }
                if !matches!(t.replication_factor, -1 | 1) {
                    return refuse(
                        ResponseError::InvalidReplicationFactor,
                        "this broker is a single node: replication factor 1",
                    );
                }
                let outcome = if req.validate_only {
                    hub.topics.check(&name, partitions)
                } else {
                    hub.topics.create(&name, partitions).map(|_| ())
                };
                match outcome {
                    Ok(()) => result,
                    Err(e) => {
                        if let Some(kind) = e.metric_kind() {
                            hub.metrics.protocol_error(Protocol::Kafka, kind);
                        }
                        let message = e.to_string();
                        refuse(
                            ResponseError::try_from_code(e.code())
                                .unwrap_or(ResponseError::UnknownServerError),
                            &message,
                        )
                    }
                }
            })
            .collect();
        CreateTopicsResponse::default().with_topics(topics)
    })
    .await
}

pub async fn delete_topics(hub: &Arc<KafkaHub>, req: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let shared = hub.clone();
    hub.storage_io(move || {
        let hub = shared;
        let responses = req
            .topic_names
            .into_iter()
            .chain(req.topics.into_iter().filter_map(|t| t.name))
            .map(|name: TopicName| {
                let code = match hub.topics.delete(name.0.as_str()) {
                    Ok(true) => match hub.offsets().forget_topic(name.0.as_str()) {
                        Ok(()) => 0,
                        Err(_) => ResponseError::KafkaStorageError.code(),
                    },
                    Ok(false) => ResponseError::UnknownTopicOrPartition.code(),
                    Err(e) => {
                        tracing::error!("kafka: deleting topic {}: {e}", name.0.as_str());
                        ResponseError::KafkaStorageError.code()
                    }
                };
                DeletableTopicResult::default()
                    .with_name(Some(name))
                    .with_error_code(code)
            })
            .collect();
        DeleteTopicsResponse::default().with_responses(responses)
    })
    .await
}

pub(super) const RESOURCE_TOPIC: i8 = 2;
pub(super) const RESOURCE_BROKER: i8 = 4;
/// config_source values: DEFAULT_CONFIG (5) and STATIC_BROKER_CONFIG (4).
const SOURCE_DEFAULT: i8 = 5;
const SOURCE_STATIC: i8 = 4;

/// The settings clients ask about, with this broker's values.
fn configs(hub: &KafkaHub) -> Vec<(&'static str, String)> {
    let c = &hub.config;
    vec![
        ("cleanup.policy", "delete".into()),
        ("retention.ms", c.retention_ms.to_string()),
        ("retention.bytes", c.retention_bytes.to_string()),
        ("segment.bytes", c.segment_bytes.to_string()),
        ("max.message.bytes", c.max_frame_bytes.to_string()),
        ("message.timestamp.type", "CreateTime".into()),
        ("num.partitions", c.default_partitions.to_string()),
        (
            "auto.create.topics.enable",
            c.auto_create_topics.to_string(),
        ),
        (
            "flush.messages",
            match c.flush {
                FlushPolicy::EveryProduce => "1".into(),
                FlushPolicy::Interval => i64::MAX.to_string(),
            },
        ),
        ("flush.ms", c.flush_interval_ms.to_string()),
    ]
}

pub fn describe_configs(hub: &KafkaHub, req: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let results = req
        .resources
        .into_iter()
        .map(|r| {
            let result = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            let known = match r.resource_type {
                RESOURCE_TOPIC => hub.topics.get(r.resource_name.as_str()).is_some(),
                RESOURCE_BROKER => {
                    r.resource_name.as_str() == NODE_ID.to_string() || r.resource_name.is_empty()
                }
                _ => false,
            };
            if !known {
                let error = if r.resource_type == RESOURCE_TOPIC {
                    ResponseError::UnknownTopicOrPartition
                } else {
                    ResponseError::InvalidRequest
                };
                return result.with_error_code(error.code());
            }
            let source = if r.resource_type == RESOURCE_TOPIC {
                SOURCE_DEFAULT
            } else {
                SOURCE_STATIC
            };
            let entries = configs(hub)
                .into_iter()
                .filter(|(name, _)| {
                    r.configuration_keys
                        .as_ref()
                        .is_none_or(|keys| keys.iter().any(|k| k.as_str() == *name))
                })
                .map(|(name, value)| {
                    DescribeConfigsResourceResult::default()
                        .with_name(str_bytes(name))
                        .with_value(Some(str_bytes(&value)))
                        .with_read_only(true)
                        .with_config_source(source)
                })
                .collect();
            result.with_configs(entries)
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}
