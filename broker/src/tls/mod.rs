//! TLS on every listener (MQTT 8883, MQTT over secure WebSocket 8084, AMQPS
//! 5671, Kafka SSL 9093): one certificate, key and optional client CA from
//! `[tls]`, TLS 1.2 and 1.3 only, rustls with the `ring` provider (no C
//! toolchain beyond what every target already has, no aws-lc).
//!
//! The certificate is reloaded on SIGHUP and when the files change (their
//! modification times and sizes are polled every `tls.reload_interval_secs`).
//! Connections already open keep the session they negotiated; handshakes
//! after a reload use the new certificate. A reload that fails keeps the
//! certificate in use, logs why and counts `broker_tls_reloads_total{result="failed"}`.
//!
//! A TLS handshake is part of its protocol's handshake: it holds the
//! connection slot the plain listener's connections hold, and must finish
//! within the same deadline (MQTT `connect_timeout_secs`, WebSocket upgrade
//! 10 s, Kafka `first_request_timeout_ms`, AMQP `handshake_timeout_secs`).

pub mod config;
pub mod identity;

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

pub use config::{ClientAuth, TlsConfig};

use crate::core::stream::ClientStream;
use crate::metrics::{Metrics, Protocol};

/// A certificate, key or CA file that cannot be used, phrased for the person
/// who configured it: the key, the file, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key} = {}: {problem}", path.display())]
pub struct TlsError {
    /// `tls.cert`, `tls.key` or `tls.ca`.
    pub key: &'static str,
    pub path: PathBuf,
    pub problem: String,
}

fn file_error(key: &'static str, path: &Path, problem: impl Into<String>) -> TlsError {
    TlsError {
        key,
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| file_error(key, path, format!("cannot read it: {e}")))
}

/// Every `CERTIFICATE` block of a PEM file; at least one.
fn read_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(key, path, format!("not a valid PEM file: {e}")))?;
    if certs.is_empty() {
        return Err(file_error(
            key,
            path,
            "no certificate in it (expected PEM blocks starting with -----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read("tls.key", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        let why = match e {
            rustls::pki_types::pem::Error::NoItemsFound => "no private key in it (expected a PEM block -----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)".to_string(),
            e => format!("not a valid PEM private key: {e}"),
        };
        file_error("tls.key", path, why)
    })
}

/// Builds the rustls configuration from the files `config` names; `None`
/// when it names no certificate and key (TLS is off).
fn build(config: &TlsConfig) -> Option<Result<(Arc<ServerConfig>, String), TlsError>> {
    let (Some(cert_path), Some(key_path)) = (&config.cert, &config.key) else {
        return None;
    };
    Some(build_from(config, cert_path, key_path))
}

fn build_from(
    config: &TlsConfig,
    cert_path: &Path,
    key_path: &Path,
) -> Result<(Arc<ServerConfig>, String), TlsError> {
    let certs = read_certs("tls.cert", cert_path)?;
    let key = read_key(key_path)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .expect("the ring provider supports TLS 1.2 and 1.3");
    let builder = match (config.client_auth, &config.ca) {
        (ClientAuth::None, _) | (_, None) => builder.with_no_client_auth(),
        (auth, Some(ca_path)) => {
            let mut roots = RootCertStore::empty();
            for ca in read_certs("tls.ca", ca_path)? {
                roots.add(ca).map_err(|e| {
                    file_error(
                        "tls.ca",
                        ca_path,
                        format!("not a usable CA certificate: {e}"),
                    )
                })?;
            }
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            if auth == ClientAuth::Request {
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier
                .build()
                .map_err(|e| file_error("tls.ca", ca_path, format!("cannot be used: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let leaf = certs[0].clone();
    let server = builder.with_single_cert(certs, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => file_error(
            "tls.key",
            key_path,
            format!(
                "does not belong to the certificate in tls.cert ({})",
                cert_path.display()
            ),
        ),
        rustls::Error::General(why) if why.contains("key") => file_error("tls.key", key_path, why),
        e => file_error("tls.cert", cert_path, format!("cannot be used: {e}")),
    })?;
    let about = format!(
        "serial {}, subject CN {}",
        identity::serial_hex(&leaf).unwrap_or_else(|| "?".into()),
        identity::common_name(&leaf).unwrap_or_else(|| "(none)".into())
    );
    Ok((Arc::new(server), about))
}

/// Checks that the configured files load (start-up, before anything else
/// is logged). Nothing to check when TLS is off.
pub fn check(config: &TlsConfig) -> Result<(), TlsError> {
    build(config).transpose().map(|_| ())
}

/// What a file looked like when it was last loaded: modification time and size.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// The TLS configuration in force, shared by every TLS listener and swapped
/// whole on reload.
pub struct TlsContext {
    config: TlsConfig,
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<ServerConfig>>,
    stamps: Mutex<Vec<Stamp>>,
    metrics: Arc<Metrics>,
}

impl TlsContext {
    /// Loads the files; `None` when TLS is off (no certificate configured).
    pub fn load(
        config: &TlsConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Option<Arc<TlsContext>>, TlsError> {
        let (Some(cert), Some(key)) = (&config.cert, &config.key) else {
            return Ok(None);
        };
        let stamps = Self::stamps_of(config);
        let (server, about) = build_from(config, cert, key)?;
        tracing::info!("TLS certificate loaded: {about}");
        Ok(Some(Arc::new(TlsContext {
            config: config.clone(),
            cert: cert.clone(),
            key: key.clone(),
            current: RwLock::new(server),
            stamps: Mutex::new(stamps),
            metrics,
        })))
    }

    fn stamps_of(config: &TlsConfig) -> Vec<Stamp> {
        [&config.cert, &config.key, &config.ca]
            .into_iter()
            .map(|p| p.as_deref().and_then(stamp))
            .collect()
    }

    /// The acceptor for a new handshake, with the certificate in force now.
    pub fn acceptor(&self) -> TlsAcceptor {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        TlsAcceptor::from(current.clone())
    }

    /// Loads the files again; on success new handshakes use them, on
    /// failure the certificate in use stays. `why` says what triggered it
    /// (for the log). Returns whether the new files are in force.
    pub fn reload(&self, why: &str) -> bool {
        *self.stamps.lock().unwrap_or_else(|e| e.into_inner()) = Self::stamps_of(&self.config);
        match build_from(&self.config, &self.cert, &self.key) {
            Ok((server, about)) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = server;
                self.metrics.tls_reload(true);
                tracing::info!("TLS certificate reloaded ({why}): {about}");
                true
            }
            Err(e) => {
                self.metrics.tls_reload(false);
                tracing::error!(
                    "TLS reload ({why}) failed, still using the previous certificate: {e}"
                );
                false
            }
        }
    }

    /// Whether a file changed since it was last loaded.
    fn files_changed(&self) -> bool {
        let now = Self::stamps_of(&self.config);
        *self.stamps.lock().unwrap_or_else(|e| e.into_inner()) != now
    }

    /// Polls the files every `tls.reload_interval_secs` and reloads them when
    /// they change, until `shutdown` completes.
    pub async fn watch_files(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        let secs = self.config.reload_interval_secs;
        if secs == 0 {
            return;
        }
        tokio::pin!(shutdown);
        let mut ticker = tokio::time::interval(Duration::from_secs(secs));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    if self.files_changed() {
                        self.reload("certificate files changed");
                    }
                }
                _ = &mut shutdown => return,
            }
        }
    }

    /// Runs the server side of a TLS handshake on `tcp`, within `deadline`
    /// (the protocol's handshake deadline); `None` (counted in
    /// `broker_tls_handshake_failures_total`) when it fails, times out or the
    /// broker shuts down meanwhile.
    pub async fn accept(
        &self,
        tcp: TcpStream,
        deadline: Instant,
        protocol: Protocol,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<ClientStream> {
        let handshake = tokio::time::timeout_at(deadline, self.acceptor().accept(tcp));
        let result = tokio::select! {
            r = handshake => r,
            _ = shutdown.changed() => return None,
        };
        match result {
            Ok(Ok(stream)) => {
                self.metrics.tls_handshake_done(protocol);
                Some(ClientStream::Tls(Box::new(stream)))
            }
            Ok(Err(e)) => {
                let kind = failure_kind(&e);
                self.metrics.tls_handshake_failed(protocol, kind);
                tracing::debug!("{} TLS handshake failed ({kind}): {e}", protocol.as_str());
                None
            }
            Err(_) => {
                self.metrics.tls_handshake_failed(protocol, "timeout");
                tracing::debug!("{} TLS handshake timed out", protocol.as_str());
                None
            }
        }
    }
}

/// The `kind` label of a failed handshake.
fn failure_kind(e: &io::Error) -> &'static str {
    let Some(tls) = e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) else {
        return match e.kind() {
            io::ErrorKind::UnexpectedEof => "closed",
            io::ErrorKind::InvalidData => "malformed",
            _ => "io",
        };
    };
    match tls {
        rustls::Error::PeerIncompatible(_) => "incompatible",
        rustls::Error::NoCertificatesPresented | rustls::Error::InvalidCertificate(_) => {
            "client_certificate"
        }
        rustls::Error::InvalidMessage(_)
        | rustls::Error::InappropriateMessage { .. }
        | rustls::Error::InappropriateHandshakeMessage { .. }
        | rustls::Error::DecryptError => "malformed",
        rustls::Error::AlertReceived(_) => "alert_received",
        _ => "other",
    }
}
