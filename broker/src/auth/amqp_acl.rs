//! AMQP permissions: RabbitMQ's configure/write/read triple per user and
//! virtual host, written as `[[amqp]]` tables in the ACL file beside the
//! MQTT rules. Each pattern is a regular expression matched the way
//! RabbitMQ matches it: anywhere in the resource name unless the pattern
//! anchors itself with `^`/`$`, and the empty pattern grants nothing.
//!
//! ```toml
//! [[amqp]]
//! user = "alice"
//! vhost = "/"
//! configure = "^amq\\.gen.*|^alice-.*"
//! write = ".*"
//! read = ".*"
//! ```
//!
//! A file without `[[amqp]]` tables does not restrict AMQP at all; once it
//! has one, a user may open only the vhosts a table grants them.

use std::sync::Arc;

use regex_lite::Regex;

/// The three kinds of access RabbitMQ checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmqpAccess {
    /// Declare and delete queues and exchanges.
    Configure,
    /// Publish to an exchange, bind to a queue (or destination exchange).
    Write,
    /// Consume, get and purge from a queue, bind from an exchange.
    Read,
}

impl AmqpAccess {
    pub fn as_str(self) -> &'static str {
        match self {
            AmqpAccess::Configure => "configure",
            AmqpAccess::Write => "write",
            AmqpAccess::Read => "read",
        }
    }
}

/// One `[[amqp]]` table: what `user` may do in `vhost`.
#[derive(Debug, Clone)]
pub struct AmqpPermission {
    pub user: String,
    pub vhost: String,
    configure: Regex,
    write: Regex,
    read: Regex,
}

impl AmqpPermission {
    /// Whether the permission grants `access` on the resource called `name`.
    pub fn allows(&self, access: AmqpAccess, name: &str) -> bool {
        let pattern = match access {
            AmqpAccess::Configure => &self.configure,
            AmqpAccess::Write => &self.write,
            AmqpAccess::Read => &self.read,
        };
        // As RabbitMQ: "" grants nothing (it would match every name otherwise).
        !pattern.as_str().is_empty() && pattern.is_match(name)
    }
}

/// The `[[amqp]]` tables of an ACL file.
#[derive(Debug, Clone, Default)]
pub struct AmqpAcl {
    permissions: Vec<Arc<AmqpPermission>>,
}

const KEYS: [&str; 5] = ["user", "vhost", "configure", "write", "read"];

impl AmqpAcl {
    /// The `[[amqp]]` tables of an ACL file's text; `None` when it has none.
    /// An error names the table (counted from 1) and the key.
    pub fn parse(text: &str) -> Result<Option<AmqpAcl>, String> {
        let table: toml::Table = toml::from_str(text).map_err(|e| e.message().to_string())?;
        let Some(tables) = table.get("amqp") else {
            return Ok(None);
        };
        let toml::Value::Array(tables) = tables else {
            return Err(
                "`amqp` must be an array of tables: write each permission as [[amqp]]".into(),
            );
        };
        let mut permissions: Vec<Arc<AmqpPermission>> = Vec::with_capacity(tables.len());
        for (i, t) in tables.iter().enumerate() {
            let n = i + 1;
            let toml::Value::Table(t) = t else {
                return Err(format!("[[amqp]] table {n}: not a table"));
            };
            if let Some(key) = t.keys().find(|k| !KEYS.contains(&k.as_str())) {
                return Err(format!(
                    "[[amqp]] table {n}: key `{key}`: unknown key (expected user, vhost, configure, write, read)"
                ));
            }
            let text = |key: &str| -> Result<String, String> {
                match t.get(key) {
                    Some(toml::Value::String(s)) => Ok(s.clone()),
                    Some(_) => Err(format!("[[amqp]] table {n}: key `{key}`: must be a string")),
                    None => Err(format!(
                        "[[amqp]] table {n}: key `{key}`: missing (patterns: \"\" grants nothing, \".*\" everything)"
                    )),
                }
            };
            let pattern = |key: &str| -> Result<Regex, String> {
                let p = text(key)?;
                Regex::new(&p).map_err(|e| {
                    let e = e.to_string().replace('\n', " ");
                    format!("[[amqp]] table {n}: key `{key}`: invalid regex {p:?}: {e}")
                })
            };
            let permission = AmqpPermission {
                user: text("user")?,
                vhost: text("vhost")?,
                configure: pattern("configure")?,
                write: pattern("write")?,
                read: pattern("read")?,
            };
            if let Some(j) = permissions
                .iter()
                .position(|p| p.user == permission.user && p.vhost == permission.vhost)
            {
                return Err(format!(
                    "[[amqp]] table {n}: key `vhost`: user {:?} already has permissions on vhost {:?} (table {}); merge the two",
                    permission.user,
                    permission.vhost,
                    j + 1
                ));
            }
            permissions.push(Arc::new(permission));
        }
        Ok(Some(AmqpAcl { permissions }))
    }

    /// What `user` may do in `vhost`; `None` = they may not open it.
    pub fn permission(&self, user: &str, vhost: &str) -> Option<Arc<AmqpPermission>> {
        self.permissions
            .iter()
            .find(|p| p.user == user && p.vhost == vhost)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
        [[rule]]
        user = "alice"
        topic = "a/#"
        access = "read"

        [[amqp]]
        user = "alice"
        vhost = "/"
        configure = "^amq\\.gen.*|^alice-.*"
        write = ".*"
        read = ""

        [[amqp]]
        user = "bob"
        vhost = "test"
        configure = ".*"
        write = "^logs$"
        read = "jobs"
    "#;

    #[test]
    fn permissions_match_like_rabbitmq() {
        let acl = AmqpAcl::parse(FILE).unwrap().unwrap();
        let alice = acl.permission("alice", "/").unwrap();
        assert!(alice.allows(AmqpAccess::Configure, "alice-q"));
        assert!(alice.allows(AmqpAccess::Configure, "amq.gen-abc"));
        assert!(!alice.allows(AmqpAccess::Configure, "bob-q"));
        assert!(
            !alice.allows(AmqpAccess::Configure, "x-alice-q"),
            "^ anchors"
        );
        assert!(alice.allows(AmqpAccess::Write, "anything"));
        assert!(!alice.allows(AmqpAccess::Read, ""), "\"\" grants nothing");
        assert!(!alice.allows(AmqpAccess::Read, "q"));
        assert!(acl.permission("alice", "test").is_none());
        let bob = acl.permission("bob", "test").unwrap();
        assert!(bob.allows(AmqpAccess::Write, "logs"));
        assert!(!bob.allows(AmqpAccess::Write, "logs2"));
        assert!(
            bob.allows(AmqpAccess::Read, "my-jobs-1"),
            "unanchored: anywhere"
        );
        assert!(acl.permission("carol", "/").is_none());
    }

    #[test]
    fn a_file_without_amqp_tables_does_not_restrict() {
        let mqtt_only = "[[rule]]\ntopic = \"#\"\naccess = \"read\"\n";
        assert!(AmqpAcl::parse(mqtt_only).unwrap().is_none());
    }

    #[test]
    fn errors_name_the_table_and_key() {
        let table = |body: &str| {
            format!("[[amqp]]\nuser = \"a\"\nvhost = \"/\"\nconfigure = \".*\"\nwrite = \".*\"\nread = \".*\"\n[[amqp]]\n{body}")
        };
        let e = AmqpAcl::parse(&table(
            "user = \"b\"\nvhost = \"/\"\nconfigure = \"(\"\nwrite = \"\"\nread = \"\"\n",
        ))
        .unwrap_err();
        assert!(
            e.starts_with("[[amqp]] table 2: key `configure`: invalid regex \"(\""),
            "{e}"
        );
        let e = AmqpAcl::parse(&table("user = \"b\"\nvhost = \"/\"\nconfigure = \"\"\nwrite = \"\"\nread = \"\"\nqueue = \"x\"\n")).unwrap_err();
        assert!(
            e.starts_with("[[amqp]] table 2: key `queue`: unknown key"),
            "{e}"
        );
        let e = AmqpAcl::parse(&table(
            "user = \"b\"\nvhost = \"/\"\nwrite = \"\"\nread = \"\"\n",
        ))
        .unwrap_err();
        assert!(
            e.starts_with("[[amqp]] table 2: key `configure`: missing"),
            "{e}"
        );
        let e = AmqpAcl::parse(&table(
            "user = \"a\"\nvhost = \"/\"\nconfigure = \"\"\nwrite = \"\"\nread = \"\"\n",
        ))
        .unwrap_err();
        assert!(
            e.contains(
                "table 2: key `vhost`: user \"a\" already has permissions on vhost \"/\" (table 1)"
            ),
            "{e}"
        );
    }
}
