//! The decode allocation factor: bytes allocated while decoding a request
//! body / bytes of that body, measured with a counting global allocator (this
//! thread's allocations only, while a decode runs) over worst-case bodies for
//! every api and version the broker serves: arrays of the smallest elements
//! the encoding allows (wide: many elements at the top level; deep: many
//! elements inside one), and arrays announcing more elements than the bytes
//! left can hold. Records, strings and bytes are slices of the frame (no copy),
//! so without a limit the factor is the element structs against their fewest
//! encoded bytes: up to 40 (LeaveGroup v4 members: 120 bytes for 3), 32 for
//! Produce v9. Decoded as the connection does (`decode_body_within`), a body
//! allocates at most 2x its size + 16 KiB (Produce) or 16x + 16 KiB (others);
//! beyond that it is refused before the storage is allocated.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::{decode_allowance, decode_body, decode_body_within};
use crate::kafka::api_versions::SUPPORTED;

struct Counting;

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
    /// The api key `measure` decodes for (chooses the allowance).
    static API: Cell<i16> = const { Cell::new(0) };
}

fn count(bytes: usize) {
    let _ = ON.try_with(|on| {
        if on.get() {
            let _ = ALLOCATED.try_with(|a| a.set(a.get().saturating_add(bytes)));
        }
    });
}

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size.saturating_sub(layout.size()));
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// (bytes received, bytes allocated, decoded) decoding `body` as `T` at
/// `version`, as the connection does when `limited` (else without the
/// allowance); the decoded value is dropped after counting stops.
fn measure<T: Decodable>(body: &Bytes, version: i16, limited: bool) -> (usize, usize, bool) {
    let mut frame = body.clone();
    let api_key = API.with(Cell::get);
    ALLOCATED.with(|a| a.set(0));
    ON.with(|on| on.set(true));
    let decoded = match limited {
        true => decode_body_within::<T>(&mut frame, version, api_key),
        false => decode_body::<T>(&mut frame, version),
    };
    ON.with(|on| on.set(false));
    let allocated = ALLOCATED.with(Cell::get);
    (body.len(), allocated, decoded.is_ok())
}

/// Encodes `req` at `version`; `None` when a field it sets does not exist there.
fn encoded<T: Encodable>(req: &T, version: i16) -> Option<Bytes> {
    let mut b = BytesMut::new();
    req.encode(&mut b, version).ok()?;
    Some(b.freeze())
}

const N: usize = 2000;

fn name() -> TopicName {
    TopicName(StrBytes::from_static_str("t"))
}

/// Worst-case bodies of one api: (shape, request) pairs to encode at each version.
fn bodies(api: ApiKey, v: i16) -> Vec<(&'static str, Option<Bytes>)> {
    use kafka_protocol::messages::{
        create_topics_request as ct, describe_configs_request as dc, fetch_request as f,
        join_group_request as jg, leave_group_request as lg, list_offsets_request as lo,
        metadata_request as md, offset_commit_request as oc, offset_fetch_request as of,
        produce_request as p, sync_group_request as sg,
    };
    match api {
        ApiKey::ApiVersions => vec![("default", encoded(&ApiVersionsRequest::default(), v))],
        ApiKey::Metadata => vec![
            (
                "wide",
                encoded(
                    &MetadataRequest::default().with_topics(Some(vec![
                        md::MetadataRequestTopic::default()
                            .with_name(Some(TopicName::default()));
                        N
                    ])),
                    v,
                ),
            ),
            (
                "wide, names null",
                encoded(
                    &MetadataRequest::default()
                        .with_topics(Some(vec![md::MetadataRequestTopic::default(); N])),
                    v,
                ),
            ),
        ],
        ApiKey::Produce => vec![
            (
                "wide",
                encoded(
                    &ProduceRequest::default()
                        .with_topic_data(vec![p::TopicProduceData::default(); N]),
                    v,
                ),
            ),
            (
                "deep",
                encoded(
                    &ProduceRequest::default()
                        .with_topic_data(vec![p::TopicProduceData::default()
                            .with_name(name())
                            .with_partition_data(vec![p::PartitionProduceData::default(); N])]),
                    v,
                ),
            ),
        ],
        ApiKey::Fetch => vec![
            (
                "wide",
                encoded(
                    &FetchRequest::default().with_topics(vec![f::FetchTopic::default(); N]),
                    v,
                ),
            ),
            (
                "deep",
                encoded(
                    &FetchRequest::default().with_topics(vec![f::FetchTopic::default()
                        .with_topic(name())
                        .with_partitions(vec![f::FetchPartition::default(); N])]),
                    v,
                ),
            ),
            (
                "forgotten",
                encoded(
                    &FetchRequest::default()
                        .with_forgotten_topics_data(vec![f::ForgottenTopic::default(); N]),
                    v,
                ),
            ),
        ],
        ApiKey::ListOffsets => vec![
            (
                "wide",
                encoded(
                    &ListOffsetsRequest::default()
                        .with_topics(vec![lo::ListOffsetsTopic::default(); N]),
                    v,
                ),
            ),
            (
                "deep",
                encoded(
                    &ListOffsetsRequest::default().with_topics(vec![
                        lo::ListOffsetsTopic::default()
                            .with_name(name())
                            .with_partitions(vec![lo::ListOffsetsPartition::default(); N]),
                    ]),
                    v,
                ),
            ),
        ],
        ApiKey::CreateTopics => vec![
            (
                "wide",
                encoded(
                    &CreateTopicsRequest::default()
                        .with_topics(vec![ct::CreatableTopic::default(); N]),
                    v,
                ),
            ),
            (
                "deep",
                encoded(
                    &CreateTopicsRequest::default().with_topics(vec![ct::CreatableTopic::default(
                    )
                    .with_name(name())
                    .with_assignments(vec![ct::CreatableReplicaAssignment::default(); N])
                    .with_configs(vec![ct::CreatableTopicConfig::default(); N])]),
                    v,
                ),
            ),
        ],
        ApiKey::DeleteTopics => vec![(
            "wide",
            encoded(
                &DeleteTopicsRequest::default().with_topic_names(vec![TopicName::default(); N]),
                v,
            ),
        )],
        ApiKey::DescribeConfigs => vec![
            (
                "wide",
                encoded(
                    &DescribeConfigsRequest::default()
                        .with_resources(vec![dc::DescribeConfigsResource::default(); N]),
                    v,
                ),
            ),
            (
                "deep",
                encoded(
                    &DescribeConfigsRequest::default()
                        .with_resources(vec![dc::DescribeConfigsResource::default()
                            .with_configuration_keys(Some(vec![StrBytes::default(); N]))]),
                    v,
                ),
            ),
        ],
        ApiKey::InitProducerId => vec![("default", encoded(&InitProducerIdRequest::default(), v))],
        ApiKey::FindCoordinator => {
            vec![("default", encoded(&FindCoordinatorRequest::default(), v))]
        }
        ApiKey::JoinGroup => vec![(
            "wide",
            encoded(
                &JoinGroupRequest::default()
                    .with_protocols(vec![jg::JoinGroupRequestProtocol::default(); N]),
                v,
            ),
        )],
        ApiKey::SyncGroup => vec![(
            "wide",
            encoded(
                &SyncGroupRequest::default()
                    .with_assignments(vec![sg::SyncGroupRequestAssignment::default(); N]),
                v,
            ),
        )],
        ApiKey::Heartbeat => vec![("default", encoded(&HeartbeatRequest::default(), v))],
        ApiKey::LeaveGroup => vec![
            ("default", encoded(&LeaveGroupRequest::default(), v)),
            (
                "wide",
                encoded(
                    &LeaveGroupRequest::default()
                        .with_members(vec![lg::MemberIdentity::default(); N]),
                    v,
                ),
            ),
        ],
        ApiKey::OffsetCommit => vec![
            (
                "wide",
                encoded(
                    &OffsetCommitRequest::default()
                        .with_topics(vec![oc::OffsetCommitRequestTopic::default(); N]),
                    v,
                ),
            ),
            (
                "deep",
                encoded(
                    &OffsetCommitRequest::default().with_topics(vec![
                        oc::OffsetCommitRequestTopic::default()
                            .with_name(name())
                            .with_partitions(vec![oc::OffsetCommitRequestPartition::default(); N]),
                    ]),
                    v,
                ),
            ),
        ],
        ApiKey::OffsetFetch => vec![
            (
                "wide",
                encoded(
                    &OffsetFetchRequest::default()
                        .with_topics(Some(vec![of::OffsetFetchRequestTopic::default(); N])),
                    v,
                ),
            ),
            (
                "deep",
                encoded(
                    &OffsetFetchRequest::default().with_topics(Some(vec![
                        of::OffsetFetchRequestTopic::default()
                            .with_name(name())
                            .with_partition_indexes(vec![0; N]),
                    ])),
                    v,
                ),
            ),
        ],
        // No arrays: the token is a slice of the frame.
        ApiKey::SaslHandshake => vec![(
            "default",
            encoded(
                &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")),
                v,
            ),
        )],
        ApiKey::SaslAuthenticate => vec![(
            "default",
            encoded(
                &SaslAuthenticateRequest::default()
                    .with_auth_bytes(Bytes::from_static(b"n,,n=user,r=nonce")),
                v,
            ),
        )],
        other => panic!("{other:?} is served but has no worst-case body here"),
    }
}

/// Decodes `body` as the request type of `api`.
fn measure_api(api: ApiKey, body: &Bytes, v: i16, limited: bool) -> (usize, usize, bool) {
    API.with(|a| a.set(api as i16));
    match api {
        ApiKey::ApiVersions => measure::<ApiVersionsRequest>(body, v, limited),
        ApiKey::Metadata => measure::<MetadataRequest>(body, v, limited),
        ApiKey::Produce => measure::<ProduceRequest>(body, v, limited),
        ApiKey::Fetch => measure::<FetchRequest>(body, v, limited),
        ApiKey::ListOffsets => measure::<ListOffsetsRequest>(body, v, limited),
        ApiKey::CreateTopics => measure::<CreateTopicsRequest>(body, v, limited),
        ApiKey::DeleteTopics => measure::<DeleteTopicsRequest>(body, v, limited),
        ApiKey::DescribeConfigs => measure::<DescribeConfigsRequest>(body, v, limited),
        ApiKey::InitProducerId => measure::<InitProducerIdRequest>(body, v, limited),
        ApiKey::FindCoordinator => measure::<FindCoordinatorRequest>(body, v, limited),
        ApiKey::JoinGroup => measure::<JoinGroupRequest>(body, v, limited),
        ApiKey::SyncGroup => measure::<SyncGroupRequest>(body, v, limited),
        ApiKey::Heartbeat => measure::<HeartbeatRequest>(body, v, limited),
        ApiKey::LeaveGroup => measure::<LeaveGroupRequest>(body, v, limited),
        ApiKey::OffsetCommit => measure::<OffsetCommitRequest>(body, v, limited),
        ApiKey::OffsetFetch => measure::<OffsetFetchRequest>(body, v, limited),
        ApiKey::SaslHandshake => measure::<SaslHandshakeRequest>(body, v, limited),
        ApiKey::SaslAuthenticate => measure::<SaslAuthenticateRequest>(body, v, limited),
        other => panic!("{other:?} has no decoder here"),
    }
}

/// A body whose first four bytes announce 2^31 - 1 array elements (an i32
/// count, or a varint one after a 0 for flexible versions), then zeros.
fn hostile_counts(len: usize) -> Vec<Bytes> {
    let mut int32 = vec![0u8; len];
    int32[..4].copy_from_slice(&0x7fff_ffffu32.to_be_bytes());
    let mut varint = vec![0u8; len];
    varint[..5].copy_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    // After one i16/compact string (empty) and before the array: common layouts.
    let mut after_string = vec![0u8; len];
    after_string[2..6].copy_from_slice(&0x7fff_ffffu32.to_be_bytes());
    let mut after_compact = vec![0u8; len];
    after_compact[0] = 1;
    after_compact[1..6].copy_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    [int32, varint, after_string, after_compact]
        .into_iter()
        .map(Bytes::from)
        .collect()
}

#[test]
fn every_served_request_decodes_within_its_allowance() {
    let (mut worst_unlimited, mut worst) = ((0.0f64, String::new()), (0.0f64, String::new()));
    let mut measured = 0;
    for (api, min, max) in SUPPORTED {
        for v in *min..=*max {
            let bound = |received: usize| decode_allowance(*api as i16, received);
            let mut cases: Vec<(String, Bytes)> = bodies(*api, v)
                .into_iter()
                .filter_map(|(shape, body)| Some((shape.to_string(), body?)))
                .collect();
            // The encoded bodies decode without a limit: that is the raw factor.
            for (shape, body) in &cases {
                let (received, allocated, ok) = measure_api(*api, body, v, false);
                assert!(ok, "{api:?} v{v} {shape}: the encoded body decodes");
                let factor = allocated as f64 / received as f64;
                if factor > worst_unlimited.0 {
                    worst_unlimited = (factor, format!("{api:?} v{v} {shape}"));
                }
            }
            cases.extend(
                hostile_counts(64 * 1024)
                    .into_iter()
                    .enumerate()
                    .map(|(i, b)| (format!("hostile count {i}"), b)),
            );
            for (shape, body) in &cases {
                let (received, allocated, ok) = measure_api(*api, body, v, true);
                measured += 1;
                assert!(
                    allocated <= bound(received),
                    "{api:?} v{v} {shape} (decoded: {ok}): {allocated} B for {received} B, allowed {}",
                    bound(received)
                );
                let factor = allocated as f64 / received as f64;
                if factor > worst.0 {
                    worst = (
                        factor,
                        format!("{api:?} v{v} {shape}: {allocated} B for {received} B"),
                    );
                }
            }
        }
    }
    assert!(measured > 300, "{measured} bodies measured");
    eprintln!(
        "decode allocation factor over {measured} bodies: unlimited {:.1} ({}), as the broker decodes {:.1} ({})",
        worst_unlimited.0, worst_unlimited.1, worst.0, worst.1
    );
    assert!(worst_unlimited.0 > 16.0, "the worst cases are worst cases");
}

/// Requests real clients send, with many elements, decode within the allowance.
#[test]
fn realistic_requests_decode_within_the_allowance() {
    use kafka_protocol::messages::{
        fetch_request as f, metadata_request as md, offset_commit_request as oc,
        produce_request as p,
    };
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    let topic = |i: usize| TopicName(StrBytes::from_string(format!("topic-{i}")));
    let metadata = |n: usize, name: &dyn Fn(usize) -> TopicName| {
        MetadataRequest::default().with_topics(Some(
            (0..n)
                .map(|i| md::MetadataRequestTopic::default().with_name(Some(name(i))))
                .collect(),
        ))
    };
    let mut batch = BytesMut::new();
    let record = Record {
        transactional: false,
        control: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: 0,
        key: None,
        value: Some(Bytes::from_static(b"v")),
        headers: Default::default(),
        delete_horizon: false,
    };
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut batch, [record].iter(), &options).unwrap();
    let batch = batch.freeze();
    let produce = ProduceRequest::default().with_acks(1).with_topic_data(
        (0..100)
            .map(|t| {
                p::TopicProduceData::default()
                    .with_name(topic(t))
                    .with_partition_data(
                        (0..10)
                            .map(|i| {
                                p::PartitionProduceData::default()
                                    .with_index(i)
                                    .with_records(Some(batch.clone()))
                            })
                            .collect(),
                    )
            })
            .collect(),
    );
    let fetch = FetchRequest::default().with_topics(
        (0..100)
            .map(|t| {
                f::FetchTopic::default()
                    .with_topic(topic(t))
                    .with_partitions(
                        (0..10)
                            .map(|i| f::FetchPartition::default().with_partition(i))
                            .collect(),
                    )
            })
            .collect(),
    );
    let commit =
        OffsetCommitRequest::default().with_topics(vec![oc::OffsetCommitRequestTopic::default()
            .with_name(topic(0))
            .with_partitions(
                (0..1000)
                    .map(|i| oc::OffsetCommitRequestPartition::default().with_partition_index(i))
                    .collect(),
            )]);
    let one_char = |i: usize| {
        TopicName(StrBytes::from_string(
            ((b'a' + (i % 26) as u8) as char).to_string(),
        ))
    };
    for v in [1, 4, 9, 12] {
        let body = encoded(&metadata(1000, &topic), v).unwrap();
        assert!(
            measure_api(ApiKey::Metadata, &body, v, true).2,
            "Metadata v{v}"
        );
        let body = encoded(&metadata(26, &one_char), v).unwrap();
        assert!(
            measure_api(ApiKey::Metadata, &body, v, true).2,
            "Metadata v{v}, 1-char names"
        );
    }
    for v in [3, 7, 9] {
        let body = encoded(&produce, v).unwrap();
        assert!(
            measure_api(ApiKey::Produce, &body, v, true).2,
            "Produce v{v}"
        );
    }
    for v in [4, 11, 12] {
        let body = encoded(&fetch, v).unwrap();
        assert!(measure_api(ApiKey::Fetch, &body, v, true).2, "Fetch v{v}");
    }
    for v in [2, 8] {
        let body = encoded(&commit, v).unwrap();
        assert!(
            measure_api(ApiKey::OffsetCommit, &body, v, true).2,
            "OffsetCommit v{v}"
        );
    }
}

#[test]
fn a_count_that_cannot_fit_allocates_nothing_for_its_elements() {
    // Metadata v1 (the request), 512 KiB: 2^31 - 1 topics announced,
    // at least 2 bytes each. Before the bound this reserved 524,288 elements
    // (~37 MiB) and decoded 262,142 empty names before failing.
    API.with(|a| a.set(ApiKey::Metadata as i16));
    let mut body = vec![0u8; 512 * 1024];
    body[..4].copy_from_slice(&0x7fff_ffffu32.to_be_bytes());
    let body = Bytes::from(body);
    let (received, allocated, ok) = measure::<MetadataRequest>(&body, 1, false);
    assert!(!ok);
    assert!(
        allocated < 4096,
        "{allocated} B allocated refusing {received} B"
    );
}
