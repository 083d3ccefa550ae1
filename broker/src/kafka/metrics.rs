//! Kafka's own counters (SASL logins, requests refused by the ACLs), kept by the Kafka connections and
//! registered with the rest by `metrics.rs`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SaslLoginLabels {
    mechanism: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeniedLabels {
    api: &'static str,
    resource: &'static str,
}

#[derive(Debug, Default)]
pub struct KafkaMetrics {
    sasl_logins: Family<SaslLoginLabels, Counter>,
    denied: Family<DeniedLabels, Counter>,
}

impl KafkaMetrics {
    /// Registers every counter under `registry` (its prefix applies).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "kafka_sasl_logins",
            "Kafka SASL logins, by mechanism and result (ok, failed)",
            self.sasl_logins.clone(),
        );
        registry.register(
            "kafka_denied",
            "Kafka resources refused by the ACLs ([[kafka]]), by api and resource (topic, group, cluster): one per topic, group or cluster refusal in a request",
            self.denied.clone(),
        );
    }

    /// Counts one resource an ACL refused to a request of `api`.
    pub fn denied(&self, api: &'static str, resource: &'static str) {
        self.denied
            .get_or_create(&DeniedLabels { api, resource })
            .inc();
    }

    /// Refusals of this api and resource so far.
    pub fn denials(&self, api: &'static str, resource: &'static str) -> u64 {
        self.denied
            .get_or_create(&DeniedLabels { api, resource })
            .get()
    }

    /// Counts one finished SASL exchange (`mechanism` as clients name it).
    pub fn sasl_login(&self, mechanism: &'static str, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.sasl_logins
            .get_or_create(&SaslLoginLabels { mechanism, result })
            .inc();
    }

    /// SASL logins with this mechanism and result so far.
    pub fn sasl_logins(&self, mechanism: &'static str, ok: bool) -> u64 {
        let result = if ok { "ok" } else { "failed" };
        self.sasl_logins
            .get_or_create(&SaslLoginLabels { mechanism, result })
            .get()
    }
}
