//! Whole runs of the AMQP driver (lapin) against an in-process broker whose
//! AMQP listener is on port 0: confirmed publishing with manual acks, fan-out
//! through a fanout exchange, a shared queue under a prefetch limit, and a
//! channel error that names what went wrong.

mod common;

use common::{assert_sane, run_against, start_broker, target, workload};
use loadgen::amqp::AmqpDriver;
use loadgen::driver::Driver;
use loadgen::{Outcome, Protocol};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_publish_with_manual_ack_loses_nothing() {
    let broker = start_broker().await;
    let w = workload(
        r#"
        protocol = "amqp"
        scenario = "acknowledged"
        publishers = 2
        subscribers = 1
        topic = "lg.confirmed"
        subscribe = "lg.confirmed"
        payload_bytes = 100
        rate = 400
        warmup_secs = 0.5
        duration_secs = 2
        drain_secs = 5
        [amqp]
        confirms = true
        confirm_window = 16
        ack = "manual"
        prefetch = 20
        persistent = true
        "#,
    );
    let r = run_against(&broker, &w).await;
    let c = &r.counts;
    assert_eq!(r.outcome, Outcome::Completed, "{:?}", r.error);
    // 400 msg/s for 2 s, give or take the window edges.
    assert!((760..=840).contains(&c.sent), "{c:?}");
    assert_eq!(c.expected, c.sent);
    assert_eq!(c.received, c.expected, "{c:?}");
    assert_eq!(c.acked, c.sent, "every publish confirmed");
    assert_eq!((c.lost, c.duplicated, c.out_of_order), (0, 0, 0), "{c:?}");
    assert_sane(&r.latency.end_to_end, "end-to-end");
    assert_eq!(r.latency.end_to_end.as_ref().unwrap().count, c.received);
    assert!(r.latency.ack.as_ref().is_some_and(|a| a.count == c.acked));
    assert_eq!(r.connections.established, 3);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_exchange_delivers_to_every_subscriber() {
    let broker = start_broker().await;
    let w = workload(
        r#"
        protocol = "amqp"
        scenario = "fan_out"
        publishers = 1
        subscribers = 3
        topic = "ignored-by-fanout"
        subscribe = "any"
        rate = 300
        warmup_secs = 0.5
        duration_secs = 1.5
        drain_secs = 5
        [amqp]
        exchange_type = "fanout"
        "#,
    );
    let r = run_against(&broker, &w).await;
    let c = &r.counts;
    assert_eq!(r.outcome, Outcome::Completed, "{:?}", r.error);
    assert!(c.sent >= 400, "{c:?}");
    assert_eq!(c.expected, 3 * c.sent, "each subscriber gets its own copy");
    assert_eq!(c.received, c.expected, "{c:?}");
    assert_eq!(c.acked, 0, "no confirms asked for");
    assert_eq!((c.lost, c.duplicated), (0, 0), "{c:?}");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_queue_with_prefetch_counts_each_message_once() {
    let broker = start_broker().await;
    let w = workload(
        r#"
        protocol = "amqp"
        scenario = "fan_in"
        publishers = 2
        subscribers = 2
        topic = "lg.shared.{publisher}"
        subscribe = "lg.shared.*"
        rate = 600
        warmup_secs = 0.5
        duration_secs = 1.5
        drain_secs = 5
        [amqp]
        exchange_type = "topic"
        queues = "shared"
        ack = "manual"
        prefetch = 1
        "#,
    );
    let driver = AmqpDriver::new(&w, &target(&broker, Protocol::Amqp)).unwrap();
    assert!(driver.subscribers_share_deliveries());
    let r = run_against(&broker, &w).await;
    let c = &r.counts;
    assert_eq!(r.outcome, Outcome::Completed, "{:?}", r.error);
    assert!(c.sent >= 800, "{c:?}");
    assert_eq!(c.expected, c.sent, "the two consumers split one queue");
    assert_eq!(c.received, c.sent, "{c:?}");
    assert_eq!((c.lost, c.duplicated), (0, 0), "{c:?}");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchange_of_another_type_is_an_error_naming_it() {
    let broker = start_broker().await;
    let base = r#"
        protocol = "amqp"
        scenario = "fan_in"
        publishers = 1
        subscribers = 1
        topic = "lg.clash"
        subscribe = "lg.clash"
        rate = 100
        warmup_secs = 0
        duration_secs = 0.3
        [amqp]
        exchange = "lg-clash"
        "#;
    let r = run_against(&broker, &workload(base)).await;
    assert_eq!(r.outcome, Outcome::Completed, "{:?}", r.error);
    let r = run_against(
        &broker,
        &workload(&format!("{base}exchange_type = \"fanout\"\n")),
    )
    .await;
    assert_ne!(r.outcome, Outcome::Completed);
    let error = r.error.expect("an error");
    assert!(
        error.contains("exchange \"lg-clash\"") && error.contains("PRECONDITION"),
        "{error}"
    );
    broker.shutdown().await;
}
