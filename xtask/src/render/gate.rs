//! The gate report as a Markdown table, terminal text and one verdict line.

use std::fmt::Write as _;

use crate::model::gate::{GateReport, GateResult, VerdictKind};

/// `threshold | limit | measured | verdict | from` as a Markdown table.
pub fn markdown_table(gate: &GateReport) -> String {
    let mut out =
        String::from("| threshold | limit | measured | verdict | from |\n|---|---|---|---|---|\n");
    for v in &gate.verdicts {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            v.label(),
            v.limit,
            v.measured.replace('|', "\\|"),
            match v.verdict {
                VerdictKind::Fail => "**FAIL**",
                VerdictKind::Informational => "_info (emulated)_",
                other => other.as_str(),
            },
            v.from.replace('|', "\\|")
        );
    }
    out.trim_end().to_string()
}

/// The same table aligned for a terminal.
pub fn text_table(gate: &GateReport) -> String {
    let header = ["threshold", "limit", "measured", "verdict", "from"];
    let rows: Vec<[String; 5]> = gate
        .verdicts
        .iter()
        .map(|v| {
            [
                v.label(),
                v.limit.clone(),
                v.measured.clone(),
                v.verdict.as_str().to_string(),
                v.from.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 5]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i == 4 {
                s.push_str(cell);
            } else {
                let pad = w - cell.chars().count();
                let _ = write!(s, "{cell}{}  ", " ".repeat(pad));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(header);
    for row in &rows {
        out.push('\n');
        out.push_str(&line([&row[0], &row[1], &row[2], &row[3], &row[4]]));
    }
    out
}

/// One line: the gate's outcome and the counts behind it.
pub fn verdict_line(gate: &GateReport) -> String {
    let (pass, fail, nm, info) = (
        gate.count(VerdictKind::Pass),
        gate.count(VerdictKind::Fail),
        gate.count(VerdictKind::NotMeasured),
        gate.count(VerdictKind::Informational),
    );
    let info_text = format!("{info} informational under emulation (not gated)");
    match gate.result {
        GateResult::Fail if info > 0 => format!(
            "gate `{}`: FAIL ({fail} failed, {pass} passed, {info} informational under emulation, {nm} not measured)",
            gate.profile
        ),
        GateResult::Fail => format!(
            "gate `{}`: FAIL ({fail} failed, {pass} passed, {nm} not measured)",
            gate.profile
        ),
        GateResult::Pass => format!("gate `{}`: pass (all {pass} thresholds passed)", gate.profile),
        GateResult::Incomplete if info > 0 && nm > 0 => format!(
            "gate `{}`: no threshold failed; {pass} passed, {info_text}, {nm} not measured; informational and not measured are not a pass",
            gate.profile
        ),
        GateResult::Incomplete if info > 0 => format!(
            "gate `{}`: no threshold failed; {pass} passed, {info_text}; informational is not a pass",
            gate.profile
        ),
        GateResult::Incomplete => format!(
            "gate `{}`: no threshold failed, but {nm} of {} not measured at this scale ({pass} passed); not measured is not a pass",
            gate.profile,
            gate.verdicts.len()
        ),
    }
}
