//! One request in, its response out: the match on api key that hands each
//! request to its handler, and the answers for APIs and versions not served.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::Encodable;

use super::codec::{self, DecodeError};
use super::hub::KafkaHub;
use super::{admin, api_versions, fetch, group_api, metadata, produce};
use crate::metrics::{Protocol, ProtocolCounters};

/// Whether a request of this api key may wait (long poll, rebalance), so
/// responses already queued should be written before it is handled.
pub fn may_wait(api_key: i16) -> bool {
    [ApiKey::Fetch, ApiKey::JoinGroup, ApiKey::SyncGroup]
        .iter()
        .any(|a| *a as i16 == api_key)
}

/// Handles one request frame, appending its response (if it has one) to `out`.
/// A malformed request is an error: the connection is closed, as Kafka does.
pub async fn handle(
    hub: &Arc<KafkaHub>,
    mut frame: Bytes,
    out: &mut BytesMut,
    counters: &ProtocolCounters,
) -> Result<(), DecodeError> {
    let start = codec::request_start(&frame);
    let Some(api) = api_versions::supported(start.api_key, start.api_version) else {
        let known = ApiKey::try_from(start.api_key).is_ok();
        hub.metrics.protocol_error(
            Protocol::Kafka,
            if known {
                "unsupported_version"
            } else {
                "unknown_api_key"
            },
        );
        tracing::debug!(
            "kafka: api key {} version {} not served; answering UNSUPPORTED_VERSION",
            start.api_key,
            start.api_version
        );
        if start.api_key == ApiKey::ApiVersions as i16 {
            return codec::encode_response(
                out,
                start.correlation_id,
                0,
                &api_versions::unsupported(),
                0,
            );
        }
        codec::encode_unsupported(out, start.correlation_id);
        return Ok(());
    };
    let v = start.api_version;
    let header = codec::decode_header(&mut frame, api, v)?;
    let client_id = header.client_id.as_deref().unwrap_or("").to_string();
    let header_version = api.response_header_version(v);
    let mut respond =
        |body: &dyn EncodeDyn| body.encode_into(out, start.correlation_id, header_version, v);
    match api {
        ApiKey::ApiVersions => respond(&api_versions::handle(codec::decode_body(&mut frame, v)?)),
        ApiKey::Metadata => respond(&metadata::handle(
            hub,
            codec::decode_body(&mut frame, v)?,
            v,
        )),
        ApiKey::Produce => {
            let (resp, stored) = produce::handle(hub, codec::decode_body(&mut frame, v)?).await;
            counters.messages_received.inc_by(stored);
            match resp {
                Some(resp) => respond(&resp),
                None => Ok(()),
            }
        }
        ApiKey::Fetch => {
            let (resp, records) = fetch::handle(hub, codec::decode_body(&mut frame, v)?).await;
            counters.messages_sent.inc_by(records);
            respond(&resp)
        }
        ApiKey::ListOffsets => {
            respond(&fetch::list_offsets(hub, codec::decode_body(&mut frame, v)?).await)
        }
        ApiKey::CreateTopics => {
            respond(&admin::create_topics(hub, codec::decode_body(&mut frame, v)?).await)
        }
        ApiKey::DeleteTopics => {
            respond(&admin::delete_topics(hub, codec::decode_body(&mut frame, v)?).await)
        }
        ApiKey::DescribeConfigs => respond(&admin::describe_configs(
            hub,
            codec::decode_body(&mut frame, v)?,
        )),
        ApiKey::InitProducerId => {
            respond(&hub.producer_ids.handle(codec::decode_body(&mut frame, v)?))
        }
        ApiKey::FindCoordinator => respond(&metadata::find_coordinator(
            hub,
            codec::decode_body(&mut frame, v)?,
        )),
        ApiKey::JoinGroup => {
            respond(&group_api::join(hub, codec::decode_body(&mut frame, v)?, &client_id, v).await)
        }
        ApiKey::SyncGroup => {
            respond(&group_api::sync(hub, codec::decode_body(&mut frame, v)?).await)
        }
        ApiKey::Heartbeat => respond(&group_api::heartbeat(
            hub,
            codec::decode_body(&mut frame, v)?,
        )),
        ApiKey::LeaveGroup => respond(&group_api::leave(
            hub,
            codec::decode_body(&mut frame, v)?,
            v,
        )),
        ApiKey::OffsetCommit => {
            respond(&group_api::offset_commit(hub, codec::decode_body(&mut frame, v)?).await)
        }
        ApiKey::OffsetFetch => respond(&group_api::offset_fetch(
            hub,
            codec::decode_body(&mut frame, v)?,
        )),
        other => unreachable!("{other:?} is in the supported table but has no handler"),
    }
}

/// Decodes one request frame (as `next_frame` returns it) the way
/// [`handle`] does, without handling it: the header and the body of every
/// API served, through the same `codec` calls. `Ok(None)` for an API or
/// version not served (answered without decoding). For the fuzz targets and
/// tests; keep its match in step with the one in `handle`.
#[doc(hidden)]
pub fn decode_request(mut frame: Bytes) -> Result<Option<ApiKey>, DecodeError> {
    let start = codec::request_start(&frame);
    let Some(api) = api_versions::supported(start.api_key, start.api_version) else {
        return Ok(None);
    };
    let v = start.api_version;
    codec::decode_header(&mut frame, api, v)?;
    let f = &mut frame;
    match api {
        ApiKey::ApiVersions => drop(codec::decode_body::<ApiVersionsRequest>(f, v)?),
        ApiKey::Metadata => drop(codec::decode_body::<MetadataRequest>(f, v)?),
        ApiKey::Produce => drop(codec::decode_body::<ProduceRequest>(f, v)?),
        ApiKey::Fetch => drop(codec::decode_body::<FetchRequest>(f, v)?),
        ApiKey::ListOffsets => drop(codec::decode_body::<ListOffsetsRequest>(f, v)?),
        ApiKey::CreateTopics => drop(codec::decode_body::<CreateTopicsRequest>(f, v)?),
        ApiKey::DeleteTopics => drop(codec::decode_body::<DeleteTopicsRequest>(f, v)?),
        ApiKey::DescribeConfigs => drop(codec::decode_body::<DescribeConfigsRequest>(f, v)?),
        ApiKey::InitProducerId => drop(codec::decode_body::<InitProducerIdRequest>(f, v)?),
        ApiKey::FindCoordinator => drop(codec::decode_body::<FindCoordinatorRequest>(f, v)?),
        ApiKey::JoinGroup => drop(codec::decode_body::<JoinGroupRequest>(f, v)?),
        ApiKey::SyncGroup => drop(codec::decode_body::<SyncGroupRequest>(f, v)?),
        ApiKey::Heartbeat => drop(codec::decode_body::<HeartbeatRequest>(f, v)?),
        ApiKey::LeaveGroup => drop(codec::decode_body::<LeaveGroupRequest>(f, v)?),
        ApiKey::OffsetCommit => drop(codec::decode_body::<OffsetCommitRequest>(f, v)?),
        ApiKey::OffsetFetch => drop(codec::decode_body::<OffsetFetchRequest>(f, v)?),
        other => unreachable!("{other:?} is in the supported table but has no decoder"),
    }
    Ok(Some(api))
}

/// Lets the one `respond` closure above take every response type.
trait EncodeDyn {
    fn encode_into(
        &self,
        out: &mut BytesMut,
        correlation_id: i32,
        header_version: i16,
        version: i16,
    ) -> Result<(), DecodeError>;
}

impl<T: Encodable> EncodeDyn for T {
    fn encode_into(
        &self,
        out: &mut BytesMut,
        correlation_id: i32,
        header_version: i16,
        version: i16,
    ) -> Result<(), DecodeError> {
        codec::encode_response(out, correlation_id, header_version, self, version)
    }
}
