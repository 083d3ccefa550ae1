//! `--sweep [FRACTIONS]`: the fractions of the maximum rate a sweep runs at.

/// Fractions of the maximum sustainable rate, each in (0, 1.5], increasing.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Fractions(pub Vec<f64>);

/// What a bare `--sweep` runs.
pub(crate) const DEFAULT_SWEEP: &str = "0.1,0.25,0.5,0.75,0.9,1.0";

/// Longest sweep: each point is one search step long.
const MAX_POINTS: usize = 20;

/// `0.1,0.5,1` → fractions; one line naming the flag and the fix otherwise.
pub(crate) fn parse_fractions(s: &str) -> Result<Fractions, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let v: f64 = part
            .parse()
            .map_err(|_| format!("--sweep: `{part}` is not a fraction (e.g. 0.1,0.5,1.0)"))?;
        if !(v.is_finite() && v > 0.0 && v <= 1.5) {
            return Err(format!(
                "--sweep: {part} is outside (0, 1.5]: give fractions of the maximum rate"
            ));
        }
        if out.last().is_some_and(|&last| v <= last) {
            return Err(format!(
                "--sweep: {part} after {}: list the fractions increasing",
                out.last().unwrap()
            ));
        }
        out.push(v);
    }
    if out.is_empty() || out.len() > MAX_POINTS {
        return Err(format!(
            "--sweep: give 1 to {MAX_POINTS} fractions, comma-separated (e.g. {DEFAULT_SWEEP})"
        ));
    }
    Ok(Fractions(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_parse_and_bad_ones_name_the_flag() {
        assert_eq!(
            parse_fractions(DEFAULT_SWEEP).unwrap().0,
            [0.1, 0.25, 0.5, 0.75, 0.9, 1.0]
        );
        assert_eq!(parse_fractions("0.5, 1").unwrap().0, [0.5, 1.0]);
        for bad in ["", "0", "2", "x", "0.5,0.2", "-0.1"] {
            let e = parse_fractions(bad).unwrap_err();
            assert!(e.starts_with("--sweep"), "{bad}: {e}");
        }
    }
}
