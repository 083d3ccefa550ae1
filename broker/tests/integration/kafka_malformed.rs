//! Raw bytes at the Kafka listener: bad frame sizes, unknown api keys,
//! unsupported versions and truncated requests. Each gets the answer (or
//! the closed connection) the protocol calls for, and other connections
//! carry on.

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::common::{start_broker_with, WAIT};
use crate::raw_kafka::{api_versions_ok, request, response};

/// Asserts the peer closed the connection (EOF or reset) without answering.
async fn closed(s: &mut TcpStream) {
    let mut byte = [0u8; 1];
    match timeout(WAIT, s.read(&mut byte))
        .await
        .expect("closed in time")
    {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!("expected a closed connection, read {n} bytes"),
    }
}

async fn connect(addr: std::net::SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.unwrap()
}

#[tokio::test]
async fn bad_frame_sizes_close_only_that_connection() {
    let broker = start_broker_with(|c| c.kafka.max_frame_bytes = 4096).await;
    let addr = broker.kafka_addr.unwrap();
    let mut bystander = connect(addr).await;
    api_versions_ok(&mut bystander, 1).await;

    for size in [-1i32, i32::MIN, 4097, i32::MAX, 3] {
        let mut s = connect(addr).await;
        s.write_all(&size.to_be_bytes()).await.unwrap();
        s.write_all(&[0u8; 16]).await.unwrap();
        closed(&mut s).await;
        api_versions_ok(&mut bystander, size).await;
    }
    let errors = broker.metrics.encode();
    assert!(
        errors.contains("protocol=\"kafka\",kind=\"frame_size_negative\""),
        "{errors}"
    );
    assert!(errors.contains("kind=\"frame_too_large\""), "{errors}");
    broker.shutdown().await;
}

#[tokio::test]
async fn unknown_api_key_and_unsupported_version_are_answered() {
    let broker = start_broker_with(|_| {}).await;
    let addr = broker.kafka_addr.unwrap();
    let mut s = connect(addr).await;

    // Unknown api key: header v0 with the correlation id, error 35, connection kept.
    s.write_all(&request(9999, 0, 41, &[1, 2, 3]))
        .await
        .unwrap();
    let (id, mut body) = response(&mut s).await;
    assert_eq!(id, 41);
    assert_eq!(body.get_i16(), 35, "UNSUPPORTED_VERSION");

    // Produce v2 (message format 1) is not served: the same answer.
    s.write_all(&request(0, 2, 42, &[0, 1])).await.unwrap();
    let (id, mut body) = response(&mut s).await;
    assert_eq!(id, 42);
    assert_eq!(body.get_i16(), 35);

    // ApiVersions of a future version: a v0 body with error 35 and the supported ranges.
    s.write_all(&request(18, 99, 43, &[0xde, 0xad]))
        .await
        .unwrap();
    let (id, mut body) = response(&mut s).await;
    assert_eq!(id, 43);
    assert_eq!(body.get_i16(), 35);
    let n = body.get_i32();
    assert!(n > 10, "lists the supported APIs: {n}");
    let ranges: Vec<(i16, i16, i16)> = (0..n)
        .map(|_| (body.get_i16(), body.get_i16(), body.get_i16()))
        .collect();
    assert!(ranges.contains(&(18, 0, 3)), "{ranges:?}");
    assert!(body.is_empty(), "a v0 body ends after the list");

    // The connection still serves requests.
    api_versions_ok(&mut s, 44).await;
    broker.shutdown().await;
}

#[tokio::test]
async fn truncated_requests_close_the_connection_and_others_carry_on() {
    let broker = start_broker_with(|_| {}).await;
    let addr = broker.kafka_addr.unwrap();
    let mut bystander = connect(addr).await;
    api_versions_ok(&mut bystander, 1).await;

    // Metadata v1 whose topic array promises 5 names but the frame ends.
    let mut s = connect(addr).await;
    s.write_all(&request(3, 1, 7, &[0, 0, 0, 5, 0, 3, b'a']))
        .await
        .unwrap();
    closed(&mut s).await;
    api_versions_ok(&mut bystander, 2).await;

    // A header cut short inside the client id.
    let mut s = connect(addr).await;
    s.write_all(&[0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 9, 0, 40])
        .await
        .unwrap();
    closed(&mut s).await;

    // A frame that never completes: the client gives up and closes.
    let mut s = connect(addr).await;
    s.write_all(&[0, 0, 0, 100, 0, 18, 0, 0]).await.unwrap();
    drop(s);

    // A produce whose record batch fails its CRC gets CORRUPT_MESSAGE, not a crash.
    let mut s = connect(addr).await;
    let mut body = BytesMut::new();
    body.put_i16(-1); // transactional id: null
    body.put_i16(1); // acks
    body.put_i32(1000); // timeout
    body.put_i32(1); // one topic
    body.put_i16(3);
    body.put_slice(b"crc");
    body.put_i32(1); // one partition
    body.put_i32(0);
    let mut batch = vec![0u8; 70];
    batch[8..12].copy_from_slice(&58i32.to_be_bytes()); // batch length
    batch[16] = 2; // magic
    body.put_i32(batch.len() as i32);
    body.put_slice(&batch);
    // The topic must exist for the batch to be looked at: ask for it first.
    s.write_all(&request(3, 1, 8, &[0, 0, 0, 1, 0, 3, b'c', b'r', b'c']))
        .await
        .unwrap();
    response(&mut s).await;
    s.write_all(&request(0, 3, 9, &body)).await.unwrap();
    let (id, mut resp) = response(&mut s).await;
    assert_eq!(id, 9);
    assert_eq!(resp.get_i32(), 1, "one topic");
    let name_len = resp.get_i16() as usize;
    resp.advance(name_len);
    assert_eq!(resp.get_i32(), 1, "one partition");
    assert_eq!(resp.get_i32(), 0, "partition index");
    assert_eq!(resp.get_i16(), 2, "CORRUPT_MESSAGE");

    api_versions_ok(&mut bystander, 3).await;
    // Counted before the connection was closed, which `closed` above observed.
    let errors = broker.metrics.encode();
    assert!(errors.contains("kind=\"malformed_request\""), "{errors}");
    broker.shutdown().await;
}

#[tokio::test]
async fn huge_array_count_is_refused_not_fatal() {
    let broker = start_broker_with(|_| {}).await;
    let addr = broker.kafka_addr.unwrap();
    let mut bystander = connect(addr).await;
    // Metadata v1 announcing 2^31 - 1 topics in a 14-byte frame (v0-style
    // int32 count) and v9 (flexible: empty header tags, varint count near 2^32).
    let mut s = connect(addr).await;
    s.write_all(&request(3, 1, 5, &[0x7f, 0xff, 0xff, 0xff]))
        .await
        .unwrap();
    closed(&mut s).await;
    let mut s = connect(addr).await;
    let flexible = request(3, 9, 6, &[0, 0xff, 0xff, 0xff, 0xff, 0x0f]);
    s.write_all(&flexible).await.unwrap();
    closed(&mut s).await;
    api_versions_ok(&mut bystander, 7).await;
    broker.shutdown().await;
}
