//! MQTT 3.1.1 through rumqttc: every shared scenario (mqtt_scenarios.rs),
//! plus what only 3.1.1 has.

use std::time::{Duration, Instant};

use crate::common;
use crate::mqtt_client::{Event, MqttClient, Options, QoS, V311};
use crate::mqtt_scenarios::mqtt_scenarios;
use crate::raw;

mqtt_scenarios!(V311);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_client_id_without_clean_session_is_rejected() {
    // rumqttc panics on this combination, so the CONNECT is written by hand.
    let b = common::start_broker().await;
    let mut s = raw::tcp(b.mqtt_addr).await;
    raw::send(&mut s, &raw::connect(4, "", false, 60)).await;
    let (first, body) = raw::read_packet(&mut s).await.expect("a CONNACK");
    assert_eq!((first, body.as_slice()), (0x20, &[0x00, 0x02][..]));
    raw::expect_closed(&mut s).await;
    b.shutdown().await;
}

/// rumqttc's 5.0 client refuses keep alives this short, so this one is 3.1.1
/// only; rumqttc_v5.rs pings by hand instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_keep_the_connection_alive() {
    let b = common::start_broker().await;
    let mut o = Options::new(b.mqtt_addr, "pinger");
    o.keep_alive = Duration::from_secs(1);
    let (mut c, _) = V311::start(o).await;
    let until = Instant::now() + Duration::from_secs(3);
    let mut pongs = 0;
    while let Ok(ev) = tokio::time::timeout_at(until.into(), c.poll()).await {
        match ev {
            Ok(Event::PingResp) => pongs += 1,
            Ok(_) => {}
            Err(e) => panic!("connection lost despite pings: {e:?}"),
        }
    }
    assert!(pongs >= 2, "only {pongs} PINGRESP in 3 s");
    c.subscribe("ping/t", QoS::AtLeastOnce).await.unwrap();
    c.publish("ping/t", QoS::AtLeastOnce, false, "alive").await;
    assert_eq!(c.next_publish().await.text(), "alive");
    b.shutdown().await;
}
