//! The runner's accounting against an in-memory driver whose faults are
//! exact: a publisher that blocks, a message held back past the drain, a
//! message that never arrives, a "broker" that only buffers. No network.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use loadgen::driver::{ClientEvents, ClientSpec, Connection, Driver, DriverError, Publisher, Role};
use loadgen::progress::ProgressMode;
use loadgen::runner::{run_with, RunOptions};
use loadgen::{LoadResult, Outcome, Workload};

/// What the fake does to messages.
#[derive(Clone, Default)]
struct Faults {
    /// The publish call with this 0-based index blocks for this long
    /// (back-pressure: the publisher falls behind its schedule).
    block_publish: Option<(u64, Duration)>,
    /// The message with this sequence number arrives this much later.
    hold: Option<(u64, Duration)>,
    /// Every message arrives this much later (a broker that buffers).
    delay_all: Option<Duration>,
    /// The message with this sequence number never arrives.
    drop: Option<u64>,
}

type Subscribers = Arc<Mutex<Vec<Box<dyn ClientEvents>>>>;

struct FakeDriver {
    faults: Faults,
    subscribers: Subscribers,
    publishes: Arc<AtomicU64>,
}

impl FakeDriver {
    fn new(faults: Faults) -> FakeDriver {
        FakeDriver {
            faults,
            subscribers: Arc::default(),
            publishes: Arc::default(),
        }
    }
}

fn deliver(subscribers: &Subscribers, payload: &[u8]) {
    let at = Instant::now();
    for s in subscribers.lock().unwrap().iter_mut() {
        s.delivered(payload, at);
    }
}

struct FakePublisher {
    faults: Faults,
    subscribers: Subscribers,
    publishes: Arc<AtomicU64>,
}

struct Nothing;

impl Connection for Nothing {
    async fn close(self) {}
}

impl Connection for FakePublisher {
    async fn close(self) {}
}

impl Publisher for FakePublisher {
    async fn publish(&mut self, _token: u64, payload: Bytes) -> Result<(), DriverError> {
        let n = self.publishes.fetch_add(1, Ordering::Relaxed);
        if let Some((at, block)) = self.faults.block_publish {
            if n == at {
                tokio::time::sleep(block).await;
            }
        }
        let seq = u64::from_be_bytes(payload[8..16].try_into().unwrap());
        if self.faults.drop == Some(seq) {
            return Ok(());
        }
        let later = match self.faults.hold {
            Some((held, by)) if held == seq => Some(by),
            _ => self.faults.delay_all,
        };
        match later {
            None => deliver(&self.subscribers, &payload),
            Some(by) => {
                let subscribers = self.subscribers.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(by).await;
                    deliver(&subscribers, &payload);
                });
            }
        }
        Ok(())
    }
}

impl Driver for FakeDriver {
    type Publisher = FakePublisher;
    type Subscriber = Nothing;
    type Idle = Nothing;

    async fn connect_publisher(
        &self,
        _client: &ClientSpec,
        _topic: &str,
        _events: Box<dyn ClientEvents>,
    ) -> Result<FakePublisher, DriverError> {
        Ok(FakePublisher {
            faults: self.faults.clone(),
            subscribers: self.subscribers.clone(),
            publishes: self.publishes.clone(),
        })
    }

    async fn connect_subscriber(
        &self,
        _client: &ClientSpec,
        _filter: &str,
        events: Box<dyn ClientEvents>,
    ) -> Result<Nothing, DriverError> {
        self.subscribers.lock().unwrap().push(events);
        Ok(Nothing)
    }

    async fn connect_idle(
        &self,
        _client: &ClientSpec,
        _events: Box<dyn ClientEvents>,
    ) -> Result<Nothing, DriverError> {
        Ok(Nothing)
    }

    fn filter_matches(&self, _filter: &str, _topic: &str) -> bool {
        true
    }

    fn binds_source_address(&self, _role: Role) -> bool {
        false
    }
}

fn workload(extra: &str) -> Workload {
    Workload::parse(&format!(
        "protocol = \"mqtt\"\nscenario = \"latency\"\npublishers = 1\nsubscribers = 1\n\
         topic = \"t\"\nsubscribe = \"t\"\nwarmup_secs = 0\n{extra}"
    ))
    .unwrap()
}

async fn run(faults: Faults, w: &Workload) -> LoadResult {
    let options = RunOptions {
        target: "127.0.0.1:1".into(),
        progress: ProgressMode::Off,
    };
    let r = run_with(Arc::new(FakeDriver::new(faults)), true, w, &options).await;
    assert_eq!(r.outcome, Outcome::Completed, "{:?}", r.error);
    r
}

/// A publisher blocked for 500 ms: the messages it should have sent
/// meanwhile go out late, and their latency counts from when they were
/// *intended* to go. Measured from the actual send time only the one blocked
/// message would be slow (0.25 % of 400), and p99 would stay near zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_counts_from_the_intended_send_time() {
    let w = workload("rate = 200\nduration_secs = 2\ndrain_secs = 1\nlate_secs = 0\n");
    let faults = Faults {
        block_publish: Some((100, Duration::from_millis(500))),
        ..Faults::default()
    };
    let r = run(faults, &w).await;
    let c = &r.counts;
    assert_eq!((c.lost, c.late, c.duplicated), (0, 0, 0), "{c:?}");
    assert!((395..=405).contains(&c.sent), "{c:?}");
    assert_eq!(c.offered, 400, "200 msg/s for 2 s: {c:?}");
    assert_eq!(r.rates.offered_per_sec, 200.0);
    let e2e = r.latency.end_to_end.as_ref().unwrap();
    assert!(
        e2e.p99_us >= 350_000,
        "p99 {} µs must include the 500 ms the publisher was blocked",
        e2e.p99_us
    );
    assert!(e2e.p50_us < 100_000, "most messages were on time: {e2e:?}");
    let delay = r.latency.publish_delay.as_ref().unwrap();
    assert!(delay.p99_us >= 350_000, "{delay:?}");
}

/// One message held back past the drain arrives late (counted, in the
/// latency), one never arrives (lost): two different things.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_is_not_lost_and_is_in_the_latency() {
    let w = workload("rate = 200\nduration_secs = 2\ndrain_secs = 0.3\nlate_secs = 3\n");
    let faults = Faults {
        // Intended at 1.95 s, arrives near 3.15 s: after the drain (2.3 s).
        hold: Some((390, Duration::from_millis(1_200))),
        drop: Some(200),
        ..Faults::default()
    };
    let started = Instant::now();
    let r = run(faults, &w).await;
    let c = &r.counts;
    assert_eq!(c.lost, 1, "{c:?}");
    assert_eq!(c.late, 1, "{c:?}");
    assert_eq!(c.received, c.sent - 1, "{c:?}");
    let e2e = r.latency.end_to_end.as_ref().unwrap();
    assert!(
        e2e.max_us >= 1_100_000,
        "the late message's latency is recorded: {e2e:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "listening for late deliveries is bounded"
    );
}

/// A "broker" that delivers everything 1.5 s late, after a 1 s window:
/// nothing was delivered inside the window, so the delivered rate is 0,
/// although every message arrived during the drain (on time, not lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_rate_counts_by_receive_time_inside_the_window() {
    let w = workload("rate = 200\nduration_secs = 1\ndrain_secs = 3\nlate_secs = 0\n");
    let faults = Faults {
        delay_all: Some(Duration::from_millis(1_500)),
        ..Faults::default()
    };
    let r = run(faults, &w).await;
    let c = &r.counts;
    assert_eq!((c.lost, c.late), (0, 0), "{c:?}");
    assert_eq!(c.received, c.sent, "{c:?}");
    assert_eq!(c.delivered, 0, "{c:?}");
    assert_eq!(r.rates.received_per_sec, 0.0, "{:?}", r.rates);
    assert!((r.rates.sent_per_sec - 200.0).abs() <= 5.0, "{:?}", r.rates);
    assert_eq!(
        r.timeline.iter().map(|t| t.received).sum::<u64>(),
        0,
        "the timeline shows the stall: {:?}",
        r.timeline
    );
}
