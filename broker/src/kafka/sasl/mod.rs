//! Kafka SASL: SaslHandshake and SaslAuthenticate, the mechanisms PLAIN and
//! SCRAM-SHA-256/512 against the broker's password file, and each
//! connection's login state (who it is, what it may send next).
//!
//! SaslHandshake v1 is followed by SaslAuthenticate requests carrying the
//! tokens; after v0 the tokens follow as raw frames (a 4-byte size, no Kafka
//! header) and each answer is one too. A failed login is answered
//! (SASL_AUTHENTICATION_FAILED with a message, or nothing in the v0 raw
//! form) and the connection is closed, as Kafka does. So are a mechanism not
//! enabled (UNSUPPORTED_SASL_MECHANISM with the enabled list), a request out
//! of order (ILLEGAL_SASL_STATE) and a token beyond [`MAX_TOKEN_BYTES`].

mod scram;

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use self::scram::{Exchange, ScramError};
use super::connection::Close;
use crate::auth::scram::{ScramCredential, ScramMechanism, SCRAM_ITERATIONS};
use crate::auth::ListenerAuth;
use crate::metrics::Metrics;

/// Largest SASL token a client may send; a larger one fails the login.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Largest request before a login where one is required (a SaslAuthenticate
/// with a whole token and its header fits), so an unauthenticated client
/// cannot make the broker read and hold large requests.
pub const MAX_PRE_LOGIN_FRAME_BYTES: usize = MAX_TOKEN_BYTES + 1024;

/// A SASL mechanism the broker serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SaslMechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl SaslMechanism {
    pub const ALL: [SaslMechanism; 3] = [
        SaslMechanism::Plain,
        SaslMechanism::ScramSha256,
        SaslMechanism::ScramSha512,
    ];

    /// The name clients ask for (and `kafka.sasl_mechanisms` lists).
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    pub fn from_name(name: &str) -> Option<SaslMechanism> {
        SaslMechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    fn scram(self) -> Option<ScramMechanism> {
        match self {
            SaslMechanism::Plain => None,
            SaslMechanism::ScramSha256 => Some(ScramMechanism::Sha256),
            SaslMechanism::ScramSha512 => Some(ScramMechanism::Sha512),
        }
    }
}

/// What every connection's SASL exchange shares: the enabled mechanisms and
/// the key that gives an unknown user a stable decoy SCRAM salt.
pub struct SaslSettings {
    mechanisms: Vec<SaslMechanism>,
    decoy_key: hmac::Key,
    rng: SystemRandom,
}

impl std::fmt::Debug for SaslSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslSettings")
            .field("mechanisms", &self.mechanisms)
            .finish_non_exhaustive()
    }
}

impl SaslSettings {
    /// `mechanisms` as `kafka.sasl_mechanisms` names them (validated with
    /// the config; unknown names are skipped).
    pub fn new(mechanisms: &[String]) -> SaslSettings {
        let rng = SystemRandom::new();
        let mut key = [0u8; 32];
        // A failing system RNG leaves a fixed key: decoy salts then only
        // stay the same across restarts, nothing is exposed.
        let _ = rng.fill(&mut key);
        SaslSettings {
            mechanisms: mechanisms
                .iter()
                .filter_map(|m| SaslMechanism::from_name(m))
                .collect(),
            decoy_key: hmac::Key::new(hmac::HMAC_SHA256, &key),
            rng,
        }
    }

    fn enabled(&self, name: &str) -> Option<SaslMechanism> {
        SaslMechanism::from_name(name).filter(|m| self.mechanisms.contains(m))
    }

    /// The stand-in credential of a user without stored keys: a salt that is
    /// the same for the same name (asking twice tells nothing) and keys no
    /// proof matches.
    fn decoy(&self, mechanism: ScramMechanism, user: &str) -> ScramCredential {
        let tag = hmac::sign(
            &self.decoy_key,
            format!("{}\0{user}", mechanism.tag()).as_bytes(),
        );
        ScramCredential {
            mechanism,
            iterations: std::num::NonZeroU32::new(SCRAM_ITERATIONS).expect("not zero"),
            salt: tag.as_ref()[..16].to_vec(),
            stored_key: vec![0; mechanism.key_len()],
            server_key: vec![0; mechanism.key_len()],
        }
    }

    fn server_nonce(&self) -> String {
        use base64::Engine;
        let mut bytes = [0u8; 24];
        let _ = self.rng.fill(&mut bytes);
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }
}

/// Where a connection is in its login.
#[derive(Debug)]
enum State {
    /// No SaslHandshake yet.
    Start,
    /// SaslHandshake accepted; `raw`: it was v0, tokens come as raw frames.
    Handshaken { mechanism: SaslMechanism, raw: bool },
    /// SCRAM server-first sent; client-final expected.
    ScramFinal {
        mechanism: SaslMechanism,
        exchange: Box<Exchange>,
        raw: bool,
    },
    /// Logged in; no further SASL request is taken.
    Done,
}

/// A refused SASL step: the answer's error and message, and the
/// `protocol_errors_total{kind}` label of the close that follows.
#[derive(Debug)]
struct Refusal {
    error: ResponseError,
    message: String,
    kind: &'static str,
}

impl Refusal {
    fn illegal_state(message: &str) -> Refusal {
        Refusal {
            error: ResponseError::IllegalSaslState,
            message: message.to_string(),
            kind: "sasl_illegal_state",
        }
    }

    fn failed(message: String) -> Refusal {
        Refusal {
            error: ResponseError::SaslAuthenticationFailed,
            message,
            kind: "sasl_authentication_failed",
        }
    }

    fn close(&self) -> Close {
        Close {
            kind: self.kind,
            why: format!("SASL: {}", self.message),
        }
    }
}

/// One connection's login: the listener's rule, the SASL state, and the
/// authenticated user (the principal later authorisation checks use).
#[derive(Debug)]
pub struct Login {
    listener: ListenerAuth,
    state: State,
    principal: Option<Arc<str>>,
}

impl Login {
    pub fn new(listener: ListenerAuth) -> Login {
        Login {
            listener,
            state: State::Start,
            principal: None,
        }
    }

    /// The user database and ACLs the listener checks against.
    pub fn auth(&self) -> &Arc<crate::auth::Auth> {
        &self.listener.auth
    }

    /// The user this connection logged in as (`None`: anonymous).
    pub fn principal(&self) -> Option<&Arc<str>> {
        self.principal.as_ref()
    }

    /// Whether requests other than ApiVersions, SaslHandshake and
    /// SaslAuthenticate may be served: after a login, or on a listener open
    /// to anonymous clients.
    pub fn may_serve(&self) -> bool {
        self.listener.anonymous || matches!(self.state, State::Done)
    }

    /// Whether the next bytes are a raw SASL token (after SaslHandshake v0).
    pub fn awaits_raw_token(&self) -> bool {
        matches!(
            self.state,
            State::Handshaken { raw: true, .. } | State::ScramFinal { raw: true, .. }
        )
    }

    /// SaslHandshake: picks the mechanism. `Err` closes the connection after
    /// the answer is written.
    pub fn handshake(
        &mut self,
        settings: &SaslSettings,
        req: SaslHandshakeRequest,
        version: i16,
    ) -> (SaslHandshakeResponse, Result<(), Close>) {
        let enabled = settings
            .mechanisms
            .iter()
            .map(|m| StrBytes::from_static_str(m.name()))
            .collect();
        let resp = SaslHandshakeResponse::default().with_mechanisms(enabled);
        if !matches!(self.state, State::Start) {
            let refusal = Refusal::illegal_state("SaslHandshake after the SASL exchange began");
            return (
                resp.with_error_code(refusal.error.code()),
                Err(refusal.close()),
            );
        }
        let Some(mechanism) = settings.enabled(req.mechanism.as_str()) else {
            let close = Close {
                kind: "sasl_unsupported_mechanism",
                why: format!(
                    "SASL mechanism `{}` is not enabled",
                    req.mechanism.as_str().escape_debug()
                ),
            };
            return (
                resp.with_error_code(ResponseError::UnsupportedSaslMechanism.code()),
                Err(close),
            );
        };
        self.state = State::Handshaken {
            mechanism,
            raw: version == 0,
        };
        (resp, Ok(()))
    }

    /// SaslAuthenticate: one token of the exchange in, the next one out.
    pub async fn authenticate(
        &mut self,
        settings: &SaslSettings,
        metrics: &Metrics,
        req: SaslAuthenticateRequest,
    ) -> (SaslAuthenticateResponse, Result<(), Close>) {
        let resp = SaslAuthenticateResponse::default();
        match self.step(settings, metrics, &req.auth_bytes).await {
            Ok(token) => (resp.with_auth_bytes(Bytes::from(token)), Ok(())),
            Err(refusal) => (
                resp.with_error_code(refusal.error.code())
                    .with_error_message(Some(StrBytes::from_string(refusal.message.clone()))),
                Err(refusal.close()),
            ),
        }
    }

    /// A raw token after SaslHandshake v0: the answer is appended to `out`
    /// as a raw frame. A failure is not answered (Kafka closes at once).
    pub async fn raw_token(
        &mut self,
        settings: &SaslSettings,
        metrics: &Metrics,
        token: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), Close> {
        let answer = self
            .step(settings, metrics, token)
            .await
            .map_err(|r| r.close())?;
        out.put_i32(i32::try_from(answer.len()).expect("a SASL answer is small"));
        out.put_slice(&answer);
        Ok(())
    }

    /// Takes one client token; `Ok` is the server's next token.
    async fn step(
        &mut self,
        settings: &SaslSettings,
        metrics: &Metrics,
        token: &[u8],
    ) -> Result<Vec<u8>, Refusal> {
        let state = std::mem::replace(&mut self.state, State::Start);
        let mechanism = match &state {
            State::Handshaken { mechanism, .. } | State::ScramFinal { mechanism, .. } => *mechanism,
            State::Start => {
                return Err(Refusal::illegal_state(
                    "SaslAuthenticate before SaslHandshake",
                ))
            }
            State::Done => {
                self.state = State::Done;
                return Err(Refusal::illegal_state("already authenticated"));
            }
        };
        let result = match token.len() > MAX_TOKEN_BYTES {
            true => Err(Refusal {
                kind: "sasl_token_too_large",
                ..Refusal::failed(format!(
                    "SASL token of {} bytes is beyond the limit of {MAX_TOKEN_BYTES}",
                    token.len()
                ))
            }),
            false => self.advance(state, settings, token).await,
        };
        match &result {
            Ok(_) if matches!(self.state, State::Done) => {
                metrics.kafka.sasl_login(mechanism.name(), true)
            }
            Ok(_) => {}
            Err(_) => metrics.kafka.sasl_login(mechanism.name(), false),
        }
        result
    }

    async fn advance(
        &mut self,
        state: State,
        settings: &SaslSettings,
        token: &[u8],
    ) -> Result<Vec<u8>, Refusal> {
        let invalid = |mechanism: SaslMechanism| {
            Refusal::failed(format!(
                "Authentication failed during authentication due to invalid credentials with SASL mechanism {}",
                mechanism.name()
            ))
        };
        match state {
            State::Handshaken {
                mechanism: SaslMechanism::Plain,
                ..
            } => {
                let (user, password) = plain_credentials(token)
                    .ok_or_else(|| Refusal::failed("malformed PLAIN token".into()))?;
                let auth = &self.listener.auth;
                if !auth.verify_blocking(user, password).await {
                    return Err(Refusal::failed(
                        "Authentication failed: Invalid username or password".into(),
                    ));
                }
                self.logged_in(user);
                Ok(Vec::new())
            }
            State::Handshaken { mechanism, raw } => {
                let scram = mechanism.scram().expect("PLAIN is handled above");
                let auth = &self.listener.auth;
                let lookup = |user: &str| auth.entry(user)?.scram(scram).cloned();
                let decoy = |user: &str| settings.decoy(scram, user);
                let (exchange, server_first) =
                    Exchange::start(token, lookup, decoy, &settings.server_nonce())
                        .map_err(|e| scram_refusal(e, mechanism))?;
                self.state = State::ScramFinal {
                    mechanism,
                    exchange: Box::new(exchange),
                    raw,
                };
                Ok(server_first)
            }
            State::ScramFinal {
                mechanism,
                exchange,
                ..
            } => match exchange.finish(token) {
                Ok((user, server_final)) => {
                    self.logged_in(&user);
                    Ok(server_final)
                }
                Err(ScramError::InvalidCredentials) => Err(invalid(mechanism)),
                Err(e) => Err(scram_refusal(e, mechanism)),
            },
            State::Start | State::Done => unreachable!("refused by `step`"),
        }
    }

    fn logged_in(&mut self, user: &str) {
        self.principal = Some(Arc::from(user));
        self.state = State::Done;
    }
}

fn scram_refusal(e: ScramError, mechanism: SaslMechanism) -> Refusal {
    Refusal::failed(format!("{} authentication failed: {e}", mechanism.name()))
}

/// A PLAIN token (RFC 4616): `authzid NUL authcid NUL password`, where the
/// authorisation id is empty or the user.
fn plain_credentials(token: &[u8]) -> Option<(&str, &[u8])> {
    let mut parts = token.splitn(3, |b| *b == 0);
    let (authzid, user, password) = (parts.next()?, parts.next()?, parts.next()?);
    let user = std::str::from_utf8(user).ok().filter(|u| !u.is_empty())?;
    if !authzid.is_empty() && authzid != user.as_bytes() {
        return None;
    }
    Some((user, password))
}

/// The size of the raw SASL token at the start of `buf` (after SaslHandshake
/// v0), once its 4-byte size has arrived; a size beyond [`MAX_TOKEN_BYTES`]
/// (or negative) is refused before any of the token is read.
pub fn peek_raw_token(buf: &[u8]) -> Result<Option<usize>, Close> {
    let Some(size) = buf.get(..4) else {
        return Ok(None);
    };
    let size = i32::from_be_bytes(size.try_into().expect("4 bytes"));
    match usize::try_from(size) {
        Ok(size) if size <= MAX_TOKEN_BYTES => Ok(Some(size)),
        _ => Err(Close {
            kind: "sasl_token_too_large",
            why: format!("raw SASL token of size {size}: beyond the limit of {MAX_TOKEN_BYTES}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use ring::{digest, pbkdf2};

    use super::*;
    use crate::auth::{Auth, PasswordEntry, PasswordFile};
    use crate::platform::Platform;

    fn login(anonymous: bool) -> Login {
        let mut file = PasswordFile::default();
        let entry = PasswordEntry::new("pw", NonZeroU32::new(1000).unwrap()).unwrap();
        file.users.insert("alice".into(), entry);
        Login::new(ListenerAuth {
            auth: Arc::new(Auth::new(Some(file), None)),
            anonymous,
        })
    }

    fn setup() -> (SaslSettings, Arc<Metrics>) {
        let names: Vec<String> = ["PLAIN", "SCRAM-SHA-512"].map(String::from).to_vec();
        (
            SaslSettings::new(&names),
            Metrics::new(&Platform::detect(), 10),
        )
    }

    fn handshake(l: &mut Login, s: &SaslSettings, mechanism: &str, v: i16) -> (i16, bool) {
        let req = SaslHandshakeRequest::default()
            .with_mechanism(StrBytes::from_string(mechanism.to_string()));
        let (resp, next) = l.handshake(s, req, v);
        (resp.error_code, next.is_ok())
    }

    async fn authenticate(
        l: &mut Login,
        s: &SaslSettings,
        m: &Metrics,
        token: &[u8],
    ) -> SaslAuthenticateResponse {
        let req = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::copy_from_slice(token));
        l.authenticate(s, m, req).await.0
    }

    #[tokio::test]
    async fn plain_login_sets_the_principal_and_counts() {
        let (s, m) = setup();
        let mut l = login(false);
        assert!(!l.may_serve());
        assert_eq!(handshake(&mut l, &s, "PLAIN", 1), (0, true));
        let resp = authenticate(&mut l, &s, &m, b"\0alice\0pw").await;
        assert_eq!(resp.error_code, 0);
        assert_eq!(l.principal().map(|p| &**p), Some("alice"));
        assert!(l.may_serve());
        assert_eq!(m.kafka.sasl_logins("PLAIN", true), 1);
        // Nothing more after the login.
        let resp = authenticate(&mut l, &s, &m, b"\0alice\0pw").await;
        assert_eq!(resp.error_code, ResponseError::IllegalSaslState.code());
        assert_eq!(
            handshake(&mut l, &s, "PLAIN", 1),
            (ResponseError::IllegalSaslState.code(), false)
        );
    }

    #[tokio::test]
    async fn plain_refusals() {
        let (s, m) = setup();
        for token in [
            &b"\0alice\0pW"[..],
            b"\0bob\0pw",
            b"admin\0alice\0pw",
            b"alice\0pw",
            b"\0\0pw",
        ] {
            let mut l = login(true);
            handshake(&mut l, &s, "PLAIN", 1);
            let resp = authenticate(&mut l, &s, &m, token).await;
            assert_eq!(
                resp.error_code,
                ResponseError::SaslAuthenticationFailed.code()
            );
            assert!(resp.error_message.is_some());
            assert_eq!(l.principal(), None);
        }
        assert_eq!(m.kafka.sasl_logins("PLAIN", false), 5);
        assert_eq!(
            plain_credentials(b"alice\0alice\0p\0w"),
            Some(("alice", &b"p\0w"[..]))
        );
    }

    #[tokio::test]
    async fn out_of_order_and_unsupported() {
        let (s, m) = setup();
        let mut l = login(false);
        let resp = authenticate(&mut l, &s, &m, b"\0alice\0pw").await;
        assert_eq!(resp.error_code, ResponseError::IllegalSaslState.code());
        let mut l = login(false);
        let req = SaslHandshakeRequest::default()
            .with_mechanism(StrBytes::from_static_str("SCRAM-SHA-256"));
        let (resp, next) = l.handshake(&s, req, 1);
        assert_eq!(
            resp.error_code,
            ResponseError::UnsupportedSaslMechanism.code()
        );
        assert_eq!(
            resp.mechanisms,
            ["PLAIN", "SCRAM-SHA-512"].map(StrBytes::from_static_str)
        );
        assert_eq!(next.unwrap_err().kind, "sasl_unsupported_mechanism");
        let mut l = login(false);
        handshake(&mut l, &s, "PLAIN", 1);
        assert_eq!(
            handshake(&mut l, &s, "PLAIN", 1),
            (ResponseError::IllegalSaslState.code(), false)
        );
        let mut l = login(false);
        handshake(&mut l, &s, "PLAIN", 1);
        let resp = authenticate(&mut l, &s, &m, &vec![0; MAX_TOKEN_BYTES + 1]).await;
        assert_eq!(
            resp.error_code,
            ResponseError::SaslAuthenticationFailed.code()
        );
    }

    /// The client side of SCRAM-SHA-512 for `password`: client-final for this server-first.
    fn client_final(client_first_bare: &str, server_first: &str, password: &[u8]) -> String {
        let fields: Vec<&str> = server_first.split(',').collect();
        let nonce = fields[0].strip_prefix("r=").unwrap();
        let salt = STANDARD
            .decode(fields[1].strip_prefix("s=").unwrap())
            .unwrap();
        let i: NonZeroU32 = fields[2].strip_prefix("i=").unwrap().parse().unwrap();
        let mut salted = [0u8; 64];
        pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA512, i, &salt, password, &mut salted);
        let key = hmac::Key::new(hmac::HMAC_SHA512, &salted);
        let client_key = hmac::sign(&key, b"Client Key");
        let stored = digest::digest(&digest::SHA512, client_key.as_ref());
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let sig = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA512, stored.as_ref()),
            auth_message.as_bytes(),
        );
        let proof: Vec<u8> = client_key
            .as_ref()
            .iter()
            .zip(sig.as_ref())
            .map(|(a, b)| a ^ b)
            .collect();
        format!("{without_proof},p={}", STANDARD.encode(proof))
    }

    #[tokio::test]
    async fn scram_login_in_sasl_authenticate_and_in_raw_frames() {
        let (s, m) = setup();
        // v1: tokens in SaslAuthenticate.
        let mut l = login(false);
        handshake(&mut l, &s, "SCRAM-SHA-512", 1);
        assert!(!l.awaits_raw_token());
        let first = authenticate(&mut l, &s, &m, b"n,,n=alice,r=fyko+d2lbbFgONRv9qkxdawL").await;
        assert_eq!(first.error_code, 0);
        let server_first = String::from_utf8(first.auth_bytes.to_vec()).unwrap();
        let fin = client_final("n=alice,r=fyko+d2lbbFgONRv9qkxdawL", &server_first, b"pw");
        let last = authenticate(&mut l, &s, &m, fin.as_bytes()).await;
        assert_eq!(last.error_code, 0, "{:?}", last.error_message);
        assert!(last.auth_bytes.starts_with(b"v="));
        assert_eq!(l.principal().map(|p| &**p), Some("alice"));

        // v0: raw frames; a wrong password closes without an answer.
        let mut l = login(false);
        handshake(&mut l, &s, "SCRAM-SHA-512", 0);
        assert!(l.awaits_raw_token());
        let mut out = BytesMut::new();
        l.raw_token(&s, &m, b"n,,n=alice,r=abc", &mut out)
            .await
            .unwrap();
        let server_first = std::str::from_utf8(&out[4..]).unwrap().to_string();
        assert_eq!(
            out.len() - 4,
            i32::from_be_bytes(out[..4].try_into().unwrap()) as usize
        );
        let fin = client_final("n=alice,r=abc", &server_first, b"wrong");
        out.clear();
        let close = l
            .raw_token(&s, &m, fin.as_bytes(), &mut out)
            .await
            .unwrap_err();
        assert_eq!(close.kind, "sasl_authentication_failed");
        assert!(out.is_empty());
        assert_eq!(m.kafka.sasl_logins("SCRAM-SHA-512", true), 1);
        assert_eq!(m.kafka.sasl_logins("SCRAM-SHA-512", false), 1);
    }

    #[tokio::test]
    async fn unknown_user_salt_is_stable_and_the_login_fails() {
        let (s, m) = setup();
        let mut salts = Vec::new();
        for _ in 0..2 {
            let mut l = login(false);
            handshake(&mut l, &s, "SCRAM-SHA-512", 1);
            let first = authenticate(&mut l, &s, &m, b"n,,n=mallory,r=abc").await;
            assert_eq!(first.error_code, 0);
            let server_first = String::from_utf8(first.auth_bytes.to_vec()).unwrap();
            salts.push(server_first.split(',').nth(1).unwrap().to_string());
            let fin = client_final("n=mallory,r=abc", &server_first, b"pw");
            let last = authenticate(&mut l, &s, &m, fin.as_bytes()).await;
            assert_eq!(
                last.error_code,
                ResponseError::SaslAuthenticationFailed.code()
            );
        }
        assert_eq!(salts[0], salts[1]);
    }

    #[test]
    fn raw_token_sizes() {
        assert_eq!(peek_raw_token(&[0, 0]).unwrap(), None);
        assert_eq!(peek_raw_token(&[0, 0, 0, 5]).unwrap(), Some(5));
        assert_eq!(
            peek_raw_token(&[0, 0, 0x20, 0]).unwrap(),
            Some(MAX_TOKEN_BYTES)
        );
        assert_eq!(
            peek_raw_token(&[0, 0, 0x20, 1]).unwrap_err().kind,
            "sasl_token_too_large"
        );
        assert_eq!(
            peek_raw_token(&[0xff, 0xff, 0xff, 0xff]).unwrap_err().kind,
            "sasl_token_too_large"
        );
    }
}
