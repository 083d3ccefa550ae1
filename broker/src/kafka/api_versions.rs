//! ApiVersions: the APIs and version ranges this broker serves. The ranges
//! stop before versions that address topics by id only (Fetch 13+, Produce
//! 13+, ...), which this broker does not assign.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::ResponseError;

/// (api, lowest, highest version) served.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 6),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::FindCoordinator, 0, 3),
    (ApiKey::JoinGroup, 0, 7),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 4),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 5),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
];

/// The API, when this broker serves `key` at `version`.
pub fn supported(key: i16, version: i16) -> Option<ApiKey> {
    SUPPORTED
        .iter()
        .find(|(api, min, max)| *api as i16 == key && (*min..=*max).contains(&version))
        .map(|(api, _, _)| *api)
}

fn api_keys() -> Vec<ApiVersion> {
    SUPPORTED
        .iter()
        .map(|(api, min, max)| {
            ApiVersion::default()
                .with_api_key(*api as i16)
                .with_min_version(*min)
                .with_max_version(*max)
        })
        .collect()
}

pub fn handle(_req: ApiVersionsRequest) -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(api_keys())
}

/// The answer to an ApiVersions request of a version this broker does not
/// know: UNSUPPORTED_VERSION plus the supported ranges, encoded as v0 so any
/// client can read it and retry with a version both sides know.
pub fn unsupported() -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(api_keys())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_fit_the_codec() {
        for (api, min, max) in SUPPORTED {
            let codec = api.valid_versions();
            assert!(
                codec.min <= *min && *max <= codec.max,
                "{api:?} {min}..={max} vs {codec:?}"
            );
        }
        assert_eq!(supported(18, 3), Some(ApiKey::ApiVersions));
        assert_eq!(supported(18, 4), None);
        assert_eq!(
            supported(0, 2),
            None,
            "Produce before v3 (magic 2) is not served"
        );
        assert_eq!(supported(999, 0), None);
    }
}
