//! One request in, its response out: the match on api key that hands each
//! request to its handler, and the answers for APIs and versions not served.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::sync::OwnedSemaphorePermit;

use super::api_versions;
use super::authorize::{self as guard, Authorizer};
use super::codec::{self, DecodeError};
use super::connection::{Close, Session};
use super::hub::KafkaHub;
use crate::metrics::{Protocol, ProtocolCounters};

/// Whether a request of this api key may wait (long poll, rebalance), so
/// responses already queued should be written before it is handled.
pub fn may_wait(api_key: i16) -> bool {
    [ApiKey::Fetch, ApiKey::JoinGroup, ApiKey::SyncGroup]
        .iter()
        .any(|a| *a as i16 == api_key)
}

/// Handles one request frame, appending its response (if it has one) to `out`.
/// A malformed request is an error: the connection is closed, as Kafka does;
/// so is a request other than ApiVersions and SASL before a required login,
/// and a failed SASL step (after its answer).
/// `budget` (the request's share of `kafka.decode_budget_bytes`) is given
/// back once the request is handled (its frame, which the decoded request
/// still points into, is dropped then), or, for the requests that may wait
/// (Fetch long polls, JoinGroup, SyncGroup), as soon as the body is decoded.
pub async fn handle(
    hub: &Arc<KafkaHub>,
    frame: Bytes,
    budget: Option<OwnedSemaphorePermit>,
    out: &mut BytesMut,
    counters: &ProtocolCounters,
    session: &mut Session,
) -> Result<(), Close> {
    let start = codec::request_start(&frame);
    let mut body = Body {
        frame,
        budget,
        api_key: start.api_key,
    };
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
            )
            .map_err(Close::from);
        }
        codec::encode_unsupported(out, start.correlation_id);
        return Ok(());
    };
    let v = start.api_version;
    let header = codec::decode_header(&mut body.frame, api, v)?;
    if !session.login.may_serve() && !allowed_before_login(api) {
        return Err(Close {
            kind: "sasl_login_required",
            why: format!("{api:?} before a SASL login (kafka.allow_anonymous is off)"),
        });
    }
    let listener = session.listener;
    // Every request is checked against the Kafka ACLs as this user.
    let authz = Authorizer::new(
        session.login.auth().clone(),
        session.login.principal().cloned(),
    );
    let client_id = header.client_id.as_deref().unwrap_or("").to_string();
    let header_version = api.response_header_version(v);
    let mut respond = |body: &dyn EncodeDyn| {
        body.encode_into(out, start.correlation_id, header_version, v)
            .map_err(Close::from)
    };
    match api {
        ApiKey::SaslHandshake => {
            let (resp, next) = session.login.handshake(&hub.sasl, body.decode(v)?, v);
            respond(&resp)?;
            next
        }
        ApiKey::SaslAuthenticate => {
            let (resp, next) = session
                .login
                .authenticate(&hub.sasl, &hub.metrics, body.decode(v)?)
                .await;
            respond(&resp)?;
            next
        }
        ApiKey::ApiVersions => respond(&api_versions::handle(body.decode(v)?)),
        ApiKey::Metadata => {
            respond(&guard::metadata(hub, &authz, body.decode(v)?, v, listener).await)
        }
        ApiKey::Produce => {
            let (resp, stored) = guard::produce(hub, &authz, body.decode(v)?).await;
            counters.messages_received.inc_by(stored);
            match resp {
                Some(resp) => respond(&resp),
                None => Ok(()),
            }
        }
        ApiKey::Fetch => {
            let (resp, records) = guard::fetch(hub, &authz, body.decode(v)?).await;
            counters.messages_sent.inc_by(records);
            respond(&resp)
        }
        ApiKey::ListOffsets => respond(&guard::list_offsets(hub, &authz, body.decode(v)?).await),
        ApiKey::CreateTopics => respond(&guard::create_topics(hub, &authz, body.decode(v)?).await),
        ApiKey::DeleteTopics => respond(&guard::delete_topics(hub, &authz, body.decode(v)?).await),
        ApiKey::DescribeConfigs => respond(&guard::describe_configs(hub, &authz, body.decode(v)?)),
        ApiKey::InitProducerId => respond(&guard::init_producer_id(hub, &authz, body.decode(v)?)),
        ApiKey::FindCoordinator => respond(&guard::find_coordinator(
            hub,
            &authz,
            body.decode(v)?,
            listener,
        )),
        ApiKey::JoinGroup => {
            respond(&guard::join(hub, &authz, body.decode(v)?, &client_id, v).await)
        }
        ApiKey::SyncGroup => respond(&guard::sync(hub, &authz, body.decode(v)?).await),
        ApiKey::Heartbeat => respond(&guard::heartbeat(hub, &authz, body.decode(v)?)),
        ApiKey::LeaveGroup => respond(&guard::leave(hub, &authz, body.decode(v)?, v)),
        ApiKey::OffsetCommit => respond(&guard::offset_commit(hub, &authz, body.decode(v)?).await),
        ApiKey::OffsetFetch => respond(&guard::offset_fetch(hub, &authz, body.decode(v)?, v)),
        other => unreachable!("{other:?} is in the supported table but has no handler"),
    }
}

/// The requests a client may send before its SASL login.
fn allowed_before_login(api: ApiKey) -> bool {
    matches!(
        api,
        ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
    )
}

/// A request's body and the decode budget it holds until decoded.
struct Body {
    frame: Bytes,
    budget: Option<OwnedSemaphorePermit>,
    api_key: i16,
}

impl Body {
    fn decode<T: Decodable>(&mut self, version: i16) -> Result<T, DecodeError> {
        let decoded = codec::decode_body_within(&mut self.frame, version, self.api_key);
        if may_wait(self.api_key) {
            self.budget = None;
        }
        decoded
    }
}

/// Decodes one request frame (as `next_frame` returns it) the way
/// [`handle`] does, without handling it: the header and the body of every
/// API served, through the same `codec` calls and decode allowance. `Ok(None)` for an API or
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
    let api_key = start.api_key;
    let f = &mut frame;
    match api {
        ApiKey::ApiVersions => drop(codec::decode_body_within::<ApiVersionsRequest>(
            f, v, api_key,
        )?),
        ApiKey::Metadata => drop(codec::decode_body_within::<MetadataRequest>(f, v, api_key)?),
        ApiKey::Produce => drop(codec::decode_body_within::<ProduceRequest>(f, v, api_key)?),
        ApiKey::Fetch => drop(codec::decode_body_within::<FetchRequest>(f, v, api_key)?),
        ApiKey::ListOffsets => drop(codec::decode_body_within::<ListOffsetsRequest>(
            f, v, api_key,
        )?),
        ApiKey::CreateTopics => drop(codec::decode_body_within::<CreateTopicsRequest>(
            f, v, api_key,
        )?),
        ApiKey::DeleteTopics => drop(codec::decode_body_within::<DeleteTopicsRequest>(
            f, v, api_key,
        )?),
        ApiKey::DescribeConfigs => drop(codec::decode_body_within::<DescribeConfigsRequest>(
            f, v, api_key,
        )?),
        ApiKey::InitProducerId => drop(codec::decode_body_within::<InitProducerIdRequest>(
            f, v, api_key,
        )?),
        ApiKey::FindCoordinator => drop(codec::decode_body_within::<FindCoordinatorRequest>(
            f, v, api_key,
        )?),
        ApiKey::JoinGroup => drop(codec::decode_body_within::<JoinGroupRequest>(
            f, v, api_key,
        )?),
        ApiKey::SyncGroup => drop(codec::decode_body_within::<SyncGroupRequest>(
            f, v, api_key,
        )?),
        ApiKey::Heartbeat => drop(codec::decode_body_within::<HeartbeatRequest>(
            f, v, api_key,
        )?),
        ApiKey::LeaveGroup => drop(codec::decode_body_within::<LeaveGroupRequest>(
            f, v, api_key,
        )?),
        ApiKey::OffsetCommit => drop(codec::decode_body_within::<OffsetCommitRequest>(
            f, v, api_key,
        )?),
        ApiKey::OffsetFetch => drop(codec::decode_body_within::<OffsetFetchRequest>(
            f, v, api_key,
        )?),
        ApiKey::SaslHandshake => drop(codec::decode_body_within::<SaslHandshakeRequest>(
            f, v, api_key,
        )?),
        ApiKey::SaslAuthenticate => drop(codec::decode_body_within::<SaslAuthenticateRequest>(
            f, v, api_key,
        )?),
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
