//! Consumer-group bounds and commit checks on the wire (raw Kafka frames):
//! members per group, groups in total, member metadata size, and offset
//! commits with a negative generation for a group that has members. Each
//! refusal carries Kafka's error code, and an MQTT bystander keeps working.

use std::net::SocketAddr;

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::common::{start_broker_with, WAIT};
use crate::raw::mqtt_round_trip;
use crate::raw_kafka::{request, response};

const GROUP_MAX_SIZE_REACHED: i16 = 81;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const INVALID_REQUEST: i16 = 42;
const UNKNOWN_MEMBER_ID: i16 = 25;
const ILLEGAL_GENERATION: i16 = 22;

fn put_str(b: &mut BytesMut, s: &str) {
    b.put_i16(s.len() as i16);
    b.put_slice(s.as_bytes());
}

fn get_str(b: &mut BytesMut) -> String {
    let n = b.get_i16();
    if n < 0 {
        return String::new();
    }
    String::from_utf8(b.split_to(n as usize).to_vec()).expect("utf-8")
}

async fn connect(addr: SocketAddr) -> TcpStream {
    timeout(WAIT, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("Kafka listener accepts")
}

async fn call(s: &mut TcpStream, api_key: i16, version: i16, body: &[u8]) -> BytesMut {
    s.write_all(&request(api_key, version, 41, body))
        .await
        .expect("request written");
    let (id, body) = response(s).await;
    assert_eq!(id, 41);
    body
}

/// JoinGroup v0 with one "range" protocol; returns (error, generation, member id).
async fn join(s: &mut TcpStream, group: &str, member: &str, metadata: usize) -> (i16, i32, String) {
    let mut b = BytesMut::new();
    put_str(&mut b, group);
    b.put_i32(10_000);
    put_str(&mut b, member);
    put_str(&mut b, "consumer");
    b.put_i32(1);
    put_str(&mut b, "range");
    b.put_i32(metadata as i32);
    b.put_bytes(0, metadata);
    let mut r = call(s, 11, 0, &b).await;
    let error = r.get_i16();
    let generation = r.get_i32();
    let _protocol = get_str(&mut r);
    let _leader = get_str(&mut r);
    (error, generation, get_str(&mut r))
}

/// SyncGroup v0 from the leader, assigning nothing; returns the error.
async fn sync(s: &mut TcpStream, group: &str, generation: i32, member: &str) -> i16 {
    let mut b = BytesMut::new();
    put_str(&mut b, group);
    b.put_i32(generation);
    put_str(&mut b, member);
    b.put_i32(0);
    call(s, 14, 0, &b).await.get_i16()
}

/// CreateTopics v2 for one single-partition topic; returns its error.
async fn create_topic(s: &mut TcpStream, name: &str) -> i16 {
    let mut b = BytesMut::new();
    b.put_i32(1);
    put_str(&mut b, name);
    b.put_i32(1);
    b.put_i16(1);
    b.put_i32(0);
    b.put_i32(0);
    b.put_i32(5_000);
    b.put_u8(0);
    let mut r = call(s, 19, 2, &b).await;
    let _throttle = r.get_i32();
    assert_eq!(r.get_i32(), 1);
    let _name = get_str(&mut r);
    r.get_i16()
}

/// OffsetCommit v2 of offset 1 on partition 0; returns the partition's error.
async fn commit(s: &mut TcpStream, group: &str, generation: i32, member: &str, topic: &str) -> i16 {
    let mut b = BytesMut::new();
    put_str(&mut b, group);
    b.put_i32(generation);
    put_str(&mut b, member);
    b.put_i64(-1);
    b.put_i32(1);
    put_str(&mut b, topic);
    b.put_i32(1);
    b.put_i32(0);
    b.put_i64(1);
    b.put_i16(-1);
    let mut r = call(s, 8, 2, &b).await;
    assert_eq!(r.get_i32(), 1);
    let _topic = get_str(&mut r);
    assert_eq!(r.get_i32(), 1);
    assert_eq!(r.get_i32(), 0);
    r.get_i16()
}

#[tokio::test]
async fn group_limits_and_commits_outside_the_generation_are_refused() {
    let b = start_broker_with(|c| {
        c.kafka.group_max_size = 1;
        c.kafka.max_groups = 2;
        c.kafka.group_max_member_metadata_bytes = 4096;
    })
    .await;
    let addr = b.kafka_addr.expect("kafka listener");
    let mut s = connect(addr).await;
    assert_eq!(create_topic(&mut s, "grp-t").await, 0);

    // A one-member group, stable after its leader syncs.
    let (error, generation, member) = join(&mut s, "g", "", 16).await;
    assert_eq!(error, 0);
    assert!(generation >= 1);
    assert_eq!(sync(&mut s, "g", generation, &member).await, 0);

    // Negative generations for a group with members: refused as Kafka does;
    // before the fix both were stored.
    assert_eq!(
        commit(&mut s, "g", -1, "", "grp-t").await,
        UNKNOWN_MEMBER_ID
    );
    assert_eq!(
        commit(&mut s, "g", -1, &member, "grp-t").await,
        ILLEGAL_GENERATION
    );
    assert_eq!(commit(&mut s, "g", generation, &member, "grp-t").await, 0);
    // A group nobody joined is only an offset store: generation -1 is fine.
    assert_eq!(commit(&mut s, "standalone", -1, "", "grp-t").await, 0);

    // Members per group.
    let mut other = connect(addr).await;
    let (error, _, _) = join(&mut other, "g", "", 16).await;
    assert_eq!(error, GROUP_MAX_SIZE_REACHED);

    // Groups in total ("g" and "g2"; a third is refused, retriably).
    let (error, _, _) = join(&mut other, "g2", "", 16).await;
    assert_eq!(error, 0);
    let (error, _, _) = join(&mut other, "g3", "", 16).await;
    assert_eq!(error, COORDINATOR_NOT_AVAILABLE);

    // Member metadata over the cap.
    let (error, _, _) = join(&mut other, "g2", "", 5000).await;
    assert_eq!(error, INVALID_REQUEST);

    let metrics = b.metrics.encode();
    for kind in ["group_max_size", "group_limit", "group_metadata_too_large"] {
        let line = format!("broker_protocol_errors_total{{protocol=\"kafka\",kind=\"{kind}\"}} 1");
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in\n{metrics}"
        );
    }
    mqtt_round_trip(b.mqtt_addr, "groups-bystander").await;
}
