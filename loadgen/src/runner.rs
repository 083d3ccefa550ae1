//! Runs one workload through a protocol driver: connection pacing, open-loop
//! rate control, payload headers, sequence tracking, histograms, the
//! per-second timeline, fault handling and assembly of the [`LoadResult`].
//!
//! Everything here is protocol-independent; a [`Driver`] only connects
//! clients, publishes payloads and reports what arrives.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use hdrhistogram::Histogram;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::amqp::AmqpDriver;
use crate::driver::{ClientEvents, ClientSpec, Connection, Driver, DriverError, Publisher, Role};
use crate::histogram;
use crate::kafka::KafkaDriver;
use crate::limits;
use crate::mqtt::MqttDriver;
use crate::payload::{self, Header};
use crate::progress::{Progress, ProgressMode, Snapshot};
use crate::result::{
    ConnectionStats, Counts, Latencies, LoadResult, Outcome, Rates, SelfUsage, Tick,
    RESULT_SCHEMA_VERSION,
};
use crate::seq::{Delivery, SequenceTracker};
use crate::spec::{Protocol, Workload};

/// Connection attempts in flight at once when `connect_rate = 0`.
pub const MAX_CONNECTS_IN_FLIGHT: usize = 512;
/// Slack on top of the workload's own time before the run is cut off.
pub const DEADLINE_SLACK: Duration = Duration::from_secs(30);
/// Longest wait for all clients to disconnect at the end.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the drain checks whether everything has arrived.
const DRAIN_POLL: Duration = Duration::from_millis(10);

/// How to run, besides the workload itself.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Broker address, `HOST:PORT`.
    pub target: String,
    pub progress: ProgressMode,
}

/// Problems that prevent a run from starting at all (bad input); everything
/// after that, including an unreachable broker, is reported in the result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    BadTarget(String),
}

/// Runs `workload` against `options.target` with the driver for its protocol.
pub async fn run(workload: &Workload, options: &RunOptions) -> Result<LoadResult, RunError> {
    match workload.protocol {
        Protocol::Mqtt => {
            let driver = MqttDriver::new(workload, &options.target)
                .map_err(|e| RunError::BadTarget(e.to_string()))?;
            let loopback = driver.broker_addr().ip().is_loopback();
            Ok(run_with(Arc::new(driver), loopback, workload, options).await)
        }
        Protocol::Kafka => {
            let driver = KafkaDriver::new(workload, &options.target)
                .map_err(|e| RunError::BadTarget(e.to_string()))?;
            let loopback = driver.broker_addr().ip().is_loopback();
            Ok(run_with(Arc::new(driver), loopback, workload, options).await)
        }
        Protocol::Amqp => {
            let driver = AmqpDriver::new(workload, &options.target)
                .map_err(|e| RunError::BadTarget(e.to_string()))?;
            let loopback = driver.broker_addr().ip().is_loopback();
            Ok(run_with(Arc::new(driver), loopback, workload, options).await)
        }
    }
}

/// Publisher `index`'s share of the total rate, in messages per second
/// (`None`: as fast as possible).
pub fn publisher_rate(total_rate: u64, publishers: u32) -> Option<f64> {
    (total_rate > 0 && publishers > 0).then(|| total_rate as f64 / f64::from(publishers))
}

/// The open-loop schedule of one publisher: message `k` is due at
/// `start + phase + k / rate`, whether or not earlier ones went out on time.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    start: Instant,
    /// Messages per second; `None` = as fast as possible (intended = actual).
    rate: Option<f64>,
    /// Offset of this publisher, so publishers do not all fire at once.
    phase: Duration,
}

impl Schedule {
    /// Publisher `index` of `publishers` sharing `total_rate`.
    pub fn new(start: Instant, total_rate: u64, publishers: u32, index: u32) -> Schedule {
        let rate = publisher_rate(total_rate, publishers);
        let phase = if total_rate > 0 {
            Duration::from_secs_f64(f64::from(index) / total_rate as f64)
        } else {
            Duration::ZERO
        };
        Schedule { start, rate, phase }
    }

    pub fn is_paced(&self) -> bool {
        self.rate.is_some()
    }

    /// When message `seq` is due; `None` when unpaced.
    pub fn intended(&self, seq: u64) -> Option<Instant> {
        let rate = self.rate?;
        let offset_ns = (seq as f64 * 1e9 / rate).round() as u64;
        Some(self.start + self.phase + Duration::from_nanos(offset_ns))
    }

    /// How many messages the schedule intends in `[from, to)`, of the first
    /// `max_messages` (0 = no limit); `None` when unpaced.
    pub fn offered_between(&self, from: Instant, to: Instant, max_messages: u64) -> Option<u64> {
        self.rate?;
        let before = |k: u64, t: Instant| self.intended(k).is_some_and(|due| due < t);
        // The first sequence number intended at or after `t` (bisection).
        let first_at = |t: Instant| -> u64 {
            if !before(0, t) {
                return 0;
            }
            let mut hi = 1u64;
            while before(hi, t) {
                hi = hi.saturating_mul(2);
            }
            let mut lo = hi / 2;
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if before(mid, t) {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            hi
        };
        let (lo, mut hi) = (first_at(from), first_at(to));
        if max_messages > 0 {
            hi = hi.min(max_messages);
        }
        Some(hi.saturating_sub(lo))
    }
}

/// The measured window, as nanoseconds since [`payload::epoch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: u64,
    pub end: u64,
}

impl Window {
    pub fn contains(&self, intended_nanos: u64) -> bool {
        (self.start..self.end).contains(&intended_nanos)
    }
}

/// For each publisher, the subscribers whose filter matches its topic. When
/// the subscribers share deliveries they count as one consumer, index 0.
pub fn matching_subscribers<D: Driver>(driver: &D, workload: &Workload) -> Vec<Vec<u32>> {
    if driver.subscribers_share_deliveries() {
        return (0..workload.publishers)
            .map(|p| {
                let topic = workload.publisher_topic(p);
                let any = (0..workload.subscribers)
                    .any(|s| driver.filter_matches(&workload.subscriber_filter(s), &topic));
                if any {
                    vec![0]
                } else {
                    Vec::new()
                }
            })
            .collect();
    }
    let filters: Vec<String> = (0..workload.subscribers)
        .map(|s| workload.subscriber_filter(s))
        .collect();
    (0..workload.publishers)
        .map(|p| {
            let topic = workload.publisher_topic(p);
            (0..workload.subscribers)
                .filter(|s| driver.filter_matches(&filters[*s as usize], &topic))
                .collect()
        })
        .collect()
}

/// Deliveries expected for `sent[p]` messages per publisher: each message
/// once per subscriber whose filter matches its topic.
pub fn expected_deliveries(matching: &[Vec<u32>], sent_per_publisher: &[u64]) -> u64 {
    sent_per_publisher
        .iter()
        .zip(matching)
        .map(|(sent, subs)| sent * subs.len() as u64)
        .sum()
}

/// State every task of one run shares.
struct Shared {
    window: OnceLock<Window>,
    /// End of the drain, nanoseconds since the epoch: measured messages that
    /// arrive later are `late`.
    on_time_until: OnceLock<u64>,
    timeline: Timeline,
    sent: AtomicU64,
    acked: AtomicU64,
    received: AtomicU64,
    error_count: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    first_error: Mutex<Option<String>>,
    aborted_at: OnceLock<Instant>,
    abort: watch::Sender<bool>,
    /// Teardown has begun: connection losses from now on are expected.
    stopping: AtomicBool,
}

impl Shared {
    fn new(duration_secs: f64) -> Shared {
        Shared {
            window: OnceLock::new(),
            on_time_until: OnceLock::new(),
            timeline: Timeline::new(duration_secs),
            sent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            received: AtomicU64::new(0),
            error_count: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
            first_error: Mutex::new(None),
            aborted_at: OnceLock::new(),
            abort: watch::channel(false).0,
            stopping: AtomicBool::new(false),
        }
    }

    fn count_error(&self, kind: &str) {
        self.error_count.fetch_add(1, Ordering::Relaxed);
        *self
            .errors
            .lock()
            .expect("errors")
            .entry(kind.to_string())
            .or_default() += 1;
    }

    /// Records a fatal error and ends the run (the first one is the run's error).
    fn fail(&self, kind: &str, message: String) {
        if self.stopping.load(Ordering::Acquire) {
            return;
        }
        self.count_error(kind);
        let mut first = self.first_error.lock().expect("first error");
        if first.is_none() {
            tracing::error!("{message}");
            *first = Some(message);
            let _ = self.aborted_at.set(Instant::now());
        }
        drop(first);
        self.abort.send_replace(true);
    }

    fn is_aborted(&self) -> bool {
        *self.abort.borrow()
    }

    /// Resolves once the run is aborted.
    async fn aborted(&self) {
        let mut rx = self.abort.subscribe();
        let _ = rx.wait_for(|aborted| *aborted).await;
    }
}

#[derive(Default)]
struct PublisherStats {
    /// What the schedule intended in the window (None: unpaced).
    offered: Option<u64>,
    /// Measured messages (intended in the window) handed to the client.
    sent: u64,
    /// Messages handed to the client inside the window (by actual time).
    sent_in_window: u64,
    /// Acknowledgements received inside the window (by ack time).
    acked_in_window: u64,
    /// Sequence numbers of the measured messages: `first..end`.
    first_measured: Option<u64>,
    end_measured: u64,
    publish_delay: Option<Histogram<u64>>,
    acked: u64,
    ack: Option<Histogram<u64>>,
}

impl PublisherStats {
    fn measured_range(&self) -> std::ops::Range<u64> {
        match self.first_measured {
            Some(first) => first..self.end_measured,
            None => 0..0,
        }
    }
}

struct SubscriberStats {
    /// Indexed by publisher id.
    trackers: Vec<SequenceTracker>,
    received: u64,
    /// Non-duplicate deliveries received inside the window (any message).
    delivered: u64,
    late: u64,
    duplicated: u64,
    out_of_order: u64,
    end_to_end: Histogram<u64>,
}

/// Where subscriber deliveries go.
struct SubscriberEvents {
    shared: Arc<Shared>,
    stats: Arc<Mutex<SubscriberStats>>,
}

impl ClientEvents for SubscriberEvents {
    fn delivered(&mut self, payload: &[u8], at: Instant) {
        let header = match Header::decode(payload) {
            Ok(h) => h,
            Err(_) => return self.shared.count_error("foreign_payload"),
        };
        let window = self.shared.window.get().copied();
        let at_nanos = payload::nanos_since_epoch(at);
        let mut stats = self.stats.lock().expect("subscriber stats");
        let Some(tracker) = stats.trackers.get_mut(header.publisher as usize) else {
            drop(stats);
            return self.shared.count_error("foreign_payload");
        };
        let delivery = tracker.record(header.sequence);
        // Throughput: what arrived inside the window, whenever it was sent.
        if let Some(w) = window.filter(|w| w.contains(at_nanos)) {
            if delivery != Delivery::Duplicate {
                stats.delivered += 1;
                self.shared.timeline.count(&w, at_nanos, Column::Received);
            }
        }
        let Some(_) = window.filter(|w| w.contains(header.intended_nanos)) else {
            // Not a measured message (warm-up): only the tracker and the
            // window's delivered count hear of it.
            return;
        };
        stats.received += 1;
        if self
            .shared
            .on_time_until
            .get()
            .is_some_and(|until| at_nanos > *until)
            && delivery != Delivery::Duplicate
        {
            stats.late += 1;
        }
        match delivery {
            Delivery::Duplicate => stats.duplicated += 1,
            Delivery::OutOfOrder => stats.out_of_order += 1,
            Delivery::InOrder => {}
        }
        if delivery != Delivery::Duplicate {
            let intended = payload::instant_from_nanos(header.intended_nanos);
            histogram::record(
                &mut stats.end_to_end,
                at.saturating_duration_since(intended),
            );
        }
        drop(stats);
        self.shared.received.fetch_add(1, Ordering::Relaxed);
    }

    fn connection_lost(&mut self, error: DriverError) {
        self.shared.fail(error.kind().as_str(), error.to_string());
    }
}

/// Where publisher acknowledgements go; the token is the intended send time.
struct PublisherEvents {
    shared: Arc<Shared>,
    stats: Arc<Mutex<PublisherStats>>,
}

impl ClientEvents for PublisherEvents {
    fn acked(&mut self, token: u64, at: Instant) {
        let Some(window) = self.shared.window.get().copied() else {
            return;
        };
        let at_nanos = payload::nanos_since_epoch(at);
        let mut stats = self.stats.lock().expect("publisher stats");
        if window.contains(at_nanos) {
            stats.acked_in_window += 1;
            self.shared.timeline.count(&window, at_nanos, Column::Acked);
        }
        if !window.contains(token) {
            return;
        }
        stats.acked += 1;
        let intended = payload::instant_from_nanos(token);
        histogram::record(
            stats.ack.get_or_insert_with(histogram::new_latency),
            at.saturating_duration_since(intended),
        );
        drop(stats);
        self.shared.acked.fetch_add(1, Ordering::Relaxed);
    }

    fn connection_lost(&mut self, error: DriverError) {
        self.shared.fail(error.kind().as_str(), error.to_string());
    }
}

struct IdleEvents {
    shared: Arc<Shared>,
}

impl ClientEvents for IdleEvents {
    fn connection_lost(&mut self, error: DriverError) {
        self.shared.fail(error.kind().as_str(), error.to_string());
    }
}

#[derive(Default)]
struct ConnectTally {
    attempted: u64,
    established: u64,
    failed: u64,
    errors: BTreeMap<String, u64>,
    first_attempt: Option<Instant>,
    last_success: Option<Instant>,
    first_idle_error: Option<String>,
}

/// A finished connection attempt: who, what came of it, and when.
type ConnectOutcome<D> = (ClientSpec, Result<Connected<D>, DriverError>, Instant);

enum Connected<D: Driver> {
    Publisher(u32, D::Publisher),
    Subscriber(D::Subscriber),
    Idle(D::Idle),
}

/// Everything the run produced, kept outside the deadline-bounded part so a
/// cut-off run still reports what it measured.
struct Collected {
    publishers: Vec<Arc<Mutex<PublisherStats>>>,
    subscribers: Vec<Arc<Mutex<SubscriberStats>>>,
    /// Per publisher, the subscribers its messages should reach.
    matching: Vec<Vec<u32>>,
    /// Whether `subscribers` is one shared consumer (see
    /// [`Driver::subscribers_share_deliveries`]).
    shared_subscribers: bool,
    connections: Mutex<ConnectTally>,
    completed: AtomicBool,
}

impl Collected {
    /// Where subscriber `index`'s deliveries are counted.
    fn subscriber_stats(&self, index: u32) -> Arc<Mutex<SubscriberStats>> {
        let index = if self.shared_subscribers {
            0
        } else {
            index as usize
        };
        self.subscribers[index].clone()
    }
}

/// Runs `workload` with `driver`; always returns a result (aborted ones are partial).
pub async fn run_with<D: Driver>(
    driver: Arc<D>,
    target_is_loopback: bool,
    workload: &Workload,
    options: &RunOptions,
) -> LoadResult {
    let started_at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let run_start = Instant::now();
    payload::epoch();
    let shared = Arc::new(Shared::new(workload.duration_secs));
    let collected = Arc::new(Collected {
        publishers: (0..workload.publishers)
            .map(|_| Arc::new(Mutex::new(PublisherStats::default())))
            .collect(),
        subscribers: (0..if driver.subscribers_share_deliveries() {
            workload.subscribers.min(1)
        } else {
            workload.subscribers
        })
            .map(|_| {
                Arc::new(Mutex::new(SubscriberStats {
                    trackers: vec![SequenceTracker::new(); workload.publishers as usize],
                    received: 0,
                    delivered: 0,
                    late: 0,
                    duplicated: 0,
                    out_of_order: 0,
                    end_to_end: histogram::new_latency(),
                }))
            })
            .collect(),
        matching: matching_subscribers(driver.as_ref(), workload),
        shared_subscribers: driver.subscribers_share_deliveries(),
        connections: Mutex::new(ConnectTally::default()),
        completed: AtomicBool::new(false),
    });

    let connections = u64::from(workload.publishers)
        + u64::from(workload.subscribers)
        + u64::from(workload.idle_connections);
    let sources = plan_sources(driver.as_ref(), target_is_loopback, connections);

    let connect_allowance = if workload.connect_rate > 0 {
        Duration::from_secs_f64(connections as f64 / workload.connect_rate as f64)
    } else {
        Duration::ZERO
    };
    let deadline = run_start
        + connect_allowance
        + Duration::from_secs_f64(workload.warmup_secs + workload.duration_secs)
        + Duration::from_secs_f64(workload.drain_secs + workload.late_secs)
        + DEADLINE_SLACK;

    let progress = Arc::new(Progress::new(options.progress));
    let phases = run_phases(
        driver.clone(),
        workload,
        &sources,
        shared.clone(),
        collected.clone(),
        progress.clone(),
    );
    if tokio::time::timeout_at(deadline.into(), phases)
        .await
        .is_err()
    {
        shared.fail(
            "deadline",
            format!(
                "run did not finish within its deadline of {:.0} s; cut off",
                (deadline - run_start).as_secs_f64()
            ),
        );
    }
    progress.finish();

    assemble(
        driver.as_ref(),
        workload,
        options,
        started_at,
        &sources,
        &shared,
        &collected,
    )
}

/// Source addresses for the driver's clients; empty = let the kernel choose.
fn plan_sources<D: Driver>(driver: &D, loopback: bool, connections: u64) -> Vec<IpAddr> {
    match limits::raise_open_files_limit() {
        Ok(limit) if limit < connections + limits::SPARE_FILES => tracing::warn!(
            "open-files limit is {limit}, below the {} this workload needs; raise the hard limit (ulimit -Hn)",
            connections + limits::SPARE_FILES
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot raise the open-files limit: {e}"),
    }
    let ports = limits::ephemeral_port_count();
    let sources = limits::source_addresses(loopback, connections, ports);
    if sources.len() > 1 && !driver.binds_source_address(Role::Idle) {
        tracing::warn!(
            "{connections} connections need {} source addresses but this driver cannot bind one; \
             connections beyond {ports} ports may fail",
            sources.len()
        );
    }
    sources
}

async fn run_phases<D: Driver>(
    driver: Arc<D>,
    workload: &Workload,
    sources: &[IpAddr],
    shared: Arc<Shared>,
    collected: Arc<Collected>,
    progress: Arc<Progress>,
) {
    let clients = connect_all(
        driver.clone(),
        workload,
        sources,
        &shared,
        &collected,
        &progress,
    )
    .await;
    let mut publishers = Vec::new();
    let mut others = Vec::new();
    for client in clients {
        match client {
            Connected::Publisher(index, p) => publishers.push((index, p)),
            other => others.push(other),
        }
    }

    if !shared.is_aborted() {
        let closed = load(workload, publishers, &shared, &collected, &progress).await;
        publishers = closed;
    }

    shared.stopping.store(true, Ordering::Release);
    if !shared.is_aborted() {
        collected.completed.store(true, Ordering::Release);
    }
    let closing = async {
        let mut set = JoinSet::new();
        for (_, p) in publishers {
            set.spawn(p.close());
        }
        for client in others {
            match client {
                Connected::Publisher(_, p) => set.spawn(p.close()),
                Connected::Subscriber(s) => set.spawn(s.close()),
                Connected::Idle(i) => set.spawn(i.close()),
            };
        }
        while set.join_next().await.is_some() {}
    };
    if tokio::time::timeout(CLOSE_TIMEOUT, closing).await.is_err() {
        tracing::warn!("some clients did not disconnect within {CLOSE_TIMEOUT:?}");
    }
}

/// Connects subscribers, then publishers, then idle clients, paced by
/// `connect_rate` with at most [`MAX_CONNECTS_IN_FLIGHT`] attempts at once.
async fn connect_all<D: Driver>(
    driver: Arc<D>,
    workload: &Workload,
    sources: &[IpAddr],
    shared: &Arc<Shared>,
    collected: &Arc<Collected>,
    progress: &Arc<Progress>,
) -> Vec<Connected<D>> {
    let plan: Vec<ClientSpec> = (0..workload.subscribers)
        .map(|i| (Role::Subscriber, i))
        .chain((0..workload.publishers).map(|i| (Role::Publisher, i)))
        .chain((0..workload.idle_connections).map(|i| (Role::Idle, i)))
        .enumerate()
        .map(|(n, (role, index))| ClientSpec {
            role,
            index,
            source: (!sources.is_empty()).then(|| sources[n % sources.len()]),
        })
        .collect();
    let total = plan.len() as u64;
    let _reporter = AbortOnDrop(spawn_connect_progress(
        shared.clone(),
        collected.clone(),
        progress.clone(),
        total,
    ));

    let semaphore = Arc::new(Semaphore::new(MAX_CONNECTS_IN_FLIGHT));
    let mut set: JoinSet<ConnectOutcome<D>> = JoinSet::new();
    let mut connected = Vec::new();
    let first = Instant::now();
    collected.connections.lock().expect("tally").first_attempt = Some(first);
    for (n, spec) in plan.into_iter().enumerate() {
        if shared.is_aborted() {
            break;
        }
        if workload.connect_rate > 0 {
            let due = first + Duration::from_secs_f64(n as f64 / workload.connect_rate as f64);
            tokio::select! {
                _ = tokio::time::sleep_until(due.into()) => {}
                _ = shared.aborted() => break,
            }
        }
        let permit = tokio::select! {
            permit = semaphore.clone().acquire_owned() => permit.expect("semaphore stays open"),
            _ = shared.aborted() => break,
        };
        collected.connections.lock().expect("tally").attempted += 1;
        let driver = driver.clone();
        let shared_for_task = shared.clone();
        let collected_for_task = collected.clone();
        let workload_for_task = (
            workload.publisher_topic(spec.index),
            workload.subscriber_filter(spec.index),
        );
        set.spawn(async move {
            let (topic, filter) = workload_for_task;
            let result = match spec.role {
                Role::Publisher => {
                    let events = Box::new(PublisherEvents {
                        shared: shared_for_task,
                        stats: collected_for_task.publishers[spec.index as usize].clone(),
                    });
                    driver
                        .connect_publisher(&spec, &topic, events)
                        .await
                        .map(|p| Connected::Publisher(spec.index, p))
                }
                Role::Subscriber => {
                    let events = Box::new(SubscriberEvents {
                        shared: shared_for_task,
                        stats: collected_for_task.subscriber_stats(spec.index),
                    });
                    driver
                        .connect_subscriber(&spec, &filter, events)
                        .await
                        .map(Connected::Subscriber)
                }
                Role::Idle => {
                    let events = Box::new(IdleEvents {
                        shared: shared_for_task,
                    });
                    driver
                        .connect_idle(&spec, events)
                        .await
                        .map(Connected::Idle)
                }
            };
            drop(permit);
            (spec, result, Instant::now())
        });
        while let Some(done) = set.try_join_next() {
            tally(done, shared, collected, &mut connected);
        }
    }
    while let Some(done) = set.join_next().await {
        tally(done, shared, collected, &mut connected);
    }

    let tally = collected.connections.lock().expect("tally");
    if !shared.is_aborted() && workload.idle_connections > 0 && tally.established == 0 {
        let message = tally
            .first_idle_error
            .clone()
            .unwrap_or_else(|| "no connection could be established".into());
        drop(tally);
        shared.fail("connect", message);
    }
    connected
}

fn tally<D: Driver>(
    done: Result<ConnectOutcome<D>, tokio::task::JoinError>,
    shared: &Shared,
    collected: &Collected,
    connected: &mut Vec<Connected<D>>,
) {
    let Ok((spec, result, at)) = done else {
        // A connect task panicked: a bug, counted rather than hidden.
        shared.fail("internal", "a connect task panicked".into());
        return;
    };
    let mut t = collected.connections.lock().expect("tally");
    match result {
        Ok(client) => {
            t.established += 1;
            t.last_success = Some(t.last_success.map_or(at, |l| l.max(at)));
            connected.push(client);
        }
        Err(e) => {
            t.failed += 1;
            *t.errors.entry(e.kind().as_str().to_string()).or_default() += 1;
            if spec.role == Role::Idle {
                if t.first_idle_error.is_none() {
                    tracing::warn!("idle {}: {e}", spec.index);
                    t.first_idle_error = Some(e.to_string());
                }
            } else {
                drop(t);
                shared.fail(e.kind().as_str(), e.to_string());
            }
        }
    }
}

fn spawn_connect_progress(
    shared: Arc<Shared>,
    collected: Arc<Collected>,
    progress: Arc<Progress>,
    total: u64,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        let mut ticker =
            tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
        loop {
            ticker.tick().await;
            let t = collected.connections.lock().expect("tally");
            progress.show(&Snapshot {
                phase: "connect",
                t: start.elapsed().as_secs(),
                connected: t.established,
                connecting_total: total,
                errors: t.failed + shared.error_count.load(Ordering::Relaxed),
                ..Snapshot::default()
            });
        }
    })
}

/// Warm-up, measured window and drain; returns the publishers for closing.
async fn load<P: Publisher>(
    workload: &Workload,
    publishers: Vec<(u32, P)>,
    shared: &Arc<Shared>,
    collected: &Arc<Collected>,
    progress: &Arc<Progress>,
) -> Vec<(u32, P)> {
    let load_start = Instant::now();
    let window_start = load_start + Duration::from_secs_f64(workload.warmup_secs);
    let window_end = window_start + Duration::from_secs_f64(workload.duration_secs);
    let window = Window {
        start: payload::nanos_since_epoch(window_start),
        end: payload::nanos_since_epoch(window_end),
    };
    let _ = shared.window.set(window);
    let _ticker = AbortOnDrop(spawn_ticker(
        shared.clone(),
        progress.clone(),
        load_start,
        window_start,
        window_end,
    ));

    let mut tasks = JoinSet::new();
    for (index, publisher) in publishers {
        let schedule = Schedule::new(
            load_start,
            workload.total_rate(),
            workload.publishers,
            index,
        );
        let plan = PublishPlan {
            index,
            schedule,
            window,
            window_end,
            max_messages: workload.max_messages,
            payload_bytes: workload.payload_bytes,
        };
        let shared = shared.clone();
        let stats = collected.publishers[index as usize].clone();
        stats.lock().expect("publisher stats").offered =
            schedule.offered_between(window_start, window_end, workload.max_messages);
        tasks.spawn(async move {
            let publisher = publish_loop(publisher, plan, &shared, &stats).await;
            (index, publisher)
        });
    }
    let mut publishers = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(p) => publishers.push(p),
            Err(_) => shared.fail("internal", "a publisher task panicked".into()),
        }
    }

    // Connections are held for the whole window, also when nobody publishes
    // (connection storm) or `max_messages` ended publishing early.
    tokio::select! {
        _ = tokio::time::sleep_until(window_end.into()) => {}
        _ = shared.aborted() => {}
    }
    if !shared.is_aborted() {
        // On time: by the end of the drain. Then keep listening (bounded)
        // for what is still missing: late, not lost, and in the latency.
        let drain_until =
            Instant::now().max(window_end) + Duration::from_secs_f64(workload.drain_secs);
        let _ = shared
            .on_time_until
            .set(payload::nanos_since_epoch(drain_until));
        let listen_until = drain_until + Duration::from_secs_f64(workload.late_secs);
        drain(workload.expects_acks(), shared, collected, listen_until).await;
    }
    publishers
}

/// A background task that ends with its owner, also when the owner is cut
/// off by the run's deadline.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct PublishPlan {
    index: u32,
    schedule: Schedule,
    window: Window,
    window_end: Instant,
    max_messages: u64,
    payload_bytes: usize,
}

async fn publish_loop<P: Publisher>(
    mut publisher: P,
    plan: PublishPlan,
    shared: &Shared,
    stats: &Mutex<PublisherStats>,
) -> P {
    let mut buf = vec![0u8; plan.payload_bytes];
    let mut seq = 0u64;
    loop {
        if shared.is_aborted() || (plan.max_messages > 0 && seq >= plan.max_messages) {
            break;
        }
        let intended = match plan.schedule.intended(seq) {
            Some(due) => {
                if due >= plan.window_end {
                    break;
                }
                if due > Instant::now() {
                    tokio::select! {
                        _ = tokio::time::sleep_until(due.into()) => {}
                        _ = shared.aborted() => break,
                    }
                }
                due
            }
            None => {
                let now = Instant::now();
                if now >= plan.window_end {
                    break;
                }
                if seq % 256 == 255 {
                    // Unpaced and never blocked: let the I/O tasks on this worker run.
                    tokio::task::yield_now().await;
                }
                now
            }
        };
        let actual = Instant::now();
        let intended_nanos = payload::nanos_since_epoch(intended);
        Header {
            publisher: plan.index,
            sequence: seq,
            intended_nanos,
        }
        .encode_into(&mut buf);
        let sent = tokio::select! {
            sent = publisher.publish(intended_nanos, Bytes::copy_from_slice(&buf)) => sent,
            _ = shared.aborted() => break,
        };
        if let Err(e) = sent {
            shared.fail("publish", format!("publisher {}: {e}", plan.index));
            break;
        }
        let actual_nanos = payload::nanos_since_epoch(actual);
        if plan.window.contains(actual_nanos) {
            stats.lock().expect("publisher stats").sent_in_window += 1;
            shared
                .timeline
                .count(&plan.window, actual_nanos, Column::Sent);
        }
        if plan.window.contains(intended_nanos) {
            let mut s = stats.lock().expect("publisher stats");
            s.sent += 1;
            s.first_measured.get_or_insert(seq);
            s.end_measured = seq + 1;
            if plan.schedule.is_paced() {
                histogram::record(
                    s.publish_delay.get_or_insert_with(histogram::new_latency),
                    actual.saturating_duration_since(intended),
                );
            }
            drop(s);
            shared.sent.fetch_add(1, Ordering::Relaxed);
        }
        seq += 1;
    }
    publisher
}

/// Waits until every expected delivery and acknowledgement has arrived, or
/// `until`, or an abort.
async fn drain(expect_acks: bool, shared: &Shared, collected: &Collected, until: Instant) {
    loop {
        if shared.is_aborted() || Instant::now() >= until {
            return;
        }
        let (mut sent, mut acked, mut sent_per_publisher) = (0, 0, Vec::new());
        for p in &collected.publishers {
            let p = p.lock().expect("publisher stats");
            sent += p.sent;
            acked += p.acked;
            sent_per_publisher.push(p.sent);
        }
        let unique: u64 = collected
            .subscribers
            .iter()
            .map(|s| {
                let s = s.lock().expect("subscriber stats");
                s.received - s.duplicated
            })
            .sum();
        let expected = expected_deliveries(&collected.matching, &sent_per_publisher);
        let acks_done = !expect_acks || acked >= sent;
        if unique >= expected && acks_done {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(DRAIN_POLL) => {}
            _ = shared.aborted() => return,
        }
    }
}

/// Shows progress once per second until aborted by the caller.
fn spawn_ticker(
    shared: Arc<Shared>,
    progress: Arc<Progress>,
    load_start: Instant,
    window_start: Instant,
    window_end: Instant,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let second = Duration::from_secs(1);
        let mut ticker = tokio::time::interval_at((load_start + second).into(), second);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let now = Instant::now();
            let phase = if now < window_start {
                "warmup"
            } else if now < window_end {
                "load"
            } else {
                "drain"
            };
            progress.show(&Snapshot {
                phase,
                t: now.duration_since(load_start).as_secs(),
                sent: shared.sent.load(Ordering::Relaxed),
                acked: shared.acked.load(Ordering::Relaxed),
                received: shared.received.load(Ordering::Relaxed),
                errors: shared.error_count.load(Ordering::Relaxed),
                ..Snapshot::default()
            });
        }
    })
}

/// Per-second counts of the measured window, by the second an event
/// *happened* in (sent by send time, acked by ack time, received by receive
/// time): a delivery stall shows as a dip, and the received ticks add up to
/// `counts.delivered`.
pub struct Timeline {
    seconds: Vec<[AtomicU64; 3]>,
    duration_secs: f64,
}

/// Which count of a [`Timeline`] second.
#[derive(Debug, Clone, Copy)]
enum Column {
    Sent = 0,
    Acked = 1,
    Received = 2,
}

impl Timeline {
    fn new(duration_secs: f64) -> Timeline {
        let n = duration_secs.ceil().max(1.0) as usize;
        Timeline {
            seconds: (0..n).map(|_| Default::default()).collect(),
            duration_secs,
        }
    }

    fn count(&self, window: &Window, at_nanos: u64, column: Column) {
        let second = (at_nanos.saturating_sub(window.start) / 1_000_000_000) as usize;
        if let Some(counts) = self.seconds.get(second) {
            counts[column as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One tick per second up to `measured_secs`; `t` is the end of the second.
    fn ticks(&self, measured_secs: f64) -> Vec<Tick> {
        let n = (measured_secs.ceil() as usize).min(self.seconds.len());
        self.seconds[..n]
            .iter()
            .enumerate()
            .map(|(k, counts)| Tick {
                t: ((k + 1) as f64).min(self.duration_secs),
                sent: counts[0].load(Ordering::Relaxed),
                acked: counts[1].load(Ordering::Relaxed),
                received: counts[2].load(Ordering::Relaxed),
            })
            .collect()
    }
}

fn round_ms(secs: f64) -> f64 {
    (secs * 1000.0).round() / 1000.0
}

fn assemble<D: Driver>(
    driver: &D,
    workload: &Workload,
    options: &RunOptions,
    started_at: String,
    sources: &[IpAddr],
    shared: &Shared,
    collected: &Collected,
) -> LoadResult {
    let completed = collected.completed.load(Ordering::Acquire) && !shared.is_aborted();
    let publishers: Vec<_> = collected
        .publishers
        .iter()
        .map(|p| p.lock().expect("publisher stats"))
        .collect();
    let subscribers: Vec<_> = collected
        .subscribers
        .iter()
        .map(|s| s.lock().expect("subscriber stats"))
        .collect();

    let sent_per_publisher: Vec<u64> = publishers.iter().map(|p| p.sent).collect();
    let mut counts = Counts {
        offered: publishers.iter().map(|p| p.offered.unwrap_or(p.sent)).sum(),
        sent: sent_per_publisher.iter().sum(),
        acked: publishers.iter().map(|p| p.acked).sum(),
        received: subscribers.iter().map(|s| s.received).sum(),
        delivered: subscribers.iter().map(|s| s.delivered).sum(),
        late: subscribers.iter().map(|s| s.late).sum(),
        expected: expected_deliveries(&collected.matching, &sent_per_publisher),
        lost: 0,
        duplicated: subscribers.iter().map(|s| s.duplicated).sum(),
        out_of_order: subscribers.iter().map(|s| s.out_of_order).sum(),
    };
    for (p_index, (p, subs)) in publishers.iter().zip(&collected.matching).enumerate() {
        for s in subs {
            counts.lost +=
                subscribers[*s as usize].trackers[p_index].missing_in(p.measured_range());
        }
    }

    let measured_secs = match (shared.window.get(), completed) {
        (None, _) => 0.0,
        (Some(_), true) => workload.duration_secs,
        (Some(w), false) => {
            let stopped = shared.aborted_at.get().map_or(Instant::now(), |at| *at);
            let window_start = payload::instant_from_nanos(w.start);
            stopped
                .saturating_duration_since(window_start)
                .as_secs_f64()
                .min(workload.duration_secs)
        }
    };
    let per_sec = |n: u64| {
        if measured_secs > 0.0 {
            n as f64 / measured_secs
        } else {
            0.0
        }
    };
    let rates = Rates {
        offered_per_sec: if workload.total_rate() > 0 {
            workload.total_rate() as f64
        } else {
            0.0
        },
        sent_per_sec: per_sec(publishers.iter().map(|p| p.sent_in_window).sum()),
        acked_per_sec: per_sec(publishers.iter().map(|p| p.acked_in_window).sum()),
        received_per_sec: per_sec(counts.delivered),
    };

    let latency = Latencies {
        end_to_end: histogram::summarize(&histogram::merge(
            subscribers.iter().map(|s| &s.end_to_end),
        )),
        publish_delay: histogram::summarize(&histogram::merge(
            publishers.iter().filter_map(|p| p.publish_delay.as_ref()),
        )),
        ack: histogram::summarize(&histogram::merge(
            publishers.iter().filter_map(|p| p.ack.as_ref()),
        )),
    };

    let tally = collected.connections.lock().expect("tally");
    let time_to_establish_secs = match (tally.first_attempt, tally.last_success) {
        (Some(first), Some(last)) => round_ms(last.saturating_duration_since(first).as_secs_f64()),
        _ => 0.0,
    };
    let source_addresses = if sources.is_empty() {
        Vec::new()
    } else if driver.binds_source_address(Role::Idle) && workload.idle_connections > 0 {
        let used = (tally.attempted as usize).min(sources.len());
        sources[..used.max(1)]
            .iter()
            .map(|a| a.to_string())
            .collect()
    } else {
        vec![sources[0].to_string()]
    };
    let connections = ConnectionStats {
        attempted: tally.attempted,
        established: tally.established,
        failed: tally.failed,
        time_to_establish_secs,
        errors: tally.errors.clone(),
        source_addresses,
    };
    drop(tally);

    LoadResult {
        schema_version: RESULT_SCHEMA_VERSION,
        workload: workload.clone(),
        target: options.target.clone(),
        started_at,
        measured_secs: round_ms(measured_secs),
        outcome: if completed {
            Outcome::Completed
        } else {
            Outcome::Aborted
        },
        error: shared.first_error.lock().expect("first error").clone(),
        counts,
        rates,
        latency,
        connections,
        timeline: shared.timeline.ticks(measured_secs),
        errors: shared.errors.lock().expect("errors").clone(),
        loadgen: self_usage(),
    }
}

/// CPU time and peak RSS of this process so far (getrusage).
pub fn self_usage() -> SelfUsage {
    // SAFETY: getrusage fills the struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return SelfUsage::default();
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    SelfUsage {
        cpu_user_secs: secs(usage.ru_utime),
        cpu_system_secs: secs(usage.ru_stime),
        // Linux reports kilobytes.
        max_rss_bytes: (usage.ru_maxrss.max(0) as u64) * 1024,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_spreads_the_rate_over_publishers() {
        let start = Instant::now();
        // 1,000 msg/s over 4 publishers: 250/s each, 4 ms apart, staggered by 1 ms.
        let s1 = Schedule::new(start, 1000, 4, 1);
        assert!(s1.is_paced());
        assert_eq!(s1.intended(0), Some(start + Duration::from_millis(1)));
        assert_eq!(s1.intended(2), Some(start + Duration::from_millis(9)));
        let s0 = Schedule::new(start, 1000, 4, 0);
        assert_eq!(s0.intended(250), Some(start + Duration::from_secs(1)));
        // Open loop: the schedule does not depend on when earlier messages went out.
        assert_eq!(
            s0.intended(1_000_000),
            Some(start + Duration::from_secs(4000))
        );
        let odd = Schedule::new(start, 3, 1, 0);
        assert_eq!(
            odd.intended(1),
            Some(start + Duration::from_nanos(333_333_333))
        );
    }

    #[test]
    fn unpaced_schedule_has_no_intended_times() {
        let s = Schedule::new(Instant::now(), 0, 8, 3);
        assert!(!s.is_paced());
        assert_eq!(s.intended(0), None);
        assert_eq!(publisher_rate(0, 8), None);
        assert_eq!(publisher_rate(600, 3), Some(200.0));
    }

    #[test]
    fn offered_counts_the_schedule_inside_the_window() {
        let start = Instant::now();
        let s = Schedule::new(start, 1000, 1, 0);
        let at = |ms| start + Duration::from_millis(ms);
        assert_eq!(s.offered_between(at(500), at(2500), 0), Some(2000));
        assert_eq!(s.offered_between(at(0), at(1000), 0), Some(1000));
        assert_eq!(s.offered_between(at(0), at(1000), 300), Some(300));
        assert_eq!(s.offered_between(at(500), at(1000), 300), Some(0));
        assert_eq!(
            Schedule::new(start, 0, 1, 0).offered_between(at(0), at(1), 0),
            None
        );
    }

    #[test]
    fn timeline_counts_by_the_second_things_happened() {
        let timeline = Timeline::new(2.5);
        let w = Window {
            start: 1_000_000_000,
            end: 3_500_000_000,
        };
        for intended in [1_000_000_000, 1_999_999_999, 2_000_000_000, 3_400_000_000] {
            timeline.count(&w, intended, Column::Sent);
        }
        timeline.count(&w, 3_400_000_000, Column::Received);
        let ticks = timeline.ticks(2.5);
        assert_eq!(
            ticks.iter().map(|t| t.t).collect::<Vec<_>>(),
            [1.0, 2.0, 2.5]
        );
        assert_eq!(ticks.iter().map(|t| t.sent).collect::<Vec<_>>(), [2, 1, 1]);
        assert_eq!(ticks[2].received, 1);
        assert_eq!(
            timeline.ticks(1.2).len(),
            2,
            "an aborted run keeps its seconds"
        );
        assert!(timeline.ticks(0.0).is_empty());
    }

    #[test]
    fn window_is_half_open() {
        let w = Window { start: 10, end: 20 };
        assert!(!w.contains(9));
        assert!(w.contains(10));
        assert!(w.contains(19));
        assert!(!w.contains(20));
    }

    fn workload(extra: &str) -> Workload {
        Workload::parse(&format!(
            "protocol = \"mqtt\"\nscenario = \"fan_in\"\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn expected_deliveries_follow_topic_matching() {
        let fan_in = workload(
            "publishers = 3\nsubscribers = 1\ntopic = \"bench/fanin/{publisher}\"\nsubscribe = \"bench/fanin/#\"\n",
        );
        let driver = MqttDriver::new(&fan_in, "127.0.0.1:1883").unwrap();
        let matching = matching_subscribers(&driver, &fan_in);
        assert_eq!(matching, vec![vec![0], vec![0], vec![0]]);
        assert_eq!(expected_deliveries(&matching, &[10, 20, 30]), 60);

        let fan_out = workload(
            "publishers = 1\nsubscribers = 5\ntopic = \"bench/fanout\"\nsubscribe = \"bench/fanout\"\n",
        );
        let matching = matching_subscribers(&driver, &fan_out);
        assert_eq!(expected_deliveries(&matching, &[100]), 500);

        // Each subscriber only takes its own topic: topics = 2, {n} = index % 2.
        let split = workload(
            "publishers = 4\nsubscribers = 2\ntopics = 2\ntopic = \"t/{n}\"\nsubscribe = \"t/{n}\"\n",
        );
        let matching = matching_subscribers(&driver, &split);
        assert_eq!(matching, vec![vec![0], vec![1], vec![0], vec![1]]);
        assert_eq!(expected_deliveries(&matching, &[1, 1, 1, 1]), 4);

        let none =
            workload("publishers = 1\nsubscribers = 1\ntopic = \"a/b\"\nsubscribe = \"a/+/c\"\n");
        assert_eq!(
            expected_deliveries(&matching_subscribers(&driver, &none), &[7]),
            0
        );
    }

    #[test]
    fn self_usage_is_measured() {
        let usage = self_usage();
        assert!(usage.max_rss_bytes > 0);
        assert!(usage.cpu_user_secs + usage.cpu_system_secs >= 0.0);
    }
}
