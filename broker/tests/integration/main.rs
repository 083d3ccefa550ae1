//! Integration tests: the broker in-process on ephemeral ports (common.rs) or
//! as a child process (broker_process.rs), driven by real clients (rumqttc,
//! mosquitto_pub/sub, rdkafka, lapin, pika) and by raw bytes for malformed
//! input. MQTT scenarios are written once for 3.1.1 and 5.0 (mqtt_client.rs,
//! mqtt_scenarios.rs). One test binary keeps link time down on small CI machines.

mod amqp_durability;
mod amqp_hostile;
mod amqp_lapin;
mod amqp_limits;
mod amqp_malformed;
mod amqp_pika;
mod amqp_vhost;
mod auth;
mod broker_process;
mod cli;
mod common;
mod connection_slots;
mod fairness;
mod kafka_acl;
mod kafka_bounds;
mod kafka_durability;
mod kafka_groups;
mod kafka_kcat;
mod kafka_limits;
mod kafka_malformed;
mod kafka_rdkafka;
mod kafka_sasl;
mod malformed;
mod metrics_auth;
mod mqtt_client;
mod mqtt_limits;
mod mqtt_scenarios;
mod mqtt_slow;
mod passwd_cli;
mod process;
mod raw;
mod raw_kafka;
mod rumqttc_v311;
mod rumqttc_v5;
mod secure_example;
mod sessions;
mod storage_integrity;
mod tls;
