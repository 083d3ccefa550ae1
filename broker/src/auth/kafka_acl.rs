//! Kafka ACLs: Apache Kafka's allow rules (principal, resource pattern,
//! operations) written as `[[kafka]]` tables in the ACL file beside the
//! MQTT rules and AMQP permissions.
//!
//! ```toml
//! [[kafka]]
//! user = "alice"
//! resource = "topic"          # topic | group | cluster
//! name = "orders"             # "*" = every name
//! pattern = "prefixed"        # literal (default) | prefixed
//! operations = ["read", "write"]
//! ```
//!
//! As in Kafka, `read`, `write` and `delete` on a topic (and `read` and
//! `delete` on a group) imply `describe`, and `all` implies everything. A
//! file without `[[kafka]]` tables does not restrict Kafka at all; once it
//! has one, what no table grants is denied. There are no deny rules.

/// What a Kafka ACL guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KafkaResource {
    Topic,
    Group,
    /// The broker itself (Kafka's `kafka-cluster`).
    Cluster,
}

impl KafkaResource {
    pub fn as_str(self) -> &'static str {
        match self {
            KafkaResource::Topic => "topic",
            KafkaResource::Group => "group",
            KafkaResource::Cluster => "cluster",
        }
    }

    /// The operations a table may grant on this kind of resource.
    fn operations(self) -> &'static [KafkaOperation] {
        use KafkaOperation::*;
        match self {
            KafkaResource::Topic => &[Read, Write, Create, Delete, Describe, All],
            KafkaResource::Group => &[Read, Delete, Describe, All],
            KafkaResource::Cluster => &[Create, Describe, All],
        }
    }
}

/// An operation a request needs (or, with `All`, a table grants).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KafkaOperation {
    Read,
    Write,
    Create,
    Delete,
    Describe,
    /// Every operation (only in a grant).
    All,
}

impl KafkaOperation {
    pub fn as_str(self) -> &'static str {
        match self {
            KafkaOperation::Read => "read",
            KafkaOperation::Write => "write",
            KafkaOperation::Create => "create",
            KafkaOperation::Delete => "delete",
            KafkaOperation::Describe => "describe",
            KafkaOperation::All => "all",
        }
    }

    fn from_name(name: &str) -> Option<KafkaOperation> {
        [
            KafkaOperation::Read,
            KafkaOperation::Write,
            KafkaOperation::Create,
            KafkaOperation::Delete,
            KafkaOperation::Describe,
            KafkaOperation::All,
        ]
        .into_iter()
        .find(|op| op.as_str() == name)
    }

    /// Whether granting `self` lets a client do `wanted` (Kafka's
    /// implication rules: read, write and delete imply describe).
    pub fn implies(self, wanted: KafkaOperation) -> bool {
        self == KafkaOperation::All
            || self == wanted
            || (wanted == KafkaOperation::Describe
                && matches!(
                    self,
                    KafkaOperation::Read | KafkaOperation::Write | KafkaOperation::Delete
                ))
    }
}

/// Whom a table grants to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KafkaGrantee {
    User(String),
    /// `user = "*"`: every client, logged in or anonymous (Kafka's `User:*`).
    Everyone,
    /// Clients that did not log in (where `kafka.allow_anonymous` lets them in).
    Anonymous,
}

impl KafkaGrantee {
    fn applies(&self, user: Option<&str>) -> bool {
        match self {
            KafkaGrantee::User(u) => user == Some(u.as_str()),
            KafkaGrantee::Everyone => true,
            KafkaGrantee::Anonymous => user.is_none(),
        }
    }
}

/// Which resource names a table covers (Kafka's resource pattern types).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamePattern {
    /// `name = "*"`, or a cluster table.
    Any,
    Literal(String),
    Prefixed(String),
}

impl NamePattern {
    pub fn matches(&self, name: &str) -> bool {
        match self {
            NamePattern::Any => true,
            NamePattern::Literal(l) => l == name,
            NamePattern::Prefixed(p) => name.starts_with(p.as_str()),
        }
    }
}

/// One `[[kafka]]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaGrant {
    pub grantee: KafkaGrantee,
    pub resource: KafkaResource,
    pub pattern: NamePattern,
    pub operations: Vec<KafkaOperation>,
}

impl KafkaGrant {
    fn grants(&self, user: Option<&str>, op: KafkaOperation, resource: KafkaResource) -> bool {
        self.resource == resource
            && self.grantee.applies(user)
            && self.operations.iter().any(|g| g.implies(op))
    }
}

/// The `[[kafka]]` tables of an ACL file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KafkaAcl {
    pub grants: Vec<KafkaGrant>,
}

const KEYS: [&str; 6] = [
    "user",
    "anonymous",
    "resource",
    "name",
    "pattern",
    "operations",
];

/// The name Kafka gives the cluster resource; accepted as a cluster table's `name`.
pub const CLUSTER_NAME: &str = "kafka-cluster";

impl KafkaAcl {
    /// The `[[kafka]]` tables of an ACL file's text; `None` when it has none.
    /// An error names the table (counted from 1) and the key.
    pub fn parse(text: &str) -> Result<Option<KafkaAcl>, String> {
        let table: toml::Table = toml::from_str(text).map_err(|e| e.message().to_string())?;
        let Some(tables) = table.get("kafka") else {
            return Ok(None);
        };
        let toml::Value::Array(tables) = tables else {
            return Err("`kafka` must be an array of tables: write each ACL as [[kafka]]".into());
        };
        let grants = tables
            .iter()
            .enumerate()
            .map(|(i, t)| parse_table(i + 1, t))
            .collect::<Result<_, _>>()?;
        Ok(Some(KafkaAcl { grants }))
    }

    /// Whether `user` (`None`: anonymous) may do `op` on the resource `name`
    /// (ignored for the cluster).
    pub fn allows(
        &self,
        user: Option<&str>,
        op: KafkaOperation,
        resource: KafkaResource,
        name: &str,
    ) -> bool {
        self.grants
            .iter()
            .any(|g| g.grants(user, op, resource) && g.pattern.matches(name))
    }

    /// Whether some table lets `user` do `op` on some resource of this kind
    /// (Kafka 3's rule for idempotent producers: write on any topic).
    pub fn allows_any(
        &self,
        user: Option<&str>,
        op: KafkaOperation,
        resource: KafkaResource,
    ) -> bool {
        self.grants.iter().any(|g| g.grants(user, op, resource))
    }
}

fn parse_table(n: usize, t: &toml::Value) -> Result<KafkaGrant, String> {
    let at = |key: &str, message: &str| format!("[[kafka]] table {n}: key `{key}`: {message}");
    let toml::Value::Table(t) = t else {
        return Err(format!("[[kafka]] table {n}: not a table"));
    };
    if let Some(key) = t.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(at(
            key,
            "unknown key (expected user, anonymous, resource, name, pattern, operations)",
        ));
    }
    let text = |key: &str| -> Result<Option<String>, String> {
        match t.get(key) {
            Some(toml::Value::String(s)) if s.is_empty() => Err(at(key, "must not be empty")),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(at(key, "must be a string")),
            None => Ok(None),
        }
    };
    let anonymous = match t.get("anonymous") {
        None => false,
        Some(toml::Value::Boolean(b)) => *b,
        Some(_) => return Err(at("anonymous", "must be true or false")),
    };
    let grantee = match (text("user")?, anonymous) {
        (Some(_), true) => {
            return Err(at(
                "anonymous",
                "give either `user` or `anonymous = true`, not both",
            ))
        }
        (Some(u), false) if u == "*" => KafkaGrantee::Everyone,
        (Some(u), false) => KafkaGrantee::User(u),
        (None, true) => KafkaGrantee::Anonymous,
        (None, false) => return Err(at(
            "user",
            "missing (give `user = \"NAME\"`, `user = \"*\"` for everyone, or `anonymous = true`)",
        )),
    };
    let resource = match text("resource")?.as_deref() {
        Some("topic") => KafkaResource::Topic,
        Some("group") => KafkaResource::Group,
        Some("cluster") => KafkaResource::Cluster,
        Some(other) => {
            return Err(at(
                "resource",
                &format!("{other:?}: must be \"topic\", \"group\" or \"cluster\""),
            ))
        }
        None => {
            return Err(at(
                "resource",
                "missing (\"topic\", \"group\" or \"cluster\")",
            ))
        }
    };
    let prefixed = match text("pattern")?.as_deref() {
        None | Some("literal") => false,
        Some("prefixed") => true,
        Some(other) => {
            return Err(at(
                "pattern",
                &format!("{other:?}: must be \"literal\" or \"prefixed\""),
            ))
        }
    };
    let pattern = match (resource, text("name")?) {
        (KafkaResource::Cluster, None) => NamePattern::Any,
        (KafkaResource::Cluster, Some(name)) if name == "*" || name == CLUSTER_NAME => {
            NamePattern::Any
        }
        (KafkaResource::Cluster, Some(name)) => {
            return Err(at(
                "name",
                &format!("{name:?}: a cluster table names no resource (leave `name` out or write \"{CLUSTER_NAME}\")"),
            ))
        }
        (_, None) => {
            return Err(at(
                "name",
                "missing (the topic or group name, a prefix with `pattern = \"prefixed\"`, or \"*\" for every name)",
            ))
        }
        (_, Some(name)) if name == "*" && prefixed => {
            return Err(at(
                "pattern",
                "`name = \"*\"` already covers every name: leave `pattern` out",
            ))
        }
        (_, Some(name)) if name == "*" => NamePattern::Any,
        (_, Some(name)) if prefixed => NamePattern::Prefixed(name),
        (_, Some(name)) => NamePattern::Literal(name),
    };
    if prefixed && resource == KafkaResource::Cluster {
        return Err(at("pattern", "a cluster table has no name to match"));
    }
    let operations = match t.get("operations") {
        Some(toml::Value::Array(ops)) if !ops.is_empty() => ops,
        Some(toml::Value::Array(_)) => {
            return Err(at(
                "operations",
                "grants nothing: list at least one operation",
            ))
        }
        Some(_) => {
            return Err(at(
                "operations",
                "must be a list, e.g. [\"read\", \"describe\"]",
            ))
        }
        None => {
            return Err(at(
                "operations",
                "missing (a list of read, write, create, delete, describe, all)",
            ))
        }
    };
    let valid = resource.operations();
    let names = valid
        .iter()
        .map(|o| o.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let operations = operations
        .iter()
        .map(|op| {
            let name = op
                .as_str()
                .ok_or_else(|| at("operations", "each operation must be a string"))?;
            match KafkaOperation::from_name(name) {
                Some(op) if valid.contains(&op) => Ok(op),
                Some(_) => Err(at(
                    "operations",
                    &format!(
                        "{name:?} does not apply to a {} (a {0} takes {names})",
                        resource.as_str()
                    ),
                )),
                None => Err(at(
                    "operations",
                    &format!("unknown operation {name:?} (expected {names})"),
                )),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(KafkaGrant {
        grantee,
        resource,
        pattern,
        operations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use KafkaOperation::*;
    use KafkaResource::*;

    const FILE: &str = r##"
        [[rule]]
        topic = "#"
        access = "read"

        [[kafka]]
        user = "alice"
        resource = "topic"
        name = "orders"
        operations = ["write"]

        [[kafka]]
        user = "alice"
        resource = "topic"
        name = "logs-"
        pattern = "prefixed"
        operations = ["read"]

        [[kafka]]
        user = "alice"
        resource = "group"
        name = "billing"
        operations = ["read"]

        [[kafka]]
        user = "admin"
        resource = "topic"
        name = "*"
        operations = ["all"]

        [[kafka]]
        user = "admin"
        resource = "cluster"
        operations = ["create", "describe"]

        [[kafka]]
        anonymous = true
        resource = "topic"
        name = "public"
        operations = ["describe"]

        [[kafka]]
        user = "*"
        resource = "topic"
        name = "news"
        operations = ["read"]
    "##;

    fn acl() -> KafkaAcl {
        KafkaAcl::parse(FILE).unwrap().unwrap()
    }

    #[test]
    fn literal_names_match_exactly() {
        let acl = acl();
        assert!(acl.allows(Some("alice"), Write, Topic, "orders"));
        assert!(!acl.allows(Some("alice"), Write, Topic, "orders2"));
        assert!(!acl.allows(Some("alice"), Write, Topic, "order"));
        assert!(
            !acl.allows(Some("alice"), Read, Topic, "orders"),
            "write only"
        );
        assert!(
            !acl.allows(Some("bob"), Write, Topic, "orders"),
            "alice's table"
        );
        assert!(acl.allows(Some("alice"), Read, Group, "billing"));
        assert!(
            !acl.allows(Some("alice"), Read, Topic, "billing"),
            "a group, not a topic"
        );
    }

    #[test]
    fn prefixed_names_match_by_prefix() {
        let acl = acl();
        assert!(acl.allows(Some("alice"), Read, Topic, "logs-"));
        assert!(acl.allows(Some("alice"), Read, Topic, "logs-app"));
        assert!(!acl.allows(Some("alice"), Read, Topic, "logs"));
        assert!(!acl.allows(Some("alice"), Read, Topic, "x-logs-app"));
    }

    #[test]
    fn star_and_all_cover_every_name_and_operation() {
        let acl = acl();
        for op in [Read, Write, Create, Delete, Describe] {
            assert!(acl.allows(Some("admin"), op, Topic, "anything"), "{op:?}");
        }
        assert!(!acl.allows(Some("admin"), Read, Group, "anything"));
        assert!(acl.allows(Some("admin"), Create, Cluster, CLUSTER_NAME));
        assert!(!acl.allows(Some("alice"), Create, Cluster, CLUSTER_NAME));
        // `user = "*"`: every client, anonymous ones too.
        assert!(acl.allows(Some("bob"), Read, Topic, "news"));
        assert!(acl.allows(None, Read, Topic, "news"));
        // `anonymous = true`: clients without a login only.
        assert!(acl.allows(None, Describe, Topic, "public"));
        assert!(!acl.allows(Some("bob"), Describe, Topic, "public"));
        assert!(!acl.allows(None, Read, Topic, "public"));
    }

    #[test]
    fn read_write_and_delete_imply_describe_and_nothing_else() {
        let acl = acl();
        assert!(
            acl.allows(Some("alice"), Describe, Topic, "orders"),
            "write"
        );
        assert!(acl.allows(Some("alice"), Describe, Topic, "logs-x"), "read");
        assert!(
            acl.allows(Some("alice"), Describe, Group, "billing"),
            "read"
        );
        assert!(!acl.allows(Some("alice"), Describe, Topic, "other"));
        assert!(Delete.implies(Describe) && All.implies(Create));
        assert!(!Describe.implies(Read) && !Read.implies(Write) && !Write.implies(Read));
        assert!(!Create.implies(Describe));
        assert!(acl.allows_any(Some("alice"), Write, Topic));
        assert!(!acl.allows_any(Some("bob"), Write, Topic));
    }

    #[test]
    fn a_file_without_kafka_tables_does_not_restrict() {
        assert!(
            KafkaAcl::parse("[[rule]]\ntopic = \"#\"\naccess = \"read\"\n")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn errors_name_the_table_and_key() {
        let second = |body: &str| {
            let first = "[[kafka]]\nuser = \"a\"\nresource = \"topic\"\nname = \"t\"\noperations = [\"read\"]\n";
            KafkaAcl::parse(&format!("{first}[[kafka]]\n{body}")).unwrap_err()
        };
        let cases = [
            ("user = \"b\"\nresource = \"topic\"\nname = \"t\"\noperations = [\"read\"]\nhost = \"x\"\n", "key `host`: unknown key"),
            ("resource = \"topic\"\nname = \"t\"\noperations = [\"read\"]\n", "key `user`: missing"),
            ("user = \"b\"\nanonymous = true\nresource = \"topic\"\nname = \"t\"\noperations = [\"read\"]\n", "key `anonymous`: give either"),
            ("user = \"b\"\nresource = \"queue\"\nname = \"t\"\noperations = [\"read\"]\n", "key `resource`: \"queue\": must be"),
            ("user = \"b\"\nresource = \"topic\"\noperations = [\"read\"]\n", "key `name`: missing"),
            ("user = \"b\"\nresource = \"topic\"\nname = \"t\"\npattern = \"regex\"\noperations = [\"read\"]\n", "key `pattern`: \"regex\""),
            ("user = \"b\"\nresource = \"topic\"\nname = \"t\"\n", "key `operations`: missing"),
            ("user = \"b\"\nresource = \"topic\"\nname = \"t\"\noperations = [\"alter\"]\n", "key `operations`: unknown operation \"alter\""),
            ("user = \"b\"\nresource = \"group\"\nname = \"g\"\noperations = [\"write\"]\n", "key `operations`: \"write\" does not apply to a group"),
            ("user = \"b\"\nresource = \"cluster\"\nname = \"c\"\noperations = [\"create\"]\n", "key `name`: \"c\": a cluster table"),
            ("user = \"b\"\nresource = \"topic\"\nname = \"t\"\noperations = []\n", "key `operations`: grants nothing"),
        ];
        for (body, expected) in cases {
            let e = second(body);
            assert!(
                e.starts_with(&format!("[[kafka]] table 2: {expected}")),
                "{expected}: {e}"
            );
        }
        assert!(KafkaAcl::parse("kafka = 1\n")
            .unwrap_err()
            .contains("[[kafka]]"));
    }
}
