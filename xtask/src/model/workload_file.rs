//! Reading a workload file the way bench does: loadgen's schema plus
//! `rate = "max"` with an optional `[search]` table, which only xtask
//! understands (loadgen runs each search step at a fixed rate).

use std::path::Path;

use anyhow::{anyhow, Result};
use loadgen::{Scenario, Workload};

use crate::model::max_rate::{SearchSpec, SEARCH_KEYS};

/// A workload file: the workload (with `rate = 0` when it searches) and its
/// search settings when `rate = "max"`.
pub fn load(path: &Path) -> Result<(Workload, Option<SearchSpec>)> {
    let f = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow!("{f}: cannot read workload file: {e}"))?;
    let Ok(table) = text.parse::<toml::Table>() else {
        // Not TOML: loadgen's message names the line.
        return Ok((Workload::load(path)?, None));
    };
    let search = table.get("search");
    match table.get("rate") {
        Some(toml::Value::String(s)) if s == "max" => {}
        Some(toml::Value::String(s)) => {
            return Err(anyhow!(
                "{f}: key `rate` = {s:?}: must be msg/s (a number, 0 = unpaced) or \"max\" (search for the maximum sustainable rate)"
            ))
        }
        _ if search.is_some() => {
            return Err(anyhow!(
                "{f}: table `search`: only for `rate = \"max\"`; set that or remove the table"
            ))
        }
        _ => return Ok((Workload::load(path)?, None)),
    }
    let spec = parse_search(search).map_err(|e| anyhow!("{f}: {e}"))?;
    let mut rest = table.clone();
    rest.remove("search");
    rest.insert("rate".into(), toml::Value::Integer(0));
    let mut workload: Workload = rest
        .try_into()
        .map_err(|e: toml::de::Error| anyhow!("{f}: {}", e.message().trim().replace('\n', " ")))?;
    workload.validate().map_err(|e| anyhow!("{f}: {e}"))?;
    if workload.rate_per_publisher > 0 {
        return Err(anyhow!(
            "{f}: key `rate_per_publisher`: cannot go with `rate = \"max\"`; remove it"
        ));
    }
    if workload.scenario == Scenario::ConnectionStorm {
        return Err(anyhow!(
            "{f}: key `rate` = \"max\": a connection storm has no message rate to search; give a number"
        ));
    }
    if workload.max_messages > 0 {
        return Err(anyhow!(
            "{f}: key `max_messages`: cannot go with `rate = \"max\"` (steps run for step_secs); remove it"
        ));
    }
    if workload.name.is_empty() {
        workload.name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
    }
    Ok((workload, Some(spec)))
}

/// `[search]` (absent: every default); unknown keys are named with the known ones.
pub fn parse_search(value: Option<&toml::Value>) -> Result<SearchSpec, String> {
    let Some(value) = value else {
        return Ok(SearchSpec::default());
    };
    let Some(table) = value.as_table() else {
        return Err("key `search`: must be a table ([search])".into());
    };
    if let Some(key) = table.keys().find(|k| !SEARCH_KEYS.contains(&k.as_str())) {
        return Err(format!(
            "key `search.{key}`: unknown; known keys: {}",
            SEARCH_KEYS.join(", ")
        ));
    }
    let spec: SearchSpec = table.clone().try_into().map_err(|e: toml::de::Error| {
        format!("table `search`: {}", e.message().trim().replace('\n', " "))
    })?;
    spec.validate()?;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w-max.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    const BASE: &str =
        "protocol = \"mqtt\"\nscenario = \"fan_in\"\npublishers = 2\nsubscribers = 1\n";

    #[test]
    fn rate_max_reads_the_search_table_and_defaults() {
        let (_d, p) = file(&format!(
            "{BASE}rate = \"max\"\n[search]\nstart_per_sec = 500\np99_below_ms = 20\n"
        ));
        let (w, spec) = load(&p).unwrap();
        let spec = spec.expect("a search");
        assert_eq!((w.name.as_str(), w.rate), ("w-max", 0));
        assert_eq!(spec.start_per_sec, 500);
        assert_eq!(spec.p99_below_ms, 20.0);
        assert_eq!(spec.delivered_fraction, 0.999);

        let (_d, p) = file(&format!("{BASE}rate = \"max\"\n"));
        assert_eq!(load(&p).unwrap().1, Some(SearchSpec::default()));

        let (_d, p) = file(&format!("{BASE}rate = 100\n"));
        let (w, spec) = load(&p).unwrap();
        assert_eq!((w.rate, spec), (100, None));
    }

    #[test]
    fn bad_search_input_names_file_key_and_fix() {
        let cases = [
            (
                format!("{BASE}rate = \"max\"\n[search]\nstep_sec = 3\n"),
                "key `search.step_sec`: unknown; known keys: start_per_sec",
            ),
            (
                format!("{BASE}rate = \"max\"\n[search]\ngrowth = 1\n"),
                "key `search.growth` = 1: must be above 1",
            ),
            (
                format!("{BASE}rate = \"max\"\n[search]\ndelivered_fraction = 2\n"),
                "key `search.delivered_fraction` = 2",
            ),
            (
                format!("{BASE}rate = \"max\"\n[search]\nmax_steps = 1000\n"),
                "key `search.max_steps` = 1000: must be 1..=60",
            ),
            (
                format!("{BASE}rate = \"fast\"\n"),
                "key `rate` = \"fast\": must be msg/s",
            ),
            (
                format!("{BASE}rate = 10\n[search]\ngrowth = 2\n"),
                "table `search`: only for `rate = \"max\"`",
            ),
            (
                format!("{BASE}rate = \"max\"\nrate_per_publisher = 5\n"),
                "key `rate_per_publisher`: cannot go with `rate = \"max\"`",
            ),
            (
                format!("{BASE}rate = \"max\"\nbogus = 1\n"),
                "unknown field `bogus`",
            ),
        ];
        for (text, want) in cases {
            let (_d, p) = file(&text);
            let err = format!("{:#}", load(&p).unwrap_err());
            assert!(err.starts_with(&p.display().to_string()), "{err}");
            assert!(err.contains(want), "{want:?} not in {err:?}");
        }
    }
}
