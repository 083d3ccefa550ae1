//! The password file: one user per line, a salted PBKDF2 login hash and the
//! SCRAM stored keys, read at start-up and written by `broker passwd`.
//!
//! A line (fields separated by `:`, base64 is standard with padding):
//!
//! ```text
//! alice:$pbkdf2-sha256$100000$SALT$HASH:$scram-sha-256$4096$SALT$STOREDKEY$SERVERKEY:$scram-sha-512$4096$SALT$STOREDKEY$SERVERKEY
//! ```
//!
//! mosquitto_passwd's `user:$7$ITERATIONS$SALT$HASH` (PBKDF2-SHA512) lines
//! are read as well (such users have no SCRAM keys). Blank lines and lines
//! starting with `#` are ignored.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::num::NonZeroU32;
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::pbkdf2;
use ring::rand::{SecureRandom, SystemRandom};

use super::scram::{ScramCredential, ScramMechanism, SCRAM_ITERATIONS};

/// Default PBKDF2-HMAC-SHA256 iterations of a login hash written by `broker passwd`.
pub const DEFAULT_ITERATIONS: u32 = 100_000;
/// Salt bytes of a new entry (login hash and each SCRAM credential).
const SALT_LEN: usize = 16;

/// The algorithm of a login hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlgorithm {
    /// `$pbkdf2-sha256$`, what `broker passwd` writes.
    Pbkdf2Sha256,
    /// `$7$`, mosquitto_passwd's PBKDF2-HMAC-SHA512.
    MosquittoPbkdf2Sha512,
}

impl HashAlgorithm {
    fn tag(self) -> &'static str {
        match self {
            HashAlgorithm::Pbkdf2Sha256 => "pbkdf2-sha256",
            HashAlgorithm::MosquittoPbkdf2Sha512 => "7",
        }
    }

    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            HashAlgorithm::Pbkdf2Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            HashAlgorithm::MosquittoPbkdf2Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn hash_len(self) -> usize {
        match self {
            HashAlgorithm::Pbkdf2Sha256 => 32,
            HashAlgorithm::MosquittoPbkdf2Sha512 => 64,
        }
    }
}

/// A salted, iterated login hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginHash {
    pub algorithm: HashAlgorithm,
    pub iterations: NonZeroU32,
    pub salt: Vec<u8>,
    pub hash: Vec<u8>,
}

impl LoginHash {
    /// Whether `password` is the one hashed (ring compares in constant time).
    pub fn verify(&self, password: &[u8]) -> bool {
        pbkdf2::verify(
            self.algorithm.pbkdf2(),
            self.iterations,
            &self.salt,
            password,
            &self.hash,
        )
        .is_ok()
    }
}

/// One user of the password file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordEntry {
    pub login: LoginHash,
    /// SCRAM stored keys, one per mechanism (none for mosquitto lines).
    pub scram: Vec<ScramCredential>,
}

impl PasswordEntry {
    /// A new entry: fresh random salts, the login hash with `iterations`,
    /// SCRAM-SHA-256 and -512 keys with [`SCRAM_ITERATIONS`].
    pub fn new(password: &str, iterations: NonZeroU32) -> Result<PasswordEntry, String> {
        let rng = SystemRandom::new();
        let salt = || -> Result<Vec<u8>, String> {
            let mut s = vec![0u8; SALT_LEN];
            rng.fill(&mut s)
                .map_err(|_| "the system random number generator failed".to_string())?;
            Ok(s)
        };
        let algorithm = HashAlgorithm::Pbkdf2Sha256;
        let login_salt = salt()?;
        let mut hash = vec![0u8; algorithm.hash_len()];
        pbkdf2::derive(
            algorithm.pbkdf2(),
            iterations,
            &login_salt,
            password.as_bytes(),
            &mut hash,
        );
        let scram_iterations = NonZeroU32::new(SCRAM_ITERATIONS).expect("not zero");
        let mut scram = Vec::new();
        for mechanism in [ScramMechanism::Sha256, ScramMechanism::Sha512] {
            scram.push(ScramCredential::derive(
                mechanism,
                password.as_bytes(),
                salt()?,
                scram_iterations,
            ));
        }
        Ok(PasswordEntry {
            login: LoginHash {
                algorithm,
                iterations,
                salt: login_salt,
                hash,
            },
            scram,
        })
    }

    /// The SCRAM credential for a mechanism, if stored.
    pub fn scram(&self, mechanism: ScramMechanism) -> Option<&ScramCredential> {
        self.scram.iter().find(|c| c.mechanism == mechanism)
    }

    /// The entry as the text after `user:` on its line.
    pub fn encode(&self) -> String {
        let l = &self.login;
        let mut out = format!(
            "${}${}${}${}",
            l.algorithm.tag(),
            l.iterations,
            STANDARD.encode(&l.salt),
            STANDARD.encode(&l.hash)
        );
        for c in &self.scram {
            out.push_str(&format!(
                ":${}${}${}${}${}",
                c.mechanism.tag(),
                c.iterations,
                STANDARD.encode(&c.salt),
                STANDARD.encode(&c.stored_key),
                STANDARD.encode(&c.server_key)
            ));
        }
        out
    }

    /// Parses the text after `user:`; the error says what is wrong.
    pub fn decode(text: &str) -> Result<PasswordEntry, String> {
        let mut fields = text.split(':');
        let login = fields.next().unwrap_or_default();
        let parts: Vec<&str> = login.split('$').collect();
        let algorithm = match parts.get(1).copied() {
            Some("pbkdf2-sha256") => HashAlgorithm::Pbkdf2Sha256,
            Some("7") => HashAlgorithm::MosquittoPbkdf2Sha512,
            _ if !login.starts_with('$') => {
                return Err("the password is not hashed: write the file with `broker passwd FILE USER`".into())
            }
            Some(other) => return Err(format!(
                "unknown hash `${other}$` (expected `$pbkdf2-sha256$` from `broker passwd`, or mosquitto's `$7$`)"
            )),
            None => return Err("empty hash".into()),
        };
        if parts.len() != 5 || !parts[0].is_empty() {
            return Err(format!(
                "expected `${}$ITERATIONS$SALT$HASH`",
                algorithm.tag()
            ));
        }
        let iterations = parse_iterations(parts[2])?;
        let salt = b64(parts[3], "salt")?;
        let hash = b64(parts[4], "hash")?;
        if hash.len() != algorithm.hash_len() {
            return Err(format!(
                "hash is {} bytes, expected {}",
                hash.len(),
                algorithm.hash_len()
            ));
        }
        let mut scram = Vec::new();
        for field in fields {
            let p: Vec<&str> = field.split('$').collect();
            let mechanism = p
                .get(1)
                .and_then(|t| ScramMechanism::from_tag(t))
                .filter(|_| p.len() == 6 && p[0].is_empty())
                .ok_or_else(|| {
                    format!("bad SCRAM field `{field}` (expected `$scram-sha-256$ITERATIONS$SALT$STOREDKEY$SERVERKEY`)")
                })?;
            let (stored_key, server_key) = (b64(p[4], "StoredKey")?, b64(p[5], "ServerKey")?);
            if stored_key.len() != mechanism.key_len() || server_key.len() != mechanism.key_len() {
                return Err(format!(
                    "{} keys must be {} bytes",
                    mechanism.tag(),
                    mechanism.key_len()
                ));
            }
            scram.push(ScramCredential {
                mechanism,
                iterations: parse_iterations(p[2])?,
                salt: b64(p[3], "salt")?,
                stored_key,
                server_key,
            });
        }
        Ok(PasswordEntry {
            login: LoginHash {
                algorithm,
                iterations,
                salt,
                hash,
            },
            scram,
        })
    }
}

fn parse_iterations(s: &str) -> Result<NonZeroU32, String> {
    s.parse::<NonZeroU32>()
        .map_err(|_| format!("iteration count `{s}` is not a number from 1 to 4294967295"))
}

fn b64(s: &str, what: &str) -> Result<Vec<u8>, String> {
    STANDARD
        .decode(s)
        .map_err(|e| format!("{what} `{s}` is not base64: {e}"))
}

/// A problem in a password file, with the line it is on (0: the whole file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordFileError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for PasswordFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            0 => write!(f, "{}", self.message),
            n => write!(f, "line {n}: {}", self.message),
        }
    }
}

/// Every user of a password file, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PasswordFile {
    pub users: BTreeMap<String, PasswordEntry>,
}

impl PasswordFile {
    /// Parses the text of a password file.
    pub fn parse(text: &str) -> Result<PasswordFile, PasswordFileError> {
        let mut users = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let at = |message: String| PasswordFileError {
                line: i + 1,
                message,
            };
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, rest)) = line.split_once(':') else {
                return Err(at(
                    "expected `user:$pbkdf2-sha256$...` (write it with `broker passwd FILE USER`)"
                        .into(),
                ));
            };
            check_user_name(user).map_err(&at)?;
            let entry =
                PasswordEntry::decode(rest).map_err(|m| at(format!("user `{user}`: {m}")))?;
            if users.insert(user.to_string(), entry).is_some() {
                return Err(at(format!("user `{user}` appears twice")));
            }
        }
        Ok(PasswordFile { users })
    }

    /// Reads a password file; a missing file is an error.
    pub fn load(path: &Path) -> Result<PasswordFile, PasswordFileError> {
        let text = std::fs::read_to_string(path).map_err(|e| PasswordFileError {
            line: 0,
            message: format!("cannot read the password file: {e}"),
        })?;
        PasswordFile::parse(&text)
    }

    /// The file's text: one line per user, sorted by name.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (user, entry) in &self.users {
            out.push_str(user);
            out.push(':');
            out.push_str(&entry.encode());
            out.push('\n');
        }
        out
    }

    /// Writes the file atomically (a temporary file beside it, mode 0600,
    /// synced, then renamed over it).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .map_or_else(|| "passwd".into(), |n| n.to_string_lossy().into_owned());
        let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let result = (|| {
            let mut file = options.open(&tmp)?;
            file.write_all(self.render().as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

/// A user name fits the file and the protocols: not empty, no `:` (the
/// field separator), no whitespace or control characters, at most 256 bytes.
pub fn check_user_name(user: &str) -> Result<(), String> {
    if user.is_empty() {
        return Err("empty user name".into());
    }
    if user.len() > 256 {
        return Err("user name longer than 256 bytes".into());
    }
    if user.contains(':') || user.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "user name `{user}` may not contain `:`, spaces or control characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick() -> NonZeroU32 {
        NonZeroU32::new(1000).unwrap()
    }

    #[test]
    fn an_entry_round_trips_and_verifies_only_its_password() {
        let entry = PasswordEntry::new("s3cret", quick()).unwrap();
        let text = entry.encode();
        assert!(text.starts_with("$pbkdf2-sha256$1000$"), "{text}");
        assert!(text.contains(":$scram-sha-256$4096$"), "{text}");
        assert!(text.contains(":$scram-sha-512$4096$"), "{text}");
        let back = PasswordEntry::decode(&text).unwrap();
        assert_eq!(back, entry);
        assert!(back.login.verify(b"s3cret"));
        assert!(!back.login.verify(b"s3cres"));
        assert!(!back.login.verify(b""));
        // Two entries for one password differ (random salts).
        let other = PasswordEntry::new("s3cret", quick()).unwrap();
        assert_ne!(other.login.salt, entry.login.salt);
        assert_ne!(other.login.hash, entry.login.hash);
        let s256 = back.scram(ScramMechanism::Sha256).unwrap();
        assert_eq!(s256.stored_key.len(), 32);
    }

    #[test]
    fn mosquitto_pbkdf2_sha512_lines_are_read() {
        // From mosquitto_passwd -b (2.0): user "test", password "test".
        let salt = vec![7u8; 12];
        let mut hash = vec![0u8; 64];
        let it = NonZeroU32::new(101).unwrap();
        pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA512, it, &salt, b"test", &mut hash);
        let line = format!(
            "test:$7$101${}${}\n",
            STANDARD.encode(&salt),
            STANDARD.encode(&hash)
        );
        let file = PasswordFile::parse(&line).unwrap();
        let entry = &file.users["test"];
        assert!(entry.login.verify(b"test"));
        assert!(entry.scram.is_empty());
    }

    #[test]
    fn bad_lines_name_the_line_and_the_problem() {
        let good = format!(
            "alice:{}\n",
            PasswordEntry::new("x", quick()).unwrap().encode()
        );
        let err = |text: &str| PasswordFile::parse(text).unwrap_err();
        let e = err(&format!("# users\n\n{good}bob:secret\n"));
        assert_eq!(e.line, 4);
        assert!(
            e.message.contains("not hashed") && e.message.contains("broker passwd"),
            "{e}"
        );
        let e = err(&format!("{good}{good}"));
        assert_eq!(
            (e.line, e.message.as_str()),
            (2, "user `alice` appears twice")
        );
        let e = err("carol\n");
        assert_eq!(e.line, 1);
        let e = err("dave:$md5$1$AA==$AA==\n");
        assert!(e.message.contains("unknown hash `$md5$`"), "{e}");
        let e = err("erin:$pbkdf2-sha256$0$AA==$AA==\n");
        assert!(e.message.contains("iteration count `0`"), "{e}");
        let e = err("frank:$pbkdf2-sha256$10$!!$AA==\n");
        assert!(e.message.contains("salt `!!` is not base64"), "{e}");
        let e = err("gina:$pbkdf2-sha256$10$AA==$AA==\n");
        assert!(e.message.contains("hash is 1 bytes, expected 32"), "{e}");
        assert_eq!(e.to_string(), format!("line 1: {}", e.message));
    }

    #[test]
    fn save_is_atomic_with_mode_0600_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        let mut file = PasswordFile::default();
        file.users
            .insert("alice".into(), PasswordEntry::new("a", quick()).unwrap());
        file.save(&path).unwrap();
        assert_eq!(PasswordFile::load(&path).unwrap(), file);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
    }
}
