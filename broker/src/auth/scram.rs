//! SCRAM credentials (RFC 5802, RFC 7677): the salted, iterated keys a
//! server stores so it can check a SCRAM-SHA-256/512 client proof without
//! keeping the password, derived when a password-file entry is written.

use std::num::NonZeroU32;

use ring::{digest, hmac, pbkdf2};

/// Iterations for SCRAM keys: the client repeats them on every login, so
/// this is the RFC 7677 / Kafka default, not the (higher) login-hash count.
pub const SCRAM_ITERATIONS: u32 = 4096;

/// SCRAM's hash function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramMechanism {
    Sha256,
    Sha512,
}

impl ScramMechanism {
    /// The tag of this mechanism in the password file.
    pub fn tag(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "scram-sha-256",
            ScramMechanism::Sha512 => "scram-sha-512",
        }
    }

    pub fn from_tag(tag: &str) -> Option<ScramMechanism> {
        match tag {
            "scram-sha-256" => Some(ScramMechanism::Sha256),
            "scram-sha-512" => Some(ScramMechanism::Sha512),
            _ => None,
        }
    }

    /// Key length in bytes (the hash output length).
    pub fn key_len(self) -> usize {
        match self {
            ScramMechanism::Sha256 => 32,
            ScramMechanism::Sha512 => 64,
        }
    }

    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            ScramMechanism::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            ScramMechanism::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            ScramMechanism::Sha256 => hmac::HMAC_SHA256,
            ScramMechanism::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            ScramMechanism::Sha256 => &digest::SHA256,
            ScramMechanism::Sha512 => &digest::SHA512,
        }
    }
}

/// What the server keeps for one user and mechanism (RFC 5802 section 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramCredential {
    pub mechanism: ScramMechanism,
    pub iterations: NonZeroU32,
    pub salt: Vec<u8>,
    /// H(ClientKey)
    pub stored_key: Vec<u8>,
    /// HMAC(SaltedPassword, "Server Key")
    pub server_key: Vec<u8>,
}

impl ScramCredential {
    /// Derives the stored keys from a password (taken as its UTF-8 bytes;
    /// SASLprep is not applied, so keep passwords to ASCII for SCRAM clients).
    pub fn derive(
        mechanism: ScramMechanism,
        password: &[u8],
        salt: Vec<u8>,
        iterations: NonZeroU32,
    ) -> ScramCredential {
        let mut salted = vec![0u8; mechanism.key_len()];
        pbkdf2::derive(mechanism.pbkdf2(), iterations, &salt, password, &mut salted);
        let key = hmac::Key::new(mechanism.hmac(), &salted);
        let client_key = hmac::sign(&key, b"Client Key");
        let stored_key = digest::digest(mechanism.digest(), client_key.as_ref());
        let server_key = hmac::sign(&key, b"Server Key");
        ScramCredential {
            mechanism,
            iterations,
            salt,
            stored_key: stored_key.as_ref().to_vec(),
            server_key: server_key.as_ref().to_vec(),
        }
    }

    /// Whether `proof` (the client-final message's `p=`) proves knowledge of
    /// the password for this `auth_message`: ClientKey = proof XOR
    /// HMAC(StoredKey, AuthMessage) must hash to StoredKey. Constant time.
    pub fn verify_client_proof(&self, auth_message: &[u8], proof: &[u8]) -> bool {
        let key = hmac::Key::new(self.mechanism.hmac(), &self.stored_key);
        let signature = hmac::sign(&key, auth_message);
        if proof.len() != signature.as_ref().len() {
            return false;
        }
        let client_key: Vec<u8> = proof
            .iter()
            .zip(signature.as_ref())
            .map(|(p, s)| p ^ s)
            .collect();
        let hashed = digest::digest(self.mechanism.digest(), &client_key);
        constant_time_eq(hashed.as_ref(), &self.stored_key)
    }

    /// The server-final message's `v=`: HMAC(ServerKey, AuthMessage).
    pub fn server_signature(&self, auth_message: &[u8]) -> Vec<u8> {
        let key = hmac::Key::new(self.mechanism.hmac(), &self.server_key);
        hmac::sign(&key, auth_message).as_ref().to_vec()
    }
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;

    use super::*;

    /// RFC 7677 section 3: user "user", password "pencil".
    #[test]
    fn rfc7677_scram_sha256_test_vector() {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let cred = ScramCredential::derive(
            ScramMechanism::Sha256,
            b"pencil",
            salt,
            NonZeroU32::new(4096).unwrap(),
        );
        let auth_message = "n=user,r=rOprNGfwEbeRWgbNEkqO,\
            r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,\
            c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let proof = STANDARD
            .decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        assert!(cred.verify_client_proof(auth_message.as_bytes(), &proof));
        assert_eq!(
            STANDARD.encode(cred.server_signature(auth_message.as_bytes())),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        // A proof for another password, or one bit off, is refused.
        let mut bad = proof.clone();
        bad[0] ^= 1;
        assert!(!cred.verify_client_proof(auth_message.as_bytes(), &bad));
        assert!(!cred.verify_client_proof(auth_message.as_bytes(), &proof[..31]));
    }

    #[test]
    fn sha512_keys_have_the_sha512_length_and_differ_by_salt() {
        let it = NonZeroU32::new(4096).unwrap();
        let a = ScramCredential::derive(ScramMechanism::Sha512, b"pw", vec![1; 16], it);
        let b = ScramCredential::derive(ScramMechanism::Sha512, b"pw", vec![2; 16], it);
        assert_eq!(a.stored_key.len(), 64);
        assert_eq!(a.server_key.len(), 64);
        assert_ne!(a.stored_key, b.stored_key);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
