//! AMQP 0.9.1 through lapin against the in-process broker: connection and
//! channels, every exchange type, queue declare variants and arguments,
//! consume/get/ack/nack/reject/recover, prefetch, confirms, returns,
//! dead-lettering, and channel errors that leave the connection working.

use std::time::Duration;

use broker::RunningBroker;
use futures_util::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ExchangeKind};
use tokio::time::timeout;

use crate::common::{amqp_connect as connect, start_broker, start_broker_with, WAIT};

async fn channel(conn: &Connection) -> Channel {
    timeout(WAIT, conn.create_channel())
        .await
        .expect("channel in time")
        .expect("channel opens")
}

/// The reply code of a channel or connection error.
fn reply_code(err: &lapin::Error) -> Option<u16> {
    match err.kind() {
        lapin::ErrorKind::ProtocolError(e) => Some(e.get_id()),
        _ => None,
    }
}

fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert(ShortString::from(*k), v.clone());
    }
    t
}

async fn declare(ch: &Channel, name: &str, args: FieldTable) -> String {
    ch.queue_declare(name, QueueDeclareOptions::default(), args)
        .await
        .expect("queue.declare")
        .name()
        .as_str()
        .to_string()
}

async fn publish(ch: &Channel, exchange: &str, key: &str, body: &[u8]) {
    ch.basic_publish(
        exchange,
        key,
        BasicPublishOptions::default(),
        body,
        BasicProperties::default(),
    )
    .await
    .expect("basic.publish")
    .await
    .expect("publish settles");
}

async fn get(ch: &Channel, queue: &str) -> Option<lapin::message::BasicGetMessage> {
    timeout(WAIT, ch.basic_get(queue, BasicGetOptions { no_ack: true }))
        .await
        .expect("basic.get in time")
        .expect("basic.get")
}

async fn get_body(ch: &Channel, queue: &str) -> Option<Vec<u8>> {
    get(ch, queue).await.map(|m| m.delivery.data)
}

/// Waits for the queue to hold `n` ready messages (messages are routed
/// asynchronously with respect to a publisher without confirms).
async fn wait_for_len(broker: &RunningBroker, queue: &str, n: usize) {
    let hub = broker.amqp.as_ref().expect("amqp hub");
    let deadline = tokio::time::Instant::now() + WAIT;
    while hub.queue_len(queue) != Some(n) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "queue {queue} holds {:?} messages, expected {n}",
            hub.queue_len(queue)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn next_delivery(consumer: &mut Consumer) -> lapin::message::Delivery {
    timeout(WAIT, consumer.next())
        .await
        .expect("a delivery in time")
        .expect("consumer stream open")
        .expect("delivery ok")
}

async fn no_delivery_within(consumer: &mut Consumer, wait: Duration) {
    if let Ok(Some(d)) = timeout(wait, consumer.next()).await {
        panic!("unexpected delivery: {:?}", d.map(|d| d.delivery_tag));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_consume_ack_and_connection_close() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    assert!(conn.configuration().frame_max() >= 4096);
    let ch = channel(&conn).await;
    let q = declare(&ch, "hello", FieldTable::default()).await;
    let mut consumer = ch
        .basic_consume(
            &q,
            "c1",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for i in 0..5u8 {
        publish(&ch, "", &q, &[i]).await;
    }
    for i in 0..5u8 {
        let d = next_delivery(&mut consumer).await;
        assert_eq!(d.data, vec![i]);
        assert!(!d.redelivered);
        assert_eq!(d.routing_key.as_str(), "hello");
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    conn.close(200, "bye")
        .await
        .expect("connection.close handshake");
    assert!(!conn.status().connected());
    let metrics = broker.metrics.encode();
    for line in [
        "broker_messages_received_total{protocol=\"amqp\"} 5",
        "broker_messages_sent_total{protocol=\"amqp\"} 5",
        "broker_connections_total{protocol=\"amqp\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    let ch2 = channel(&connect(&broker).await).await;
    assert_eq!(
        get_body(&ch2, "hello").await,
        None,
        "acked messages are gone"
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchanges_route_direct_fanout_topic_and_headers() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    for (name, kind) in [
        ("amq.direct", ExchangeKind::Direct),
        ("amq.fanout", ExchangeKind::Fanout),
        ("amq.topic", ExchangeKind::Topic),
        ("amq.headers", ExchangeKind::Headers),
    ] {
        ch.exchange_declare(
            name,
            kind,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("built-in {name} exists: {e}"));
    }
    for q in ["d1", "f1", "f2", "t1", "t2", "h_all", "h_any"] {
        declare(&ch, q, FieldTable::default()).await;
    }
    let bind = |q: &'static str, x: &'static str, key: &'static str, args: FieldTable| {
        let ch = ch.clone();
        async move {
            ch.queue_bind(q, x, key, QueueBindOptions::default(), args)
                .await
                .unwrap()
        }
    };
    bind("d1", "amq.direct", "red", FieldTable::default()).await;
    bind("f1", "amq.fanout", "", FieldTable::default()).await;
    bind("f2", "amq.fanout", "", FieldTable::default()).await;
    bind("t1", "amq.topic", "stock.*.nyse", FieldTable::default()).await;
    bind("t2", "amq.topic", "stock.#", FieldTable::default()).await;
    let s = |v: &str| AMQPValue::LongString(v.into());
    bind(
        "h_all",
        "amq.headers",
        "",
        table(&[
            ("x-match", s("all")),
            ("format", s("pdf")),
            ("type", s("report")),
        ]),
    )
    .await;
    bind(
        "h_any",
        "amq.headers",
        "",
        table(&[
            ("x-match", s("any")),
            ("format", s("pdf")),
            ("type", s("report")),
        ]),
    )
    .await;

    publish(&ch, "amq.direct", "red", b"d-red").await;
    publish(&ch, "amq.direct", "blue", b"d-blue").await;
    publish(&ch, "amq.fanout", "ignored", b"f").await;
    publish(&ch, "amq.topic", "stock.usd.nyse", b"t-usd-nyse").await;
    publish(&ch, "amq.topic", "stock.eur", b"t-eur").await;
    publish(&ch, "amq.topic", "bond.usd.nyse", b"t-bond").await;
    for (headers, body) in [
        (
            table(&[("format", s("pdf")), ("type", s("report"))]),
            &b"h-both"[..],
        ),
        (table(&[("format", s("pdf")), ("type", s("log"))]), b"h-one"),
    ] {
        ch.basic_publish(
            "amq.headers",
            "",
            BasicPublishOptions::default(),
            body,
            BasicProperties::default().with_headers(headers),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let drain = |q: &'static str| {
        let ch = ch.clone();
        async move {
            let mut got = Vec::new();
            while let Some(b) = get_body(&ch, q).await {
                got.push(String::from_utf8(b).unwrap());
                assert!(got.len() < 100, "bounded drain");
            }
            got
        }
    };
    wait_for_len(&broker, "h_any", 2).await;
    assert_eq!(drain("d1").await, ["d-red"]);
    assert_eq!(drain("f1").await, ["f"]);
    assert_eq!(drain("f2").await, ["f"]);
    assert_eq!(drain("t1").await, ["t-usd-nyse"]);
    assert_eq!(drain("t2").await, ["t-usd-nyse", "t-eur"]);
    assert_eq!(drain("h_all").await, ["h-both"]);
    assert_eq!(drain("h_any").await, ["h-both", "h-one"]);

    // Declared exchanges, exchange-to-exchange bindings, unbind and delete.
    ch.exchange_declare(
        "events",
        ExchangeKind::Topic,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.exchange_bind(
        "amq.fanout",
        "events",
        "audit.#",
        ExchangeBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    publish(&ch, "events", "audit.login", b"e2e").await;
    publish(&ch, "events", "other", b"dropped").await;
    wait_for_len(&broker, "f1", 1).await;
    assert_eq!(drain("f2").await, ["e2e"]);
    ch.queue_unbind("f1", "amq.fanout", "", FieldTable::default())
        .await
        .unwrap();
    drain("f1").await;
    publish(&ch, "amq.fanout", "", b"after-unbind").await;
    wait_for_len(&broker, "f2", 1).await;
    assert_eq!(drain("f1").await, Vec::<String>::new());
    ch.exchange_delete("events", ExchangeDeleteOptions::default())
        .await
        .unwrap();
    let err = ch
        .exchange_declare(
            "events",
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(404), "{err}");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_declare_variants_purge_and_delete() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let named = declare(&ch, "", FieldTable::default()).await;
    assert!(named.starts_with("amq.gen-"), "{named}");
    let q = declare(&ch, "work", FieldTable::default()).await;
    for i in 0..3u8 {
        publish(&ch, "", &q, &[i]).await;
    }
    wait_for_len(&broker, "work", 3).await;
    let passive = ch
        .queue_declare(
            "work",
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(passive.message_count(), 3);
    let err = ch
        .queue_delete(
            "work",
            QueueDeleteOptions {
                if_empty: true,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(406), "{err}");
    let ch = channel(&conn).await;
    assert_eq!(
        ch.queue_purge("work", QueuePurgeOptions::default())
            .await
            .unwrap(),
        3
    );
    let _consumer = ch
        .basic_consume(
            "work",
            "busy",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let err = ch
        .queue_delete(
            "work",
            QueueDeleteOptions {
                if_unused: true,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(406), "{err}");
    let ch = channel(&conn).await;
    assert_eq!(
        ch.queue_delete("work", QueueDeleteOptions::default())
            .await
            .unwrap(),
        0
    );

    // Passive declare of a missing queue: 404 on that channel only.
    let err = ch
        .queue_declare(
            "missing",
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(404), "{err}");

    // Exclusive queues belong to their connection: 405 for others, gone with it.
    let ch = channel(&conn).await;
    ch.queue_declare(
        "mine",
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let other = connect(&broker).await;
    let och = channel(&other).await;
    let err = och
        .basic_consume(
            "mine",
            "",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(405), "{err}");
    // Auto-delete: gone when its last consumer cancels.
    let och = channel(&other).await;
    och.queue_declare(
        "temp",
        QueueDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let c = och
        .basic_consume(
            "temp",
            "t",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    och.basic_cancel(c.tag().as_str(), BasicCancelOptions::default())
        .await
        .unwrap();
    assert_eq!(broker.amqp.as_ref().unwrap().queue_len("temp"), None);
    conn.close(200, "bye").await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while broker.amqp.as_ref().unwrap().queue_len("mine").is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "exclusive queue outlived its connection"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Redeclaring with other arguments is refused.
    let och = channel(&other).await;
    declare(
        &och,
        "args",
        table(&[("x-max-length", AMQPValue::LongInt(5))]),
    )
    .await;
    let err = och
        .queue_declare(
            "args",
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(406), "{err}");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirms_ack_nack_and_mandatory_returns() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let q = declare(
        &ch,
        "bounded",
        table(&[
            ("x-max-length", AMQPValue::LongInt(2)),
            ("x-overflow", AMQPValue::LongString("reject-publish".into())),
        ]),
    )
    .await;
    let mut confirms = Vec::new();
    for i in 0..3u8 {
        let c = ch
            .basic_publish(
                "",
                &q,
                BasicPublishOptions::default(),
                &[i],
                BasicProperties::default(),
            )
            .await
            .unwrap();
        confirms.push(timeout(WAIT, c).await.unwrap().unwrap());
    }
    assert!(confirms[0].is_ack() && confirms[1].is_ack(), "{confirms:?}");
    assert!(
        confirms[2].is_nack(),
        "the full queue refuses: {confirms:?}"
    );

    // mandatory + unroutable: basic.return (312 NO_ROUTE), then the ack.
    let confirm = ch
        .basic_publish(
            "amq.direct",
            "nobody-listens",
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"lost",
            BasicProperties::default(),
        )
        .await
        .unwrap();
    let confirm = timeout(WAIT, confirm).await.unwrap().unwrap();
    assert!(confirm.is_ack());
    let returned = confirm.take_message().expect("the message comes back");
    assert_eq!(returned.reply_code, 312);
    assert_eq!(returned.delivery.data, b"lost");
    // Not mandatory: silently dropped, still acked, nothing returned.
    let confirm = ch
        .basic_publish(
            "amq.direct",
            "nobody",
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default(),
        )
        .await
        .unwrap();
    let confirm = timeout(WAIT, confirm).await.unwrap().unwrap();
    assert_eq!(confirm.take_message(), None);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_is_never_exceeded() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q = declare(&ch, "pf", FieldTable::default()).await;
    for i in 0..20u8 {
        publish(&ch, "", &q, &[i]).await;
    }
    wait_for_len(&broker, "pf", 20).await;
    // Per consumer (global = false): 3 unacked at most.
    ch.basic_qos(3, BasicQosOptions::default()).await.unwrap();
    let mut c = ch
        .basic_consume(
            &q,
            "pf1",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(next_delivery(&mut c).await);
    }
    no_delivery_within(&mut c, Duration::from_millis(300)).await;
    held.remove(0)
        .ack(BasicAckOptions::default())
        .await
        .unwrap();
    held.push(next_delivery(&mut c).await);
    no_delivery_within(&mut c, Duration::from_millis(300)).await;
    // ack multiple releases the window.
    let last = held.last().unwrap().delivery_tag;
    ch.basic_ack(last, BasicAckOptions { multiple: true })
        .await
        .unwrap();
    for _ in 0..3 {
        held.push(next_delivery(&mut c).await);
    }
    no_delivery_within(&mut c, Duration::from_millis(300)).await;

    // Per channel (global = true): two consumers share a window of 2.
    let ch2 = channel(&conn).await;
    let q2 = declare(&ch2, "pf2", FieldTable::default()).await;
    for i in 0..10u8 {
        publish(&ch2, "", &q2, &[i]).await;
    }
    wait_for_len(&broker, "pf2", 10).await;
    ch2.basic_qos(2, BasicQosOptions { global: true })
        .await
        .unwrap();
    let mut a = ch2
        .basic_consume(
            &q2,
            "a",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut b = ch2
        .basic_consume(
            &q2,
            "b",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut got = 0;
    for _ in 0..4 {
        tokio::select! {
            Some(Ok(_)) = a.next() => got += 1,
            Some(Ok(_)) = b.next() => got += 1,
            _ = tokio::time::sleep(Duration::from_millis(300)) => break,
        }
    }
    assert_eq!(got, 2, "the channel window is 2 deliveries");
    assert_eq!(broker.amqp.as_ref().unwrap().queue_len("pf2"), Some(8));
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_reject_recover_and_requeue_on_channel_close() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q = declare(&ch, "rq", FieldTable::default()).await;
    publish(&ch, "", &q, b"m1").await;
    let mut c = ch
        .basic_consume(
            &q,
            "rq1",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let d = next_delivery(&mut c).await;
    assert!(!d.redelivered);
    d.nack(BasicNackOptions {
        requeue: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let d = next_delivery(&mut c).await;
    assert!(d.redelivered, "nack with requeue redelivers");
    assert_eq!(d.data, b"m1");
    d.reject(BasicRejectOptions { requeue: true })
        .await
        .unwrap();
    let d = next_delivery(&mut c).await;
    assert!(d.redelivered);
    // basic.recover puts unacked messages back.
    ch.basic_recover(BasicRecoverOptions { requeue: true })
        .await
        .unwrap();
    let d = next_delivery(&mut c).await;
    assert!(d.redelivered);
    d.reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    no_delivery_within(&mut c, Duration::from_millis(200)).await;
    assert_eq!(broker.amqp.as_ref().unwrap().queue_len("rq"), Some(0));

    // Unacked deliveries go back when the consumer's channel closes.
    publish(&ch, "", &q, b"m2").await;
    let d = next_delivery(&mut c).await;
    assert_eq!(d.data, b"m2");
    ch.close(200, "done").await.unwrap();
    let ch2 = channel(&conn).await;
    let got = get(&ch2, "rq").await.expect("requeued on channel close");
    assert_eq!(got.delivery.data, b"m2");
    assert!(got.delivery.redelivered);
    assert!(get(&ch2, "rq").await.is_none(), "basic.get-empty");
    // nack multiple with requeue.
    ch2.basic_qos(10, BasicQosOptions::default()).await.unwrap();
    for b in [b"x", b"y", b"z"] {
        publish(&ch2, "", "rq", b).await;
    }
    let mut c2 = ch2
        .basic_consume(
            "rq",
            "rq2",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut last = 0;
    for _ in 0..3 {
        last = next_delivery(&mut c2).await.delivery_tag;
    }
    ch2.basic_nack(
        last,
        BasicNackOptions {
            multiple: true,
            requeue: true,
        },
    )
    .await
    .unwrap();
    let mut again = Vec::new();
    for _ in 0..3 {
        let d = next_delivery(&mut c2).await;
        assert!(d.redelivered);
        again.push(d.data);
    }
    assert_eq!(
        again,
        [b"x".to_vec(), b"y".to_vec(), b"z".to_vec()],
        "original order"
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_on_reject_expiry_and_max_length() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    declare(&ch, "dead", FieldTable::default()).await;
    ch.queue_bind(
        "dead",
        "amq.direct",
        "dead",
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let dlx = |extra: &[(&str, AMQPValue)]| {
        let mut args = vec![
            (
                "x-dead-letter-exchange",
                AMQPValue::LongString("amq.direct".into()),
            ),
            (
                "x-dead-letter-routing-key",
                AMQPValue::LongString("dead".into()),
            ),
        ];
        args.extend(extra.iter().cloned());
        table(&args)
    };
    declare(&ch, "src_reject", dlx(&[])).await;
    declare(
        &ch,
        "src_ttl",
        dlx(&[("x-message-ttl", AMQPValue::LongInt(50))]),
    )
    .await;
    declare(
        &ch,
        "src_len",
        dlx(&[("x-max-length", AMQPValue::LongInt(1))]),
    )
    .await;

    publish(&ch, "", "src_reject", b"rejected").await;
    let got = get(&ch, "src_reject").await;
    assert!(got.is_some());
    let mut c = ch
        .basic_consume(
            "src_reject",
            "",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    publish(&ch, "", "src_reject", b"rejected").await;
    next_delivery(&mut c)
        .await
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    publish(&ch, "", "src_ttl", b"expired").await;
    publish(&ch, "", "src_len", b"first").await;
    publish(&ch, "", "src_len", b"second").await;

    let mut reasons = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while reasons.len() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "dead letters so far: {reasons:?}"
        );
        match get(&ch, "dead").await {
            Some(m) => {
                let headers = m
                    .delivery
                    .properties
                    .headers()
                    .clone()
                    .expect("x-death headers");
                let reason = match headers.inner().get("x-first-death-reason") {
                    Some(AMQPValue::LongString(s)) => {
                        String::from_utf8_lossy(s.as_bytes()).into_owned()
                    }
                    other => panic!("x-first-death-reason: {other:?}"),
                };
                assert!(headers.inner().contains_key("x-death"));
                reasons.push((reason, String::from_utf8(m.delivery.data).unwrap()));
            }
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    reasons.sort();
    assert_eq!(
        reasons,
        [
            ("expired".to_string(), "expired".to_string()),
            ("maxlen".to_string(), "first".to_string()),
            ("rejected".to_string(), "rejected".to_string()),
        ]
    );
    assert_eq!(get_body(&ch, "src_len").await, Some(b"second".to_vec()));
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_error_leaves_the_connection_and_other_channels_working() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let good = channel(&conn).await;
    let bad = channel(&conn).await;
    let q = declare(&good, "survivor", FieldTable::default()).await;
    let mut c = good
        .basic_consume(
            &q,
            "s",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let err = bad
        .queue_declare(
            "q2",
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(404), "{err}");
    assert!(!bad.status().connected());
    assert!(conn.status().connected());
    publish(&good, "", &q, b"still here").await;
    assert_eq!(next_delivery(&mut c).await.data, b"still here");
    let fresh = channel(&conn).await;
    publish(&fresh, "", &q, b"new channel").await;
    assert_eq!(next_delivery(&mut c).await.data, b"new channel");
    // An exclusive consumer refuses others with 403, on that channel only.
    let q2 = declare(&fresh, "solo", FieldTable::default()).await;
    // Kept alive: lapin cancels a consumer when it is dropped.
    let _solo = fresh
        .basic_consume(
            &q2,
            "only",
            BasicConsumeOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let other = channel(&conn).await;
    let err = other
        .basic_consume(
            &q2,
            "second",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(403), "{err}");
    assert!(fresh.status().connected());
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_cancel_both_ways_and_flow() {
    let broker = start_broker_with(|c| c.amqp.frame_max = 8192).await;
    let conn = connect(&broker).await;
    assert_eq!(conn.configuration().frame_max(), 8192);
    let ch = channel(&conn).await;
    let q = declare(&ch, "big", FieldTable::default()).await;
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    publish(&ch, "", &q, &body).await;
    let mut c = ch
        .basic_consume(
            &q,
            "big-c",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let d = next_delivery(&mut c).await;
    assert_eq!(d.data.len(), body.len());
    assert!(d.data == body, "body reassembled from 8 KiB frames");
    d.ack(BasicAckOptions::default()).await.unwrap();
    // Client-side cancel ends the stream.
    ch.basic_cancel("big-c", BasicCancelOptions::default())
        .await
        .unwrap();
    let end = timeout(WAIT, async {
        while let Some(r) = c.next().await {
            r.unwrap();
        }
    })
    .await;
    assert!(end.is_ok(), "cancelled consumer stream ends");
    // Server-side cancel (consumer_cancel_notify): deleting the queue ends the consumer.
    let ch2 = channel(&conn).await;
    let mut c2 = ch2
        .basic_consume(
            &q,
            "watch",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    ch.queue_delete(&q, QueueDeleteOptions::default())
        .await
        .unwrap();
    let end = timeout(WAIT, async {
        while let Some(r) = c2.next().await {
            let _ = r;
        }
    })
    .await;
    assert!(
        end.is_ok(),
        "basic.cancel from the broker ends the consumer"
    );
    // channel.flow answers with the state asked for.
    assert!(!ch2
        .channel_flow(ChannelFlowOptions { active: false })
        .await
        .unwrap());
    assert!(ch2
        .channel_flow(ChannelFlowOptions { active: true })
        .await
        .unwrap());
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_users_are_checked() {
    let broker = crate::common::start_broker_with_users(&[("alice", "s3cret")], |_| {}).await;
    let addr = broker.amqp_addr.unwrap();
    let ok = timeout(
        WAIT,
        Connection::connect(
            &format!("amqp://alice:s3cret@{addr}/%2f"),
            ConnectionProperties::default(),
        ),
    )
    .await
    .unwrap();
    assert!(ok.is_ok(), "{ok:?}");
    let refused = timeout(
        WAIT,
        Connection::connect(
            &format!("amqp://alice:wrong@{addr}/%2f"),
            ConnectionProperties::default(),
        ),
    )
    .await
    .unwrap();
    assert!(refused.is_err(), "a wrong password is refused");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ack_consumers_generated_tags_and_per_message_expiry() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q = declare(&ch, "noack", FieldTable::default()).await;
    ch.basic_qos(1, BasicQosOptions::default()).await.unwrap();
    let mut c = ch
        .basic_consume(
            &q,
            "",
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert!(c.tag().as_str().starts_with("amq.ctag-"), "{}", c.tag());
    for i in 0..5u8 {
        publish(&ch, "", &q, &[i]).await;
    }
    // no-ack deliveries are not held back by the prefetch window.
    for i in 0..5u8 {
        assert_eq!(next_delivery(&mut c).await.data, [i]);
    }
    assert_eq!(broker.amqp.as_ref().unwrap().queue_len("noack"), Some(0));
    // A per-message expiration on a queue without TTL.
    let q2 = declare(&ch, "expiring", FieldTable::default()).await;
    ch.basic_publish(
        "",
        &q2,
        BasicPublishOptions::default(),
        b"short-lived",
        BasicProperties::default().with_expiration("30".into()),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    publish(&ch, "", &q2, b"kept").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(get_body(&ch, &q2).await, Some(b"kept".to_vec()));
    assert_eq!(get_body(&ch, &q2).await, None);
    broker.shutdown().await;
}
