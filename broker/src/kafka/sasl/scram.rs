//! The server side of one SCRAM exchange (RFC 5802, RFC 7677) as Kafka runs
//! it: client-first in, server-first out, client-final in, server-final out.
//! Pure: the caller looks the user up and supplies the server nonce.
//!
//! Channel binding is not offered: the GS2 header must be `n` or `y`, and
//! the client-final `c=` must be the base64 of that header (`biws` for
//! `n,,`). An `a=` authorisation id is accepted only when it names the user.
//! A user without stored keys goes through the same exchange with decoy keys
//! and fails at the proof, so the answers do not tell which names exist.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::auth::scram::{constant_time_eq, ScramCredential};

/// Why an exchange failed; the text goes back in SaslAuthenticate's error message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("malformed SCRAM {message} message: {why}")]
    Malformed {
        message: &'static str,
        why: &'static str,
    },
    #[error("SCRAM channel binding is not supported (use the GS2 header `n,,`)")]
    ChannelBindingRequested,
    #[error("SCRAM authorization id must be empty or the user name")]
    AuthzidMismatch,
    #[error("SCRAM channel binding in client-final does not match the GS2 header")]
    ChannelBindingMismatch,
    #[error("SCRAM nonce in client-final does not match the one sent")]
    NonceMismatch,
    #[error("invalid credentials")]
    InvalidCredentials,
}

fn malformed(message: &'static str, why: &'static str) -> ScramError {
    ScramError::Malformed { message, why }
}

/// An exchange after the server-first message, waiting for client-final.
#[derive(Debug)]
pub struct Exchange {
    user: String,
    /// The user has stored keys for this mechanism (otherwise `credential` is a decoy).
    known: bool,
    credential: ScramCredential,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    /// Client nonce followed by the server's.
    nonce: String,
}

impl Exchange {
    /// Reads client-first and answers server-first. `lookup` gives the
    /// user's stored credential, `decoy` the stand-in for a user without one.
    pub fn start(
        client_first: &[u8],
        lookup: impl FnOnce(&str) -> Option<ScramCredential>,
        decoy: impl FnOnce(&str) -> ScramCredential,
        server_nonce: &str,
    ) -> Result<(Exchange, Vec<u8>), ScramError> {
        const M: &str = "client-first";
        let text = std::str::from_utf8(client_first).map_err(|_| malformed(M, "not UTF-8"))?;
        let (flag, rest) = text.split_once(',').ok_or(malformed(M, "no GS2 header"))?;
        match flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => return Err(ScramError::ChannelBindingRequested),
            _ => return Err(malformed(M, "GS2 header must start with `n,`")),
        }
        let (authzid, bare) = rest.split_once(',').ok_or(malformed(M, "no GS2 header"))?;
        let authzid = match authzid {
            "" => None,
            a => Some(sasl_name(
                a.strip_prefix("a=")
                    .ok_or(malformed(M, "bad authorization id"))?,
            )?),
        };
        let gs2_header = text[..text.len() - bare.len()].to_string();
        let mut attrs = bare.split(',');
        let user = match attrs.next() {
            Some(a) if a.starts_with("m=") => {
                return Err(malformed(M, "mandatory extensions are not supported"))
            }
            Some(a) => sasl_name(a.strip_prefix("n=").ok_or(malformed(M, "no `n=` user"))?)?,
            None => return Err(malformed(M, "no `n=` user")),
        };
        if user.is_empty() {
            return Err(malformed(M, "empty user name"));
        }
        if authzid.as_ref().is_some_and(|a| a != &user) {
            return Err(ScramError::AuthzidMismatch);
        }
        let client_nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(malformed(M, "no `r=` nonce"))?;
        if !valid_nonce(client_nonce) {
            return Err(malformed(M, "nonce must be printable ASCII without commas"));
        }
        // Further attributes are extensions (Kafka's `tokenauth=...`); none is served.
        let (credential, known) = match lookup(&user) {
            Some(c) => (c, true),
            None => (decoy(&user), false),
        };
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(&credential.salt),
            credential.iterations
        );
        let reply = server_first.clone().into_bytes();
        Ok((
            Exchange {
                user,
                known,
                credential,
                gs2_header,
                client_first_bare: bare.to_string(),
                server_first,
                nonce,
            },
            reply,
        ))
    }

    /// Reads client-final: checks channel binding, nonce and proof, and
    /// answers server-final (`v=`); `Ok` carries the authenticated user.
    pub fn finish(self, client_final: &[u8]) -> Result<(String, Vec<u8>), ScramError> {
        const M: &str = "client-final";
        let text = std::str::from_utf8(client_final).map_err(|_| malformed(M, "not UTF-8"))?;
        let at = text.rfind(",p=").ok_or(malformed(M, "no `p=` proof"))?;
        let (without_proof, proof) = (&text[..at], &text[at + 3..]);
        let proof = STANDARD
            .decode(proof)
            .map_err(|_| malformed(M, "proof is not base64"))?;
        let mut attrs = without_proof.split(',');
        let binding = attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(malformed(M, "no `c=` channel binding"))?;
        let binding = STANDARD
            .decode(binding)
            .map_err(|_| malformed(M, "channel binding is not base64"))?;
        if binding != self.gs2_header.as_bytes() {
            return Err(ScramError::ChannelBindingMismatch);
        }
        let nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(malformed(M, "no `r=` nonce"))?;
        // librdkafka sends its client nonce in front of the whole combined
        // nonce; Apache Kafka accepts a nonce that ends with the one it sent,
        // and so does this broker (the server part is still required).
        let tail = nonce
            .len()
            .checked_sub(self.nonce.len())
            .and_then(|start| nonce.get(start..));
        if !tail.is_some_and(|t| constant_time_eq(t.as_bytes(), self.nonce.as_bytes())) {
            return Err(ScramError::NonceMismatch);
        }
        let auth_message = format!(
            "{},{},{without_proof}",
            self.client_first_bare, self.server_first
        );
        let proved = self
            .credential
            .verify_client_proof(auth_message.as_bytes(), &proof);
        if !(proved && self.known) {
            return Err(ScramError::InvalidCredentials);
        }
        let signature = self.credential.server_signature(auth_message.as_bytes());
        let server_final = format!("v={}", STANDARD.encode(signature));
        Ok((self.user, server_final.into_bytes()))
    }
}

/// Decodes a SCRAM `saslname`: `=2C` is a comma, `=3D` an equals sign, and
/// no other `=` may appear.
fn sasl_name(s: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(malformed("client-first", "bad `=` escape in a name")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// RFC 5802's `printable`: 0x21..=0x7E except the comma.
fn valid_nonce(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;
    use crate::auth::scram::ScramMechanism;

    const CLIENT_FIRST: &[u8] = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const CLIENT_FINAL: &[u8] = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
        p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";

    /// RFC 7677 section 3: user "user", password "pencil".
    fn pencil() -> ScramCredential {
        ScramCredential::derive(
            ScramMechanism::Sha256,
            b"pencil",
            STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap(),
            NonZeroU32::new(4096).unwrap(),
        )
    }

    fn decoy(_: &str) -> ScramCredential {
        ScramCredential {
            salt: vec![9; 16],
            stored_key: vec![0; 32],
            server_key: vec![0; 32],
            ..pencil()
        }
    }

    fn start(client_first: &[u8]) -> Result<(Exchange, Vec<u8>), ScramError> {
        Exchange::start(
            client_first,
            |u| (u == "user").then(pencil),
            decoy,
            SERVER_NONCE,
        )
    }

    #[test]
    fn rfc7677_exchange_golden_vector() {
        let (exchange, server_first) = start(CLIENT_FIRST).unwrap();
        assert_eq!(
            server_first,
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let (user, server_final) = exchange.finish(CLIENT_FINAL).unwrap();
        assert_eq!(user, "user");
        assert_eq!(
            server_final,
            b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    #[test]
    fn wrong_proof_nonce_or_binding_fails() {
        let finish = |client_final: &[u8]| start(CLIENT_FIRST).unwrap().0.finish(client_final);
        // One proof character changed.
        let bad_proof = String::from_utf8(CLIENT_FINAL.to_vec())
            .unwrap()
            .replace("p=dHz", "p=dHy");
        assert_eq!(
            finish(bad_proof.as_bytes()).unwrap_err(),
            ScramError::InvalidCredentials
        );
        let bad_nonce = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k1,\
            p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        assert_eq!(finish(bad_nonce).unwrap_err(), ScramError::NonceMismatch);
        let short_nonce = b"c=biws,r=rOprNGfwEbeRWgbNEkqO,p=AAAA";
        assert_eq!(finish(short_nonce).unwrap_err(), ScramError::NonceMismatch);
        // `eSws` is base64("y,,"), not the header the client sent.
        let bad_binding = b"c=eSws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
            p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        assert_eq!(
            finish(bad_binding).unwrap_err(),
            ScramError::ChannelBindingMismatch
        );
        assert!(matches!(
            finish(b"c=biws,r=x").unwrap_err(),
            ScramError::Malformed { .. }
        ));
    }

    /// librdkafka's client-final: its own nonce, then the combined one.
    #[test]
    fn librdkafka_nonce_form_is_accepted() {
        let (exchange, server_first) = start(b"n,,n=user,r=abc").unwrap();
        let combined = std::str::from_utf8(&server_first[2..])
            .unwrap()
            .split(',')
            .next()
            .unwrap();
        let without_proof = format!("c=biws,r=abc{combined}");
        let auth_message = format!(
            "n=user,r=abc,{},{without_proof}",
            std::str::from_utf8(&server_first).unwrap()
        );
        let proof = client_proof(b"pencil", &auth_message);
        let msg = format!("{without_proof},p={}", STANDARD.encode(proof));
        assert_eq!(exchange.finish(msg.as_bytes()).unwrap().0, "user");
    }

    /// ClientKey XOR HMAC(StoredKey, AuthMessage), as a client computes it.
    fn client_proof(password: &[u8], auth_message: &str) -> Vec<u8> {
        use ring::{digest, hmac, pbkdf2};
        let cred = pencil();
        let mut salted = [0u8; 32];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            cred.iterations,
            &cred.salt,
            password,
            &mut salted,
        );
        let client_key = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &salted), b"Client Key");
        let stored = digest::digest(&digest::SHA256, client_key.as_ref());
        let sig = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, stored.as_ref()),
            auth_message.as_bytes(),
        );
        client_key
            .as_ref()
            .iter()
            .zip(sig.as_ref())
            .map(|(a, b)| a ^ b)
            .collect()
    }

    #[test]
    fn unknown_user_gets_a_server_first_and_fails_at_the_proof() {
        let (exchange, server_first) = start(b"n,,n=nobody,r=abc").unwrap();
        assert_eq!(
            std::str::from_utf8(&server_first).unwrap(),
            format!("r=abc{SERVER_NONCE},s=CQkJCQkJCQkJCQkJCQkJCQ==,i=4096")
        );
        let final_msg = format!("c=biws,r=abc{SERVER_NONCE},p=AAAA");
        assert_eq!(
            exchange.finish(final_msg.as_bytes()).unwrap_err(),
            ScramError::InvalidCredentials
        );
    }

    #[test]
    fn client_first_forms() {
        // authzid equal to the user: accepted, and `c=` must carry the whole header.
        let (exchange, _) = start(b"n,a=user,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
        assert_eq!(exchange.gs2_header, "n,a=user,");
        assert_eq!(
            start(b"n,a=admin,n=user,r=x").unwrap_err(),
            ScramError::AuthzidMismatch
        );
        assert_eq!(
            start(b"p=tls-unique,,n=user,r=x").unwrap_err(),
            ScramError::ChannelBindingRequested
        );
        // Escaped names and an extension after the nonce (Kafka's tokenauth).
        let (exchange, _) = start(b"y,,n=a=2Cb=3Dc,r=x,tokenauth=true").unwrap();
        assert_eq!(exchange.user, "a,b=c");
        for bad in [
            &b""[..],
            b"n,,",
            b"x,,n=user,r=x",
            b"n,,m=ext,n=user,r=x",
            b"n,,n=,r=x",
            b"n,,n=us=er,r=x",
            b"n,,n=user",
            b"n,,n=user,r=",
            b"n,,n=user,r=a b",
            b"n,,n=user,r=\xff",
        ] {
            assert!(
                matches!(start(bad).unwrap_err(), ScramError::Malformed { .. }),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
