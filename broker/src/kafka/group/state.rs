//! A group's state and its rebalance steps (join phase, leader and protocol
//! choice, member removal); the coordinator in `mod.rs` owns the groups,
//! their limits and the requests.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

/// What a JoinGroup is answered with.
#[derive(Debug, Clone, Default)]
pub struct JoinOutcome {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Filled for the leader only: (member id, group instance id, metadata).
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinOutcome {
    pub(super) fn error(error: ResponseError, member_id: &str) -> JoinOutcome {
        JoinOutcome {
            error: error.code(),
            generation: -1,
            member_id: member_id.to_string(),
            ..JoinOutcome::default()
        }
    }
}

/// What a SyncGroup is answered with.
#[derive(Debug, Clone, Default)]
pub struct SyncOutcome {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncOutcome {
    pub(super) fn error(error: ResponseError) -> SyncOutcome {
        SyncOutcome {
            error: error.code(),
            ..SyncOutcome::default()
        }
    }
}

/// A JoinGroup as the coordinator needs it.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
}

pub(super) struct Member {
    pub(super) group_instance_id: Option<String>,
    pub(super) session_timeout: Duration,
    pub(super) rebalance_timeout: Duration,
    pub(super) protocols: Vec<(String, Bytes)>,
    pub(super) last_seen: Instant,
    /// Joined before every other member still here gets a lower number.
    pub(super) joined: u64,
    pub(super) awaiting_join: Option<oneshot::Sender<JoinOutcome>>,
    pub(super) awaiting_sync: Option<oneshot::Sender<SyncOutcome>>,
    pub(super) assignment: Bytes,
}

impl Member {
    /// Bytes this member keeps alive (metadata, assignment, names).
    pub(super) fn held_bytes(&self, id: &str) -> usize {
        id.len()
            + self.group_instance_id.as_ref().map_or(0, String::len)
            + self.assignment.len()
            + metadata_bytes(&self.protocols)
    }
}

/// Encoded size of a member's protocol list as it is kept.
pub(super) fn metadata_bytes(protocols: &[(String, Bytes)]) -> usize {
    protocols.iter().map(|(n, m)| n.len() + m.len()).sum()
}

pub(super) struct Group {
    pub(super) state: GroupState,
    pub(super) generation: i32,
    pub(super) protocol_type: Option<String>,
    pub(super) protocol: Option<String>,
    pub(super) leader: Option<String>,
    pub(super) members: HashMap<String, Member>,
    /// PreparingRebalance: when members that have not rejoined are dropped.
    pub(super) rebalance_deadline: Instant,
    /// PreparingRebalance of an empty group: do not complete before this.
    pub(super) not_before: Instant,
    /// What `held_bytes` summed to when the coordinator last accounted it.
    pub(super) accounted: usize,
}

impl Group {
    pub(super) fn new(now: Instant) -> Group {
        Group {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: HashMap::new(),
            rebalance_deadline: now,
            not_before: now,
            accounted: 0,
        }
    }

    pub(super) fn held_bytes(&self) -> usize {
        self.members
            .iter()
            .map(|(id, m)| m.held_bytes(id))
            .sum::<usize>()
            + self.protocol_type.as_ref().map_or(0, String::len)
            + self.protocol.as_ref().map_or(0, String::len)
    }

    pub(super) fn prepare_rebalance(&mut self, now: Instant, initial_delay: Duration) {
        if self.state == GroupState::CompletingRebalance {
            for m in self.members.values_mut() {
                if let Some(tx) = m.awaiting_sync.take() {
                    let _ = tx.send(SyncOutcome::error(ResponseError::RebalanceInProgress));
                }
            }
        }
        let longest = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default();
        self.not_before = if self.state == GroupState::Empty {
            now + initial_delay
        } else {
            now
        };
        self.rebalance_deadline = now + longest.max(initial_delay);
        self.state = GroupState::PreparingRebalance;
    }

    /// Finishes the join phase when every member has rejoined (or the
    /// rebalance timeout dropped the ones that did not).
    pub(super) fn try_complete_join(&mut self, now: Instant) {
        if self.state != GroupState::PreparingRebalance || now < self.not_before {
            return;
        }
        let all_in = self.members.values().all(|m| m.awaiting_join.is_some());
        if !all_in && now < self.rebalance_deadline {
            return;
        }
        self.members.retain(|_, m| m.awaiting_join.is_some());
        self.generation = self.generation.wrapping_add(1).max(1);
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.leader = None;
            self.protocol = None;
            self.protocol_type = None;
            return;
        }
        let mut order: Vec<(&String, &Member)> = self.members.iter().collect();
        order.sort_by_key(|(_, m)| m.joined);
        let leader = match &self.leader {
            Some(l) if self.members.contains_key(l) => l.clone(),
            _ => order[0].0.clone(),
        };
        // The first protocol, in the leader's order of preference, that every member supports.
        let protocol = self.members[&leader]
            .protocols
            .iter()
            .map(|(name, _)| name)
            .find(|name| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == *name))
            })
            .cloned();
        let members: Vec<(String, Option<String>, Bytes)> = order
            .iter()
            .map(|(id, m)| {
                let metadata = m
                    .protocols
                    .iter()
                    .find(|(n, _)| Some(n) == protocol.as_ref())
                    .map(|(_, md)| md.clone())
                    .unwrap_or_default();
                ((*id).clone(), m.group_instance_id.clone(), metadata)
            })
            .collect();
        self.leader = Some(leader.clone());
        self.protocol = protocol;
        self.state = GroupState::CompletingRebalance;
        for (id, m) in self.members.iter_mut() {
            m.last_seen = now;
            m.assignment = Bytes::new();
            if let Some(tx) = m.awaiting_join.take() {
                let _ = tx.send(JoinOutcome {
                    error: 0,
                    generation: self.generation,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol.clone(),
                    leader: leader.clone(),
                    member_id: id.clone(),
                    members: if *id == leader {
                        members.clone()
                    } else {
                        Vec::new()
                    },
                });
            }
        }
    }

    pub(super) fn remove_member(&mut self, id: &str, now: Instant, initial_delay: Duration) {
        let Some(mut m) = self.members.remove(id) else {
            return;
        };
        if let Some(tx) = m.awaiting_join.take() {
            let _ = tx.send(JoinOutcome::error(ResponseError::UnknownMemberId, id));
        }
        if let Some(tx) = m.awaiting_sync.take() {
            let _ = tx.send(SyncOutcome::error(ResponseError::UnknownMemberId));
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.generation = self.generation.wrapping_add(1).max(1);
            self.protocol = None;
            self.protocol_type = None;
        } else if self.state != GroupState::PreparingRebalance {
            self.prepare_rebalance(now, initial_delay);
        }
        self.try_complete_join(now);
    }
}
