//! `kcat` (Debian package kcat, built on librdkafka) against the broker:
//! list metadata, produce keyed messages from stdin, consume them back.

use std::io::Write;
use std::process::{Output, Stdio};

use crate::common::{external_tool, kafka_bootstrap, start_broker_with};

/// kcat is what a user tries first; `cargo xtask ci` installs it.
fn kcat(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = external_tool("kcat", "-V", "kcat")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat starts");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(input.as_bytes())
            .expect("kcat reads stdin");
    }
    let out = child.wait_with_output().expect("kcat finishes");
    assert!(
        out.status.success(),
        "kcat {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_lists_produces_and_consumes() {
    let broker = start_broker_with(|c| c.kafka.default_partitions = 2).await;
    let bootstrap = kafka_bootstrap(&broker);
    let b = bootstrap.as_str();
    let input: String = (0..10).map(|i| format!("key{i}:value {i}\n")).collect();
    tokio::task::spawn_blocking({
        let b = b.to_string();
        move || {
            kcat(
                &[
                    "-b", &b, "-P", "-t", "kc", "-K", ":", "-X", "acks=all", "-m", "10",
                ],
                Some(&input),
            );
        }
    })
    .await
    .unwrap();

    let listing = tokio::task::spawn_blocking({
        let b = b.to_string();
        move || kcat(&["-b", &b, "-L", "-m", "10"], None)
    })
    .await
    .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    assert!(listing.contains("1 brokers:"), "{listing}");
    assert!(
        listing.contains(&format!("at {b}")),
        "advertised address: {listing}"
    );
    assert!(
        listing.contains("topic \"kc\" with 2 partitions"),
        "{listing}"
    );

    let consumed = tokio::task::spawn_blocking({
        let b = b.to_string();
        move || {
            kcat(
                &[
                    "-b",
                    &b,
                    "-C",
                    "-t",
                    "kc",
                    "-o",
                    "beginning",
                    "-e",
                    "-m",
                    "10",
                    "-f",
                    "%p %o %k=%s\n",
                ],
                None,
            )
        }
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&consumed.stdout).into_owned();
    let mut lines: Vec<(i32, i64, String)> = text
        .lines()
        .map(|l| {
            let mut parts = l.splitn(3, ' ');
            let p = parts.next().unwrap().parse().unwrap();
            let o = parts.next().unwrap().parse().unwrap();
            (p, o, parts.next().unwrap().to_string())
        })
        .collect();
    assert_eq!(lines.len(), 10, "{text}");
    lines.sort();
    let mut kv: Vec<String> = lines.iter().map(|l| l.2.clone()).collect();
    kv.sort();
    let mut expected: Vec<String> = (0..10).map(|i| format!("key{i}=value {i}")).collect();
    expected.sort();
    assert_eq!(kv, expected);
    // Within each partition, offsets count up from 0 and values keep their order.
    for partition in 0..2 {
        let offsets: Vec<i64> = lines
            .iter()
            .filter(|l| l.0 == partition)
            .map(|l| l.1)
            .collect();
        assert_eq!(offsets, (0..offsets.len() as i64).collect::<Vec<_>>());
    }
    broker.shutdown().await;
}
