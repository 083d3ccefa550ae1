//! One client flooding the broker must not starve the delivery to others:
//! connection tasks yield to the scheduler while they have input to chew on.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::AsyncWriteExt;

use crate::common;
use crate::mqtt_client::{MqttClient, QoS, V311};
use crate::raw;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flooding_publisher_does_not_starve_subscribers() {
    let broker = common::start_broker().await;
    let mut sub = V311::connect(&broker, "fair-sub").await;
    sub.subscribe("flood", QoS::AtMostOnce)
        .await
        .expect("subscribed");

    // A raw 3.1.1 publisher writing 100,000 QoS 0 PUBLISHes (7.3 MB) as fast as the socket takes them.
    let mut publisher = raw::tcp(broker.mqtt_addr).await;
    raw::send(&mut publisher, &raw::connect(4, "fair-pub", true, 0)).await;
    raw::expect_packet(&mut publisher, 2).await;
    let mut body = raw::str("flood");
    body.resize(body.len() + 64, b'x');
    let one = raw::packet(0x30, &body);
    let chunk: Vec<u8> = one.repeat(1000);
    let total = chunk.len() * 100;
    let written = Arc::new(AtomicUsize::new(0));
    let flood = tokio::spawn({
        let written = written.clone();
        async move {
            for _ in 0..100 {
                publisher.write_all(&chunk).await.unwrap();
                written.fetch_add(chunk.len(), Ordering::Relaxed);
            }
            publisher
        }
    });

    // Panics unless the subscriber receives during the flood (within WAIT).
    sub.next_publish().await;
    let at_first_delivery = written.load(Ordering::Relaxed);
    assert!(
        at_first_delivery < total,
        "first delivery only after the whole flood was written ({at_first_delivery} of {total} bytes): \
         the publisher's connection task starved the subscriber's"
    );
    drop(flood.await.unwrap());
    broker.shutdown().await;
}
