//! CPU thresholds across machines: the gate scales the CPU-per-message and
//! per-connection thresholds of a profile by how much dearer the run's
//! machine was than the one they were measured on, by the two machines'
//! CPU references (`infra::cpu_reference`, the why is there).

use crate::model::gate::{Profile, Threshold, ThresholdKind};
use crate::model::report::Report;

/// The most a machine's CPU reference may scale CPU thresholds: a machine
/// four times dearer per round trip than the profile's is too unlike it
/// for the profile's CPU numbers to mean much, and a runaway reference
/// (something else hogging the CPU while it was measured) must not switch
/// the CPU gate off.
pub const MAX_CPU_SCALE: f64 = 4.0;

/// How much dearer CPU work of the broker's kind (syscalls, wake-ups) was on
/// the run's machine than where the profile's CPU-per-message and
/// per-connection thresholds were set: the ratio of the two CPU references
/// (`infra::cpu_reference`), never below 1 (a faster machine keeps the
/// thresholds as they are) and at most [`MAX_CPU_SCALE`]. 1 when either
/// reference is missing, and under emulation (those thresholds are then
/// informational and the reference is the host's, not the emulator's).
pub fn cpu_scale(report: &Report, profile: &Profile) -> f64 {
    if report.environment.emulated {
        return 1.0;
    }
    match (&report.environment.cpu_reference, profile.cpu_reference_us) {
        (Some(run), Some(base)) if base > 0.0 && run.us_per_round_trip.is_finite() => {
            (run.us_per_round_trip / base).clamp(1.0, MAX_CPU_SCALE)
        }
        _ => 1.0,
    }
}

/// `t` with its limit multiplied by `scale` when it is a CPU-per-work
/// threshold (and `scale` is above 1); the limit text shows the product and
/// `from` says why.
pub(crate) fn scale_cpu_threshold(
    t: &Threshold,
    scale: f64,
    report: &Report,
    profile: &Profile,
) -> Threshold {
    use crate::model::units::cpu_micros;
    let unit = match t.kind {
        ThresholdKind::CpuPerMessage => "msg",
        ThresholdKind::CpuPerConnection => "conn",
        _ => return t.clone(),
    };
    if scale <= 1.0 {
        return t.clone();
    }
    let limit = t.limit * scale;
    let run = report
        .environment
        .cpu_reference
        .as_ref()
        .map_or(0.0, |r| r.us_per_round_trip);
    let base = profile.cpu_reference_us.unwrap_or(0.0);
    let capped = if run / base > MAX_CPU_SCALE {
        " (capped)"
    } else {
        ""
    };
    Threshold {
        limit,
        limit_text: format!(
            "< {}/{unit} ({} x {scale:.2}{capped})",
            cpu_micros(limit),
            cpu_micros(t.limit)
        ),
        from: format!(
            "{}; x {scale:.2}: this machine's CPU reference {} per loopback round trip against the \
             profile's {}",
            t.from,
            cpu_micros(run),
            cpu_micros(base)
        ),
        ..t.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::model::gate::Profile;

    // The verdict-level tests of the scaling are in `analysis::gate`'s tests
    // (`cpu_scaled`), which call `evaluate`.

    #[test]
    fn the_profile_key_must_be_positive() {
        let e = Profile::parse(Path::new("p.toml"), "cpu_reference_us_per_round_trip = 0\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("p.toml") && e.contains("cpu_reference_us_per_round_trip"),
            "{e}"
        );
    }
}
