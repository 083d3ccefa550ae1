//! Raw Kafka frames over TCP: request builder, response reader and the
//! ApiVersions round trip the hostile-input tests use as their bystander.

use std::net::SocketAddr;

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::common::WAIT;

/// A request frame: size, api key, version, correlation id, client id "t", body.
pub fn request(api_key: i16, version: i16, correlation_id: i32, body: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_i32(0);
    b.put_i16(api_key);
    b.put_i16(version);
    b.put_i32(correlation_id);
    b.put_i16(1);
    b.put_u8(b't');
    b.put_slice(body);
    let size = (b.len() - 4) as i32;
    b[..4].copy_from_slice(&size.to_be_bytes());
    b
}

/// Reads one response frame: (correlation id, rest of the frame).
pub async fn response(s: &mut (impl AsyncRead + AsyncWrite + Unpin)) -> (i32, BytesMut) {
    let size = timeout(WAIT, s.read_i32())
        .await
        .expect("answer in time")
        .expect("a response");
    let mut body = vec![0u8; size as usize];
    timeout(WAIT, s.read_exact(&mut body))
        .await
        .expect("the whole response in time")
        .expect("the whole response");
    let mut body = BytesMut::from(&body[..]);
    let correlation_id = body.get_i32();
    (correlation_id, body)
}

/// ApiVersions v0 works on this connection: our correlation id, error 0 and
/// a non-empty list.
pub async fn api_versions_ok(s: &mut (impl AsyncRead + AsyncWrite + Unpin), correlation_id: i32) {
    s.write_all(&request(18, 0, correlation_id, &[]))
        .await
        .expect("request written");
    s.flush().await.expect("request flushed");
    let (id, mut body) = response(s).await;
    assert_eq!(id, correlation_id);
    assert_eq!(body.get_i16(), 0, "ApiVersions error code");
    assert!(body.get_i32() > 10, "api list");
}

/// One Kafka round trip on a new connection.
pub async fn round_trip(addr: SocketAddr) {
    let mut s = timeout(WAIT, TcpStream::connect(addr))
        .await
        .expect("Kafka connect in time")
        .expect("Kafka listener accepts");
    api_versions_ok(&mut s, 7).await;
}

/// One uncompressed record batch (v2) holding one record of `value_len`
/// bytes, as a producer would send it.
pub fn batch(value_len: usize) -> BytesMut {
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    let record = Record {
        transactional: false,
        control: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: 1_700_000_000_000,
        key: None,
        value: Some(bytes::Bytes::from(vec![b'v'; value_len])),
        headers: Default::default(),
        delete_horizon: false,
    };
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        [record].iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("a one-record batch encodes");
    buf
}
