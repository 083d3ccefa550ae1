//! Who may read `/metrics`. By default anyone who can reach the listener
//! (as Prometheus exporters do; the listener is bound to 127.0.0.1 unless
//! configured otherwise). With `metrics.bearer_token_file` and/or
//! `metrics.users`, a scrape must carry `Authorization: Bearer <token>` or
//! HTTP basic credentials of one of those users from `auth.password_file`
//! (Prometheus' `authorization.credentials_file` / `basic_auth`); anything
//! else is answered 401.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::auth::scram::constant_time_eq;
use base64::Engine;
use ring::digest::{digest, SHA256};

use crate::auth::Auth;
use crate::config::MetricsConfig;

/// A token file or user list that cannot be used (bad input: exit 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {message} (metrics.{key})")]
pub struct MetricsAccessError {
    /// The file, or `configuration`.
    pub what: String,
    pub key: &'static str,
    pub message: String,
}

/// The scrape credentials in force.
#[derive(Debug)]
pub struct MetricsAccess {
    token: Option<Vec<u8>>,
    users: Vec<String>,
    auth: Arc<Auth>,
    /// SHA-256 of the last basic credentials that verified, so a scraper
    /// pays PBKDF2 once, not on every scrape.
    verified: Mutex<Option<[u8; 32]>>,
}

/// The shortest bearer token accepted: 16 bytes, as a random token of that
/// length is not guessable over a network.
const MIN_TOKEN_BYTES: usize = 16;

impl MetricsAccess {
    /// `None` when the config asks for no credentials (open endpoint).
    pub fn load(
        config: &MetricsConfig,
        auth: Arc<Auth>,
    ) -> Result<Option<MetricsAccess>, MetricsAccessError> {
        let token = config
            .bearer_token_file
            .as_deref()
            .map(read_token)
            .transpose()?;
        for user in &config.users {
            if !auth.has_users() {
                return Err(MetricsAccessError {
                    what: "configuration".into(),
                    key: "users",
                    message: format!(
                        "user `{user}` needs a password file: set [auth] password_file and add \
                         the user with `broker passwd FILE {user}`"
                    ),
                });
            }
            if !auth.knows(user) {
                return Err(MetricsAccessError {
                    what: "configuration".into(),
                    key: "users",
                    message: format!(
                        "user `{user}` is not in the password file: add it with \
                         `broker passwd FILE {user}`"
                    ),
                });
            }
        }
        if token.is_none() && config.users.is_empty() {
            return Ok(None);
        }
        Ok(Some(MetricsAccess {
            token,
            users: config.users.clone(),
            auth,
            verified: Mutex::new(None),
        }))
    }

    /// The `WWW-Authenticate` challenges a 401 carries.
    pub fn challenges(&self) -> Vec<&'static str> {
        let mut c = Vec::new();
        if self.token.is_some() {
            c.push("Bearer realm=\"broker metrics\"");
        }
        if !self.users.is_empty() {
            c.push("Basic realm=\"broker metrics\", charset=\"UTF-8\"");
        }
        c
    }

    /// Whether the request head (request line and headers) carries valid
    /// credentials.
    pub async fn allows(&self, head: &[u8]) -> bool {
        let Some(value) = authorization(head) else {
            return false;
        };
        let (scheme, credentials) = match value.iter().position(|&b| b == b' ') {
            Some(i) => (&value[..i], trim(&value[i + 1..])),
            None => return false,
        };
        if scheme.eq_ignore_ascii_case(b"bearer") {
            return match &self.token {
                Some(token) => constant_time_eq(token, credentials),
                None => false,
            };
        }
        if !scheme.eq_ignore_ascii_case(b"basic") || self.users.is_empty() {
            return false;
        }
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(credentials) else {
            return false;
        };
        let Some(colon) = decoded.iter().position(|&b| b == b':') else {
            return false;
        };
        let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
        let Ok(user) = std::str::from_utf8(user) else {
            return false;
        };
        if !self.users.iter().any(|u| u == user) {
            return false;
        }
        let fingerprint: [u8; 32] = digest(&SHA256, &decoded)
            .as_ref()
            .try_into()
            .expect("SHA-256 is 32 bytes");
        let cached = *self.verified.lock().expect("not poisoned");
        if let Some(known) = cached {
            if constant_time_eq(&known, &fingerprint) {
                return true;
            }
        }
        let ok = self.auth.verify_blocking(user, password).await;
        if ok {
            *self.verified.lock().expect("not poisoned") = Some(fingerprint);
        }
        ok
    }
}

/// Checks `[metrics]` credentials before the broker starts (so the error is
/// the one line printed).
pub fn check(config: &MetricsConfig, auth: &crate::auth::AuthConfig) -> Result<(), String> {
    let auth = Auth::load(auth).map_err(|e| e.to_string())?;
    MetricsAccess::load(config, Arc::new(auth))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn read_token(path: &Path) -> Result<Vec<u8>, MetricsAccessError> {
    let error = |message: String| MetricsAccessError {
        what: path.display().to_string(),
        key: "bearer_token_file",
        message,
    };
    let text = std::fs::read(path).map_err(|e| error(format!("cannot read the token: {e}")))?;
    let token = trim(&text).to_vec();
    if token.len() < MIN_TOKEN_BYTES {
        return Err(error(format!(
            "the token is {} bytes; write at least {MIN_TOKEN_BYTES}, e.g. \
             `openssl rand -hex 32 > {}`",
            token.len(),
            path.display()
        )));
    }
    if token.iter().any(|b| !b.is_ascii_graphic()) {
        return Err(error(
            "the token may hold only printable ASCII without spaces (it travels in an HTTP header)"
                .into(),
        ));
    }
    Ok(token)
}

/// The value of the first `Authorization` header in a request head.
fn authorization(head: &[u8]) -> Option<&[u8]> {
    head.split(|&b| b == b'\n').skip(1).find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|&b| b == b':')?;
        line[..colon]
            .eq_ignore_ascii_case(b"authorization")
            .then(|| trim(&line[colon + 1..]))
    })
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// A path for the token relative to the config file's directory.
pub fn resolve(path: &mut Option<PathBuf>, dir: &Path) {
    if let Some(p) = path {
        if p.is_relative() {
            *p = dir.join(&*p);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;
    use crate::auth::{PasswordEntry, PasswordFile};

    fn auth_with(user: &str, password: &str) -> Arc<Auth> {
        let entry = PasswordEntry::new(password, NonZeroU32::new(1000).unwrap()).unwrap();
        let file = PasswordFile::parse(&format!("{user}:{}\n", entry.encode())).unwrap();
        Arc::new(Auth::new(Some(file), None))
    }

    fn config(token: Option<&Path>, users: &[&str]) -> MetricsConfig {
        MetricsConfig {
            bearer_token_file: token.map(Path::to_path_buf),
            users: users.iter().map(|u| u.to_string()).collect(),
            ..MetricsConfig::default()
        }
    }

    fn head(authorization: Option<&str>) -> Vec<u8> {
        let mut h = b"GET /metrics HTTP/1.1\r\nHost: x\r\n".to_vec();
        if let Some(a) = authorization {
            h.extend_from_slice(format!("Authorization: {a}\r\n").as_bytes());
        }
        h.extend_from_slice(b"\r\n");
        h
    }

    fn basic(user: &str, password: &str) -> String {
        let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Basic {b}")
    }

    #[tokio::test]
    async fn bearer_token_must_match_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "0123456789abcdef0123\n").unwrap();
        let access = MetricsAccess::load(&config(Some(&file), &[]), Arc::new(Auth::default()))
            .unwrap()
            .expect("credentials required");
        assert!(
            access
                .allows(&head(Some("Bearer 0123456789abcdef0123")))
                .await
        );
        assert!(
            access
                .allows(&head(Some("bearer   0123456789abcdef0123 ")))
                .await
        );
        assert!(
            !access
                .allows(&head(Some("Bearer 0123456789abcdef012")))
                .await
        );
        assert!(
            !access
                .allows(&head(Some("Bearer 0123456789abcdef01234")))
                .await
        );
        assert!(!access.allows(&head(None)).await);
        assert!(
            !access.allows(&head(Some(&basic("a", "b")))).await,
            "no users: basic refused"
        );
        assert_eq!(access.challenges(), vec!["Bearer realm=\"broker metrics\""]);
    }

    #[tokio::test]
    async fn basic_credentials_of_a_listed_user_only() {
        let auth = auth_with("prom", "scrape-me");
        let access = MetricsAccess::load(&config(None, &["prom"]), auth)
            .unwrap()
            .unwrap();
        assert!(
            access
                .allows(&head(Some(&basic("prom", "scrape-me"))))
                .await
        );
        // Again, from the cache, and a wrong password after a right one.
        assert!(
            access
                .allows(&head(Some(&basic("prom", "scrape-me"))))
                .await
        );
        assert!(!access.allows(&head(Some(&basic("prom", "scrape-m")))).await);
        assert!(!access.allows(&head(Some("Basic not-base64!"))).await);
        assert!(
            !access
                .allows(&head(Some("Bearer anything-at-all-here")))
                .await
        );
    }

    #[tokio::test]
    async fn a_user_not_listed_is_refused_even_with_the_right_password() {
        let entry = |p| {
            PasswordEntry::new(p, NonZeroU32::new(1000).unwrap())
                .unwrap()
                .encode()
        };
        let text = format!("prom:{}\nalice:{}\n", entry("p1"), entry("p2"));
        let auth = Arc::new(Auth::new(Some(PasswordFile::parse(&text).unwrap()), None));
        let access = MetricsAccess::load(&config(None, &["prom"]), auth)
            .unwrap()
            .unwrap();
        assert!(!access.allows(&head(Some(&basic("alice", "p2")))).await);
    }

    #[test]
    fn bad_settings_name_the_key_and_the_fix() {
        let open = MetricsAccess::load(&config(None, &[]), Arc::new(Auth::default())).unwrap();
        assert!(open.is_none(), "no credentials configured: open endpoint");
        let e = MetricsAccess::load(&config(None, &["prom"]), Arc::new(Auth::default()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("metrics.users") && e.contains("password_file"),
            "{e}"
        );
        let e = MetricsAccess::load(&config(None, &["bob"]), auth_with("prom", "x"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`bob`") && e.contains("broker passwd"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, "abc").unwrap();
        let e = MetricsAccess::load(&config(Some(&short), &[]), Arc::new(Auth::default()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("short") && e.contains("bearer_token_file") && e.contains("openssl rand"),
            "{e}"
        );
        let missing = dir.path().join("missing");
        let e = MetricsAccess::load(&config(Some(&missing), &[]), Arc::new(Auth::default()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing") && e.contains("cannot read"), "{e}");
    }

    #[test]
    fn the_authorization_header_is_found_whatever_its_case() {
        let h = b"GET /metrics HTTP/1.1\r\nhost: a\r\nAUTHORIZATION:  Bearer xyz \r\n\r\n";
        assert_eq!(authorization(h), Some(&b"Bearer xyz"[..]));
        let h = b"GET /authorization: x HTTP/1.1\r\n\r\n";
        assert_eq!(authorization(h), None, "the request line is not a header");
    }
}
