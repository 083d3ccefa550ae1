//! A whole MQTT run through a fault-injecting proxy in front of the
//! in-process broker: the result must show exactly what the proxy did.

use std::sync::atomic::Ordering;
use std::time::Duration;

#[allow(dead_code)] // only the broker and run helpers are used here
mod common;

use common::fault_proxy::{FaultProxy, Faults};
use common::{options, start_broker, workload};
use loadgen::runner::run;
use loadgen::Outcome;

/// 1 publisher at 500 msg/s for 2 s, QoS 0, through a proxy that drops every
/// 10th PUBLISH, sends every 7th twice and stalls the publisher's stream for
/// 400 ms before the 300th: the report shows exactly the dropped count as
/// lost, the duplicates as duplicated, and a p99 (from the intended send
/// time) that includes the stall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_faults_show_up_exactly_in_the_result() {
    let broker = start_broker().await;
    let proxy = FaultProxy::start(
        broker.mqtt_addr,
        Faults {
            drop_every: Some(10),
            duplicate_every: Some(7),
            stall: Some((300, Duration::from_millis(400))),
        },
    )
    .await;
    let w = workload(
        r#"
        protocol = "mqtt"
        scenario = "latency"
        publishers = 1
        subscribers = 1
        topic = "t/proxy"
        subscribe = "t/proxy"
        qos = 0
        rate = 500
        warmup_secs = 0
        duration_secs = 2
        drain_secs = 1
        late_secs = 0.5
        [mqtt]
        client_id_prefix = "proxy"
        "#,
    );
    let r = run(&w, &options(proxy.addr.to_string()))
        .await
        .expect("workload runs");
    assert_eq!(r.outcome, Outcome::Completed, "{:?}", r.error);
    let c = &r.counts;
    let publishes = proxy.counters.publishes.load(Ordering::SeqCst);
    let dropped = proxy.counters.dropped.load(Ordering::SeqCst);
    let duplicated = proxy.counters.duplicated.load(Ordering::SeqCst);
    // No warm-up: every PUBLISH the proxy saw is a measured message.
    assert_eq!(publishes, c.sent, "{c:?}");
    assert_eq!(dropped, c.sent / 10, "{c:?}");
    let expected_duplicates = (1..=c.sent).filter(|k| k % 7 == 0 && k % 10 != 0).count() as u64;
    assert_eq!(duplicated, expected_duplicates);
    assert_eq!(
        c.lost, dropped,
        "exactly the dropped PUBLISHes are lost: {c:?}"
    );
    assert_eq!(c.duplicated, duplicated, "{c:?}");
    assert_eq!(c.received, c.sent - dropped + duplicated, "{c:?}");
    assert_eq!(c.out_of_order, 0, "{c:?}");
    assert_eq!(c.late, 0, "{c:?}");
    // ~200 messages (0.4 s at 500/s of 1,000) waited behind the stall.
    let e2e = r.latency.end_to_end.as_ref().expect("latency");
    assert!(
        e2e.p99_us >= 300_000,
        "p99 {} µs includes the 400 ms stall",
        e2e.p99_us
    );
    assert!(e2e.max_us >= 380_000, "{e2e:?}");
    broker.shutdown().await;
}
