//! Authentication and authorisation end to end: the password file with
//! rumqttc (3.1.1 and 5.0) and lapin, anonymous access by listener address,
//! client-id ownership, and the MQTT ACL (SUBACK/PUBACK codes, dropped
//! publishes, retained messages) with rumqttc and raw packets for both versions.

use std::net::SocketAddr;
use std::time::Duration;

use broker::RunningBroker;
use lapin::{Connection, ConnectionProperties};
use tokio::time::timeout;

use crate::common::{self, WAIT};
use crate::mqtt_client::{MqttClient, Options, QoS, V311, V5};
use crate::raw;

/// Instantiates each scenario below for 3.1.1 and 5.0.
macro_rules! both_versions {
    ($($name:ident),* $(,)?) => {
        mod v311 { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name::<crate::mqtt_client::V311>().await; }
        )* }
        mod v5 { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name::<crate::mqtt_client::V5>().await; }
        )* }
    };
}

both_versions!(
    anonymous_refused_on_a_non_loopback_bind,
    client_id_taken_over_only_by_the_same_user,
    acl_denies_subscribe_and_publish,
    retained_messages_only_where_readable,
);

/// The ACL of these tests: anonymous clients read `public/#`; everyone
/// reads and writes `clients/<own client id>/#`; alice writes `public/#`.
const ACL: &str = r#"
[[rule]]
anonymous = true
topic = "public/#"
access = "read"

[[rule]]
topic = "clients/%c/#"
access = "readwrite"

[[rule]]
user = "alice"
topic = "public/#"
access = "readwrite"
"#;

async fn acl_broker() -> (RunningBroker, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl.toml");
    std::fs::write(&acl, ACL).unwrap();
    let users = common::password_file(dir.path(), &[("alice", "a-pw")]);
    let b = common::start_broker_with(|c| {
        c.auth.password_file = Some(users);
        c.auth.acl_file = Some(acl);
        c.mqtt.allow_anonymous = Some(true);
    })
    .await;
    (b, dir)
}

fn metric(b: &RunningBroker, line: &str) -> bool {
    b.metrics.encode().lines().any(|l| l == line)
}

pub async fn anonymous_refused_on_a_non_loopback_bind<C: MqttClient>() {
    // Bound to every interface (the test still connects over 127.0.0.1):
    // without `allow_anonymous` and without users, nobody is let in.
    let b = common::start_broker_with(|c| c.mqtt.bind = "0.0.0.0:0".parse().unwrap()).await;
    let addr = SocketAddr::from(([127, 0, 0, 1], b.mqtt_addr.port()));
    assert_eq!(
        C::refused(Options::new(addr, "anon")).await,
        C::NOT_AUTHORIZED
    );
    let o = Options::new(addr, "named").credentials("someone", "pw");
    assert_eq!(C::refused(o).await, C::NOT_AUTHORIZED);
    b.shutdown().await;
    // Explicitly enabled: anonymous clients are welcome on that bind too.
    let b = common::start_broker_with(|c| {
        c.mqtt.bind = "0.0.0.0:0".parse().unwrap();
        c.mqtt.allow_anonymous = Some(true);
    })
    .await;
    let addr = SocketAddr::from(([127, 0, 0, 1], b.mqtt_addr.port()));
    let (_c, ack) = C::start(Options::new(addr, "anon")).await;
    assert_eq!(ack.code, C::SUCCESS);
    b.shutdown().await;
    // The same listener on loopback with the default: anonymous allowed.
    let b = common::start_broker().await;
    let (_c, ack) = C::start(Options::new(b.mqtt_addr, "anon")).await;
    assert_eq!(ack.code, C::SUCCESS);
    b.shutdown().await;
}

pub async fn client_id_taken_over_only_by_the_same_user<C: MqttClient>() {
    let b = common::start_broker_with_users(&[("alice", "a-pw"), ("bob", "b-pw")], |_| {}).await;
    let alice = || Options::new(b.mqtt_addr, "shared").credentials("alice", "a-pw");
    let (mut first, ack) = C::start(alice().persistent(true)).await;
    assert_eq!(ack.code, C::SUCCESS);
    let bob = Options::new(b.mqtt_addr, "shared").credentials("bob", "b-pw");
    assert_eq!(C::refused(bob.clone()).await, C::NOT_AUTHORIZED);
    assert!(metric(
        &b,
        "broker_connections_refused_total{protocol=\"mqtt\",kind=\"client_id_owned_by_other_user\"} 1"
    ));
    // Still alice's: her connection was not kicked, and she may take it over herself.
    first
        .publish("x", QoS::AtLeastOnce, false, "still up")
        .await;
    let (_second, ack) = C::start(alice().persistent(true)).await;
    assert_eq!(ack.code, C::SUCCESS);
    C::check_taken_over(first.poll().await.expect_err("taken over by alice"));
    // Offline and persistent, the session stays alice's.
    assert_eq!(C::refused(bob).await, C::NOT_AUTHORIZED);
    b.shutdown().await;
}

pub async fn acl_denies_subscribe_and_publish<C: MqttClient>() {
    let (b, _dir) = acl_broker().await;
    let mut anon = C::connect(&b, "anon-1").await;
    let denied = anon.subscribe("private/#", QoS::AtLeastOnce).await;
    assert!(denied.is_err(), "SUBACK failure for private/#: {denied:?}");
    // `#` reaches beyond `public/#`: denied as well.
    assert!(anon.subscribe("#", QoS::AtLeastOnce).await.is_err());
    assert_eq!(
        anon.subscribe("public/+", QoS::AtLeastOnce).await,
        Ok(QoS::AtLeastOnce)
    );
    assert_eq!(
        anon.subscribe("clients/anon-1/#", QoS::AtLeastOnce).await,
        Ok(QoS::AtLeastOnce)
    );
    assert!(anon
        .subscribe("clients/other/#", QoS::AtLeastOnce)
        .await
        .is_err());
    assert!(metric(
        &b,
        "broker_protocol_errors_total{protocol=\"mqtt\",kind=\"subscribe_not_authorized\"} 3"
    ));
    // Anonymous may not write public/: the message is dropped and counted;
    // the write to its own subtree goes through (and arrives after, so the
    // denied one would have arrived first).
    // (QoS 0 here: rumqttc's 5.0 client ends the connection on a failed
    // PUBACK; the codes are checked with raw packets below.)
    anon.publish("public/news", QoS::AtMostOnce, false, "denied")
        .await;
    anon.publish("clients/anon-1/x", QoS::AtLeastOnce, false, "own")
        .await;
    let got = anon
        .wait_for("a message", |ev| match ev {
            crate::mqtt_client::Event::Publish(m) => Some(m.clone()),
            _ => None,
        })
        .await;
    assert_eq!(
        (got.topic.as_str(), got.text()),
        ("clients/anon-1/x", "own".into())
    );
    assert!(metric(
        &b,
        "broker_messages_dropped_total{protocol=\"mqtt\",kind=\"not_authorized\"} 1"
    ));
    // alice may write public/, and the anonymous reader gets it.
    let o = Options::new(b.mqtt_addr, "alice-1").credentials("alice", "a-pw");
    let (mut alice, _) = C::start(o).await;
    alice
        .publish("public/news", QoS::AtLeastOnce, false, "hello")
        .await;
    let got = anon
        .wait_for("public/news", |ev| match ev {
            crate::mqtt_client::Event::Publish(m) => Some(m.clone()),
            _ => None,
        })
        .await;
    assert_eq!(got.text(), "hello");

    // The codes on the wire, sent by hand.
    let mut s = raw::session(b.mqtt_addr, C::LEVEL, "raw-1", 60).await;
    raw::send(&mut s, &raw::subscribe(C::LEVEL, 7, "private/x", 1)).await;
    let mut expected = vec![0x00, 0x07];
    expected.extend_from_slice(raw::no_properties(C::LEVEL));
    expected.push(if C::LEVEL == 5 { 0x87 } else { 0x80 });
    assert_eq!(raw::expect_packet(&mut s, 9).await, expected, "SUBACK");
    for (qos, ack_type) in [(1u8, 4u8), (2, 5)] {
        raw::send(&mut s, &raw::publish(C::LEVEL, qos, "public/x", 9, b"no")).await;
        let ack = raw::expect_packet(&mut s, ack_type).await;
        match C::LEVEL {
            // PUBACK/PUBREC with reason 0x87 Not authorized.
            5 => assert_eq!(ack[..3], [0x00, 0x09, 0x87], "{ack:x?}"),
            // 3.1.1 has no negative acknowledgement: a plain one, message dropped.
            _ => assert_eq!(ack, [0x00, 0x09]),
        }
        if qos == 2 && C::LEVEL != 5 {
            raw::send(&mut s, &raw::packet(0x62, &[0x00, 0x09])).await;
            assert_eq!(raw::expect_packet(&mut s, 7).await, [0x00, 0x09], "PUBCOMP");
        }
    }
    assert!(metric(
        &b,
        "broker_messages_dropped_total{protocol=\"mqtt\",kind=\"not_authorized\"} 3"
    ));
    b.shutdown().await;
}

pub async fn retained_messages_only_where_readable<C: MqttClient>() {
    let (b, _dir) = acl_broker().await;
    let o = Options::new(b.mqtt_addr, "alice-r").credentials("alice", "a-pw");
    let (mut alice, _) = C::start(o).await;
    alice
        .publish("public/r", QoS::AtLeastOnce, true, "pub")
        .await;
    alice
        .publish("clients/alice-r/r", QoS::AtLeastOnce, true, "own")
        .await;
    let mut anon = C::connect(&b, "anon-r").await;
    assert!(anon
        .subscribe("clients/alice-r/#", QoS::AtLeastOnce)
        .await
        .is_err());
    assert!(anon.subscribe("public/#", QoS::AtLeastOnce).await.is_ok());
    let got = anon
        .wait_for("retained", |ev| match ev {
            crate::mqtt_client::Event::Publish(m) => Some(m.clone()),
            _ => None,
        })
        .await;
    assert_eq!((got.topic.as_str(), got.retain), ("public/r", true));
    anon.expect_no_publish(Duration::from_millis(300)).await;
    // A will is a publish: one on a topic the client may not write refuses the CONNECT.
    let o = Options::new(b.mqtt_addr, "will-1").will("public/w", "bye", QoS::AtMostOnce, false);
    assert_eq!(C::refused(o).await, C::NOT_AUTHORIZED);
    let o =
        Options::new(b.mqtt_addr, "will-2").will("clients/will-2/w", "bye", QoS::AtMostOnce, false);
    assert_eq!(C::start(o).await.1.code, C::SUCCESS);
    b.shutdown().await;
}

/// 5.0 and 3.1.1 both: a wrong password is 0x86 / code 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_codes_for_both_versions() {
    let b = common::start_broker_with_users(&[("alice", "a-pw")], |_| {}).await;
    let o = Options::new(b.mqtt_addr, "w").credentials("alice", "nope");
    assert_eq!(V311::refused(o.clone()).await, V311::BAD_CREDENTIALS);
    assert_eq!(V5::refused(o).await, V5::BAD_CREDENTIALS);
    b.shutdown().await;
}

async fn amqp_login(addr: SocketAddr, user: &str, pass: &str) -> Result<Connection, lapin::Error> {
    let uri = format!("amqp://{user}:{pass}@{addr}/%2f");
    timeout(
        WAIT,
        Connection::connect(&uri, ConnectionProperties::default()),
    )
    .await
    .expect("the AMQP handshake ends in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_logins_follow_the_password_file_and_the_anonymous_rule() {
    // Password file: only its users, with the right password.
    let b = common::start_broker_with_users(&[("alice", "a-pw")], |_| {}).await;
    let addr = b.amqp_addr.unwrap();
    assert!(amqp_login(addr, "alice", "a-pw").await.is_ok());
    let refused = amqp_login(addr, "alice", "wrong").await.unwrap_err();
    assert!(
        format!("{refused:?}").contains("ACCESS_REFUSED"),
        "{refused:?}"
    );
    assert!(amqp_login(addr, "guest", "guest").await.is_err());
    b.shutdown().await;
    // Non-loopback bind, no users: only guest/guest from a loopback peer.
    let b = common::start_broker_with(|c| c.amqp.bind = "0.0.0.0:0".parse().unwrap()).await;
    let addr = SocketAddr::from(([127, 0, 0, 1], b.amqp_addr.unwrap().port()));
    assert!(amqp_login(addr, "anyone", "x").await.is_err());
    assert!(amqp_login(addr, "guest", "guest").await.is_ok());
    b.shutdown().await;
    // Loopback bind, no users: any login (as before).
    let b = common::start_broker().await;
    assert!(amqp_login(b.amqp_addr.unwrap(), "anyone", "x")
        .await
        .is_ok());
    b.shutdown().await;
}
