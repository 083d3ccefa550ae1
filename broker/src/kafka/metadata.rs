//! Metadata and FindCoordinator: this single node leads every partition and
//! coordinates every group; topics asked for are auto-created when allowed.
//! With Kafka ACLs, Metadata lists only the topics the user may describe,
//! and auto-creates only where they may create (else TOPIC_AUTHORIZATION_FAILED).

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, FindCoordinatorRequest, FindCoordinatorResponse, MetadataRequest, MetadataResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::authorize::Authorizer;
use super::connection::Listener;
use super::hub::{KafkaHub, CLUSTER_ID, NODE_ID};
use super::topic::{valid_topic_name, Topic};
use crate::auth::{KafkaOperation, KafkaResource};

pub fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn describe(topic: &Topic) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(&topic.name))))
        .with_partitions(
            topic
                .partitions
                .iter()
                .map(|p| {
                    MetadataResponsePartition::default()
                        .with_partition_index(p.index)
                        .with_leader_id(BrokerId(NODE_ID))
                        // Unknown epoch: clients then skip leader-epoch validation
                        // (OffsetForLeaderEpoch), which a single node does not need.
                        .with_leader_epoch(-1)
                        .with_replica_nodes(vec![BrokerId(NODE_ID)])
                        .with_isr_nodes(vec![BrokerId(NODE_ID)])
                })
                .collect(),
        )
}

fn missing(name: &str, error: ResponseError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(name))))
        .with_error_code(error.code())
}

pub fn handle(
    hub: &KafkaHub,
    req: MetadataRequest,
    version: i16,
    listener: Listener,
    authz: &Authorizer,
) -> MetadataResponse {
    // v0: an empty list means every topic; v1+: null means every topic.
    let wanted = match req.topics {
        Some(t) if !(version == 0 && t.is_empty()) => Some(t),
        _ => None,
    };
    let describable =
        |name: &str| authz.allows(KafkaOperation::Describe, KafkaResource::Topic, name);
    let topics = match wanted {
        None => hub
            .topics
            .all()
            .iter()
            .filter(|t| describable(&t.name))
            .map(|t| describe(t))
            .collect(),
        Some(list) => list
            .iter()
            .map(|t| {
                let name = t.name.as_ref().map_or("", |n| n.0.as_str());
                if !valid_topic_name(name) {
                    return missing(name, ResponseError::InvalidTopicException);
                }
                if !authz.permits(
                    hub,
                    "metadata",
                    KafkaOperation::Describe,
                    KafkaResource::Topic,
                    name,
                ) {
                    return missing(name, ResponseError::TopicAuthorizationFailed);
                }
                // v0-3 have no flag: auto-creation is the broker's choice alone.
                let allowed =
                    hub.config.auto_create_topics && (version < 4 || req.allow_auto_topic_creation);
                if allowed && hub.topics.get(name).is_none() && !authz.may_create_topic(name) {
                    hub.metrics
                        .kafka
                        .denied("metadata", KafkaResource::Topic.as_str());
                    return missing(name, ResponseError::TopicAuthorizationFailed);
                }
                let found = if allowed {
                    hub.topics
                        .get_or_create(name, hub.config.default_partitions as i32)
                        .map_err(|e| {
                            if let Some(kind) = e.metric_kind() {
                                hub.metrics
                                    .protocol_error(crate::metrics::Protocol::Kafka, kind);
                            }
                            e.code()
                        })
                } else {
                    hub.topics
                        .get(name)
                        .ok_or(ResponseError::UnknownTopicOrPartition.code())
                };
                match found {
                    Ok(topic) => describe(&topic),
                    Err(code) => MetadataResponseTopic::default()
                        .with_name(Some(TopicName(str_bytes(name))))
                        .with_error_code(code),
                }
            })
            .collect(),
    };
    MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(NODE_ID))
            .with_host(str_bytes(&hub.advertised_host))
            .with_port(hub.port_for(listener))])
        .with_cluster_id(Some(str_bytes(CLUSTER_ID)))
        .with_controller_id(BrokerId(NODE_ID))
        .with_topics(topics)
}

pub fn find_coordinator(
    hub: &KafkaHub,
    req: FindCoordinatorRequest,
    listener: Listener,
) -> FindCoordinatorResponse {
    let port = hub.port_for(listener);
    let mut resp = FindCoordinatorResponse::default()
        .with_node_id(BrokerId(NODE_ID))
        .with_host(str_bytes(&hub.advertised_host))
        .with_port(port);
    if req.key_type != 0 {
        // Transaction coordinators are not offered.
        resp = resp
            .with_error_code(ResponseError::CoordinatorNotAvailable.code())
            .with_node_id(BrokerId(-1))
            .with_host(StrBytes::default())
            .with_port(-1);
    }
    resp.coordinators = req
        .coordinator_keys
        .iter()
        .map(|key| {
            Coordinator::default()
                .with_key(key.clone())
                .with_node_id(resp.node_id)
                .with_host(resp.host.clone())
                .with_port(resp.port)
                .with_error_code(resp.error_code)
        })
        .collect();
    resp
}
