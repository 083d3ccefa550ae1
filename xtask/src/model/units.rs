//! How quantities are written everywhere: `1,234`, `850 µs`, `1.2 MiB`,
//! `12.5 %`, `3.4K msg/s`.

/// `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let groups: Vec<&str> = digits
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|g| std::str::from_utf8(g).expect("ASCII digits"))
        .collect();
    groups.join(",")
}

/// Microseconds as `850 µs`, `12.3 ms` or `1.25 s`.
pub fn micros(us: f64) -> String {
    if us < 1_000.0 {
        format!("{us:.0} µs")
    } else if us < 100_000.0 {
        format!("{:.2} ms", us / 1_000.0)
    } else if us < 1_000_000.0 {
        format!("{:.0} ms", us / 1_000.0)
    } else {
        format!("{:.2} s", us / 1_000_000.0)
    }
}

/// Bytes in decimal units (MB = 10^6 bytes, as the threshold profiles use).
pub fn bytes(b: f64) -> String {
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.0} kB", b / 1e3)
    } else {
        format!("{b:.0} B")
    }
}

pub fn rate(per_sec: f64) -> String {
    format!("{}/s", thousands(per_sec.round() as u64))
}

pub fn percent(p: f64) -> String {
    format!("{p:.1} %")
}

/// CPU microseconds per unit of work, three significant digits:
/// `0.842 µs`, `3.17 µs`, `52.4 µs`, `1,204 µs`.
pub fn cpu_micros(us: f64) -> String {
    if us < 1.0 {
        format!("{us:.3} µs")
    } else if us < 10.0 {
        format!("{us:.2} µs")
    } else if us < 100.0 {
        format!("{us:.1} µs")
    } else {
        format!("{} µs", thousands(us.round() as u64))
    }
}

/// `1 subscriber`, `1,000 idle connections`.
pub(crate) fn plural(n: u64, what: &str) -> String {
    format!("{} {what}{}", thousands(n), if n == 1 { "" } else { "s" })
}

/// Keeps a cell from breaking the table.
pub(crate) fn escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// `0.25` → `25 %`, `0.044488` → `4.45 %`, `0` → `0`.
pub fn fraction_text(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let pct = v * 100.0;
    let text = format!("{pct:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text} %")
}

/// `"1.5 GB"` → bytes. kB/MB/GB/TB are decimal (10^3...), KiB/MiB/GiB binary.
pub fn parse_size(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .replace('_', "")
        .parse()
        .map_err(|_| "not a size: write e.g. \"512 MB\" or \"1.5 GB\"".to_string())?;
    let factor = match unit.trim() {
        "B" | "" => 1.0,
        "kB" | "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "unknown unit {other:?}: use B, kB, MB, GB, TB (decimal) or KiB, MiB, GiB"
            ))
        }
    };
    if number <= 0.0 {
        return Err("must be positive".into());
    }
    Ok(number * factor)
}
