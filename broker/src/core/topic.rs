//! Topic names and filters: validation, matching and the subscription trie.
//!
//! Levels are separated by `/`; `+` matches exactly one level and `#` the rest
//! (including the parent level itself). Topics starting with `$` are not
//! matched by a filter whose first level is a wildcard (MQTT 4.7.2).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::message::ClientId;

/// Deepest topic name or filter accepted, in levels (as mosquitto's limit):
/// each filter level is a trie node, so depth is memory and recursion a client controls.
pub const MAX_TOPIC_LEVELS: usize = 200;

fn within_depth(topic: &str) -> bool {
    topic.bytes().filter(|&b| b == b'/').count() < MAX_TOPIC_LEVELS
}

/// A topic name a message may be published to: non-empty, no wildcards, at
/// most [`MAX_TOPIC_LEVELS`] levels.
pub fn valid_topic_name(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#']) && !topic.contains('\0') && within_depth(topic)
}

/// A subscription filter: non-empty; `#` only as the whole last level; `+`
/// only as a whole level; at most [`MAX_TOPIC_LEVELS`] levels.
pub fn valid_topic_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.contains('\0') || !within_depth(filter) {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let is_last = levels.peek().is_none();
        if level.contains('#') && (level != "#" || !is_last) {
            return false;
        }
        if level.contains('+') && level != "+" {
            return false;
        }
    }
    true
}

/// A filter as written by a client, split into its share group (if any) and
/// the topic filter proper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilterSpec<'a> {
    pub share_group: Option<&'a str>,
    pub filter: &'a str,
}

/// Parses `$share/{group}/{filter}` (MQTT 5.0 4.8.2; also accepted from 3.1.1
/// clients, as common brokers do). `None` when the filter is invalid.
pub fn parse_filter(raw: &str) -> Option<FilterSpec<'_>> {
    if let Some(rest) = raw.strip_prefix("$share/") {
        let (group, filter) = rest.split_once('/')?;
        if group.is_empty() || group.contains(['+', '#']) || !valid_topic_filter(filter) {
            return None;
        }
        return Some(FilterSpec {
            share_group: Some(group),
            filter,
        });
    }
    valid_topic_filter(raw).then_some(FilterSpec {
        share_group: None,
        filter: raw,
    })
}

/// Whether `filter` matches the topic name `topic` (used where no trie is at hand,
/// such as scanning retained messages for a new subscription).
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Members of one shared subscription group on one filter; messages go to
/// one member at a time, in turn.
#[derive(Debug)]
pub struct SharedGroup<V> {
    pub members: Vec<(ClientId, V)>,
    next: AtomicUsize,
}

impl<V> SharedGroup<V> {
    /// Start position for the next round-robin pick; callers walk the members
    /// from here (skipping ones that cannot take the message).
    pub fn next_start(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % self.members.len().max(1)
    }
}

#[derive(Debug)]
struct Node<V> {
    children: HashMap<Box<str>, Node<V>>,
    subscribers: HashMap<ClientId, V>,
    shared: HashMap<Box<str>, SharedGroup<V>>,
}

impl<V> Default for Node<V> {
    fn default() -> Self {
        Node {
            children: HashMap::new(),
            subscribers: HashMap::new(),
            shared: HashMap::new(),
        }
    }
}

impl<V> Node<V> {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.subscribers.is_empty() && self.shared.is_empty()
    }
}

/// A subscription that matched a topic.
pub enum Matched<'a, V> {
    Direct(&'a ClientId, &'a V),
    Shared(&'a SharedGroup<V>),
}

/// All subscriptions, indexed by filter level. `V` is the per-subscription
/// data (options, identifiers).
#[derive(Debug)]
pub struct SubscriptionTree<V> {
    root: Node<V>,
    count: usize,
}

impl<V> Default for SubscriptionTree<V> {
    fn default() -> Self {
        SubscriptionTree {
            root: Node::default(),
            count: 0,
        }
    }
}

impl<V> SubscriptionTree<V> {
    /// Number of subscriptions (each shared group member counts once).
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Adds or replaces a subscription. Returns true if it did not exist before.
    pub fn insert(&mut self, spec: FilterSpec<'_>, client: ClientId, value: V) -> bool {
        let mut node = &mut self.root;
        for level in spec.filter.split('/') {
            node = node.children.entry(level.into()).or_default();
        }
        let added = match spec.share_group {
            None => node.subscribers.insert(client, value).is_none(),
            Some(group) => {
                let group = node
                    .shared
                    .entry(group.into())
                    .or_insert_with(|| SharedGroup {
                        members: Vec::new(),
                        next: AtomicUsize::new(0),
                    });
                match group.members.iter_mut().find(|(c, _)| *c == client) {
                    Some(slot) => {
                        slot.1 = value;
                        false
                    }
                    None => {
                        group.members.push((client, value));
                        true
                    }
                }
            }
        };
        if added {
            self.count += 1;
        }
        added
    }

    /// Removes a subscription. Returns true if it existed.
    pub fn remove(&mut self, spec: FilterSpec<'_>, client: &str) -> bool {
        let levels: Vec<&str> = spec.filter.split('/').collect();
        let removed = Self::remove_at(&mut self.root, &levels, spec.share_group, client);
        if removed {
            self.count -= 1;
        }
        removed
    }

    /// Recursive, but only as deep as a validated filter: [`MAX_TOPIC_LEVELS`].
    fn remove_at(node: &mut Node<V>, levels: &[&str], group: Option<&str>, client: &str) -> bool {
        let Some((first, rest)) = levels.split_first() else {
            return match group {
                None => node.subscribers.remove(client).is_some(),
                Some(group) => {
                    let Some(g) = node.shared.get_mut(group) else {
                        return false;
                    };
                    let before = g.members.len();
                    g.members.retain(|(c, _)| &**c != client);
                    let removed = g.members.len() != before;
                    if g.members.is_empty() {
                        node.shared.remove(group);
                    }
                    removed
                }
            };
        };
        let Some(child) = node.children.get_mut(*first) else {
            return false;
        };
        let removed = Self::remove_at(child, rest, group, client);
        if child.is_empty() {
            node.children.remove(*first);
        }
        removed
    }

    /// Calls `f` for every subscription matching the topic name.
    pub fn for_each_match<'a>(&'a self, topic: &str, mut f: impl FnMut(Matched<'a, V>)) {
        let levels: Vec<&str> = topic.split('/').collect();
        let dollar = topic.starts_with('$');
        // Explicit stack instead of recursion: topic depth comes from the network.
        let mut stack: Vec<(&Node<V>, usize)> = vec![(&self.root, 0)];
        while let Some((node, depth)) = stack.pop() {
            let skip_wildcards = dollar && depth == 0;
            if !skip_wildcards {
                if let Some(hash) = node.children.get("#") {
                    Self::emit(hash, &mut f);
                }
            }
            if depth == levels.len() {
                Self::emit(node, &mut f);
                continue;
            }
            if let Some(child) = node.children.get(levels[depth]) {
                stack.push((child, depth + 1));
            }
            if !skip_wildcards {
                if let Some(plus) = node.children.get("+") {
                    stack.push((plus, depth + 1));
                }
            }
        }
    }

    fn emit<'a>(node: &'a Node<V>, f: &mut impl FnMut(Matched<'a, V>)) {
        for (client, v) in &node.subscribers {
            f(Matched::Direct(client, v));
        }
        for group in node.shared.values() {
            if !group.members.is_empty() {
                f(Matched::Shared(group));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ClientId {
        ClientId::from(s)
    }

    fn direct_matches(tree: &SubscriptionTree<u8>, topic: &str) -> Vec<String> {
        let mut out = Vec::new();
        tree.for_each_match(topic, |m| match m {
            Matched::Direct(c, v) => out.push(format!("{c}:{v}")),
            Matched::Shared(g) => {
                for (c, v) in &g.members {
                    out.push(format!("shared {c}:{v}"));
                }
            }
        });
        out.sort();
        out
    }

    #[test]
    fn filter_validation() {
        for ok in [
            "a", "a/b", "+", "#", "a/+/b", "a/#", "+/+", "/", "/a", "a//b",
        ] {
            assert!(valid_topic_filter(ok), "{ok}");
        }
        for bad in ["", "a#", "a/#/b", "a+", "a/b+/c", "#/a", "a/\0"] {
            assert!(!valid_topic_filter(bad), "{bad}");
        }
        let deepest = vec!["l"; MAX_TOPIC_LEVELS].join("/");
        let too_deep = vec!["l"; MAX_TOPIC_LEVELS + 1].join("/");
        assert!(valid_topic_filter(&deepest) && valid_topic_name(&deepest));
        assert!(!valid_topic_filter(&too_deep) && !valid_topic_name(&too_deep));
        assert!(parse_filter(&format!("$share/g/{too_deep}")).is_none());
        assert!(valid_topic_name("a/b"));
        assert!(!valid_topic_name("a/+"));
        assert!(!valid_topic_name("a/#"));
        assert!(!valid_topic_name(""));
    }

    #[test]
    fn shared_filters() {
        let s = parse_filter("$share/g1/a/+").unwrap();
        assert_eq!(s.share_group, Some("g1"));
        assert_eq!(s.filter, "a/+");
        assert!(parse_filter("$share/g1").is_none());
        assert!(parse_filter("$share//a").is_none());
        assert!(parse_filter("$share/g+/a").is_none());
        assert!(parse_filter("$share/g/a#").is_none());
        assert_eq!(parse_filter("$SYS/x").unwrap().share_group, None);
    }

    #[test]
    fn matching_rules() {
        assert!(matches("a/+/c", "a/b/c"));
        assert!(!matches("a/+/c", "a/b/d"));
        assert!(matches("a/#", "a"));
        assert!(matches("a/#", "a/b/c"));
        assert!(matches("#", "a/b"));
        assert!(!matches("+", "a/b"));
        assert!(matches("+/+", "/a"));
        assert!(!matches("#", "$SYS/x"));
        assert!(!matches("+/x", "$SYS/x"));
        assert!(matches("$SYS/#", "$SYS/x"));
        assert!(!matches("a/b", "a"));
    }

    #[test]
    fn trie_agrees_with_matches() {
        let filters = [
            "a/b/c", "a/+/c", "a/#", "#", "+/b/+", "+", "$SYS/#", "a", "/+", "+/#",
        ];
        let topics = ["a/b/c", "a", "a/b", "$SYS/x", "/a", "x/b/y", "a/x/c/d", "b"];
        let mut tree = SubscriptionTree::default();
        for (i, f) in filters.iter().enumerate() {
            tree.insert(parse_filter(f).unwrap(), id(&format!("c{i}")), 0u8);
        }
        for t in topics {
            let expected: Vec<String> = {
                let mut v: Vec<String> = filters
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| matches(f, t))
                    .map(|(i, _)| format!("c{i}:0"))
                    .collect();
                v.sort();
                v
            };
            assert_eq!(direct_matches(&tree, t), expected, "topic {t}");
        }
    }

    #[test]
    fn insert_replace_remove_and_prune() {
        let mut tree = SubscriptionTree::default();
        assert!(tree.insert(parse_filter("a/b").unwrap(), id("x"), 1u8));
        assert!(!tree.insert(parse_filter("a/b").unwrap(), id("x"), 2u8));
        assert_eq!(direct_matches(&tree, "a/b"), vec!["x:2"]);
        assert!(tree.insert(parse_filter("$share/g/a/b").unwrap(), id("y"), 1));
        assert!(tree.insert(parse_filter("$share/g/a/b").unwrap(), id("z"), 1));
        assert_eq!(tree.len(), 3);
        assert!(tree.remove(parse_filter("a/b").unwrap(), "x"));
        assert!(!tree.remove(parse_filter("a/b").unwrap(), "x"));
        assert!(tree.remove(parse_filter("$share/g/a/b").unwrap(), "y"));
        assert!(tree.remove(parse_filter("$share/g/a/b").unwrap(), "z"));
        assert!(tree.is_empty());
        assert!(tree.root.is_empty(), "empty nodes are pruned");
    }

    #[test]
    fn shared_group_round_robin_start() {
        let mut tree = SubscriptionTree::default();
        for c in ["a", "b", "c"] {
            tree.insert(parse_filter("$share/g/t").unwrap(), id(c), 0u8);
        }
        let mut picks = Vec::new();
        for _ in 0..6 {
            tree.for_each_match("t", |m| {
                if let Matched::Shared(g) = m {
                    picks.push(g.members[g.next_start()].0.to_string());
                }
            });
        }
        assert_eq!(picks, ["a", "b", "c", "a", "b", "c"]);
    }
}
