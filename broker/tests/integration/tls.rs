//! TLS on every listener, with real clients: rumqttc over TLS and secure
//! WebSocket, mosquitto_pub/mosquitto_sub with `--cafile` and a client
//! certificate, `openssl s_client` for the protocol versions, raw TLS
//! clients (tokio-rustls) for AMQPS and Kafka SSL (the workspace's rdkafka
//! is built without OpenSSL, enabling it would compile openssl-sys into every
//! broker test run, and the packaged kcat says "OpenSSL not available at
//! build time" for `security.protocol=ssl`), client certificates, the
//! certificate's CN as the MQTT user name, stalled handshakes, and
//! certificate reload (SIGHUP and file change) under a connected client.
//! Certificates are made per test (rcgen).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::amqp::codec::{self as amqp_codec, Frame};
use broker::config::ClientAuth;
use broker::metrics::Protocol;
use broker::{Config, RunningBroker};
use bytes::{Buf, BytesMut};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rumqttc::{Event, Packet, QoS};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::broker_process::{broker_bin, BrokerProcess, MQTT_ONLY};
use crate::common::{start_broker_with, WAIT};
use crate::raw;
use crate::raw_kafka;

/// A throwaway certificate authority.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate the CA issued, with its key.
#[derive(Clone)]
struct Issued {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A server certificate for localhost and 127.0.0.1, or a client
    /// certificate, with this CN and serial number.
    fn issue(&self, cn: &str, serial: u64, server: bool) -> Issued {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        params.serial_number = Some(SerialNumber::from(serial));
        params.extended_key_usages = vec![match server {
            true => ExtendedKeyUsagePurpose::ServerAuth,
            false => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }
}

/// Certificate files in a directory of their own: `ca.pem`, `server.pem`, `server.key`.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new(ca: &Ca, server: &Issued) -> Files {
        let files = Files {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::write(files.path("ca.pem"), ca.pem()).unwrap();
        files.install(server);
        files
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Replaces the server certificate and key (each file written whole, then renamed).
    fn install(&self, server: &Issued) {
        for (name, text) in [
            ("server.pem", &server.cert_pem),
            ("server.key", &server.key_pem),
        ] {
            let tmp = self.path(&format!("{name}.tmp"));
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, self.path(name)).unwrap();
        }
    }

    fn configure(&self, c: &mut Config) {
        c.tls.cert = Some(self.path("server.pem"));
        c.tls.key = Some(self.path("server.key"));
    }
}

/// A client configuration trusting `ca`, with a client certificate if given.
fn client_config(ca: &Ca, client: Option<&Issued>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
    Arc::new(match client {
        Some(c) => builder
            .with_client_auth_cert(
                vec![c.der.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.key_der.clone())),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    })
}

/// A TLS connection to `addr` as `localhost`.
async fn tls_connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    timeout(
        WAIT,
        TlsConnector::from(config).connect(ServerName::try_from("localhost").unwrap(), tcp),
    )
    .await
    .expect("TLS handshake in time")
}

/// The certificate the server presented.
fn presented(s: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    s.get_ref()
        .1
        .peer_certificates()
        .expect("server certificate")[0]
        .clone()
}

/// An MQTT 3.1.1 session over TLS: CONNECT sent, CONNACK code returned.
async fn mqtt_tls_connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    id: &str,
    user: Option<(&str, &str)>,
) -> (TlsStream<TcpStream>, Option<u8>) {
    let mut s = tls_connect(addr, config).await.expect("TLS handshake");
    raw::send(&mut s, &connect_v311(id, user)).await;
    let code = raw::read_packet(&mut s).await.map(|(first, body)| {
        assert_eq!(first >> 4, 2, "CONNACK");
        body[1]
    });
    (s, code)
}

/// CONNECT 3.1.1, clean session, keep-alive 30 s, with user name and password if given.
fn connect_v311(id: &str, user: Option<(&str, &str)>) -> Vec<u8> {
    let mut body = raw::str("MQTT");
    body.push(4);
    body.push(if user.is_some() { 0xC2 } else { 0x02 });
    body.extend_from_slice(&30u16.to_be_bytes());
    body.extend_from_slice(&raw::str(id));
    if let Some((name, password)) = user {
        body.extend_from_slice(&raw::str(name));
        body.extend_from_slice(&raw::str(password));
    }
    raw::packet(0x10, &body)
}

/// A QoS 1 round trip on an open 3.1.1 session: subscribe, publish, PUBACK, delivery.
async fn mqtt_round_trip(s: &mut TlsStream<TcpStream>, topic: &str, packet_id: u16) {
    raw::send(s, &raw::subscribe(4, packet_id, topic, 1)).await;
    raw::expect_packet(s, 9).await;
    raw::send(s, &raw::publish(4, 1, topic, packet_id + 1, b"still here")).await;
    let (mut puback, mut delivered) = (false, false);
    for _ in 0..4 {
        if puback && delivered {
            break;
        }
        match raw::read_packet(s).await {
            Some((first, body)) if first >> 4 == 4 => {
                assert_eq!(body[..2], (packet_id + 1).to_be_bytes());
                puback = true;
            }
            Some((first, body)) if first >> 4 == 3 => {
                assert!(body.ends_with(b"still here"), "{body:x?}");
                if first & 0x06 != 0 {
                    // Our QoS 1 copy: acknowledge it.
                    let id = &body[2 + topic.len()..4 + topic.len()];
                    raw::send(s, &raw::packet(0x40, id)).await;
                }
                delivered = true;
            }
            other => panic!("expected PUBACK and PUBLISH, got {other:x?}"),
        }
    }
    assert!(
        puback && delivered,
        "PUBACK {puback}, delivered {delivered}"
    );
}

/// The broker's count of failed `protocol` handshakes of `kind`, once it
/// reaches `want` (or after [`WAIT`]): the client sees the alert or the close
/// a moment before the broker's task counts it.
async fn failures_reach(
    b: &RunningBroker,
    protocol: Protocol,
    kind: &'static str,
    want: u64,
) -> u64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let n = b.metrics.tls_handshake_failures(protocol, kind);
        if n >= want || Instant::now() >= deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn serial_of(der: &CertificateDer<'_>) -> String {
    broker::tls::identity::serial_hex(der).unwrap_or_default()
}

async fn tls_broker(files: &Files, tweak: impl FnOnce(&mut Config)) -> RunningBroker {
    start_broker_with(|c| {
        files.configure(c);
        tweak(c);
    })
    .await
}

#[tokio::test]
async fn every_tls_listener_is_on_once_a_certificate_is_configured() {
    let plain = crate::common::start_broker().await;
    assert!(
        plain.mqtt_tls_addr.is_none()
            && plain.wss_addr.is_none()
            && plain.kafka_tls_addr.is_none()
            && plain.amqp_tls_addr.is_none()
            && plain.tls.is_none(),
        "no certificate, no TLS listener"
    );
    let ca = Ca::new("listeners CA");
    let files = Files::new(&ca, &ca.issue("localhost", 1, true));
    let b = tls_broker(&files, |_| {}).await;
    for (name, addr) in [
        ("mqtt", b.mqtt_tls_addr),
        ("wss", b.wss_addr),
        ("kafka", b.kafka_tls_addr),
        ("amqp", b.amqp_tls_addr),
    ] {
        let addr = addr.unwrap_or_else(|| panic!("{name} TLS listener on"));
        assert!(addr.ip().is_loopback(), "{name}: {addr}");
        let s = tls_connect(addr, client_config(&ca, None))
            .await
            .unwrap_or_else(|e| panic!("{name} TLS handshake: {e}"));
        assert_eq!(
            s.get_ref().1.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
    }
    // Defaults: the well-known ports, on loopback.
    let d = Config::default();
    assert_eq!(
        [
            d.mqtt.tls_bind.port(),
            d.mqtt.wss_bind.port(),
            d.amqp.tls_bind.port(),
            d.kafka.tls_bind.port()
        ],
        [8883, 8084, 5671, 9093]
    );
    assert!(d.mqtt.tls_bind.ip().is_loopback() && d.kafka.tls_bind.ip().is_loopback());
}

#[tokio::test]
async fn rumqttc_over_tls_v311_and_v5() {
    let ca = Ca::new("rumqttc CA");
    let files = Files::new(&ca, &ca.issue("localhost", 2, true));
    let b = tls_broker(&files, |_| {}).await;
    let port = b.mqtt_tls_addr.unwrap().port();
    let tls = rumqttc::TlsConfiguration::Rustls(client_config(&ca, None));

    let mut opts = rumqttc::MqttOptions::new("tls-v311", "localhost", port);
    opts.set_transport(rumqttc::Transport::tls_with_config(tls.clone()));
    let (client, mut el) = rumqttc::AsyncClient::new(opts, 10);
    client
        .subscribe("tls/v311", QoS::AtLeastOnce)
        .await
        .unwrap();
    client
        .publish("tls/v311", QoS::AtLeastOnce, false, "over tls")
        .await
        .unwrap();
    let got = timeout(WAIT, async {
        loop {
            match el.poll().await.expect("rumqttc over TLS") {
                Event::Incoming(Packet::Publish(p)) => return p.payload,
                _ => continue,
            }
        }
    })
    .await
    .expect("message back in time");
    assert_eq!(&got[..], b"over tls");

    let mut opts = rumqttc::v5::MqttOptions::new("tls-v5", "localhost", port);
    opts.set_transport(rumqttc::Transport::tls_with_config(tls));
    let (client, mut el) = rumqttc::v5::AsyncClient::new(opts, 10);
    client
        .subscribe("tls/v5", rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
        .await
        .unwrap();
    client
        .publish(
            "tls/v5",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            "over tls 5",
        )
        .await
        .unwrap();
    let got = timeout(WAIT, async {
        loop {
            match el.poll().await.expect("rumqttc v5 over TLS") {
                rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::Publish(p)) => {
                    return p.payload
                }
                _ => continue,
            }
        }
    })
    .await
    .expect("message back in time");
    assert_eq!(&got[..], b"over tls 5");
    println!(
        "tls handshakes counted: {}",
        b.metrics
            .encode()
            .lines()
            .find(|l| l.starts_with("broker_tls_handshakes_total{protocol=\"mqtt\"}"))
            .unwrap_or("none")
    );
}

#[tokio::test]
async fn rumqttc_over_secure_websocket() {
    let ca = Ca::new("wss CA");
    let files = Files::new(&ca, &ca.issue("localhost", 3, true));
    let b = tls_broker(&files, |_| {}).await;
    let port = b.wss_addr.unwrap().port();
    let mut opts =
        rumqttc::MqttOptions::new("wss-client", format!("wss://localhost:{port}/mqtt"), port);
    opts.set_transport(rumqttc::Transport::wss_with_config(
        rumqttc::TlsConfiguration::Rustls(client_config(&ca, None)),
    ));
    let (client, mut el) = rumqttc::AsyncClient::new(opts, 10);
    client.subscribe("wss/t", QoS::AtLeastOnce).await.unwrap();
    client
        .publish("wss/t", QoS::AtLeastOnce, false, "over wss")
        .await
        .unwrap();
    let got = timeout(WAIT, async {
        loop {
            match el.poll().await.expect("rumqttc over wss") {
                Event::Incoming(Packet::Publish(p)) => return p.payload,
                _ => continue,
            }
        }
    })
    .await
    .expect("message back in time");
    assert_eq!(&got[..], b"over wss");
    assert!(b
        .metrics
        .encode()
        .contains("broker_tls_handshakes_total{protocol=\"mqtt\"} 1"));
}

/// `openssl s_client` against `addr` with extra `args`: (exit success, stdout + stderr).
fn s_client(addr: SocketAddr, ca: &Path, args: &[&str]) -> (bool, String) {
    let out = crate::common::external_tool("openssl", "version", "openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            "localhost",
        ])
        .arg("-CAfile")
        .arg(ca)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("openssl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_s_client_gets_tls12_and_13_and_is_refused_tls11() {
    let ca = Ca::new("openssl CA");
    let files = Files::new(&ca, &ca.issue("localhost", 4, true));
    let b = tls_broker(&files, |_| {}).await;
    let addr = b.mqtt_tls_addr.unwrap();
    let ca_path = files.path("ca.pem");
    for (flag, version) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let (ok, text) = tokio::task::spawn_blocking({
            let ca_path = ca_path.clone();
            move || s_client(addr, &ca_path, &[flag, "-brief"])
        })
        .await
        .unwrap();
        assert!(ok, "{flag}: {text}");
        assert!(
            text.contains(&format!("Protocol version: {version}")),
            "{flag}: {text}"
        );
        assert!(text.contains("Verification: OK"), "{flag}: {text}");
        println!(
            "openssl s_client {flag}: {}",
            text.lines()
                .filter(|l| l.contains("Protocol version") || l.contains("Ciphersuite"))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    let before = b
        .metrics
        .tls_handshake_failures(Protocol::Mqtt, "incompatible");
    // SECLEVEL=0: OpenSSL 3 would otherwise not even offer TLS 1.1, and the
    // refusal would be the client's, not the broker's.
    let (ok, text) = tokio::task::spawn_blocking(move || {
        s_client(
            addr,
            &ca_path,
            &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0", "-brief"],
        )
    })
    .await
    .unwrap();
    assert!(!ok, "TLS 1.1 must be refused: {text}");
    assert!(
        !text.contains("no protocols available"),
        "the client offered TLS 1.1: {text}"
    );
    let after = failures_reach(&b, Protocol::Mqtt, "incompatible", before + 1).await;
    assert_eq!(after, before + 1, "the broker refused it: {text}");
    println!(
        "openssl s_client -tls1_1: refused ({})",
        text.lines()
            .find(|l| l.contains("alert") || l.contains("error"))
            .unwrap_or("")
    );
}

#[tokio::test]
async fn a_required_client_certificate_is_checked() {
    let ca = Ca::new("server CA");
    let other_ca = Ca::new("some other CA");
    let files = Files::new(&ca, &ca.issue("localhost", 5, true));
    let b = tls_broker(&files, |c| {
        c.tls.ca = Some(files.path("ca.pem"));
        c.tls.client_auth = ClientAuth::Require;
    })
    .await;
    let addr = b.mqtt_tls_addr.unwrap();
    // With a certificate from the configured CA: served.
    let good = ca.issue("sensor-1", 50, false);
    let (_s, code) =
        mqtt_tls_connect(addr, client_config(&ca, Some(&good)), "with-cert", None).await;
    assert_eq!(code, Some(0));
    // Without one: the handshake fails on the broker's side and no CONNACK comes.
    let before = b
        .metrics
        .tls_handshake_failures(Protocol::Mqtt, "client_certificate");
    let no_cert = match tls_connect(addr, client_config(&ca, None)).await {
        Err(e) => format!("handshake failed: {e}"),
        Ok(mut s) => {
            // TLS 1.3: the client finishes first; the broker's alert follows.
            let _ = s.write_all(&connect_v311("no-cert", None)).await;
            let _ = s.flush().await;
            let mut buf = [0u8; 16];
            match timeout(WAIT, s.read(&mut buf))
                .await
                .expect("answer in time")
            {
                Ok(0) => "closed".to_string(),
                Ok(n) => panic!("a client without a certificate got {:x?}", &buf[..n]),
                Err(e) => format!("refused: {e}"),
            }
        }
    };
    assert_eq!(
        failures_reach(&b, Protocol::Mqtt, "client_certificate", before + 1).await,
        before + 1,
        "{no_cert}"
    );
    // With a certificate from another CA: refused too.
    let stranger = other_ca.issue("sensor-1", 51, false);
    let result = match tls_connect(addr, client_config(&ca, Some(&stranger))).await {
        Err(e) => format!("handshake failed: {e}"),
        Ok(mut s) => {
            let _ = s.write_all(&connect_v311("stranger", None)).await;
            let _ = s.flush().await;
            let mut buf = [0u8; 16];
            match timeout(WAIT, s.read(&mut buf))
                .await
                .expect("answer in time")
            {
                Ok(0) => "closed".to_string(),
                Ok(n) => panic!("a certificate from another CA got {:x?}", &buf[..n]),
                Err(e) => format!("refused: {e}"),
            }
        }
    };
    assert_eq!(
        failures_reach(&b, Protocol::Mqtt, "client_certificate", before + 2).await,
        before + 2,
        "{result}"
    );
    println!("no client certificate: {no_cert}; foreign CA: {result}");
}

#[tokio::test]
async fn requested_client_certificate_is_optional() {
    let ca = Ca::new("request CA");
    let files = Files::new(&ca, &ca.issue("localhost", 6, true));
    let b = tls_broker(&files, |c| {
        c.tls.ca = Some(files.path("ca.pem"));
        c.tls.client_auth = ClientAuth::Request;
    })
    .await;
    let addr = b.mqtt_tls_addr.unwrap();
    let (_a, code) = mqtt_tls_connect(addr, client_config(&ca, None), "none", None).await;
    assert_eq!(code, Some(0), "no certificate is fine when only requested");
    let cert = ca.issue("sensor-2", 60, false);
    let (_b, code) = mqtt_tls_connect(addr, client_config(&ca, Some(&cert)), "some", None).await;
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn the_certificate_common_name_is_the_mqtt_user_name() {
    let ca = Ca::new("identity CA");
    let files = Files::new(&ca, &ca.issue("localhost", 7, true));
    let b = tls_broker(&files, |c| {
        c.tls.ca = Some(files.path("ca.pem"));
        c.tls.client_auth = ClientAuth::Require;
        c.mqtt.use_identity_as_username = true;
        c.auth.password_file = Some(crate::common::password_file(
            &files.path("."),
            &[("sensor-1", "its-password")],
        ));
    })
    .await;
    let addr = b.mqtt_tls_addr.unwrap();
    // The CONNECT names someone else with a wrong password: the certificate wins.
    let sensor = ca.issue("sensor-1", 70, false);
    let (_s, code) = mqtt_tls_connect(
        addr,
        client_config(&ca, Some(&sensor)),
        "id-1",
        Some(("mallory", "wrong")),
    )
    .await;
    assert_eq!(code, Some(0), "CN sensor-1 is a configured user");
    // A valid certificate for a CN that is no configured user: not authorized (3.1.1 code 5).
    let intruder = ca.issue("intruder", 71, false);
    let (_s, code) = mqtt_tls_connect(
        addr,
        client_config(&ca, Some(&intruder)),
        "id-2",
        Some(("sensor-1", "its-password")),
    )
    .await;
    assert_eq!(code, Some(5), "the CONNECT's user name does not count");
    // The plain listener still checks CONNECT's user name and password.
    let mut s = raw::tcp(b.mqtt_addr).await;
    raw::send(&mut s, &connect_v311("plain", Some(("sensor-1", "wrong")))).await;
    assert_eq!(
        raw::expect_packet(&mut s, 2).await,
        [0, 4],
        "bad password on TCP"
    );
    let mut s = raw::tcp(b.mqtt_addr).await;
    raw::send(
        &mut s,
        &connect_v311("plain2", Some(("sensor-1", "its-password"))),
    )
    .await;
    assert_eq!(raw::expect_packet(&mut s, 2).await, [0, 0]);
}

#[tokio::test]
async fn amqps_handshake_opens_the_connection() {
    use amq_protocol::protocol::{connection, AMQPClass};
    use amq_protocol::types::{FieldTable, LongString, ShortString};

    let ca = Ca::new("amqps CA");
    let files = Files::new(&ca, &ca.issue("localhost", 8, true));
    let b = tls_broker(&files, |_| {}).await;
    let mut s = tls_connect(b.amqp_tls_addr.unwrap(), client_config(&ca, None))
        .await
        .unwrap();
    let mut buf = BytesMut::new();
    async fn next(s: &mut TlsStream<TcpStream>, buf: &mut BytesMut) -> AMQPClass {
        loop {
            if let Some(frame) = amqp_codec::next_frame(buf, 1 << 20).unwrap() {
                match frame {
                    Frame::Method(0, m) => return m,
                    other => panic!("expected a method on channel 0, got {other:?}"),
                }
            }
            let n = timeout(WAIT, s.read_buf(buf)).await.unwrap().unwrap();
            assert!(n > 0, "broker closed the AMQPS connection");
        }
    }
    async fn send(s: &mut TlsStream<TcpStream>, m: connection::AMQPMethod) {
        let mut out = BytesMut::new();
        amqp_codec::put_method(&mut out, 0, AMQPClass::Connection(m));
        s.write_all(&out).await.unwrap();
        s.flush().await.unwrap();
    }
    s.write_all(amqp_codec::PROTOCOL_HEADER).await.unwrap();
    s.flush().await.unwrap();
    assert!(matches!(
        next(&mut s, &mut buf).await,
        AMQPClass::Connection(connection::AMQPMethod::Start(_))
    ));
    send(
        &mut s,
        connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties: FieldTable::default(),
            mechanism: ShortString::from("PLAIN"),
            response: LongString::from(b"\0guest\0guest".to_vec()),
            locale: ShortString::from("en_US"),
        }),
    )
    .await;
    let AMQPClass::Connection(connection::AMQPMethod::Tune(tune)) = next(&mut s, &mut buf).await
    else {
        panic!("expected connection.tune");
    };
    send(
        &mut s,
        connection::AMQPMethod::TuneOk(connection::TuneOk {
            channel_max: tune.channel_max,
            frame_max: tune.frame_max,
            heartbeat: 0,
        }),
    )
    .await;
    send(
        &mut s,
        connection::AMQPMethod::Open(connection::Open {
            virtual_host: ShortString::from("/"),
        }),
    )
    .await;
    assert!(matches!(
        next(&mut s, &mut buf).await,
        AMQPClass::Connection(connection::AMQPMethod::OpenOk(_))
    ));
    assert!(b
        .metrics
        .encode()
        .contains("broker_tls_handshakes_total{protocol=\"amqp\"} 1"));
}

/// EXTERNAL on AMQPS: the verified client certificate's CN is the user,
/// who must be in the password file and is held to the `[[amqp]]` rules.
#[tokio::test]
async fn amqp_vhost_external_login_is_the_client_certificate_cn() {
    use amq_protocol::protocol::{connection, AMQPClass};
    use amq_protocol::types::{FieldTable, LongString, ShortString};

    async fn next(s: &mut TlsStream<TcpStream>, buf: &mut BytesMut) -> AMQPClass {
        loop {
            if let Some(Frame::Method(0, m)) = amqp_codec::next_frame(buf, 1 << 20).unwrap() {
                return m;
            }
            let n = timeout(WAIT, s.read_buf(buf)).await.unwrap().unwrap();
            assert!(n > 0, "broker closed the AMQPS connection");
        }
    }
    async fn send(s: &mut TlsStream<TcpStream>, m: connection::AMQPMethod) {
        let mut out = BytesMut::new();
        amqp_codec::put_method(&mut out, 0, AMQPClass::Connection(m));
        s.write_all(&out).await.unwrap();
        s.flush().await.unwrap();
    }
    /// Logs in with EXTERNAL and opens `vhost`: what the broker answers last.
    async fn external(addr: SocketAddr, config: Arc<ClientConfig>, vhost: &str) -> AMQPClass {
        let mut s = tls_connect(addr, config).await.unwrap();
        let mut buf = BytesMut::new();
        s.write_all(amqp_codec::PROTOCOL_HEADER).await.unwrap();
        s.flush().await.unwrap();
        let AMQPClass::Connection(connection::AMQPMethod::Start(start)) =
            next(&mut s, &mut buf).await
        else {
            panic!("expected connection.start");
        };
        assert_eq!(start.mechanisms.to_string(), "PLAIN AMQPLAIN EXTERNAL");
        send(
            &mut s,
            connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: FieldTable::default(),
                mechanism: ShortString::from("EXTERNAL"),
                response: LongString::from(Vec::new()),
                locale: ShortString::from("en_US"),
            }),
        )
        .await;
        let tune = match next(&mut s, &mut buf).await {
            AMQPClass::Connection(connection::AMQPMethod::Tune(t)) => t,
            other => return other,
        };
        send(
            &mut s,
            connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: tune.channel_max,
                frame_max: tune.frame_max,
                heartbeat: 0,
            }),
        )
        .await;
        send(
            &mut s,
            connection::AMQPMethod::Open(connection::Open {
                virtual_host: ShortString::from(vhost),
            }),
        )
        .await;
        next(&mut s, &mut buf).await
    }

    let ca = Ca::new("amqps CA");
    let files = Files::new(&ca, &ca.issue("localhost", 8, true));
    let dir = tempfile::tempdir().unwrap();
    let users = crate::common::password_file(dir.path(), &[("alice", "unused")]);
    let acl = dir.path().join("acl.toml");
    std::fs::write(
        &acl,
        "[[amqp]]\nuser = \"alice\"\nvhost = \"/\"\nconfigure = \".*\"\nwrite = \".*\"\nread = \".*\"\n",
    )
    .unwrap();
    let b = tls_broker(&files, |c| {
        c.tls.ca = Some(files.path("ca.pem"));
        c.tls.client_auth = ClientAuth::Require;
        c.auth.password_file = Some(users);
        c.auth.acl_file = Some(acl);
        c.amqp.vhosts = vec!["/".into(), "other".into()];
    })
    .await;
    let addr = b.amqp_tls_addr.unwrap();
    let alice = client_config(&ca, Some(&ca.issue("alice", 60, false)));
    assert!(matches!(
        external(addr, alice.clone(), "/").await,
        AMQPClass::Connection(connection::AMQPMethod::OpenOk(_))
    ));
    let AMQPClass::Connection(connection::AMQPMethod::Close(close)) =
        external(addr, alice, "other").await
    else {
        panic!("expected connection.close");
    };
    assert_eq!(close.reply_code, 530);
    assert_eq!(
        close.reply_text.as_str(),
        "NOT_ALLOWED - access to vhost 'other' refused for user 'alice'"
    );
    // A CN the password file does not know is refused.
    let mallory = client_config(&ca, Some(&ca.issue("mallory", 61, false)));
    let AMQPClass::Connection(connection::AMQPMethod::Close(close)) =
        external(addr, mallory, "/").await
    else {
        panic!("expected connection.close");
    };
    assert_eq!(close.reply_code, 403, "{}", close.reply_text);
}

/// The port of the one broker in a Metadata v0 answer on `s`.
async fn metadata_broker_port(
    s: &mut (impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin),
) -> i32 {
    s.write_all(&raw_kafka::request(3, 0, 7, &0i32.to_be_bytes()))
        .await
        .unwrap();
    s.flush().await.unwrap();
    let (id, mut body) = raw_kafka::response(s).await;
    assert_eq!(id, 7);
    assert_eq!(body.get_i32(), 1, "one broker");
    let _node = body.get_i32();
    let host_len = body.get_i16() as usize;
    body.advance(host_len);
    body.get_i32()
}

#[tokio::test]
async fn kafka_ssl_answers_and_advertises_its_own_port() {
    let ca = Ca::new("kafka CA");
    let files = Files::new(&ca, &ca.issue("localhost", 9, true));
    let b = tls_broker(&files, |_| {}).await;
    let tls_addr = b.kafka_tls_addr.unwrap();
    let mut s = tls_connect(tls_addr, client_config(&ca, None))
        .await
        .unwrap();
    raw_kafka::api_versions_ok(&mut s, 1).await;
    assert_eq!(
        metadata_broker_port(&mut s).await,
        i32::from(tls_addr.port()),
        "a TLS client is sent to the TLS port"
    );
    let mut plain = raw::tcp(b.kafka_addr.unwrap()).await;
    assert_eq!(
        metadata_broker_port(&mut plain).await,
        i32::from(b.kafka_addr.unwrap().port())
    );
}

/// SASL_SSL: a PLAIN login on the Kafka TLS listener, which, like the
/// plaintext one, refuses requests before the login once users are configured.
#[tokio::test]
async fn kafka_sasl_plain_over_the_tls_listener() {
    use crate::kafka_sasl::{authenticate, expect_closed, handshake};
    let ca = Ca::new("kafka CA");
    let files = Files::new(&ca, &ca.issue("localhost", 9, true));
    let users = crate::common::password_file(files.dir.path(), &[("alice", "a-pw")]);
    let b = tls_broker(&files, |c| c.auth.password_file = Some(users)).await;
    let tls_addr = b.kafka_tls_addr.unwrap();
    let mut s = tls_connect(tls_addr, client_config(&ca, None))
        .await
        .unwrap();
    raw_kafka::api_versions_ok(&mut s, 1).await;
    assert_eq!(handshake(&mut s, 1, "PLAIN").await.0, 0);
    assert_eq!(authenticate(&mut s, b"\0alice\0a-pw").await.0, 0);
    assert_eq!(
        metadata_broker_port(&mut s).await,
        i32::from(tls_addr.port())
    );
    assert_eq!(b.metrics.kafka.sasl_logins("PLAIN", true), 1);
    // No login: the first other request closes the connection.
    let mut s = tls_connect(tls_addr, client_config(&ca, None))
        .await
        .unwrap();
    s.write_all(&raw_kafka::request(3, 0, 7, &0i32.to_be_bytes()))
        .await
        .unwrap();
    s.flush().await.unwrap();
    expect_closed(&mut s).await;
    // A wrong password: SASL_AUTHENTICATION_FAILED, then closed.
    let mut s = tls_connect(tls_addr, client_config(&ca, None))
        .await
        .unwrap();
    assert_eq!(handshake(&mut s, 1, "PLAIN").await.0, 0);
    assert_eq!(authenticate(&mut s, b"\0alice\0wrong").await.0, 58);
    expect_closed(&mut s).await;
}

#[tokio::test]
async fn stalled_or_garbage_tls_handshakes_end_within_the_protocol_deadline_and_free_their_slot() {
    let ca = Ca::new("stall CA");
    let files = Files::new(&ca, &ca.issue("localhost", 10, true));
    let b = tls_broker(&files, |c| {
        c.mqtt.connect_timeout_secs = 1;
        c.kafka.first_request_timeout_ms = 1000;
        c.amqp.handshake_timeout_secs = 1;
    })
    .await;
    let free = || b.hub.connection_permits.available_permits();
    let idle = free();
    for (protocol, addr, holds_slot) in [
        (Protocol::Mqtt, b.mqtt_tls_addr.unwrap(), false),
        (Protocol::Kafka, b.kafka_tls_addr.unwrap(), true),
        (Protocol::Amqp, b.amqp_tls_addr.unwrap(), true),
    ] {
        let name = protocol.as_str();
        let started = Instant::now();
        // A TLS record header announcing a ClientHello that never comes.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).await.unwrap();
        if holds_slot {
            // Kafka and AMQP take their slot on accept, as on the plain listener.
            let deadline = Instant::now() + WAIT;
            while free() != idle - 1 {
                assert!(Instant::now() < deadline, "{name}: slot taken");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let mut buf = [0u8; 64];
        let n = timeout(WAIT, s.read(&mut buf))
            .await
            .expect("closed in time");
        assert!(matches!(n, Ok(0) | Err(_)), "{name}: closed, got {n:?}");
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(900), "{name}: {took:?}");
        assert!(took < Duration::from_secs(5), "{name}: {took:?}");
        assert_eq!(
            failures_reach(&b, protocol, "timeout", 1).await,
            1,
            "{name}"
        );
        let deadline = Instant::now() + WAIT;
        while free() != idle {
            assert!(Instant::now() < deadline, "{name}: slot given back");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Not TLS at all: refused at once, counted.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let n = timeout(Duration::from_millis(800), s.read(&mut buf))
            .await
            .expect("refused before the deadline");
        assert!(
            matches!(n, Ok(0) | Err(_)) || buf[0] == 0x15,
            "{name}: {n:?}"
        );
        assert_eq!(
            failures_reach(&b, protocol, "malformed", 1).await,
            1,
            "{name}"
        );
        println!("{name}: stalled TLS handshake closed after {took:?}");
    }
    // The bystander on the same listener is served throughout.
    let (mut s, code) = mqtt_tls_connect(
        b.mqtt_tls_addr.unwrap(),
        client_config(&ca, None),
        "bystander",
        None,
    )
    .await;
    assert_eq!(code, Some(0));
    mqtt_round_trip(&mut s, "stall/bystander", 1).await;
}

#[tokio::test]
async fn changed_files_are_reloaded_and_a_bad_one_keeps_the_old_certificate() {
    let ca = Ca::new("poll CA");
    let first = ca.issue("localhost", 0x1001, true);
    let files = Files::new(&ca, &first);
    let b = tls_broker(&files, |c| c.tls.reload_interval_secs = 1).await;
    let addr = b.mqtt_tls_addr.unwrap();
    let config = client_config(&ca, None);
    let (mut a, code) = mqtt_tls_connect(addr, config.clone(), "client-a", None).await;
    assert_eq!(code, Some(0));
    assert_eq!(presented(&a), first.der);

    let second = ca.issue("localhost", 0x1002, true);
    files.install(&second);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = tls_connect(addr, config.clone()).await.unwrap();
        if presented(&s) == second.der {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new certificate not in use within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Counted just after the swap that the handshake above saw.
    let deadline = Instant::now() + WAIT;
    while b.metrics.tls_reloads(true) == 0 {
        assert!(Instant::now() < deadline, "reload counted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The connection from before the reload goes on.
    mqtt_round_trip(&mut a, "reload/a", 1).await;

    // A broken certificate file: the reload fails, is counted, and the second certificate stays.
    std::fs::write(
        files.path("server.pem"),
        "-----BEGIN CERTIFICATE-----\nnot base64!\n",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while b.metrics.tls_reloads(false) == 0 {
        assert!(
            Instant::now() < deadline,
            "failed reload not counted within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (c, code) = mqtt_tls_connect(addr, config, "client-c", None).await;
    assert_eq!(code, Some(0));
    assert_eq!(
        presented(&c),
        second.der,
        "the old certificate stays in use"
    );
    mqtt_round_trip(&mut a, "reload/a2", 3).await;
    println!(
        "poll reload: serial {} -> {}; reloads ok {}, failed {}",
        serial_of(&first.der),
        serial_of(&second.der),
        b.metrics.tls_reloads(true),
        b.metrics.tls_reloads(false)
    );
}

/// A config file for a broker process with TLS from certificate files next
/// to it (relative paths), reloaded on SIGHUP only.
fn process_config(files: &Files) -> PathBuf {
    let path = files.path("broker.toml");
    std::fs::write(
        &path,
        "[tls]\ncert = \"server.pem\"\nkey = \"server.key\"\nreload_interval_secs = 0\n\n[mqtt]\ntls_bind = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    path
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_while_a_client_stays_connected() {
    let ca = Ca::new("sighup CA");
    let first = ca.issue("localhost", 0xA1, true);
    let files = Files::new(&ca, &first);
    let config = process_config(&files);
    let mut args = vec!["--config", config.to_str().unwrap()];
    args.extend_from_slice(MQTT_ONLY);
    let broker = tokio::task::block_in_place(|| BrokerProcess::spawn(&args));
    let ready = broker.ready_json();
    let addr: SocketAddr = ready["mqtt_tls"]
        .as_str()
        .expect("the ready file lists the MQTT TLS listener")
        .parse()
        .unwrap();
    assert!(ready["kafka_tls"].is_null() && ready["amqp_tls"].is_null() && ready["wss"].is_null());
    let listening = broker.stderr();
    assert!(
        listening.contains(&format!(
            "| mqtts {addr} | wss off | kafka-ssl off | amqps off"
        )),
        "{listening}"
    );
    let client = client_config(&ca, None);
    let (mut a, code) = mqtt_tls_connect(addr, client.clone(), "client-a", None).await;
    assert_eq!(code, Some(0));
    assert_eq!(presented(&a), first.der);

    let second = ca.issue("localhost", 0xB2, true);
    files.install(&second);
    let pid = broker.pid() as i32;
    // SAFETY: signalling a child process this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    tokio::task::block_in_place(|| {
        broker.wait_for_log("the reload", |l| {
            l.contains("TLS certificate reloaded (SIGHUP): serial B2")
        })
    });
    let (b, code) = mqtt_tls_connect(addr, client.clone(), "client-b", None).await;
    assert_eq!(code, Some(0));
    assert_eq!(
        presented(&b),
        second.der,
        "client B sees the new certificate"
    );
    mqtt_round_trip(&mut a, "sighup/a", 1).await;

    // A key that does not belong to the certificate: the reload fails, the
    // second certificate stays, the process keeps serving.
    let stray = ca.issue("localhost", 0xC3, true);
    std::fs::write(files.path("server.key"), &stray.key_pem).unwrap();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    tokio::task::block_in_place(|| {
        broker.wait_for_log("the failed reload", |l| {
            l.contains("TLS reload (SIGHUP) failed") && l.contains("server.key")
        })
    });
    let (c, code) = mqtt_tls_connect(addr, client, "client-c", None).await;
    assert_eq!(code, Some(0));
    assert_eq!(presented(&c), second.der);
    mqtt_round_trip(&mut a, "sighup/a2", 3).await;
    println!(
        "SIGHUP reload: client A on serial {}, client B and C on serial {}; log: {}",
        serial_of(&presented(&a)),
        serial_of(&presented(&b)),
        broker
            .stderr()
            .lines()
            .filter(|l| l.contains("TLS"))
            .collect::<Vec<_>>()
            .join(" / ")
    );
}

#[test]
fn bad_certificate_key_or_ca_is_one_line_naming_the_file_and_exit_2() {
    let ca = Ca::new("startup CA");
    let files = Files::new(&ca, &ca.issue("localhost", 11, true));
    let other = ca.issue("localhost", 12, true);
    std::fs::write(files.path("other.key"), &other.key_pem).unwrap();
    std::fs::write(files.path("garbage.pem"), "hello\n").unwrap();
    let cases = [
        (
            "cert = \"missing.pem\"\nkey = \"server.key\"",
            "tls.cert",
            "missing.pem",
            "cannot read it",
        ),
        (
            "cert = \"server.pem\"\nkey = \"garbage.pem\"",
            "tls.key",
            "garbage.pem",
            "no private key",
        ),
        (
            "cert = \"garbage.pem\"\nkey = \"server.key\"",
            "tls.cert",
            "garbage.pem",
            "no certificate",
        ),
        (
            "cert = \"server.pem\"\nkey = \"other.key\"",
            "tls.key",
            "other.key",
            "does not belong to the certificate",
        ),
        (
            "cert = \"server.pem\"\nkey = \"server.key\"\nca = \"nope/ca.pem\"\nclient_auth = \"require\"",
            "tls.ca",
            "nope/ca.pem",
            "cannot read it",
        ),
    ];
    for (tls, key, file, problem) in cases {
        let path = files.path("broker.toml");
        std::fs::write(&path, format!("[tls]\n{tls}\n")).unwrap();
        let out = Command::new(broker_bin())
            .args(["--config", path.to_str().unwrap()])
            .args(MQTT_ONLY)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .expect("broker runs");
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        assert_eq!(out.status.code(), Some(2), "{tls}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        let full = files.path(file).display().to_string();
        assert!(
            stderr.starts_with(&format!("error: {}: {key} = ", path.display()))
                && stderr.contains(key)
                && stderr.contains(&full)
                && stderr.contains(problem),
            "{tls}: {stderr}"
        );
        println!("{stderr}");
    }
}

/// Runs a command-line client to completion: (exit success, stdout, stderr).
fn run_tool(mut cmd: Command, stdin: Option<&str>) -> (bool, String, String) {
    use std::io::Write;
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the tool starts");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(input.as_bytes())
            .expect("the tool reads stdin");
    }
    let out = child.wait_with_output().expect("the tool finishes");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// mosquitto_pub and mosquitto_sub with `--cafile` and a client
/// certificate where the broker requires one; without it, refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_clients_over_tls_with_a_client_certificate() {
    let ca = Ca::new("mosquitto CA");
    let files = Files::new(&ca, &ca.issue("localhost", 14, true));
    let client = ca.issue("mosquitto-client", 140, false);
    std::fs::write(files.path("client.pem"), &client.cert_pem).unwrap();
    std::fs::write(files.path("client.key"), &client.key_pem).unwrap();
    let b = tls_broker(&files, |c| {
        c.tls.ca = Some(files.path("ca.pem"));
        c.tls.client_auth = ClientAuth::Require;
    })
    .await;
    let port = b.mqtt_tls_addr.unwrap().port().to_string();
    let mosquitto = |tool: &str, with_cert: bool| {
        let mut cmd = crate::common::external_tool(tool, "--help", "mosquitto-clients");
        cmd.args(["-h", "localhost", "-p", &port, "-V", "mqttv311"])
            .arg("--cafile")
            .arg(files.path("ca.pem"));
        if with_cert {
            cmd.arg("--cert")
                .arg(files.path("client.pem"))
                .arg("--key")
                .arg(files.path("client.key"));
        }
        cmd
    };
    let mut publish = mosquitto("mosquitto_pub", true);
    publish.args([
        "-t",
        "tls/retained",
        "-m",
        "hello over tls",
        "-r",
        "-q",
        "1",
    ]);
    let (ok, _, err) = tokio::task::spawn_blocking(move || run_tool(publish, None))
        .await
        .unwrap();
    assert!(ok, "mosquitto_pub with a client certificate: {err}");
    let mut subscribe = mosquitto("mosquitto_sub", true);
    subscribe.args(["-t", "tls/retained", "-C", "1", "-W", "10", "-v"]);
    let (ok, out, err) = tokio::task::spawn_blocking(move || run_tool(subscribe, None))
        .await
        .unwrap();
    assert!(ok, "mosquitto_sub with a client certificate: {err}");
    assert_eq!(out.trim(), "tls/retained hello over tls");
    let before = b
        .metrics
        .tls_handshake_failures(Protocol::Mqtt, "client_certificate");
    let mut no_cert = mosquitto("mosquitto_pub", false);
    no_cert.args(["-t", "tls/x", "-m", "refused", "-q", "1"]);
    let (ok, _, err) = tokio::task::spawn_blocking(move || run_tool(no_cert, None))
        .await
        .unwrap();
    assert!(!ok, "mosquitto_pub without a certificate must be refused");
    assert_eq!(
        failures_reach(&b, Protocol::Mqtt, "client_certificate", before + 1).await,
        before + 1,
        "{err}"
    );
    println!(
        "mosquitto_sub over TLS: {}; without a certificate: {}",
        out.trim(),
        err.trim()
    );
}
