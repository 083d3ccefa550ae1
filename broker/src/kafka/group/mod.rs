//! Consumer groups (the classic protocol): members join, the coordinator
//! picks a leader and a protocol, the leader's assignment is handed out by
//! SyncGroup, and heartbeats keep members alive. A join, a leave or a missed
//! session timeout starts a rebalance with a new generation.
//!
//! States: Empty → PreparingRebalance (waiting for every member to (re)join)
//! → CompletingRebalance (waiting for the leader's SyncGroup) → Stable.
//! The assignment itself is opaque bytes computed by the clients (range,
//! round robin, ...). Join and sync answers that must wait are handed back
//! as oneshot receivers; `tick` enforces session and rebalance timeouts.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;

mod state;

use state::{metadata_bytes, Group, Member};
pub use state::{GroupState, JoinOutcome, JoinRequest, SyncOutcome};

/// Session timeouts a member may ask for, the first-rebalance delay, and
/// the bounds on what groups may hold.
#[derive(Debug, Clone, Copy)]
pub struct GroupConfig {
    pub min_session_timeout: Duration,
    pub max_session_timeout: Duration,
    pub initial_rebalance_delay: Duration,
    /// Groups that may exist at once (a JoinGroup for a new group beyond it:
    /// COORDINATOR_NOT_AVAILABLE, retriable, as groups expire).
    pub max_groups: usize,
    /// Members per group (Kafka's `group.max.size`; GROUP_MAX_SIZE_REACHED).
    pub max_members: usize,
    /// Protocol metadata of one member, and one member's assignment
    /// (INVALID_REQUEST beyond it).
    pub max_member_metadata_bytes: usize,
    /// Everything all groups keep together: metadata, assignments, ids
    /// (COORDINATOR_NOT_AVAILABLE beyond it, retriable).
    pub max_total_bytes: usize,
}

struct Groups {
    by_id: HashMap<String, Group>,
    /// Sum of every group's `accounted` bytes.
    held: usize,
}

impl Groups {
    /// Brings the totals up to date after `group_id` changed (or went away).
    fn account(&mut self, group_id: &str) {
        if let Some(g) = self.by_id.get_mut(group_id) {
            let now = g.held_bytes();
            self.held = self.held - g.accounted + now;
            g.accounted = now;
        }
    }
}

pub struct GroupCoordinator {
    groups: Mutex<Groups>,
    config: GroupConfig,
    next_member: std::sync::atomic::AtomicU64,
}

/// A JoinGroup answer: now, or once the rebalance completes.
pub enum Pending<T> {
    Ready(T),
    Wait(oneshot::Receiver<T>),
}

impl GroupCoordinator {
    pub fn new(config: GroupConfig) -> GroupCoordinator {
        GroupCoordinator {
            groups: Mutex::new(Groups {
                by_id: HashMap::new(),
                held: 0,
            }),
            config,
            next_member: std::sync::atomic::AtomicU64::new(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Groups> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn join(&self, req: JoinRequest, now: Instant) -> Pending<JoinOutcome> {
        if req.group_id.is_empty() {
            return Pending::Ready(JoinOutcome::error(
                ResponseError::InvalidGroupId,
                &req.member_id,
            ));
        }
        if req.session_timeout < self.config.min_session_timeout
            || req.session_timeout > self.config.max_session_timeout
        {
            return Pending::Ready(JoinOutcome::error(
                ResponseError::InvalidSessionTimeout,
                &req.member_id,
            ));
        }
        let request_bytes = metadata_bytes(&req.protocols);
        if req
            .protocols
            .iter()
            .any(|(_, m)| m.len() > self.config.max_member_metadata_bytes)
            || request_bytes > self.config.max_member_metadata_bytes.saturating_mul(2)
        {
            return Pending::Ready(JoinOutcome::error(
                ResponseError::InvalidRequest,
                &req.member_id,
            ));
        }
        let mut guard = self.lock();
        let groups = &mut *guard;
        if !groups.by_id.contains_key(&req.group_id) && groups.by_id.len() >= self.config.max_groups
        {
            return Pending::Ready(JoinOutcome::error(
                ResponseError::CoordinatorNotAvailable,
                &req.member_id,
            ));
        }
        if groups
            .held
            .saturating_add(request_bytes + req.member_id.len())
            > self.config.max_total_bytes
        {
            return Pending::Ready(JoinOutcome::error(
                ResponseError::CoordinatorNotAvailable,
                &req.member_id,
            ));
        }
        let group_id = req.group_id.clone();
        let outcome = self.join_locked(groups, req, now);
        groups.account(&group_id);
        if groups
            .by_id
            .get(&group_id)
            .is_some_and(|g| g.state == GroupState::Empty && g.members.is_empty())
        {
            // Refused before anyone joined: the group never existed.
            let g = groups.by_id.remove(&group_id).expect("checked above");
            groups.held -= g.accounted;
        }
        outcome
    }

    fn join_locked(
        &self,
        groups: &mut Groups,
        req: JoinRequest,
        now: Instant,
    ) -> Pending<JoinOutcome> {
        let group = groups
            .by_id
            .entry(req.group_id.clone())
            .or_insert_with(|| Group::new(now));
        if req.protocols.is_empty()
            || group.state != GroupState::Empty
                && (group.protocol_type.as_deref() != Some(req.protocol_type.as_str())
                    || !group.members.values().all(|m| {
                        m.protocols
                            .iter()
                            .any(|(n, _)| req.protocols.iter().any(|(rn, _)| rn == n))
                    }))
        {
            return Pending::Ready(JoinOutcome::error(
                ResponseError::InconsistentGroupProtocol,
                &req.member_id,
            ));
        }
        if req.member_id.is_empty() && group.members.len() >= self.config.max_members {
            return Pending::Ready(JoinOutcome::error(
                ResponseError::GroupMaxSizeReached,
                &req.member_id,
            ));
        }
        let member_id = if req.member_id.is_empty() {
            let n = self
                .next_member
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            format!(
                "{}-{n}-{:x}",
                req.client_id,
                crate::storage::millis_since_epoch(std::time::SystemTime::now())
            )
        } else if group.members.contains_key(&req.member_id) {
            req.member_id.clone()
        } else {
            return Pending::Ready(JoinOutcome::error(
                ResponseError::UnknownMemberId,
                &req.member_id,
            ));
        };
        let (tx, rx) = oneshot::channel();
        let joined = self
            .next_member
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let member = group.members.entry(member_id).or_insert_with(|| Member {
            group_instance_id: req.group_instance_id.clone(),
            session_timeout: req.session_timeout,
            rebalance_timeout: req.rebalance_timeout,
            protocols: Vec::new(),
            last_seen: now,
            joined,
            awaiting_join: None,
            awaiting_sync: None,
            assignment: Bytes::new(),
        });
        member.session_timeout = req.session_timeout;
        member.rebalance_timeout = req.rebalance_timeout;
        // Copied: the request's `Bytes` share the whole request frame, which
        // would otherwise live as long as the member (up to the session timeout).
        member.protocols = req
            .protocols
            .into_iter()
            .map(|(n, m)| (n, Bytes::copy_from_slice(&m)))
            .collect();
        member.last_seen = now;
        if let Some(old) = member.awaiting_join.replace(tx) {
            let _ = old.send(JoinOutcome::error(ResponseError::RebalanceInProgress, ""));
        }
        if group.state == GroupState::Empty {
            group.protocol_type = Some(req.protocol_type);
        }
        if group.state != GroupState::PreparingRebalance {
            group.prepare_rebalance(now, self.config.initial_rebalance_delay);
        }
        group.try_complete_join(now);
        Pending::Wait(rx)
    }

    pub fn sync(
        &self,
        group_id: &str,
        member_id: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> Pending<SyncOutcome> {
        let mut groups = self.lock();
        let outcome = self.sync_locked(
            &mut groups,
            group_id,
            member_id,
            generation,
            assignments,
            now,
        );
        groups.account(group_id);
        outcome
    }

    fn sync_locked(
        &self,
        groups: &mut Groups,
        group_id: &str,
        member_id: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> Pending<SyncOutcome> {
        if assignments
            .iter()
            .any(|(_, a)| a.len() > self.config.max_member_metadata_bytes)
        {
            return Pending::Ready(SyncOutcome::error(ResponseError::InvalidRequest));
        }
        let held = groups.held;
        let Some(group) = groups.by_id.get_mut(group_id) else {
            return Pending::Ready(SyncOutcome::error(ResponseError::UnknownMemberId));
        };
        if !group.members.contains_key(member_id) {
            return Pending::Ready(SyncOutcome::error(ResponseError::UnknownMemberId));
        }
        if generation != group.generation {
            return Pending::Ready(SyncOutcome::error(ResponseError::IllegalGeneration));
        }
        let (protocol_type, protocol_name) = (group.protocol_type.clone(), group.protocol.clone());
        let outcome = |assignment: Bytes| SyncOutcome {
            error: 0,
            protocol_type: protocol_type.clone(),
            protocol_name: protocol_name.clone(),
            assignment,
        };
        match group.state {
            GroupState::Empty | GroupState::PreparingRebalance => {
                Pending::Ready(SyncOutcome::error(ResponseError::RebalanceInProgress))
            }
            GroupState::Stable => {
                let m = group.members.get_mut(member_id).expect("checked above");
                m.last_seen = now;
                Pending::Ready(outcome(m.assignment.clone()))
            }
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                let m = group.members.get_mut(member_id).expect("checked above");
                m.last_seen = now;
                m.awaiting_sync = Some(tx);
                if group.leader.as_deref() == Some(member_id) {
                    // Only members of the group keep an assignment, copied out
                    // of the request frame.
                    let mut by_member: HashMap<String, Bytes> = assignments
                        .into_iter()
                        .filter(|(id, _)| group.members.contains_key(id))
                        .map(|(id, a)| (id, Bytes::copy_from_slice(&a)))
                        .collect();
                    let adding: usize = by_member.values().map(Bytes::len).sum();
                    if held.saturating_add(adding) > self.config.max_total_bytes {
                        // The leader's own wait is answered here instead.
                        if let Some(m) = group.members.get_mut(member_id) {
                            m.awaiting_sync = None;
                        }
                        return Pending::Ready(SyncOutcome::error(
                            ResponseError::CoordinatorNotAvailable,
                        ));
                    }
                    group.state = GroupState::Stable;
                    for (id, m) in group.members.iter_mut() {
                        m.assignment = by_member.remove(id).unwrap_or_default();
                        if let Some(tx) = m.awaiting_sync.take() {
                            let _ = tx.send(outcome(m.assignment.clone()));
                        }
                    }
                }
                Pending::Wait(rx)
            }
        }
    }

    pub fn heartbeat(&self, group_id: &str, member_id: &str, generation: i32, now: Instant) -> i16 {
        let mut groups = self.lock();
        let Some(m) = groups.by_id.get_mut(group_id).and_then(|g| {
            let state = g.state;
            let current = g.generation;
            g.members.get_mut(member_id).map(|m| (m, state, current))
        }) else {
            return ResponseError::UnknownMemberId.code();
        };
        let (member, state, current) = m;
        member.last_seen = now;
        if generation != current {
            return ResponseError::IllegalGeneration.code();
        }
        match state {
            GroupState::PreparingRebalance => ResponseError::RebalanceInProgress.code(),
            _ => 0,
        }
    }

    /// Removes members that leave; returns an error code per member.
    pub fn leave(&self, group_id: &str, member_ids: &[String], now: Instant) -> Vec<i16> {
        let mut groups = self.lock();
        let Some(group) = groups.by_id.get_mut(group_id) else {
            return vec![ResponseError::UnknownMemberId.code(); member_ids.len()];
        };
        let codes = member_ids
            .iter()
            .map(|id| {
                if group.members.contains_key(id) {
                    group.remove_member(id, now, self.config.initial_rebalance_delay);
                    0
                } else {
                    ResponseError::UnknownMemberId.code()
                }
            })
            .collect();
        groups.account(group_id);
        codes
    }

    /// Whether an OffsetCommit from this member may be stored (0) or why not.
    pub fn check_commit(&self, group_id: &str, member_id: &str, generation: i32) -> i16 {
        let groups = self.lock();
        let Some(group) = groups.by_id.get(group_id) else {
            // No group here: only a consumer that manages its own partitions
            // (no membership, generation -1) may store offsets.
            return if generation < 0 && member_id.is_empty() {
                0
            } else {
                ResponseError::UnknownMemberId.code()
            };
        };
        if generation < 0 && group.members.is_empty() {
            // An empty group is only used to store offsets (Kafka allows it).
            return 0;
        }
        // A group with members refuses commits from outside the current
        // generation, a negative one included (Kafka: UNKNOWN_MEMBER_ID for a
        // non-member, ILLEGAL_GENERATION for a member of another generation).
        if group.state == GroupState::CompletingRebalance && group.members.contains_key(member_id) {
            if generation != group.generation {
                return ResponseError::IllegalGeneration.code();
            }
            return ResponseError::RebalanceInProgress.code();
        }
        if !group.members.contains_key(member_id) {
            return ResponseError::UnknownMemberId.code();
        }
        if generation != group.generation {
            return ResponseError::IllegalGeneration.code();
        }
        0
    }

    /// Drops members whose session expired and completes overdue rebalances.
    pub fn tick(&self, now: Instant) {
        let mut guard = self.lock();
        let groups = &mut *guard;
        for (name, group) in groups.by_id.iter_mut() {
            let expired: Vec<String> = group
                .members
                .iter()
                .filter(|(_, m)| {
                    m.awaiting_join.is_none()
                        && now.saturating_duration_since(m.last_seen) > m.session_timeout
                })
                .map(|(id, _)| id.clone())
                .collect();
            for id in expired {
                tracing::debug!("kafka group {name}: member {id} missed its session timeout");
                group.remove_member(&id, now, self.config.initial_rebalance_delay);
            }
            group.try_complete_join(now);
            let held = group.held_bytes();
            groups.held = groups.held - group.accounted + held;
            group.accounted = held;
        }
        let mut freed = 0;
        groups.by_id.retain(|_, g| {
            let keep = g.state != GroupState::Empty || !g.members.is_empty();
            if !keep {
                freed += g.accounted;
            }
            keep
        });
        groups.held -= freed;
    }

    /// Groups and the bytes they hold (for tests and metrics).
    pub fn held(&self) -> (usize, usize) {
        let g = self.lock();
        (g.by_id.len(), g.held)
    }

    pub fn state(&self, group_id: &str) -> Option<(GroupState, i32, usize)> {
        self.lock()
            .by_id
            .get(group_id)
            .map(|g| (g.state, g.generation, g.members.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coordinator() -> GroupCoordinator {
        GroupCoordinator::new(GroupConfig {
            min_session_timeout: Duration::from_millis(100),
            max_session_timeout: Duration::from_secs(600),
            initial_rebalance_delay: Duration::ZERO,
            max_groups: 100,
            max_members: 100,
            max_member_metadata_bytes: 1024,
            max_total_bytes: 1 << 20,
        })
    }

    fn join(c: &GroupCoordinator, member: &str, now: Instant) -> Pending<JoinOutcome> {
        c.join(
            JoinRequest {
                group_id: "g".into(),
                member_id: member.into(),
                group_instance_id: None,
                client_id: "c".into(),
                session_timeout: Duration::from_secs(10),
                rebalance_timeout: Duration::from_secs(30),
                protocol_type: "consumer".into(),
                protocols: vec![("range".into(), Bytes::from_static(b"meta"))],
            },
            now,
        )
    }

    fn ready<T: std::fmt::Debug>(p: Pending<T>) -> T {
        match p {
            Pending::Ready(t) => t,
            Pending::Wait(mut rx) => rx.try_recv().expect("answered already"),
        }
    }

    fn waiting<T>(p: Pending<T>) -> oneshot::Receiver<T> {
        match p {
            Pending::Wait(rx) => rx,
            Pending::Ready(_) => panic!("expected to wait"),
        }
    }

    #[test]
    fn two_members_rebalance_and_leave() {
        let c = coordinator();
        let t0 = Instant::now();
        // First member: a group of one completes at once, and it leads.
        let a = ready(join(&c, "", t0));
        assert_eq!(a.error, 0);
        assert_eq!(a.generation, 1);
        assert_eq!(a.leader, a.member_id);
        assert_eq!(a.members.len(), 1);
        assert_eq!(a.protocol_name.as_deref(), Some("range"));
        let s = ready(c.sync(
            "g",
            &a.member_id,
            1,
            vec![(a.member_id.clone(), Bytes::from_static(b"all"))],
            t0,
        ));
        assert_eq!(&s.assignment[..], b"all");
        assert_eq!(c.state("g").unwrap().0, GroupState::Stable);

        // Second member: the join waits until the first rejoins (told by its heartbeat).
        let mut b_rx = waiting(join(&c, "", t0));
        assert_eq!(
            c.heartbeat("g", &a.member_id, 1, t0),
            ResponseError::RebalanceInProgress.code()
        );
        assert!(b_rx.try_recv().is_err());
        let a2 = ready(join(&c, &a.member_id, t0));
        let b = b_rx.try_recv().unwrap();
        assert_eq!((a2.generation, b.generation), (2, 2));
        assert_eq!(a2.leader, a.member_id, "the leader stays");
        assert_eq!(a2.members.len(), 2);
        assert!(b.members.is_empty(), "only the leader sees the members");

        // The follower's sync waits for the leader's.
        let mut b_sync = waiting(c.sync("g", &b.member_id, 2, vec![], t0));
        assert!(b_sync.try_recv().is_err());
        let a_sync = ready(c.sync(
            "g",
            &a.member_id,
            2,
            vec![
                (a.member_id.clone(), Bytes::from_static(b"p0")),
                (b.member_id.clone(), Bytes::from_static(b"p1")),
            ],
            t0,
        ));
        assert_eq!(&a_sync.assignment[..], b"p0");
        assert_eq!(&b_sync.try_recv().unwrap().assignment[..], b"p1");
        assert_eq!(c.heartbeat("g", &b.member_id, 2, t0), 0);
        assert_eq!(
            c.heartbeat("g", &b.member_id, 1, t0),
            ResponseError::IllegalGeneration.code()
        );
        assert_eq!(c.check_commit("g", &b.member_id, 2), 0);
        assert_eq!(
            c.check_commit("g", "stranger", 2),
            ResponseError::UnknownMemberId.code()
        );

        // The leader leaves: the other member rejoins alone and leads generation 3.
        assert_eq!(
            c.leave("g", std::slice::from_ref(&a.member_id), t0),
            vec![0]
        );
        assert_eq!(
            c.heartbeat("g", &b.member_id, 2, t0),
            ResponseError::RebalanceInProgress.code()
        );
        let b3 = ready(join(&c, &b.member_id, t0));
        assert_eq!(b3.generation, 3);
        assert_eq!(b3.leader, b.member_id);
    }

    #[test]
    fn session_timeout_removes_a_silent_member() {
        let c = coordinator();
        let t0 = Instant::now();
        let a = ready(join(&c, "", t0));
        ready(c.sync("g", &a.member_id, a.generation, vec![], t0));
        let b_rx = waiting(join(&c, "", t0));
        let a2 = ready(join(&c, &a.member_id, t0));
        let b = {
            let mut rx = b_rx;
            rx.try_recv().unwrap()
        };
        ready(c.sync("g", &a.member_id, a2.generation, vec![], t0));
        // b keeps heartbeating, a goes silent.
        let later = t0 + Duration::from_secs(8);
        assert_eq!(c.heartbeat("g", &b.member_id, b.generation, later), 0);
        c.tick(t0 + Duration::from_secs(11));
        let (state, generation, members) = c.state("g").unwrap();
        assert_eq!(members, 1);
        assert_eq!(state, GroupState::PreparingRebalance);
        assert_eq!(generation, a2.generation);
        assert_eq!(
            c.heartbeat("g", &a.member_id, generation, later),
            ResponseError::UnknownMemberId.code()
        );
    }

    #[test]
    fn rebalance_timeout_drops_members_that_do_not_rejoin() {
        let c = coordinator();
        let t0 = Instant::now();
        let a = ready(join(&c, "", t0));
        ready(c.sync("g", &a.member_id, 1, vec![], t0));
        let mut b_rx = waiting(join(&c, "", t0));
        // a never rejoins; after its 30 s rebalance timeout b goes on alone.
        c.tick(t0 + Duration::from_secs(5));
        assert!(b_rx.try_recv().is_err());
        c.tick(t0 + Duration::from_secs(31));
        let b = b_rx.try_recv().unwrap();
        assert_eq!(b.error, 0);
        assert_eq!(b.generation, 2);
        assert_eq!(b.leader, b.member_id);
    }

    #[test]
    fn bad_joins() {
        let c = coordinator();
        let t0 = Instant::now();
        assert_eq!(
            ready(join(&c, "nobody", t0)).error,
            ResponseError::UnknownMemberId.code()
        );
        let mut req = JoinRequest {
            group_id: "g".into(),
            member_id: String::new(),
            group_instance_id: None,
            client_id: "c".into(),
            session_timeout: Duration::from_millis(1),
            rebalance_timeout: Duration::from_secs(1),
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::new())],
        };
        assert_eq!(
            ready(c.join(req.clone(), t0)).error,
            ResponseError::InvalidSessionTimeout.code()
        );
        req.session_timeout = Duration::from_secs(1);
        req.group_id = String::new();
        assert_eq!(
            ready(c.join(req.clone(), t0)).error,
            ResponseError::InvalidGroupId.code()
        );
        req.group_id = "g".into();
        ready(c.join(req.clone(), t0));
        req.protocols = vec![("roundrobin".into(), Bytes::new())];
        assert_eq!(
            ready(c.join(req, t0)).error,
            ResponseError::InconsistentGroupProtocol.code()
        );
    }

    fn limited(max_groups: usize, max_members: usize, max_total_bytes: usize) -> GroupCoordinator {
        GroupCoordinator::new(GroupConfig {
            min_session_timeout: Duration::from_millis(100),
            max_session_timeout: Duration::from_secs(600),
            initial_rebalance_delay: Duration::ZERO,
            max_groups,
            max_members,
            max_member_metadata_bytes: 1024,
            max_total_bytes,
        })
    }

    fn join_group(
        c: &GroupCoordinator,
        group: &str,
        metadata: usize,
        now: Instant,
    ) -> Pending<JoinOutcome> {
        c.join(
            JoinRequest {
                group_id: group.into(),
                member_id: String::new(),
                group_instance_id: None,
                client_id: "c".into(),
                session_timeout: Duration::from_secs(10),
                rebalance_timeout: Duration::from_secs(30),
                protocol_type: "consumer".into(),
                protocols: vec![("range".into(), Bytes::from(vec![7u8; metadata]))],
            },
            now,
        )
    }

    #[test]
    fn members_per_group_are_capped() {
        let c = limited(10, 2, 1 << 20);
        let t0 = Instant::now();
        let a = ready(join_group(&c, "g", 4, t0));
        assert_eq!(a.error, 0);
        let _b = waiting(join_group(&c, "g", 4, t0));
        let third = ready(join_group(&c, "g", 4, t0));
        assert_eq!(third.error, ResponseError::GroupMaxSizeReached.code());
        assert_eq!(c.state("g").unwrap().2, 2);
        // A known member may still rejoin.
        let again = join(&c, &a.member_id, t0);
        assert!(matches!(again, Pending::Wait(_)));
    }

    #[test]
    fn groups_are_capped_and_refused_ones_leave_nothing() {
        let c = limited(2, 10, 1 << 20);
        let t0 = Instant::now();
        assert_eq!(ready(join_group(&c, "g1", 4, t0)).error, 0);
        assert_eq!(ready(join_group(&c, "g2", 4, t0)).error, 0);
        let refused = ready(join_group(&c, "g3", 4, t0));
        assert_eq!(refused.error, ResponseError::CoordinatorNotAvailable.code());
        assert!(c.state("g3").is_none());
        assert_eq!(c.held().0, 2);
        // A refused join for a new group (inconsistent protocol) leaves no group behind.
        let c = limited(2, 10, 1 << 20);
        let mut req = JoinRequest {
            group_id: "empty".into(),
            member_id: String::new(),
            group_instance_id: None,
            client_id: "c".into(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(30),
            protocol_type: "consumer".into(),
            protocols: vec![],
        };
        for i in 0..5 {
            req.group_id = format!("empty{i}");
            assert_eq!(
                ready(c.join(req.clone(), t0)).error,
                ResponseError::InconsistentGroupProtocol.code()
            );
        }
        assert_eq!(c.held(), (0, 0));
    }

    #[test]
    fn member_metadata_is_capped_and_copied_out_of_the_frame() {
        let c = limited(10, 10, 1 << 20);
        let t0 = Instant::now();
        let big = ready(join_group(&c, "g", 1025, t0));
        assert_eq!(big.error, ResponseError::InvalidRequest.code());
        assert!(c.state("g").is_none());
        // Metadata sliced from a larger frame: the group keeps only its bytes.
        let frame = Bytes::from(vec![1u8; 64 * 1024]);
        let out = ready(c.join(
            JoinRequest {
                group_id: "g".into(),
                member_id: String::new(),
                group_instance_id: None,
                client_id: "c".into(),
                session_timeout: Duration::from_secs(10),
                rebalance_timeout: Duration::from_secs(30),
                protocol_type: "consumer".into(),
                protocols: vec![("range".into(), frame.slice(100..110))],
            },
            t0,
        ));
        assert_eq!(out.error, 0);
        // Only this test's `frame` still points at the 64 KiB buffer.
        assert!(
            frame.is_unique(),
            "the group kept a view of the request frame"
        );
        let (_, held) = c.held();
        assert!(held < 200, "held {held} bytes");
        // The leader's assignment: too large is refused, otherwise copied.
        let s = ready(c.sync(
            "g",
            &out.member_id,
            out.generation,
            vec![(out.member_id.clone(), Bytes::from(vec![0u8; 2000]))],
            t0,
        ));
        assert_eq!(s.error, ResponseError::InvalidRequest.code());
    }

    #[test]
    fn total_bytes_are_capped_and_given_back() {
        let c = limited(100, 100, 3000);
        let t0 = Instant::now();
        let mut ids = Vec::new();
        for i in 0..3 {
            let out = ready(join_group(&c, &format!("g{i}"), 900, t0));
            assert_eq!(out.error, 0, "group {i}");
            ids.push(out.member_id);
        }
        let over = ready(join_group(&c, "g3", 900, t0));
        assert_eq!(over.error, ResponseError::CoordinatorNotAvailable.code());
        let (groups, held) = c.held();
        assert_eq!(groups, 3);
        assert!(held > 2700 && held <= 3000, "held {held}");
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(
                c.leave(&format!("g{i}"), std::slice::from_ref(id), t0),
                vec![0]
            );
        }
        c.tick(t0);
        assert_eq!(c.held(), (0, 0));
        assert_eq!(ready(join_group(&c, "g3", 900, t0)).error, 0);
    }

    #[test]
    fn negative_generation_commits_only_outside_active_groups() {
        let c = coordinator();
        let t0 = Instant::now();
        // No group, or a group without members: a self-managed consumer may commit.
        assert_eq!(c.check_commit("g", "", -1), 0);
        let a = ready(join(&c, "", t0));
        ready(c.sync("g", &a.member_id, a.generation, vec![], t0));
        // An active group: generation -1 from a stranger or from a member is refused.
        assert_eq!(
            c.check_commit("g", "", -1),
            ResponseError::UnknownMemberId.code()
        );
        assert_eq!(
            c.check_commit("g", &a.member_id, -1),
            ResponseError::IllegalGeneration.code()
        );
        assert_eq!(
            c.check_commit("g", "stranger", -1),
            ResponseError::UnknownMemberId.code()
        );
        assert_eq!(c.check_commit("g", &a.member_id, a.generation), 0);
        // Once everyone has left, offsets may be stored without membership again.
        c.leave("g", std::slice::from_ref(&a.member_id), t0);
        assert_eq!(c.check_commit("g", "", -1), 0);
    }
}
