//! `broker passwd` and the password/ACL files as a user meets them: the
//! subcommand's flags and file handling, start-up errors, and a broker
//! process checked with mosquitto_pub/mosquitto_sub for 3.1.1 and 5.0.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::broker_process::{broker_bin, BrokerProcess, MQTT_ONLY};
use crate::common::external_tool;

fn broker(args: &[&str]) -> Output {
    Command::new(broker_bin())
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("broker binary runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

fn passwd_b(file: &Path, user: &str, password: &str) -> Output {
    let file = file.to_str().unwrap();
    broker(&["passwd", "-b", "-I", "1000", file, user, password])
}

#[test]
fn passwd_adds_updates_and_deletes_users_in_a_0600_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    let out = passwd_b(&file, "alice", "pw-1");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("added user `alice`"),
        "{}",
        stderr(&out)
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("alice:$pbkdf2-sha256$1000$"), "{text}");
    assert!(text.contains(":$scram-sha-256$4096$") && text.contains(":$scram-sha-512$4096$"));
    assert!(!text.contains("pw-1"), "no plain text in the file");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(passwd_b(&file, "bob", "pw-b").status.success());
    let out = passwd_b(&file, "alice", "pw-2");
    assert!(
        stderr(&out).contains("updated user `alice`"),
        "{}",
        stderr(&out)
    );
    let updated = std::fs::read_to_string(&file).unwrap();
    assert_ne!(updated.lines().next(), text.lines().next(), "new hash");
    let parsed = broker::auth::PasswordFile::load(&file).unwrap();
    assert!(parsed.users["alice"].login.verify(b"pw-2"));
    assert!(!parsed.users["alice"].login.verify(b"pw-1"));
    let f = file.to_str().unwrap();
    let out = broker(&["passwd", "-D", f, "alice"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let left = broker::auth::PasswordFile::load(&file).unwrap();
    assert_eq!(left.users.keys().collect::<Vec<_>>(), ["bob"]);
    let out = broker(&["passwd", "-D", f, "alice"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no user `alice`"), "{}", stderr(&out));
}

#[test]
fn passwd_usage_errors_are_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("passwd");
    let f = f.to_str().unwrap();
    // No terminal to prompt on (stdin is /dev/null): say how to use -b.
    let out = broker(&["passwd", f, "alice"]);
    assert_eq!(out.status.code(), Some(2));
    let line = stderr(&out);
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(
        line.contains("not a terminal") && line.contains("broker passwd -b"),
        "{line}"
    );
    let out = broker(&["passwd", "-b", f, "alice"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("-b needs the password"),
        "{}",
        stderr(&out)
    );
    let out = broker(&["passwd", "-b", f, "a:b", "pw"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("may not contain `:`"),
        "{}",
        stderr(&out)
    );
    assert!(!Path::new(f).exists(), "nothing written on a usage error");
}

#[test]
fn bad_password_file_or_plain_text_users_stop_start_up_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("broker.toml");
    std::fs::write(dir.path().join("passwd"), "# users\nalice:secret\n").unwrap();
    std::fs::write(&config, "[auth]\npassword_file = \"passwd\"\n").unwrap();
    let out = broker(&["--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let line = stderr(&out);
    assert_eq!(line.lines().count(), 1, "{line}");
    let file = dir.path().join("passwd");
    assert!(
        line.starts_with(&format!("error: {}: line 2: user `alice`", file.display())),
        "{line}"
    );
    assert!(line.contains("broker passwd"), "{line}");

    std::fs::write(&config, "[mqtt]\nusers = { alice = \"secret\" }\n").unwrap();
    let out = broker(&["--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let line = stderr(&out);
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(
        line.contains("mqtt.users: plain-text passwords are refused")
            && line.contains("broker passwd"),
        "{line}"
    );

    std::fs::write(&config, "[auth]\nacl_file = \"acl.toml\"\n").unwrap();
    std::fs::write(
        dir.path().join("acl.toml"),
        "[[rule]]\ntopic = \"a/#/b\"\naccess = \"read\"\n",
    )
    .unwrap();
    let out = broker(&["--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let line = stderr(&out);
    assert!(
        line.contains("acl.toml: rule 1") && line.contains("(auth.acl_file)"),
        "{line}"
    );
    // An AMQP permission with a bad regex: file, table and key named, exit 2.
    std::fs::write(
        dir.path().join("acl.toml"),
        "[[amqp]]\nuser = \"a\"\nvhost = \"/\"\nconfigure = \".*\"\nwrite = \"(\"\nread = \"\"\n",
    )
    .unwrap();
    let out = broker(&["--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let line = stderr(&out);
    assert!(
        line.contains("acl.toml: [[amqp]] table 1: key `write`: invalid regex")
            && line.contains("(auth.acl_file)"),
        "{line}"
    );
}

fn mosquitto(tool: &str, port: u16, version: &str, args: &[&str]) -> Output {
    external_tool(tool, "--help", "mosquitto-clients")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", version])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("mosquitto client runs")
}

#[test]
fn mosquitto_clients_authenticate_and_meet_the_acl() {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    assert!(passwd_b(&passwd, "alice", "a-pw").status.success());
    std::fs::write(
        dir.path().join("acl.toml"),
        "[[rule]]\nuser = \"alice\"\ntopic = \"demo/#\"\naccess = \"readwrite\"\n",
    )
    .unwrap();
    let config = dir.path().join("broker.toml");
    std::fs::write(
        &config,
        "[auth]\npassword_file = \"passwd\"\nacl_file = \"acl.toml\"\n",
    )
    .unwrap();
    let mut args = vec!["--config", config.to_str().unwrap()];
    args.extend_from_slice(MQTT_ONLY);
    let b = BrokerProcess::spawn(&args);
    let port = b.mqtt().port();
    for version in ["mqttv311", "mqttv5"] {
        let user = ["-u", "alice", "-P", "a-pw"];
        let ok = mosquitto(
            "mosquitto_pub",
            port,
            version,
            &[&user[..], &["-q", "1", "-t", "demo/a", "-m", "x", "-r"]].concat(),
        );
        assert!(ok.status.success(), "{version}: {}", stderr(&ok));
        let wrong = mosquitto(
            "mosquitto_pub",
            port,
            version,
            &["-u", "alice", "-P", "nope", "-t", "demo/a", "-m", "x"],
        );
        assert!(
            !wrong.status.success(),
            "{version}: a wrong password is refused"
        );
        let msg = stderr(&wrong).to_lowercase();
        assert!(
            msg.contains("bad user name or password")
                || msg.contains("not authorised")
                || msg.contains("password"),
            "{version}: {msg}"
        );
        let anon = mosquitto("mosquitto_pub", port, version, &["-t", "demo/a", "-m", "x"]);
        assert!(
            !anon.status.success(),
            "{version}: anonymous refused once a password file is set"
        );
        // Subscribing outside demo/# is denied; inside, the retained message arrives.
        let denied = mosquitto(
            "mosquitto_sub",
            port,
            version,
            &[&user[..], &["-t", "other/#", "-C", "1", "-W", "5"]].concat(),
        );
        assert!(
            stderr(&denied).contains("denied"),
            "{version}: {}",
            stderr(&denied)
        );
        let got = mosquitto(
            "mosquitto_sub",
            port,
            version,
            &[&user[..], &["-t", "demo/#", "-C", "1", "-W", "5", "-v"]].concat(),
        );
        assert_eq!(
            String::from_utf8_lossy(&got.stdout).trim(),
            "demo/a x",
            "{version}: {}",
            stderr(&got)
        );
        // Publishing outside demo/#: 5.0 is told (PUBACK 0x87), 3.1.1 is not (dropped).
        let out = mosquitto(
            "mosquitto_pub",
            port,
            version,
            &[&user[..], &["-q", "1", "-t", "other/a", "-m", "x"]].concat(),
        );
        if version == "mqttv5" {
            assert!(
                stderr(&out).to_lowercase().contains("not authori"),
                "{version}: {}",
                stderr(&out)
            );
        } else {
            assert!(out.status.success(), "{version}: {}", stderr(&out));
        }
    }
}
