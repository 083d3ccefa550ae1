//! `/metrics` behind credentials (`metrics.bearer_token_file`,
//! `metrics.users`), scraped with curl as Prometheus would: no or wrong
//! credentials get 401 with a challenge and are counted; a right token or
//! basic login gets the metrics; a bad token file stops start-up.

use std::process::Output;

use crate::common::{external_tool, password_file, start_broker_with};

fn curl(url: &str, extra: &[&str]) -> Output {
    external_tool("curl", "--version", "curl")
        .args(["-sS", "-i", "--max-time", "10"])
        .args(extra)
        .arg(url)
        .output()
        .expect("curl runs")
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn status(o: &Output) -> String {
    text(o).lines().next().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_the_token_or_a_listed_user_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let token = "c0ffee-5ca1ab1e-0123456789abcdef";
    let token_file = dir.path().join("metrics.token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let passwd = password_file(dir.path(), &[("prom", "scrape-pw"), ("alice", "alice-pw")]);
    let b = start_broker_with(|c| {
        c.metrics.enabled = true;
        c.metrics.bearer_token_file = Some(token_file.clone());
        c.metrics.users = vec!["prom".into()];
        c.auth.password_file = Some(passwd.clone());
    })
    .await;
    let url = format!("http://{}/metrics", b.metrics_addr.expect("metrics on"));
    let refused = |o: &Output| {
        assert!(
            status(o).contains(" 401"),
            "expected 401, got:\n{}",
            text(o)
        );
        assert!(
            !text(o).contains("broker_max_connections"),
            "no metrics on a 401"
        );
    };

    let none = curl(&url, &[]);
    refused(&none);
    let challenges = text(&none);
    assert!(
        challenges.contains("WWW-Authenticate: Bearer")
            && challenges.contains("WWW-Authenticate: Basic"),
        "{challenges}"
    );
    refused(&curl(
        &url,
        &["-H", "Authorization: Bearer c0ffee-wrong-0123456789abcdef"],
    ));
    refused(&curl(&url, &["-u", "prom:wrong"]));
    refused(&curl(&url, &["-u", "alice:alice-pw"])); // a real user, not allowed to scrape

    let bearer = curl(&url, &["-H", &format!("Authorization: Bearer {token}")]);
    assert!(status(&bearer).contains(" 200"), "{}", text(&bearer));
    assert!(
        text(&bearer).contains("broker_max_connections"),
        "{}",
        text(&bearer)
    );
    let basic = curl(&url, &["-u", "prom:scrape-pw"]);
    assert!(status(&basic).contains(" 200"), "{}", text(&basic));
    // The refusals were counted (the scrape that reads this is allowed).
    let line = text(&basic)
        .lines()
        .find(|l| l.starts_with("broker_metrics_scrapes_refused_total "))
        .map(str::to_string)
        .unwrap_or_default();
    assert_eq!(
        line,
        "broker_metrics_scrapes_refused_total 4",
        "{}",
        text(&basic)
    );
}

#[test]
fn a_short_token_file_stops_start_up_naming_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "short\n").unwrap();
    let config = dir.path().join("broker.toml");
    std::fs::write(
        &config,
        "[metrics]\nbind = \"127.0.0.1:0\"\nbearer_token_file = \"token\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_broker"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&dir.path().join("token").display().to_string())
            && err.contains("metrics.bearer_token_file")
            && err.contains("openssl rand"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
}
