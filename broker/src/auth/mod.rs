//! Authentication and authorisation shared by every protocol: the `[auth]`
//! config section, the user database (a password file), the MQTT ACL, AMQP
//! permissions and Kafka ACLs, and the rule that decides where anonymous
//! clients are let in.

pub mod acl;
pub mod amqp_acl;
pub mod kafka_acl;
pub mod passwd;
pub mod scram;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

pub use acl::{Acl, Principal};
pub use amqp_acl::{AmqpAccess, AmqpAcl, AmqpPermission};
pub use kafka_acl::{KafkaAcl, KafkaOperation, KafkaResource};
pub use passwd::{PasswordEntry, PasswordFile};

/// The `[auth]` section. Paths are relative to the config file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Users for MQTT and AMQP (written by `broker passwd`). Setting it turns
    /// anonymous access off unless `mqtt.allow_anonymous` /
    /// `amqp.allow_anonymous` say otherwise.
    pub password_file: Option<PathBuf>,
    /// MQTT ACL rules, AMQP permissions (`[[amqp]]`) and Kafka ACLs
    /// (`[[kafka]]`), TOML; without one every client may use every topic,
    /// vhost, resource and group.
    pub acl_file: Option<PathBuf>,
}

impl AuthConfig {
    /// Makes relative paths relative to `dir` (the config file's directory).
    pub fn resolve_paths(&mut self, dir: &Path) {
        for path in [&mut self.password_file, &mut self.acl_file]
            .into_iter()
            .flatten()
        {
            if path.is_relative() {
                *path = dir.join(&*path);
            }
        }
    }
}

/// A password or ACL file that cannot be used, phrased for its author.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message} (auth.{key})", file.display())]
pub struct AuthError {
    pub file: PathBuf,
    /// `password_file` or `acl_file`.
    pub key: &'static str,
    pub message: String,
}

/// The loaded user database and ACL, shared by every listener.
#[derive(Debug, Default)]
pub struct Auth {
    users: Option<PasswordFile>,
    acl: Option<Acl>,
    /// `None` when the ACL file has no `[[amqp]]` table: AMQP is not restricted.
    amqp_acl: Option<AmqpAcl>,
    /// `None` when the ACL file has no `[[kafka]]` table: Kafka is not restricted.
    kafka_acl: Option<KafkaAcl>,
}

impl Auth {
    /// Reads the files `[auth]` names.
    pub fn load(config: &AuthConfig) -> Result<Auth, AuthError> {
        let users = match &config.password_file {
            Some(file) => Some(PasswordFile::load(file).map_err(|e| AuthError {
                file: file.clone(),
                key: "password_file",
                message: e.to_string(),
            })?),
            None => None,
        };
        let (mut acl, mut amqp_acl, mut kafka_acl) = (None, None, None);
        if let Some(file) = &config.acl_file {
            let error = |message| AuthError {
                file: file.clone(),
                key: "acl_file",
                message,
            };
            acl = Some(Acl::load(file).map_err(error)?);
            // Readable: Acl::load has just read it.
            let text = std::fs::read_to_string(file)
                .map_err(|e| error(format!("cannot read the ACL file: {e}")))?;
            amqp_acl = AmqpAcl::parse(&text).map_err(error)?;
            kafka_acl = KafkaAcl::parse(&text).map_err(error)?;
        }
        Ok(Auth {
            users,
            acl,
            amqp_acl,
            kafka_acl,
        })
    }

    /// An in-memory database (tests and embedding).
    pub fn new(users: Option<PasswordFile>, acl: Option<Acl>) -> Auth {
        Auth {
            users,
            acl,
            amqp_acl: None,
            kafka_acl: None,
        }
    }

    /// With AMQP permissions (tests and embedding).
    pub fn with_amqp_acl(mut self, amqp_acl: Option<AmqpAcl>) -> Auth {
        self.amqp_acl = amqp_acl;
        self
    }

    /// With Kafka ACLs (tests and embedding).
    pub fn with_kafka_acl(mut self, kafka_acl: Option<KafkaAcl>) -> Auth {
        self.kafka_acl = kafka_acl;
        self
    }

    /// The `[[kafka]]` ACLs; `None` = Kafka is not restricted.
    pub fn kafka_acl(&self) -> Option<&KafkaAcl> {
        self.kafka_acl.as_ref()
    }

    /// The `[[amqp]]` permissions; `None` = AMQP is not restricted.
    pub fn amqp_acl(&self) -> Option<&AmqpAcl> {
        self.amqp_acl.as_ref()
    }

    /// Whether a password file is configured.
    pub fn has_users(&self) -> bool {
        self.users.is_some()
    }

    /// Whether the password file has this user.
    pub fn knows(&self, user: &str) -> bool {
        self.users
            .as_ref()
            .is_some_and(|f| f.users.contains_key(user))
    }

    /// The stored entry of a user (SCRAM keys for SASL mechanisms).
    pub fn entry(&self, user: &str) -> Option<&PasswordEntry> {
        self.users.as_ref()?.users.get(user)
    }

    pub fn acl(&self) -> Option<&Acl> {
        self.acl.as_ref()
    }

    /// Whether `password` is `user`'s. Slow on purpose (PBKDF2): call it off
    /// the async threads ([`Auth::verify_blocking`]). An unknown user costs
    /// as much as the file's slowest user, so timing does not tell which
    /// names exist.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        match self.entry(user) {
            Some(entry) => entry.login.verify(password),
            None => {
                // As slow as the slowest user of the file (tests use fast hashes).
                let most = self.users.iter().flat_map(|f| f.users.values());
                let it = most
                    .map(|e| e.login.iterations)
                    .max()
                    .unwrap_or(NonZeroU32::new(passwd::DEFAULT_ITERATIONS).expect("not zero"));
                let decoy = passwd::LoginHash {
                    algorithm: passwd::HashAlgorithm::Pbkdf2Sha256,
                    iterations: it,
                    salt: vec![0; 16],
                    hash: vec![0; 32],
                };
                let _ = decoy.verify(password);
                false
            }
        }
    }

    /// [`Auth::verify`] on tokio's blocking pool.
    pub async fn verify_blocking(self: &Arc<Self>, user: &str, password: &[u8]) -> bool {
        let (auth, user, password) = (self.clone(), user.to_string(), password.to_vec());
        tokio::task::spawn_blocking(move || auth.verify(&user, &password))
            .await
            .unwrap_or(false)
    }
}

/// What one listener needs to authenticate its clients.
#[derive(Debug, Clone)]
pub struct ListenerAuth {
    pub auth: Arc<Auth>,
    /// Clients without credentials are let in (see [`anonymous_allowed`]).
    pub anonymous: bool,
}

impl ListenerAuth {
    /// No password file, no ACL, anonymous clients welcome (tests).
    pub fn open() -> ListenerAuth {
        ListenerAuth {
            auth: Arc::new(Auth::default()),
            anonymous: true,
        }
    }
}

/// Whether a listener bound to `bind` lets anonymous clients in: as the
/// config says (`allow_anonymous`) when it says; otherwise not once a
/// password file is configured, and otherwise only on a loopback address.
pub fn anonymous_allowed(explicit: Option<bool>, has_users: bool, bind: SocketAddr) -> bool {
    match explicit {
        Some(allowed) => allowed,
        None => !has_users && bind.ip().is_loopback(),
    }
}

/// Checks the files `[auth]` names before the broker starts (so the error
/// is the one line printed).
pub fn check(config: &AuthConfig) -> Result<(), AuthError> {
    Auth::load(config).map(|_| ())
}

/// The error for a plain-text `users` table in the config.
pub fn plain_text_users_error(section: &str) -> String {
    format!(
        "{section}.users: plain-text passwords are refused; hash them into a password file with \
         `broker passwd FILE USER` (or `broker passwd -b FILE USER PASSWORD`), set \
         [auth] password_file = \"FILE\" and remove {section}.users"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_rule_loopback_only_unless_explicit_and_off_with_users() {
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(anonymous_allowed(None, false, at("127.0.0.1:1883")));
        assert!(anonymous_allowed(None, false, at("127.0.0.2:1883")));
        assert!(anonymous_allowed(None, false, at("[::1]:1883")));
        assert!(!anonymous_allowed(None, false, at("0.0.0.0:1883")));
        assert!(!anonymous_allowed(None, false, at("192.168.1.5:1883")));
        assert!(!anonymous_allowed(None, false, at("[::]:1883")));
        assert!(!anonymous_allowed(None, true, at("127.0.0.1:1883")));
        assert!(anonymous_allowed(Some(true), true, at("0.0.0.0:1883")));
        assert!(!anonymous_allowed(Some(false), false, at("127.0.0.1:1883")));
    }

    #[test]
    fn verify_checks_known_users_only() {
        let mut file = PasswordFile::default();
        let it = NonZeroU32::new(1000).unwrap();
        file.users
            .insert("alice".into(), PasswordEntry::new("pw", it).unwrap());
        let auth = Auth::new(Some(file), None);
        assert!(auth.has_users() && auth.knows("alice") && !auth.knows("bob"));
        assert!(auth.verify("alice", b"pw"));
        assert!(!auth.verify("alice", b"pW"));
        assert!(!auth.verify("bob", b"pw"));
    }

    #[test]
    fn load_errors_name_the_file_key_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        std::fs::write(&path, "# users\nalice:secret\n").unwrap();
        let config = AuthConfig {
            password_file: Some(path.clone()),
            acl_file: None,
        };
        let e = Auth::load(&config).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}: line 2: user `alice`", path.display())),
            "{e}"
        );
        assert!(e.ends_with("(auth.password_file)"), "{e}");
        let mut rel = AuthConfig {
            password_file: Some("passwd".into()),
            acl_file: Some("/abs/acl.toml".into()),
        };
        rel.resolve_paths(Path::new("/etc/broker"));
        assert_eq!(rel.password_file.unwrap(), Path::new("/etc/broker/passwd"));
        assert_eq!(rel.acl_file.unwrap(), Path::new("/abs/acl.toml"));
    }
}
