//! The group APIs on the wire: JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! OffsetCommit and OffsetFetch, translated to and from the coordinator.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::{
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest,
    OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::group::{JoinOutcome, JoinRequest, Pending, SyncOutcome};
use super::hub::KafkaHub;
use super::metadata::str_bytes;
use super::offsets::Committed;

fn millis(ms: i32) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

async fn settle<T: Default>(pending: Pending<T>, lost: impl FnOnce() -> T) -> T {
    match pending {
        Pending::Ready(t) => t,
        // The coordinator dropped the waiter (member removed): answer as if unknown.
        Pending::Wait(rx) => rx.await.unwrap_or_else(|_| lost()),
    }
}

/// Counts answers that mean a group limit was hit (docs/limits.md).
fn count_group_refusal(hub: &KafkaHub, code: i16) {
    let kind = match ResponseError::try_from_code(code) {
        Some(ResponseError::GroupMaxSizeReached) => "group_max_size",
        Some(ResponseError::CoordinatorNotAvailable) => "group_limit",
        Some(ResponseError::InvalidRequest) => "group_metadata_too_large",
        _ => return,
    };
    hub.metrics
        .protocol_error(crate::metrics::Protocol::Kafka, kind);
}

pub async fn join(
    hub: &KafkaHub,
    req: JoinGroupRequest,
    client_id: &str,
    version: i16,
) -> JoinGroupResponse {
    let session_timeout = millis(req.session_timeout_ms);
    let request = JoinRequest {
        group_id: req.group_id.0.to_string(),
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
        client_id: client_id.to_string(),
        session_timeout,
        // v0 has no rebalance timeout: it is the session timeout.
        rebalance_timeout: if version == 0 {
            session_timeout
        } else {
            millis(req.rebalance_timeout_ms)
        },
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
    };
    let member_id = request.member_id.clone();
    let outcome = settle(hub.groups.join(request, Instant::now()), || JoinOutcome {
        error: ResponseError::UnknownMemberId.code(),
        generation: -1,
        member_id,
        ..JoinOutcome::default()
    })
    .await;
    count_group_refusal(hub, outcome.error);
    JoinGroupResponse::default()
        .with_error_code(outcome.error)
        .with_generation_id(outcome.generation)
        .with_protocol_type(outcome.protocol_type.as_deref().map(str_bytes))
        .with_protocol_name(Some(str_bytes(
            outcome.protocol_name.as_deref().unwrap_or(""),
        )))
        .with_leader(str_bytes(&outcome.leader))
        .with_member_id(str_bytes(&outcome.member_id))
        .with_members(
            outcome
                .members
                .into_iter()
                .map(|(id, instance, metadata)| {
                    JoinGroupResponseMember::default()
                        .with_member_id(str_bytes(&id))
                        .with_group_instance_id(instance.as_deref().map(str_bytes))
                        .with_metadata(metadata)
                })
                .collect(),
        )
}

pub async fn sync(hub: &KafkaHub, req: SyncGroupRequest) -> SyncGroupResponse {
    let assignments = req
        .assignments
        .into_iter()
        .map(|a| (a.member_id.to_string(), a.assignment))
        .collect();
    let pending = hub.groups.sync(
        req.group_id.0.as_str(),
        req.member_id.as_str(),
        req.generation_id,
        assignments,
        Instant::now(),
    );
    let outcome = settle(pending, || SyncOutcome {
        error: ResponseError::UnknownMemberId.code(),
        ..SyncOutcome::default()
    })
    .await;
    count_group_refusal(hub, outcome.error);
    SyncGroupResponse::default()
        .with_error_code(outcome.error)
        .with_protocol_type(outcome.protocol_type.as_deref().map(str_bytes))
        .with_protocol_name(outcome.protocol_name.as_deref().map(str_bytes))
        .with_assignment(outcome.assignment)
}

pub fn heartbeat(hub: &KafkaHub, req: HeartbeatRequest) -> HeartbeatResponse {
    HeartbeatResponse::default().with_error_code(hub.groups.heartbeat(
        req.group_id.0.as_str(),
        req.member_id.as_str(),
        req.generation_id,
        Instant::now(),
    ))
}

pub fn leave(hub: &KafkaHub, req: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let group = req.group_id.0.as_str();
    if version < 3 {
        let codes = hub
            .groups
            .leave(group, &[req.member_id.to_string()], Instant::now());
        return LeaveGroupResponse::default().with_error_code(codes[0]);
    }
    let ids: Vec<String> = req
        .members
        .iter()
        .map(|m| m.member_id.to_string())
        .collect();
    let codes = hub.groups.leave(group, &ids, Instant::now());
    LeaveGroupResponse::default().with_members(
        req.members
            .into_iter()
            .zip(codes)
            .map(|(m, code)| {
                MemberResponse::default()
                    .with_member_id(m.member_id)
                    .with_group_instance_id(m.group_instance_id)
                    .with_error_code(code)
            })
            .collect(),
    )
}

pub async fn offset_commit(hub: &Arc<KafkaHub>, req: OffsetCommitRequest) -> OffsetCommitResponse {
    let group = req.group_id.0.to_string();
    let verdict = hub.groups.check_commit(
        &group,
        req.member_id.as_str(),
        req.generation_id_or_member_epoch,
    );
    let mut entries = Vec::new();
    let mut topics: Vec<OffsetCommitResponseTopic> = req
        .topics
        .into_iter()
        .map(|t| {
            let known = hub.topics.get(t.name.0.as_str());
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let code = if verdict != 0 {
                        verdict
                    } else if known
                        .as_ref()
                        .and_then(|k| k.partition(p.partition_index))
                        .is_none()
                    {
                        ResponseError::UnknownTopicOrPartition.code()
                    } else {
                        entries.push((
                            t.name.0.to_string(),
                            p.partition_index,
                            Committed {
                                offset: p.committed_offset,
                                metadata: p.committed_metadata.as_deref().unwrap_or("").to_string(),
                            },
                        ));
                        0
                    };
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    if !entries.is_empty() {
        let shared = hub.clone();
        let stored = hub
            .storage_io(move || shared.offsets().commit(&group, entries))
            .await;
        if let Err(e) = stored {
            tracing::error!("kafka: storing committed offsets: {e}");
            for p in topics.iter_mut().flat_map(|t| t.partitions.iter_mut()) {
                if p.error_code == 0 {
                    p.error_code = ResponseError::KafkaStorageError.code();
                }
            }
        }
    }
    OffsetCommitResponse::default().with_topics(topics)
}

pub fn offset_fetch(hub: &KafkaHub, req: OffsetFetchRequest) -> OffsetFetchResponse {
    let group = req.group_id.0.as_str();
    let store = hub.offsets();
    let partition = |topic: &str, index: i32| {
        let committed = store.get(group, topic, index);
        OffsetFetchResponsePartition::default()
            .with_partition_index(index)
            .with_committed_offset(committed.map_or(-1, |c| c.offset))
            .with_committed_leader_epoch(-1)
            .with_metadata(Some(str_bytes(
                committed.map_or("", |c| c.metadata.as_str()),
            )))
    };
    let topics = match req.topics {
        Some(topics) => topics
            .into_iter()
            .map(|t| {
                let partitions = t
                    .partition_indexes
                    .iter()
                    .map(|&i| partition(t.name.0.as_str(), i))
                    .collect();
                OffsetFetchResponseTopic::default()
                    .with_name(t.name)
                    .with_partitions(partitions)
            })
            .collect(),
        None => {
            // Every partition the group has committed.
            let mut out: Vec<OffsetFetchResponseTopic> = Vec::new();
            for (topic, index, _) in store.of_group(group) {
                if out.last().is_none_or(|t| t.name.0.as_str() != topic) {
                    out.push(
                        OffsetFetchResponseTopic::default()
                            .with_name(TopicName(StrBytes::from_string(topic.clone()))),
                    );
                }
                let last = out.last_mut().expect("pushed above");
                last.partitions.push(partition(&topic, index));
            }
            out
        }
    };
    OffsetFetchResponse::default().with_topics(topics)
}
