//! Kafka ACL enforcement (`[[kafka]]` tables, `auth::kafka_acl`): each
//! guarded API takes the request, sets aside what the connection's user may
//! not touch, hands the rest to its handler and merges the refusals into
//! the answer, as Kafka's own request handling does: TOPIC_AUTHORIZATION_FAILED
//! (29) per topic or partition, GROUP_AUTHORIZATION_FAILED (30) for a group,
//! CLUSTER_AUTHORIZATION_FAILED (31) for the cluster. Every refusal is
//! counted in `kafka_denied_total{api, resource}`. Without `[[kafka]]`
//! tables every wrapper calls its handler unchanged.

use std::sync::Arc;

use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResult;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::produce_response::TopicProduceResponse;
use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;

use super::connection::Listener;
use super::hub::KafkaHub;
use super::metadata::{self, str_bytes};
use super::{admin, fetch, group_api, produce};
use crate::auth::kafka_acl::CLUSTER_NAME;
use crate::auth::{Auth, KafkaOperation as Op, KafkaResource as Res};

const TOPIC_DENIED: ResponseError = ResponseError::TopicAuthorizationFailed;
const GROUP_DENIED: ResponseError = ResponseError::GroupAuthorizationFailed;
const CLUSTER_DENIED: ResponseError = ResponseError::ClusterAuthorizationFailed;

/// Who is asking, and the ACLs that decide: a cheap clone per request.
#[derive(Debug, Clone)]
pub struct Authorizer {
    auth: Arc<Auth>,
    /// The SASL user; `None` for an anonymous client.
    user: Option<Arc<str>>,
}

impl Authorizer {
    pub fn new(auth: Arc<Auth>, user: Option<Arc<str>>) -> Authorizer {
        Authorizer { auth, user }
    }

    /// Whether the ACL file has `[[kafka]]` tables.
    fn restricted(&self) -> bool {
        self.auth.kafka_acl().is_some()
    }

    /// Whether the user may do `op` on `name` (never counted: listings
    /// leave out what may not be described without refusing anything).
    pub fn allows(&self, op: Op, resource: Res, name: &str) -> bool {
        self.auth
            .kafka_acl()
            .is_none_or(|acl| acl.allows(self.user.as_deref(), op, resource, name))
    }

    /// [`Authorizer::allows`], counting a refusal against `api`.
    pub fn permits(&self, hub: &KafkaHub, api: &'static str, op: Op, res: Res, name: &str) -> bool {
        let ok = self.allows(op, res, name);
        if !ok {
            hub.metrics.kafka.denied(api, res.as_str());
            tracing::debug!(
                "kafka {api}: {} on {} {name:?} refused for {}",
                op.as_str(),
                res.as_str(),
                self.user.as_deref().unwrap_or("an anonymous client")
            );
        }
        ok
    }

    /// Kafka's rule for creating a topic: create on the cluster or on the topic.
    pub fn may_create_topic(&self, name: &str) -> bool {
        self.allows(Op::Create, Res::Cluster, CLUSTER_NAME)
            || self.allows(Op::Create, Res::Topic, name)
    }
}

pub async fn produce(
    hub: &Arc<KafkaHub>,
    authz: &Authorizer,
    mut req: ProduceRequest,
) -> (Option<ProduceResponse>, u64) {
    if !authz.restricted() {
        return produce::handle(hub, req).await;
    }
    let (ok, denied): (Vec<_>, Vec<_>) = std::mem::take(&mut req.topic_data)
        .into_iter()
        .partition(|t| authz.permits(hub, "produce", Op::Write, Res::Topic, t.name.0.as_str()));
    req.topic_data = ok;
    let refused = denied.into_iter().map(|t| {
        TopicProduceResponse::default()
            .with_name(t.name)
            .with_partition_responses(
                t.partition_data
                    .iter()
                    .map(|p| produce::partition_response(p.index, TOPIC_DENIED.code(), -1, -1))
                    .collect(),
            )
    });
    let (resp, stored) = produce::handle(hub, req).await;
    let resp = resp.map(|mut r| {
        r.responses.extend(refused);
        r
    });
    (resp, stored)
}

pub async fn fetch(
    hub: &Arc<KafkaHub>,
    authz: &Authorizer,
    mut req: FetchRequest,
) -> (FetchResponse, u64) {
    if !authz.restricted() {
        return fetch::handle(hub, req).await;
    }
    let (ok, denied): (Vec<_>, Vec<_>) = std::mem::take(&mut req.topics)
        .into_iter()
        .partition(|t| authz.permits(hub, "fetch", Op::Read, Res::Topic, t.topic.0.as_str()));
    req.topics = ok;
    let (mut resp, records) = fetch::handle(hub, req).await;
    resp.responses.extend(denied.into_iter().map(|t| {
        FetchableTopicResponse::default()
            .with_topic(t.topic)
            .with_partitions(
                t.partitions
                    .iter()
                    .map(|p| {
                        PartitionData::default()
                            .with_partition_index(p.partition)
                            .with_error_code(TOPIC_DENIED.code())
                            .with_high_watermark(-1)
                            .with_last_stable_offset(-1)
                            .with_log_start_offset(-1)
                            .with_preferred_read_replica(BrokerId(-1))
                    })
                    .collect(),
            )
    }));
    (resp, records)
}

pub async fn list_offsets(
    hub: &Arc<KafkaHub>,
    authz: &Authorizer,
    mut req: ListOffsetsRequest,
) -> ListOffsetsResponse {
    if !authz.restricted() {
        return fetch::list_offsets(hub, req).await;
    }
    let (ok, denied): (Vec<_>, Vec<_>) =
        std::mem::take(&mut req.topics).into_iter().partition(|t| {
            authz.permits(
                hub,
                "list_offsets",
                Op::Describe,
                Res::Topic,
                t.name.0.as_str(),
            )
        });
    req.topics = ok;
    let mut resp = fetch::list_offsets(hub, req).await;
    resp.topics.extend(denied.into_iter().map(|t| {
        ListOffsetsTopicResponse::default()
            .with_name(t.name)
            .with_partitions(
                t.partitions
                    .iter()
                    .map(|p| {
                        ListOffsetsPartitionResponse::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(TOPIC_DENIED.code())
                            .with_timestamp(-1)
                            .with_offset(-1)
                            .with_leader_epoch(-1)
                    })
                    .collect(),
            )
    }));
    resp
}

pub async fn metadata(
    hub: &Arc<KafkaHub>,
    authz: &Authorizer,
    req: MetadataRequest,
    version: i16,
    listener: Listener,
) -> MetadataResponse {
    // Auto-creation does file work: off the async threads with disk storage.
    let (shared, authz) = (hub.clone(), authz.clone());
    hub.storage_io(move || metadata::handle(&shared, req, version, listener, &authz))
        .await
}

pub async fn create_topics(
    hub: &Arc<KafkaHub>,
    authz: &Authorizer,
    mut req: CreateTopicsRequest,
) -> CreateTopicsResponse {
    if !authz.restricted() {
        return admin::create_topics(hub, req).await;
    }
    let (ok, denied): (Vec<_>, Vec<_>) =
        std::mem::take(&mut req.topics).into_iter().partition(|t| {
            let ok = authz.may_create_topic(t.name.0.as_str());
            if !ok {
                authz.permits(
                    hub,
                    "create_topics",
                    Op::Create,
                    Res::Topic,
                    t.name.0.as_str(),
                );
            }
            ok
        });
    req.topics = ok;
    let mut resp = admin::create_topics(hub, req).await;
    resp.topics.extend(denied.into_iter().map(|t| {
        CreatableTopicResult::default()
            .with_name(t.name)
            .with_error_code(TOPIC_DENIED.code())
            .with_error_message(Some(str_bytes(
                "Authorization failed: create on the topic or the cluster is not granted",
            )))
            .with_num_partitions(-1)
            .with_replication_factor(-1)
    }));
    resp
}

pub async fn delete_topics(
    hub: &Arc<KafkaHub>,
    authz: &Authorizer,
    mut req: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    if !authz.restricted() {
        return admin::delete_topics(hub, req).await;
    }
    let mut denied = Vec::new();
    let mut keep = |name: &TopicName| {
        let ok = authz.permits(
            hub,
            "delete_topics",
            Op::Delete,
            Res::Topic,
            name.0.as_str(),
        );
        if !ok {
            denied.push(name.clone());
        }
        ok
    };
    req.topic_names.retain(&mut keep);
    req.topics.retain(|t| t.name.as_ref().is_none_or(&mut keep));
    let mut resp = admin::delete_topics(hub, req).await;
    resp.responses.extend(denied.into_iter().map(|name| {
        DeletableTopicResult::default()
            .with_name(Some(name))
            .with_error_code(TOPIC_DENIED.code())
    }));
    resp
}

/// Kafka's DescribeConfigs operation is folded into describe: on the topic,
/// or on the cluster for the broker's settings.
pub fn describe_configs(
    hub: &KafkaHub,
    authz: &Authorizer,
    mut req: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    if !authz.restricted() {
        return admin::describe_configs(hub, req);
    }
    let (ok, denied): (Vec<_>, Vec<_>) =
        std::mem::take(&mut req.resources)
            .into_iter()
            .partition(|r| {
                let (res, name) = match r.resource_type {
                    admin::RESOURCE_TOPIC => (Res::Topic, r.resource_name.as_str()),
                    admin::RESOURCE_BROKER => (Res::Cluster, CLUSTER_NAME),
                    // Unknown kinds: the handler answers INVALID_REQUEST.
                    _ => return true,
                };
                authz.permits(hub, "describe_configs", Op::Describe, res, name)
            });
    req.resources = ok;
    let mut resp = admin::describe_configs(hub, req);
    resp.results.extend(denied.into_iter().map(|r| {
        let error = if r.resource_type == admin::RESOURCE_TOPIC {
            TOPIC_DENIED
        } else {
            CLUSTER_DENIED
        };
        DescribeConfigsResult::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name)
            .with_error_code(error.code())
    }));
    resp
}

/// An idempotent producer id: Kafka 3's rule, write on some topic (or the
/// cluster's idempotent-write, which `all` on the cluster stands for here).
pub fn init_producer_id(
    hub: &KafkaHub,
    authz: &Authorizer,
    req: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let ok = authz.auth.kafka_acl().is_none_or(|acl| {
        let user = authz.user.as_deref();
        acl.allows_any(user, Op::Write, Res::Topic)
            || acl.allows(user, Op::All, Res::Cluster, CLUSTER_NAME)
    });
    if !ok {
        hub.metrics
            .kafka
            .denied("init_producer_id", Res::Cluster.as_str());
        return InitProducerIdResponse::default()
            .with_error_code(CLUSTER_DENIED.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
    }
    hub.producer_ids.handle(req)
}

/// FindCoordinator for a group needs describe on it (transaction
/// coordinators are not offered, whoever asks).
pub fn find_coordinator(
    hub: &KafkaHub,
    authz: &Authorizer,
    req: FindCoordinatorRequest,
    listener: Listener,
) -> FindCoordinatorResponse {
    let denied = req.key_type == 0
        && !authz.permits(
            hub,
            "find_coordinator",
            Op::Describe,
            Res::Group,
            req.key.as_str(),
        );
    if !denied {
        return metadata::find_coordinator(hub, req, listener);
    }
    FindCoordinatorResponse::default()
        .with_error_code(GROUP_DENIED.code())
        .with_node_id(BrokerId(-1))
        .with_port(-1)
}

/// Read on the group, for the group membership APIs.
fn group_read(hub: &KafkaHub, authz: &Authorizer, api: &'static str, group: &GroupId) -> bool {
    authz.permits(hub, api, Op::Read, Res::Group, group.0.as_str())
}

pub async fn join(
    hub: &KafkaHub,
    authz: &Authorizer,
    req: JoinGroupRequest,
    client_id: &str,
    version: i16,
) -> JoinGroupResponse {
    if !group_read(hub, authz, "join_group", &req.group_id) {
        return JoinGroupResponse::default()
            .with_error_code(GROUP_DENIED.code())
            .with_generation_id(-1)
            .with_protocol_name(Some(str_bytes("")));
    }
    group_api::join(hub, req, client_id, version).await
}

pub async fn sync(hub: &KafkaHub, authz: &Authorizer, req: SyncGroupRequest) -> SyncGroupResponse {
    if !group_read(hub, authz, "sync_group", &req.group_id) {
        return SyncGroupResponse::default().with_error_code(GROUP_DENIED.code());
    }
    group_api::sync(hub, req).await
}

pub fn heartbeat(hub: &KafkaHub, authz: &Authorizer, req: HeartbeatRequest) -> HeartbeatResponse {
    if !group_read(hub, authz, "heartbeat", &req.group_id) {
        return HeartbeatResponse::default().with_error_code(GROUP_DENIED.code());
    }
    group_api::heartbeat(hub, req)
}

pub fn leave(
    hub: &KafkaHub,
    authz: &Authorizer,
    req: LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    if !group_read(hub, authz, "leave_group", &req.group_id) {
        return LeaveGroupResponse::default().with_error_code(GROUP_DENIED.code());
    }
    group_api::leave(hub, req, version)
}

/// Read on the group, then read on each topic.
pub async fn offset_commit(
    hub: &Arc<KafkaHub>,
    authz: &Authorizer,
    mut req: OffsetCommitRequest,
) -> OffsetCommitResponse {
    if !authz.restricted() {
        return group_api::offset_commit(hub, req).await;
    }
    let refuse = |topics: Vec<offset_commit_request::OffsetCommitRequestTopic>,
                  error: ResponseError| {
        topics
            .into_iter()
            .map(|t| {
                OffsetCommitResponseTopic::default()
                    .with_name(t.name)
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                OffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(error.code())
                            })
                            .collect(),
                    )
            })
            .collect::<Vec<_>>()
    };
    if !group_read(hub, authz, "offset_commit", &req.group_id) {
        return OffsetCommitResponse::default().with_topics(refuse(req.topics, GROUP_DENIED));
    }
    let (ok, denied): (Vec<_>, Vec<_>) =
        std::mem::take(&mut req.topics).into_iter().partition(|t| {
            authz.permits(
                hub,
                "offset_commit",
                Op::Read,
                Res::Topic,
                t.name.0.as_str(),
            )
        });
    req.topics = ok;
    let mut resp = group_api::offset_commit(hub, req).await;
    resp.topics.extend(refuse(denied, TOPIC_DENIED));
    resp
}

/// Describe on the group, then on each topic; asked for every topic, the
/// answer leaves out those the user may not describe.
pub fn offset_fetch(
    hub: &KafkaHub,
    authz: &Authorizer,
    mut req: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    if !authz.restricted() {
        return group_api::offset_fetch(hub, req);
    }
    let refuse = |topics: Vec<offset_fetch_request::OffsetFetchRequestTopic>,
                  error: ResponseError| {
        topics
            .into_iter()
            .map(|t| {
                OffsetFetchResponseTopic::default()
                    .with_name(t.name)
                    .with_partitions(
                        t.partition_indexes
                            .iter()
                            .map(|&i| {
                                OffsetFetchResponsePartition::default()
                                    .with_partition_index(i)
                                    .with_committed_offset(-1)
                                    .with_committed_leader_epoch(-1)
                                    .with_metadata(Some(str_bytes("")))
                                    .with_error_code(error.code())
                            })
                            .collect(),
                    )
            })
            .collect::<Vec<_>>()
    };
    if !authz.permits(
        hub,
        "offset_fetch",
        Op::Describe,
        Res::Group,
        req.group_id.0.as_str(),
    ) {
        let resp = OffsetFetchResponse::default();
        // v1 has no top-level error code: each partition carries it.
        return if version < 2 {
            resp.with_topics(refuse(req.topics.unwrap_or_default(), GROUP_DENIED))
        } else {
            resp.with_error_code(GROUP_DENIED.code())
        };
    }
    let denied = match req.topics.as_mut() {
        Some(topics) => {
            let (ok, denied): (Vec<_>, Vec<_>) =
                std::mem::take(topics).into_iter().partition(|t| {
                    authz.permits(
                        hub,
                        "offset_fetch",
                        Op::Describe,
                        Res::Topic,
                        t.name.0.as_str(),
                    )
                });
            *topics = ok;
            denied
        }
        None => Vec::new(),
    };
    let every_topic = req.topics.is_none();
    let mut resp = group_api::offset_fetch(hub, req);
    if every_topic {
        resp.topics
            .retain(|t| authz.allows(Op::Describe, Res::Topic, t.name.0.as_str()));
    }
    resp.topics.extend(refuse(denied, TOPIC_DENIED));
    resp
}
