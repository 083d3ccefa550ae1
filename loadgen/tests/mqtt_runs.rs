//! Whole runs of the MQTT driver against an in-process broker on port 0:
//! delivery accounting, connection storms and the fault paths.

use std::time::{Duration, Instant};

mod common;

use common::{assert_sane, options, run_against, start_broker, workload};
use loadgen::runner::run;
use loadgen::{LoadResult, Outcome};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_fan_in_delivers_everything_once_in_order() {
    let broker = start_broker().await;
    let w = workload(
        r#"
        protocol = "mqtt"
        scenario = "acknowledged"
        publishers = 3
        subscribers = 1
        topic = "t/fanin/{publisher}"
        subscribe = "t/fanin/#"
        qos = 1
        rate_per_publisher = 200
        warmup_secs = 0.5
        duration_secs = 2
        drain_secs = 5
        [mqtt]
        client_id_prefix = "qos1"
        "#,
    );
    let r = run_against(&broker, &w).await;
    let c = &r.counts;
    assert_eq!(r.outcome, Outcome::Completed, "{:?}", r.error);
    assert!(r.error.is_none());
    // 3 x 200 msg/s for 2 s, give or take the window edges.
    assert!((1150..=1250).contains(&c.sent), "{c:?}");
    assert_eq!(c.expected, c.sent, "one subscriber matches every topic");
    assert_eq!(c.received, c.expected, "{c:?}");
    assert_eq!(c.acked, c.sent, "{c:?}");
    assert_eq!((c.lost, c.duplicated, c.out_of_order), (0, 0, 0), "{c:?}");
    assert_sane(&r.latency.end_to_end, "end-to-end");
    assert_sane(&r.latency.ack, "ack");
    assert_sane(&r.latency.publish_delay, "publish delay");
    assert_eq!(r.connections.established, 4);
    assert_eq!(r.connections.failed, 0);
    assert_eq!(r.measured_secs, 2.0);
    assert!((r.rates.sent_per_sec - 600.0).abs() < 30.0, "{:?}", r.rates);
    assert_eq!(
        r.timeline.iter().map(|t| t.t).collect::<Vec<_>>(),
        vec![1.0, 2.0],
        "one tick per second of the window"
    );
    let tick_sum = |f: fn(&loadgen::result::Tick) -> u64| r.timeline.iter().map(f).sum::<u64>();
    // Ticks count by when things happened in the window: they add up to
    // the rates, and the received ones to the window's deliveries.
    let in_window = |per_sec: f64| (per_sec * r.measured_secs).round() as u64;
    assert_eq!(tick_sum(|t| t.sent), in_window(r.rates.sent_per_sec));
    assert_eq!(tick_sum(|t| t.acked), in_window(r.rates.acked_per_sec));
    assert_eq!(tick_sum(|t| t.received), c.delivered);
    assert_eq!(in_window(r.rates.received_per_sec), c.delivered);
    // Paced and healthy: the window's deliveries are its messages, give or
    // take the edges.
    assert!(c.delivered.abs_diff(c.received) <= 30, "{c:?}");
    assert_eq!(c.offered, 1200, "3 x 200 msg/s for 2 s");
    assert_eq!(c.late, 0);
    assert!(r.loadgen.max_rss_bytes > 0);
    let back = LoadResult::from_json(&r.to_json()).expect("result round-trips");
    assert_eq!(back.counts, r.counts);
    assert_eq!(
        back.latency.end_to_end.unwrap().histogram,
        r.latency.end_to_end.as_ref().unwrap().histogram
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_fan_out_delivers_a_copy_to_every_subscriber() {
    let broker = start_broker().await;
    let w = workload(
        r#"
        protocol = "mqtt"
        scenario = "fan_out"
        publishers = 1
        subscribers = 5
        topic = "t/fanout"
        subscribe = "t/fanout"
        qos = 1
        rate = 300
        warmup_secs = 0.5
        duration_secs = 2
        drain_secs = 5
        [mqtt]
        version = "5"
        client_id_prefix = "fanout"
        "#,
    );
    let r = run_against(&broker, &w).await;
    let c = &r.counts;
    assert_eq!(r.outcome, Outcome::Completed, "{:?}", r.error);
    assert!(c.sent >= 550, "{c:?}");
    assert_eq!(c.expected, 5 * c.sent, "{c:?}");
    assert_eq!(c.received, c.expected, "{c:?}");
    assert_eq!((c.lost, c.duplicated, c.out_of_order), (0, 0, 0), "{c:?}");
    assert_sane(&r.latency.end_to_end, "end-to-end");
    assert_eq!(r.latency.end_to_end.as_ref().unwrap().count, c.received);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_storm_establishes_every_idle_client() {
    let broker = start_broker().await;
    let w = workload(
        r#"
        protocol = "mqtt"
        scenario = "connection_storm"
        idle_connections = 500
        connect_rate = 0
        warmup_secs = 0
        duration_secs = 1
        [mqtt]
        client_id_prefix = "storm"
        "#,
    );
    let started = Instant::now();
    let r = run_against(&broker, &w).await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "connections are held for the duration"
    );
    assert_eq!(r.outcome, Outcome::Completed, "{:?}", r.error);
    assert_eq!(r.measured_secs, 1.0);
    assert_eq!(r.connections.attempted, 500);
    assert_eq!(r.connections.established, 500, "{:?}", r.connections);
    assert_eq!(r.connections.failed, 0);
    assert!(r.connections.errors.is_empty());
    assert!(r.connections.time_to_establish_secs > 0.0);
    assert_eq!(
        r.connections.source_addresses,
        vec!["127.0.0.1".to_string()]
    );
    assert_eq!(r.counts.sent, 0);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_broker_aborts_with_the_address() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let target = format!("127.0.0.1:{port}");
    let w = workload(
        r#"
        protocol = "mqtt"
        scenario = "fan_in"
        publishers = 2
        subscribers = 1
        idle_connections = 3
        rate = 100
        duration_secs = 2
        "#,
    );
    let started = Instant::now();
    let r = run(&w, &options(target.clone())).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "fails fast");
    assert_eq!(r.outcome, Outcome::Aborted);
    let error = r.error.expect("error recorded");
    assert!(
        error.contains(&format!("cannot connect to {target}")) && error.contains("refused"),
        "{error}"
    );
    assert!(r.connections.failed >= 1);
    assert_eq!(r.connections.established, 0);
    assert!(
        r.connections.errors.contains_key("refused"),
        "{:?}",
        r.connections
    );
    assert_eq!(r.counts.sent, 0);
    assert_eq!(r.measured_secs, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_dying_mid_run_ends_the_run_with_partial_results() {
    let broker = start_broker().await;
    let w = workload(
        r#"
        protocol = "mqtt"
        scenario = "acknowledged"
        publishers = 2
        subscribers = 1
        topic = "t/killed/{publisher}"
        subscribe = "t/killed/#"
        qos = 1
        rate = 400
        warmup_secs = 0
        duration_secs = 5
        [mqtt]
        client_id_prefix = "killed"
        "#,
    );
    let target = broker.mqtt_addr.to_string();
    let started = Instant::now();
    let running = tokio::spawn(async move { run(&w, &options(target)).await.unwrap() });
    tokio::time::sleep(Duration::from_secs(1)).await;
    broker.shutdown().await;
    let r = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the run ends soon after the broker is gone")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(r.outcome, Outcome::Aborted);
    let error = r.error.expect("error recorded");
    assert!(error.contains("lost its connection"), "{error}");
    assert!(r.counts.sent > 0 && r.counts.received > 0, "{:?}", r.counts);
    assert!(!r.errors.is_empty());
    assert!(
        r.measured_secs > 0.5 && r.measured_secs < 3.0,
        "{}",
        r.measured_secs
    );
}
