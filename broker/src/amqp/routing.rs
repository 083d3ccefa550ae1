//! Exchange types and their routing rules: direct (equal keys), fanout
//! (everything), topic (`*` = one dot-separated word, `#` = zero or more) and
//! headers (`x-match` = `all` or `any` over the binding's arguments).

use amq_protocol::types::{AMQPValue, FieldTable};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    Direct,
    Fanout,
    Topic,
    Headers,
}

impl ExchangeKind {
    pub fn parse(s: &str) -> Option<ExchangeKind> {
        match s {
            "direct" => Some(ExchangeKind::Direct),
            "fanout" => Some(ExchangeKind::Fanout),
            "topic" => Some(ExchangeKind::Topic),
            "headers" => Some(ExchangeKind::Headers),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Headers => "headers",
        }
    }

    /// Whether a binding with `binding_key` / `args` takes a message.
    pub fn matches(
        self,
        binding_key: &str,
        args: &FieldTable,
        routing_key: &str,
        headers: Option<&FieldTable>,
    ) -> bool {
        match self {
            ExchangeKind::Direct => binding_key == routing_key,
            ExchangeKind::Fanout => true,
            ExchangeKind::Topic => topic_matches(binding_key, routing_key),
            ExchangeKind::Headers => headers_match(args, headers),
        }
    }
}

/// Topic matching: words are separated by dots; `*` matches exactly one word
/// and `#` zero or more. Dynamic programming over (pattern word, key word), so
/// many `#` cannot make it exponential.
pub fn topic_matches(pattern: &str, key: &str) -> bool {
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = key.split('.').collect();
    // can[j]: pattern words consumed so far can match the first j key words.
    let mut can = vec![false; k.len() + 1];
    can[0] = true;
    for word in &p {
        let mut next = vec![false; k.len() + 1];
        match *word {
            "#" => {
                let mut reachable = false;
                for j in 0..=k.len() {
                    reachable |= can[j];
                    next[j] = reachable;
                }
            }
            w => {
                for j in 0..k.len() {
                    if can[j] && (w == "*" || w == k[j]) {
                        next[j + 1] = true;
                    }
                }
            }
        }
        can = next;
    }
    can[k.len()]
}

/// Headers matching (RabbitMQ semantics): `x-match` is `all` (default) or
/// `any`; `all-with-x` / `any-with-x` also compare `x-` arguments. A binding
/// value of void only asks for the header to be present.
pub fn headers_match(args: &FieldTable, headers: Option<&FieldTable>) -> bool {
    let empty = FieldTable::default();
    let headers = headers.unwrap_or(&empty).inner();
    let mode = match args.inner().get("x-match") {
        Some(v) => value_str(v).unwrap_or_default(),
        None => "all".to_string(),
    };
    let (any, with_x) = match mode.as_str() {
        "any" => (true, false),
        "any-with-x" => (true, true),
        "all-with-x" => (false, true),
        _ => (false, false),
    };
    let mut considered = args
        .inner()
        .iter()
        .filter(|(k, _)| k.as_str() != "x-match" && (with_x || !k.as_str().starts_with("x-")));
    let one = |(k, v): (&amq_protocol::types::ShortString, &AMQPValue)| match headers.get(k) {
        None => false,
        Some(h) => matches!(v, AMQPValue::Void) || values_equal(v, h),
    };
    if any {
        considered.any(one)
    } else {
        considered.all(one)
    }
}

fn value_str(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        _ => None,
    }
}

fn value_int(v: &AMQPValue) -> Option<i128> {
    Some(match v {
        AMQPValue::ShortShortInt(n) => i128::from(*n),
        AMQPValue::ShortShortUInt(n) => i128::from(*n),
        AMQPValue::ShortInt(n) => i128::from(*n),
        AMQPValue::ShortUInt(n) => i128::from(*n),
        AMQPValue::LongInt(n) => i128::from(*n),
        AMQPValue::LongUInt(n) => i128::from(*n),
        AMQPValue::LongLongInt(n) => i128::from(*n),
        AMQPValue::Timestamp(n) => i128::from(*n),
        _ => return None,
    })
}

/// Equality across the encodings clients pick for the same value (a Python
/// `str` is a long string, a Java one may be a short string; ints vary in width).
fn values_equal(a: &AMQPValue, b: &AMQPValue) -> bool {
    if let (Some(x), Some(y)) = (value_str(a), value_str(b)) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (value_int(a), value_int(b)) {
        return x == y;
    }
    a == b
}

/// An integer argument (`x-message-ttl`, `x-max-length`, ...) whatever its width.
pub fn int_arg(args: &FieldTable, key: &str) -> Option<Result<i128, ()>> {
    args.inner()
        .get(key)
        .map(|v| value_int(v).ok_or(()).or_else(|()| string_int(v)))
}

fn string_int(v: &AMQPValue) -> Result<i128, ()> {
    value_str(v).and_then(|s| s.parse().ok()).ok_or(())
}

/// A string argument (`x-dead-letter-exchange`, `x-overflow`, ...).
pub fn str_arg(args: &FieldTable, key: &str) -> Option<Result<String, ()>> {
    args.inner().get(key).map(|v| value_str(v).ok_or(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_words_and_wildcards() {
        let cases = [
            ("a.b.c", "a.b.c", true),
            ("a.*.c", "a.b.c", true),
            ("a.*.c", "a.c", false),
            ("a.#", "a", true),
            ("a.#", "a.b.c", true),
            ("#.c", "c", true),
            ("#", "", true),
            ("#", "anything.at.all", true),
            ("*", "one", true),
            ("*", "one.two", false),
            ("*.*", "one", false),
            ("a.#.z", "a.z", true),
            ("a.#.z", "a.b.c.z", true),
            ("a.#.z", "a.b.c", false),
            ("#.b.#", "a.b.c", true),
            ("#.#.#.x", "y", false),
            ("stock.usd.*", "stock.eur.nyse", false),
            ("a.b", "a.bb", false),
        ];
        for (pattern, key, want) in cases {
            assert_eq!(topic_matches(pattern, key), want, "{pattern} vs {key}");
        }
        // Many '#' stay linear-time.
        let pattern = vec!["#"; 200].join(".") + ".x";
        let key = vec!["w"; 200].join(".");
        assert!(!topic_matches(&pattern, &key));
    }

    fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert((*k).into(), v.clone());
        }
        t
    }

    #[test]
    fn headers_all_and_any() {
        let long = |s: &str| AMQPValue::LongString(s.into());
        let all = table(&[("format", long("pdf")), ("type", long("report"))]);
        let any = table(&[
            ("x-match", long("any")),
            ("format", long("pdf")),
            ("type", long("report")),
        ]);
        let both = table(&[("format", long("pdf")), ("type", long("report"))]);
        let one = table(&[("format", long("pdf")), ("type", long("log"))]);
        let short = table(&[
            ("format", AMQPValue::ShortString("pdf".into())),
            ("type", long("report")),
        ]);
        assert!(headers_match(&all, Some(&both)));
        assert!(!headers_match(&all, Some(&one)));
        assert!(
            headers_match(&all, Some(&short)),
            "string encodings compare equal"
        );
        assert!(!headers_match(&all, None));
        assert!(headers_match(&any, Some(&one)));
        assert!(!headers_match(&any, Some(&table(&[("type", long("log"))]))));
        let ints = table(&[("n", AMQPValue::LongInt(5))]);
        assert!(headers_match(
            &ints,
            Some(&table(&[("n", AMQPValue::ShortShortUInt(5))]))
        ));
        let present = table(&[("flag", AMQPValue::Void)]);
        assert!(headers_match(
            &present,
            Some(&table(&[("flag", long("x"))]))
        ));
        // x- arguments are ignored unless the mode says "with-x".
        let x = table(&[("x-tag", long("a"))]);
        assert!(headers_match(&x, Some(&FieldTable::default())));
        let xx = table(&[("x-match", long("all-with-x")), ("x-tag", long("a"))]);
        assert!(!headers_match(&xx, Some(&FieldTable::default())));
    }

    #[test]
    fn kinds_route() {
        let none = FieldTable::default();
        assert!(ExchangeKind::Direct.matches("k", &none, "k", None));
        assert!(!ExchangeKind::Direct.matches("k", &none, "K", None));
        assert!(ExchangeKind::Fanout.matches("", &none, "whatever", None));
        assert!(ExchangeKind::Topic.matches("a.*", &none, "a.b", None));
        assert_eq!(ExchangeKind::parse("x-custom"), None);
        assert_eq!(
            int_arg(&table(&[("t", AMQPValue::LongLongInt(7))]), "t"),
            Some(Ok(7))
        );
        assert_eq!(
            int_arg(&table(&[("t", AMQPValue::Boolean(true))]), "t"),
            Some(Err(()))
        );
    }
}
