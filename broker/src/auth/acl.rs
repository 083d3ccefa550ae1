//! MQTT access control lists: mosquitto's `acl_file` semantics written in
//! TOML. Each rule grants `read`, `write` or `readwrite` on a topic filter
//! to a user, to client ids matching a pattern, to anonymous clients, or to
//! everyone (mosquitto's `pattern`); `%u` and `%c` in the filter stand for
//! the user name and client id. What no rule grants is denied.
//!
//! ```toml
//! [[rule]]
//! user = "alice"
//! topic = "home/alice/#"
//! access = "readwrite"
//!
//! [[rule]]            # everyone: their own subtree
//! topic = "clients/%c/#"
//! access = "readwrite"
//! ```

use std::path::Path;

use serde::Deserialize;

use crate::core::topic::{matches, valid_topic_filter};

/// What a rule grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Subscribe to, and receive, matching topics.
    Read,
    /// Publish to matching topics.
    Write,
    ReadWrite,
}

impl Access {
    fn reads(self) -> bool {
        matches!(self, Access::Read | Access::ReadWrite)
    }
    fn writes(self) -> bool {
        matches!(self, Access::Write | Access::ReadWrite)
    }
}

/// Whom a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grantee {
    Everyone,
    /// Clients that connected without a user name.
    Anonymous,
    User(String),
    /// Client ids matching a pattern in which `*` stands for any characters.
    Client(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclRule {
    pub grantee: Grantee,
    pub topic: String,
    pub access: Access,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    user: Option<String>,
    client: Option<String>,
    #[serde(default)]
    anonymous: bool,
    topic: String,
    access: Access,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAcl {
    #[serde(default)]
    rule: Vec<RawRule>,
    /// AMQP permissions, read by [`super::amqp_acl`].
    #[serde(default, rename = "amqp")]
    _amqp: Option<toml::Value>,
    /// Kafka ACLs, read by [`super::kafka_acl`].
    #[serde(default, rename = "kafka")]
    _kafka: Option<toml::Value>,
}

/// Who is asking: the user name (none when anonymous) and the client id.
#[derive(Debug, Clone, Copy)]
pub struct Principal<'a> {
    pub user: Option<&'a str>,
    pub client_id: &'a str,
}

/// The rules of an ACL file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    pub rules: Vec<AclRule>,
}

impl Acl {
    /// Reads an ACL file; the error names the line (or rule) and the problem.
    pub fn load(path: &Path) -> Result<Acl, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read the ACL file: {e}"))?;
        Acl::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Acl, String> {
        let raw: RawAcl = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let message = e.message().trim().replace('\n', " ");
            match line {
                Some(n) => format!("line {n}: {message}"),
                None => message,
            }
        })?;
        let mut rules = Vec::with_capacity(raw.rule.len());
        for (i, r) in raw.rule.into_iter().enumerate() {
            let at = |m: &str| format!("rule {} (topic {:?}): {m}", i + 1, r.topic);
            let grantee = match (r.user.clone(), r.client.clone(), r.anonymous) {
                (None, None, false) => Grantee::Everyone,
                (None, None, true) => Grantee::Anonymous,
                (Some(u), None, false) => Grantee::User(u),
                (None, Some(c), false) => Grantee::Client(c),
                _ => {
                    return Err(at(
                        "give at most one of `user`, `client` and `anonymous = true`",
                    ))
                }
            };
            if !valid_topic_filter(&r.topic) {
                return Err(at(
                    "not a valid MQTT topic filter (`+` and `#` only as whole levels, `#` last)",
                ));
            }
            rules.push(AclRule {
                grantee,
                topic: r.topic,
                access: r.access,
            });
        }
        Ok(Acl { rules })
    }

    /// Whether `who` may publish to the topic name `topic`.
    pub fn may_write(&self, who: Principal<'_>, topic: &str) -> bool {
        self.granted(who, Access::writes, |f| matches(f, topic))
    }

    /// Whether `who` may receive a message on the topic name `topic`.
    pub fn may_read(&self, who: Principal<'_>, topic: &str) -> bool {
        self.granted(who, Access::reads, |f| matches(f, topic))
    }

    /// Whether `who` may subscribe to `filter`: one read rule must cover
    /// every topic the filter can match, so whatever the subscription
    /// delivers later is readable.
    pub fn may_subscribe(&self, who: Principal<'_>, filter: &str) -> bool {
        self.granted(who, Access::reads, |f| covers(f, filter))
    }

    fn granted(
        &self,
        who: Principal<'_>,
        wants: fn(Access) -> bool,
        test: impl Fn(&str) -> bool,
    ) -> bool {
        self.rules.iter().any(|rule| {
            let applies = match &rule.grantee {
                Grantee::Everyone => true,
                Grantee::Anonymous => who.user.is_none(),
                Grantee::User(u) => who.user == Some(u.as_str()),
                Grantee::Client(pattern) => glob(pattern, who.client_id),
            };
            applies && wants(rule.access) && substitute(&rule.topic, who).is_some_and(|f| test(&f))
        })
    }
}

/// The rule's filter with `%u` and `%c` replaced; `None` when it names a
/// user the client does not have, or a value that would act as a wildcard
/// or level separator (as mosquitto refuses them).
fn substitute(topic: &str, who: Principal<'_>) -> Option<String> {
    let unsafe_value = |v: &str| v.contains(['+', '#', '/']);
    let mut out = topic.to_string();
    if out.contains("%u") {
        let user = who.user.filter(|u| !unsafe_value(u))?;
        out = out.replace("%u", user);
    }
    if out.contains("%c") {
        if unsafe_value(who.client_id) {
            return None;
        }
        out = out.replace("%c", who.client_id);
    }
    Some(out)
}

/// Whether every topic matched by `filter` is matched by `rule`.
pub fn covers(rule: &str, filter: &str) -> bool {
    if filter.starts_with('$') && rule.starts_with(['+', '#']) {
        return false;
    }
    let mut r = rule.split('/');
    let mut f = filter.split('/');
    loop {
        match (r.next(), f.next()) {
            (Some("#"), _) => return true,
            (Some(_), Some("#")) => return false,
            (Some("+"), Some(_)) => {}
            (Some(_), Some("+")) => return false,
            (Some(rl), Some(fl)) if rl == fl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// `*` matches any run of characters (including none); everything else itself.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    let fits = text.len() >= first.len() + last.len();
    if !fits || !text.starts_with(first) || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(text: &str) -> Acl {
        Acl::parse(text).unwrap()
    }
    fn user<'a>(u: &'a str, c: &'a str) -> Principal<'a> {
        Principal {
            user: Some(u),
            client_id: c,
        }
    }
    fn anon(c: &str) -> Principal<'_> {
        Principal {
            user: None,
            client_id: c,
        }
    }

    #[test]
    fn user_rules_grant_only_their_access_to_their_user() {
        let a = acl(
            "[[rule]]\nuser = \"alice\"\ntopic = \"home/#\"\naccess = \"read\"\n\
             [[rule]]\nuser = \"alice\"\ntopic = \"cmd/+\"\naccess = \"write\"\n",
        );
        let alice = user("alice", "c1");
        assert!(a.may_read(alice, "home/kitchen/temp"));
        assert!(a.may_subscribe(alice, "home/+/temp"));
        assert!(a.may_subscribe(alice, "home/#"));
        assert!(!a.may_write(alice, "home/kitchen"));
        assert!(a.may_write(alice, "cmd/on"));
        assert!(!a.may_write(alice, "cmd/on/now"));
        assert!(!a.may_subscribe(alice, "cmd/+"));
        assert!(!a.may_subscribe(alice, "#"));
        let bob = user("bob", "c2");
        assert!(!a.may_read(bob, "home/kitchen"));
        assert!(!a.may_read(anon("c3"), "home/kitchen"));
    }

    #[test]
    fn patterns_substitute_user_and_client_and_refuse_wildcard_values() {
        let a = acl("[[rule]]\ntopic = \"users/%u/#\"\naccess = \"readwrite\"\n\
             [[rule]]\ntopic = \"clients/%c\"\naccess = \"write\"\n");
        assert!(a.may_write(user("alice", "x"), "users/alice/a"));
        assert!(!a.may_write(user("alice", "x"), "users/bob/a"));
        assert!(a.may_subscribe(user("bob", "x"), "users/bob/#"));
        // No user name: `%u` rules do not apply.
        assert!(!a.may_write(anon("x"), "users//a"));
        assert!(a.may_write(anon("dev1"), "clients/dev1"));
        assert!(!a.may_write(anon("dev1"), "clients/dev2"));
        // A client id or user name that is a wildcard does not widen the rule.
        assert!(!a.may_write(anon("+"), "clients/+"));
        assert!(!a.may_subscribe(user("#", "x"), "users/#"));
        assert!(!a.may_write(user("a/b", "x"), "users/a/b/c"));
    }

    #[test]
    fn anonymous_and_client_pattern_rules() {
        let a = acl(
            "[[rule]]\nanonymous = true\ntopic = \"public/#\"\naccess = \"read\"\n\
             [[rule]]\nclient = \"sensor-*\"\ntopic = \"sensors/#\"\naccess = \"write\"\n",
        );
        assert!(a.may_subscribe(anon("x"), "public/news"));
        assert!(!a.may_subscribe(user("alice", "x"), "public/news"));
        assert!(a.may_write(user("alice", "sensor-12"), "sensors/12"));
        assert!(a.may_write(anon("sensor-"), "sensors/12"));
        assert!(!a.may_write(anon("actuator-1"), "sensors/12"));
        assert!(!a.may_write(anon("xsensor-1"), "sensors/12"));
    }

    #[test]
    fn covers_is_filter_inclusion() {
        assert!(covers("#", "a/b/#"));
        assert!(covers("a/#", "a"));
        assert!(covers("a/+/c", "a/b/c"));
        assert!(covers("a/+/c", "a/+/c"));
        assert!(!covers("a/b/c", "a/+/c"));
        assert!(!covers("a/+", "a/#"));
        assert!(!covers("a/b", "a/b/c"));
        assert!(!covers("#", "$SYS/#"));
        assert!(!covers("+/x", "$SYS/x"));
        assert!(covers("$SYS/#", "$SYS/broker"));
    }

    #[test]
    fn glob_matches_stars() {
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "a-x-b-y-c"));
        assert!(glob("a*", "a"));
        assert!(!glob("a*b", "ab-"));
        assert!(!glob("ab*ba", "aba"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exact2"));
    }

    #[test]
    fn bad_rules_name_the_rule_or_line() {
        let e = Acl::parse(
            "[[rule]]\nuser = \"a\"\nanonymous = true\ntopic = \"x\"\naccess = \"read\"\n",
        )
        .unwrap_err();
        assert!(
            e.starts_with("rule 1 (topic \"x\"): give at most one"),
            "{e}"
        );
        let e = Acl::parse("[[rule]]\ntopic = \"a/#/b\"\naccess = \"read\"\n").unwrap_err();
        assert!(e.contains("not a valid MQTT topic filter"), "{e}");
        let e = Acl::parse("[[rule]]\ntopic = \"a\"\naccess = \"publish\"\n").unwrap_err();
        assert!(e.starts_with("line 3:"), "{e}");
        let e = Acl::parse("[[rule]]\ntopik = \"a\"\n").unwrap_err();
        assert!(e.starts_with("line 2:") && e.contains("topik"), "{e}");
        assert_eq!(Acl::parse("").unwrap(), Acl::default());
    }
}
