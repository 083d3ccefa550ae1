//! Durability of AMQP queues: persistent messages confirmed into a durable
//! queue survive a SIGKILL of the broker process and come back, in order
//! and exactly once, after a restart on the same data directory; acked
//! messages stay gone; durable exchanges and bindings are recovered.

use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, ExchangeKind};
use tokio::time::timeout;

use crate::broker_process::BrokerProcess;
use crate::common::{amqp_connect_to, WAIT};

/// MQTT (always on) and AMQP on ephemeral ports, nothing else.
const AMQP_ONLY: &[&str] = &[
    "--mqtt-bind",
    "127.0.0.1:0",
    "--amqp-bind",
    "127.0.0.1:0",
    "--no-websocket",
    "--no-kafka",
    "--no-metrics",
    "--stats-interval",
    "0",
];

const TOTAL: u32 = 300;
const ACKED: u32 = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_persistent_messages_survive_sigkill() {
    let broker = BrokerProcess::spawn_with_data_dir(AMQP_ONLY);
    let conn = amqp_connect_to(broker.amqp()).await;
    let ch = conn.create_channel().await.unwrap();
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.exchange_declare(
        "orders",
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_declare("durable_q", durable, FieldTable::default())
        .await
        .unwrap();
    ch.queue_declare(
        "transient_q",
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        "durable_q",
        "orders",
        "order.#",
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut pending = Vec::new();
    for i in 0..TOTAL {
        let props = BasicProperties::default().with_delivery_mode(2);
        pending.push(
            ch.basic_publish(
                "orders",
                "order.new",
                BasicPublishOptions::default(),
                &i.to_be_bytes(),
                props,
            )
            .await
            .unwrap(),
        );
    }
    // A transient message in the durable queue and one in a transient queue: both lost.
    for (x, key) in [("orders", "order.transient"), ("", "transient_q")] {
        pending.push(
            ch.basic_publish(
                x,
                key,
                BasicPublishOptions::default(),
                b"transient",
                BasicProperties::default().with_delivery_mode(1),
            )
            .await
            .unwrap(),
        );
    }
    for p in pending {
        assert!(
            timeout(WAIT, p).await.unwrap().unwrap().is_ack(),
            "every publish is confirmed"
        );
    }
    // Consume and ack the first ACKED messages: they must not come back.
    let consumer_ch = conn.create_channel().await.unwrap();
    for i in 0..ACKED {
        let m = consumer_ch
            .basic_get("durable_q", BasicGetOptions::default())
            .await
            .unwrap()
            .expect("a message");
        assert_eq!(m.delivery.data, i.to_be_bytes());
        m.delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    // A round trip after the acks: the broker has handled them.
    let left = consumer_ch
        .queue_declare(
            "durable_q",
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(left.message_count(), TOTAL - ACKED + 1);
    // SIGKILL: no shutdown path runs.
    let data = broker.kill().expect("the data directory");

    let broker = BrokerProcess::respawn(data, AMQP_ONLY);
    let conn = amqp_connect_to(broker.amqp()).await;
    let ch = conn.create_channel().await.unwrap();
    ch.exchange_declare(
        "orders",
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("the durable exchange is back");
    let q = ch
        .queue_declare(
            "durable_q",
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("the durable queue is back");
    assert_eq!(
        q.message_count(),
        TOTAL - ACKED,
        "persistent, unacked messages only"
    );
    let mut got = Vec::new();
    while let Some(m) = ch
        .basic_get("durable_q", BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        assert!(
            m.delivery.redelivered,
            "recovered messages may have been delivered before"
        );
        got.push(u32::from_be_bytes(m.delivery.data[..4].try_into().unwrap()));
        assert!(got.len() <= TOTAL as usize, "bounded");
    }
    assert_eq!(
        got,
        (ACKED..TOTAL).collect::<Vec<_>>(),
        "all confirmed, none acked, in order, once"
    );
    let transient = ch
        .queue_declare(
            "transient_q",
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    assert!(
        transient.is_err(),
        "a non-durable queue does not survive a restart"
    );
    // The binding survived too: a new persistent message routes into the queue.
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch.basic_publish(
        "orders",
        "order.late",
        BasicPublishOptions::default(),
        b"late",
        BasicProperties::default().with_delivery_mode(2),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let m = ch
        .basic_get("durable_q", BasicGetOptions { no_ack: true })
        .await
        .unwrap();
    assert_eq!(m.map(|m| m.delivery.data), Some(b"late".to_vec()));
    drop(conn);
    broker.kill();
}
