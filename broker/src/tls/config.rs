//! The `[tls]` section of the config file: the certificate, key and CA every
//! TLS listener (MQTT 8883, MQTT over secure WebSocket 8084, AMQPS 5671,
//! Kafka SSL 9093) shares, with its checks. Each protocol's section has its
//! own `tls` switch and `tls_bind` address.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Whether clients must present a certificate.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// No client certificate is asked for.
    #[default]
    None,
    /// Asked for; a client without one is served, one with a certificate
    /// the CA did not sign is refused.
    Request,
    /// Required and checked against `tls.ca`.
    Require,
}

/// Longest `tls.reload_interval_secs` (one day).
const MAX_RELOAD_INTERVAL_SECS: u64 = 86_400;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// The server certificate chain (PEM, leaf first); with `key`, turns the
    /// TLS listeners on. Relative to the config file's directory.
    pub cert: Option<PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// CA certificates (PEM) client certificates are checked against.
    pub ca: Option<PathBuf>,
    pub client_auth: ClientAuth,
    /// Seconds between checks of the files' modification times; a change
    /// reloads them (as SIGHUP does). 0 = reload on SIGHUP only.
    pub reload_interval_secs: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert: None,
            key: None,
            ca: None,
            client_auth: ClientAuth::None,
            reload_interval_secs: 5,
        }
    }
}

impl TlsConfig {
    /// Whether a certificate is configured (the TLS listeners are on).
    pub fn enabled(&self) -> bool {
        self.cert.is_some() && self.key.is_some()
    }

    /// Makes relative paths relative to `dir` (the config file's directory).
    pub fn resolve_paths(&mut self, dir: &Path) {
        for path in [&mut self.cert, &mut self.key, &mut self.ca]
            .into_iter()
            .flatten()
        {
            if path.is_relative() {
                *path = dir.join(&*path);
            }
        }
    }

    /// Checks values that the types alone cannot; each message names the key.
    /// (Whether the files exist and parse is checked when they are loaded.)
    pub(crate) fn validate(&self) -> Result<(), String> {
        match (&self.cert, &self.key) {
            (Some(_), None) => {
                return Err("tls.cert is set but tls.key is not: give both (the certificate chain and its private key, PEM)".into())
            }
            (None, Some(_)) => {
                return Err("tls.key is set but tls.cert is not: give both (the certificate chain and its private key, PEM)".into())
            }
            _ => {}
        }
        if self.client_auth != ClientAuth::None && self.ca.is_none() {
            return Err(format!(
                "tls.client_auth = \"{}\" needs tls.ca (the CA certificates, PEM, client certificates are checked against)",
                self.client_auth.as_str()
            ));
        }
        if self.ca.is_some() && !self.enabled() {
            return Err("tls.ca is set but tls.cert and tls.key are not: the CA is only used by the TLS listeners".into());
        }
        if self.reload_interval_secs > MAX_RELOAD_INTERVAL_SECS {
            return Err(format!(
                "tls.reload_interval_secs = {}: must be at most {MAX_RELOAD_INTERVAL_SECS} (0 = on SIGHUP only; try 5)",
                self.reload_interval_secs
            ));
        }
        Ok(())
    }
}

impl ClientAuth {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuth::None => "none",
            ClientAuth::Request => "request",
            ClientAuth::Require => "require",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(f: impl FnOnce(&mut TlsConfig)) -> TlsConfig {
        let mut c = TlsConfig::default();
        f(&mut c);
        c
    }

    #[test]
    fn checks_name_their_key() {
        assert_eq!(TlsConfig::default().validate(), Ok(()));
        assert!(!TlsConfig::default().enabled());
        let err = with(|c| c.cert = Some("a.pem".into()))
            .validate()
            .unwrap_err();
        assert!(err.starts_with("tls.cert is set but tls.key"), "{err}");
        let err = with(|c| c.key = Some("a.key".into()))
            .validate()
            .unwrap_err();
        assert!(err.starts_with("tls.key is set but tls.cert"), "{err}");
        let both = |c: &mut TlsConfig| {
            c.cert = Some("a.pem".into());
            c.key = Some("a.key".into());
        };
        assert_eq!(with(both).validate(), Ok(()));
        let err = with(|c| {
            both(c);
            c.client_auth = ClientAuth::Require;
        })
        .validate()
        .unwrap_err();
        assert!(
            err.starts_with("tls.client_auth = \"require\" needs tls.ca"),
            "{err}"
        );
        let err = with(|c| c.ca = Some("ca.pem".into()))
            .validate()
            .unwrap_err();
        assert!(err.starts_with("tls.ca is set"), "{err}");
        let err = with(|c| c.reload_interval_secs = 100_000)
            .validate()
            .unwrap_err();
        assert!(err.starts_with("tls.reload_interval_secs"), "{err}");
    }

    #[test]
    fn relative_paths_are_relative_to_the_config_file() {
        let mut c = with(|c| {
            c.cert = Some("certs/server.pem".into());
            c.key = Some("/etc/broker/server.key".into());
        });
        c.resolve_paths(Path::new("/opt/broker"));
        assert_eq!(c.cert, Some(PathBuf::from("/opt/broker/certs/server.pem")));
        assert_eq!(c.key, Some(PathBuf::from("/etc/broker/server.key")));
        assert_eq!(c.ca, None);
    }
}
