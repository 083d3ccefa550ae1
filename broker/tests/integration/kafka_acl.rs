//! Kafka ACLs (`[[kafka]]` tables in the ACL file) with real clients:
//! librdkafka (PLAIN) producing where it may and refused where it may not,
//! kcat (SCRAM-SHA-256) listing only the topics it may describe,
//! kafka-python (PLAIN) in a consumer group it may and one it may not use,
//! raw frames for the admin and cluster refusals, and a bad table stopping
//! the broker at start-up.

use std::process::{Command, Stdio};
use std::time::Duration;

use broker::RunningBroker;
use bytes::BytesMut;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::broker_process::broker_bin;
use crate::common::{kafka_bootstrap, password_file, start_broker_with};
use crate::kafka_sasl::{
    authenticate, connect, handshake, kcat, python_with_kafka, rdkafka_client,
};
use crate::raw_kafka;

const USERS: &[(&str, &str)] = &[
    ("alice", "alice-secret"),
    ("bob", "bob-secret"),
    ("admin", "admin-secret"),
];

/// alice: everything on `allowed-*` topics and groups, read and create on
/// `readonly`; bob: nothing; admin: everything.
const ACL: &str = r#"
[[kafka]]
user = "alice"
resource = "topic"
name = "allowed-"
pattern = "prefixed"
operations = ["read", "write", "create", "delete"]

[[kafka]]
user = "alice"
resource = "topic"
name = "readonly"
operations = ["read", "create"]

[[kafka]]
user = "alice"
resource = "group"
name = "allowed-"
pattern = "prefixed"
operations = ["read"]

[[kafka]]
user = "admin"
resource = "topic"
name = "*"
operations = ["all"]

[[kafka]]
user = "admin"
resource = "cluster"
operations = ["all"]
"#;

async fn acl_broker() -> (RunningBroker, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let users = password_file(dir.path(), USERS);
    let acl = dir.path().join("acl.toml");
    std::fs::write(&acl, ACL).unwrap();
    let b = start_broker_with(|c| {
        c.auth.password_file = Some(users);
        c.auth.acl_file = Some(acl);
    })
    .await;
    (b, dir)
}

fn create_topic(b: &RunningBroker, name: &str) {
    b.kafka
        .as_ref()
        .expect("Kafka on")
        .topics
        .create(name, 1)
        .expect("topic created");
}

fn denials(b: &RunningBroker, api: &'static str, resource: &'static str) -> u64 {
    b.metrics.kafka.denials(api, resource)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_acl_rdkafka_produces_where_granted_and_is_refused_elsewhere() {
    let (b, _dir) = acl_broker().await;
    let producer: FutureProducer = rdkafka_client(&kafka_bootstrap(&b), "alice", "alice-secret")
        .set("message.timeout.ms", "8000")
        .create()
        .unwrap();
    let send = |topic: &'static str| {
        let producer = producer.clone();
        async move {
            producer
                .send(
                    FutureRecord::<(), _>::to(topic).payload("x"),
                    Duration::from_secs(10),
                )
                .await
                .map(|_| ())
                .map_err(|(e, _)| e)
        }
    };
    send("allowed-orders").await.expect("write granted");
    // Describable (read) and auto-created (create), but not writable: Produce answers 29.
    let refused = send("readonly").await.expect_err("no write on readonly");
    assert_eq!(
        refused,
        KafkaError::MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed),
        "{refused}"
    );
    assert!(denials(&b, "produce", "topic") >= 1);
    // Not even describable: Metadata answers 29 and nothing is created.
    let refused = send("secret").await.expect_err("nothing granted on secret");
    assert_eq!(
        refused,
        KafkaError::MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed),
        "{refused}"
    );
    assert!(denials(&b, "metadata", "topic") >= 1);
    let topics = &b.kafka.as_ref().unwrap().topics;
    assert!(topics.get("allowed-orders").is_some() && topics.get("readonly").is_some());
    assert!(
        topics.get("secret").is_none(),
        "no auto-creation without create"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_acl_kcat_scram_lists_only_describable_topics() {
    let (b, _dir) = acl_broker().await;
    for topic in ["allowed-a", "readonly", "hidden"] {
        create_topic(&b, topic);
    }
    let bootstrap = kafka_bootstrap(&b);
    let list = |user: &'static str, password: &'static str, extra: &'static [&'static str]| {
        let mut args: Vec<String> = vec!["-b".into(), bootstrap.clone(), "-L".into()];
        for x in [
            "security.protocol=SASL_PLAINTEXT".to_string(),
            "sasl.mechanisms=SCRAM-SHA-256".into(),
            format!("sasl.username={user}"),
            format!("sasl.password={password}"),
        ] {
            args.extend(["-X".to_string(), x]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = kcat(&args, None);
            assert!(
                out.status.success(),
                "kcat -L: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    };
    let alice = list("alice", "alice-secret", &[]).await.unwrap();
    assert!(alice.contains("topic \"allowed-a\""), "{alice}");
    assert!(alice.contains("topic \"readonly\""), "{alice}");
    assert!(
        !alice.contains("hidden"),
        "alice may not describe hidden:\n{alice}"
    );
    let admin = list("admin", "admin-secret", &[]).await.unwrap();
    for topic in ["allowed-a", "readonly", "hidden"] {
        assert!(admin.contains(&format!("topic \"{topic}\"")), "{admin}");
    }
    let bob = list("bob", "bob-secret", &[]).await.unwrap();
    assert!(bob.contains("0 topics"), "bob may describe nothing:\n{bob}");
    // Asked for by name: refused with 29, not reported unknown.
    let named = list("alice", "alice-secret", &["-t", "hidden"])
        .await
        .unwrap();
    assert!(
        named.contains("Topic authorization failed"),
        "kcat -L -t hidden:\n{named}"
    );
    assert!(denials(&b, "metadata", "topic") >= 1);
}

/// kafka-python: a consumer in group `group` reads `topic` (2 messages) and
/// commits, printing `consumed a,b`, or `refused <error> <errno>`.
const KAFKA_PYTHON_GROUP: &str = r#"
import sys, time
from kafka import KafkaConsumer
from kafka.errors import KafkaError
bootstrap, user, password, topic, group = sys.argv[1:6]
c = KafkaConsumer(topic, group_id=group, auto_offset_reset="earliest",
    enable_auto_commit=False, bootstrap_servers=bootstrap,
    security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
    sasl_plain_username=user, sasl_plain_password=password,
    request_timeout_ms=11000, session_timeout_ms=10000, api_version=(2, 5, 0))
got = []
try:
    deadline = time.time() + 20
    while len(got) < 2 and time.time() < deadline:
        for records in c.poll(timeout_ms=500).values():
            got.extend(r.value.decode() for r in records)
    c.commit()
except KafkaError as e:
    print("refused %s %s" % (type(e).__name__, getattr(e, "errno", "?")), flush=True)
    sys.exit(0)
finally:
    c.close()
print("consumed " + ",".join(got), flush=True)
"#;

async fn kafka_python_group(b: &RunningBroker, topic: &str, group: &str) -> String {
    let args = [
        "-c",
        KAFKA_PYTHON_GROUP,
        &kafka_bootstrap(b),
        "alice",
        "alice-secret",
        topic,
        group,
    ]
    .map(String::from);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python_with_kafka())
            .args(&args)
            .env_remove("LD_LIBRARY_PATH")
            .stdin(Stdio::null())
            .output()
            .expect("python3 runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success(),
        "kafka-python failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_acl_kafka_python_group_refused_with_group_authorization_failed() {
    let (b, _dir) = acl_broker().await;
    let producer: FutureProducer = rdkafka_client(&kafka_bootstrap(&b), "alice", "alice-secret")
        .set("message.timeout.ms", "8000")
        .create()
        .unwrap();
    for value in ["one", "two"] {
        producer
            .send(
                FutureRecord::<(), _>::to("allowed-events").payload(value),
                Duration::from_secs(10),
            )
            .await
            .expect("write granted");
    }
    let ok = kafka_python_group(&b, "allowed-events", "allowed-readers").await;
    assert_eq!(ok, "consumed one,two");
    let committed = b
        .kafka
        .as_ref()
        .unwrap()
        .offsets()
        .get("allowed-readers", "allowed-events", 0)
        .map(|c| c.offset);
    assert_eq!(committed, Some(2), "the granted group committed");
    let refused = kafka_python_group(&b, "allowed-events", "other-readers").await;
    assert_eq!(refused, "refused GroupAuthorizationFailedError 30");
    assert!(denials(&b, "find_coordinator", "group") >= 1);
}

/// One request on a raw connection: encodes `req` at `version` (a
/// non-flexible version: header v1) and decodes the answer.
async fn call<Req: Encodable, Resp: Decodable>(
    s: &mut (impl AsyncRead + AsyncWrite + Unpin),
    api_key: ApiKey,
    version: i16,
    req: &Req,
) -> Resp {
    let mut body = BytesMut::new();
    req.encode(&mut body, version).expect("request encodes");
    s.write_all(&raw_kafka::request(api_key as i16, version, 5, &body))
        .await
        .unwrap();
    s.flush().await.unwrap();
    let (id, mut answer) = raw_kafka::response(s).await;
    assert_eq!(id, 5);
    Resp::decode(&mut answer, version).expect("response decodes")
}

async fn logged_in(b: &RunningBroker, user: &str, password: &str) -> tokio::net::TcpStream {
    let mut s = connect(b).await;
    assert_eq!(handshake(&mut s, 1, "PLAIN").await.0, 0);
    let token = format!("\0{user}\0{password}");
    assert_eq!(authenticate(&mut s, token.as_bytes()).await.0, 0, "login");
    s
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

#[tokio::test]
async fn kafka_acl_raw_admin_and_cluster_requests_are_refused() {
    let (b, _dir) = acl_broker().await;
    create_topic(&b, "hidden");
    let mut s = logged_in(&b, "alice", "alice-secret").await;

    let create = CreateTopicsRequest::default()
        .with_timeout_ms(5000)
        .with_topics(
            ["allowed-new", "forbidden-new"]
                .map(|t| {
                    CreatableTopic::default()
                        .with_name(name(t))
                        .with_num_partitions(1)
                        .with_replication_factor(1)
                })
                .to_vec(),
        );
    let resp: CreateTopicsResponse = call(&mut s, ApiKey::CreateTopics, 4, &create).await;
    let code = |t: &str| {
        resp.topics
            .iter()
            .find(|r| r.name.0.as_str() == t)
            .unwrap_or_else(|| panic!("{t} answered: {resp:?}"))
            .error_code
    };
    assert_eq!(code("allowed-new"), 0);
    assert_eq!(code("forbidden-new"), 29, "TOPIC_AUTHORIZATION_FAILED");
    let topics = &b.kafka.as_ref().unwrap().topics;
    assert!(topics.get("allowed-new").is_some() && topics.get("forbidden-new").is_none());
    assert_eq!(denials(&b, "create_topics", "topic"), 1);

    let delete = DeleteTopicsRequest::default()
        .with_timeout_ms(5000)
        .with_topic_names(vec![name("allowed-new"), name("hidden")]);
    let resp: DeleteTopicsResponse = call(&mut s, ApiKey::DeleteTopics, 3, &delete).await;
    let code = |t: &str| {
        resp.responses
            .iter()
            .find(|r| r.name.as_ref().is_some_and(|n| n.0.as_str() == t))
            .unwrap_or_else(|| panic!("{t} answered: {resp:?}"))
            .error_code
    };
    assert_eq!(code("allowed-new"), 0);
    assert_eq!(code("hidden"), 29, "TOPIC_AUTHORIZATION_FAILED");
    assert!(topics.get("allowed-new").is_none() && topics.get("hidden").is_some());
    assert_eq!(denials(&b, "delete_topics", "topic"), 1);

    // The broker's settings need describe on the cluster: 31.
    let configs =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(4)
            .with_resource_name(StrBytes::from_static_str("0"))]);
    let resp: DescribeConfigsResponse = call(&mut s, ApiKey::DescribeConfigs, 1, &configs).await;
    assert_eq!(
        resp.results[0].error_code, 31,
        "CLUSTER_AUTHORIZATION_FAILED"
    );
    assert!(resp.results[0].configs.is_empty());

    // A group alice has no grant on: 30 from FindCoordinator and JoinGroup.
    let find = FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("other"));
    let resp: FindCoordinatorResponse = call(&mut s, ApiKey::FindCoordinator, 1, &find).await;
    assert_eq!(resp.error_code, 30, "GROUP_AUTHORIZATION_FAILED");
    let heartbeat = HeartbeatRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("other")))
        .with_member_id(StrBytes::from_static_str("m"));
    let resp: HeartbeatResponse = call(&mut s, ApiKey::Heartbeat, 1, &heartbeat).await;
    assert_eq!(resp.error_code, 30);

    // bob may write nowhere: no idempotent producer id (31).
    let mut s = logged_in(&b, "bob", "bob-secret").await;
    let init = InitProducerIdRequest::default()
        .with_transaction_timeout_ms(60000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let resp: InitProducerIdResponse = call(&mut s, ApiKey::InitProducerId, 1, &init).await;
    assert_eq!(resp.error_code, 31, "CLUSTER_AUTHORIZATION_FAILED");
    assert_eq!(denials(&b, "init_producer_id", "cluster"), 1);
    // alice may write on allowed-*: she gets one.
    let mut s = logged_in(&b, "alice", "alice-secret").await;
    let resp: InitProducerIdResponse = call(&mut s, ApiKey::InitProducerId, 1, &init).await;
    assert_eq!(resp.error_code, 0);
    assert!(resp.producer_id.0 >= 0);
}

#[test]
fn kafka_acl_bad_table_stops_start_up_naming_file_table_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("broker.toml");
    std::fs::write(&config, "[auth]\nacl_file = \"acl.toml\"\n").unwrap();
    std::fs::write(
        dir.path().join("acl.toml"),
        "[[kafka]]\nuser = \"a\"\nresource = \"topic\"\nname = \"t\"\noperations = [\"read\"]\n\n\
         [[kafka]]\nuser = \"b\"\nresource = \"topic\"\nname = \"t\"\noperations = [\"fly\"]\n",
    )
    .unwrap();
    let out = Command::new(broker_bin())
        .args(["--config", config.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("broker binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line:\n{stderr}");
    assert!(
        stderr.contains("acl.toml: [[kafka]] table 2: key `operations`: unknown operation \"fly\"")
            && stderr.ends_with("(auth.acl_file)"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_acl_anonymous_clients_get_only_anonymous_grants() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl.toml");
    std::fs::write(
        &acl,
        "[[kafka]]\nanonymous = true\nresource = \"topic\"\nname = \"public\"\noperations = [\"describe\"]\n",
    )
    .unwrap();
    let b = start_broker_with(|c| c.auth.acl_file = Some(acl)).await;
    for topic in ["public", "private"] {
        create_topic(&b, topic);
    }
    let bootstrap = kafka_bootstrap(&b);
    let listed = tokio::task::spawn_blocking(move || {
        let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("broker.address.family", "v4")
            .create()
            .unwrap();
        let metadata =
            rdkafka::consumer::Consumer::fetch_metadata(&consumer, None, Duration::from_secs(10))
                .expect("anonymous metadata on a loopback listener");
        let mut names: Vec<String> = metadata
            .topics()
            .iter()
            .map(|t| t.name().to_string())
            .collect();
        names.sort();
        names
    })
    .await
    .unwrap();
    assert_eq!(listed, ["public"], "only what anonymous = true grants");
}
