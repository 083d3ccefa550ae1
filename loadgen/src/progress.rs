//! Progress on stderr while a workload runs: an indicatif spinner on a
//! terminal, otherwise one plain line per second (for CI logs).

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// Nothing on stderr.
    Off,
    /// `t=3s sent=… recv=… err=…`, one line per second.
    Lines,
    /// A spinner redrawn in place (stderr is a terminal).
    Bar,
}

impl ProgressMode {
    /// `Bar` on a terminal, `Lines` otherwise, `Off` when quiet.
    pub fn for_stderr(quiet: bool) -> ProgressMode {
        use std::io::IsTerminal;
        if quiet {
            ProgressMode::Off
        } else if std::io::stderr().is_terminal() {
            ProgressMode::Bar
        } else {
            ProgressMode::Lines
        }
    }
}

/// A snapshot of the run, shown once per second.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub phase: &'static str,
    /// Seconds since the phase started.
    pub t: u64,
    pub connected: u64,
    pub connecting_total: u64,
    pub sent: u64,
    pub acked: u64,
    pub received: u64,
    pub errors: u64,
}

impl Snapshot {
    pub fn line(&self) -> String {
        if self.phase == "connect" {
            format!(
                "connect t={}s connected={}/{} err={}",
                self.t, self.connected, self.connecting_total, self.errors
            )
        } else {
            format!(
                "{} t={}s sent={} acked={} recv={} err={}",
                self.phase, self.t, self.sent, self.acked, self.received, self.errors
            )
        }
    }
}

pub struct Progress {
    mode: ProgressMode,
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn new(mode: ProgressMode) -> Progress {
        let bar = (mode == ProgressMode::Bar).then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                    .expect("valid template"),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress { mode, bar }
    }

    pub fn show(&self, snapshot: &Snapshot) {
        match self.mode {
            ProgressMode::Off => {}
            ProgressMode::Lines => eprintln!("{}", snapshot.line()),
            ProgressMode::Bar => {
                if let Some(bar) = &self.bar {
                    bar.set_message(snapshot.line());
                }
            }
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_name_the_counts() {
        let s = Snapshot {
            phase: "load",
            t: 3,
            sent: 10,
            acked: 9,
            received: 8,
            errors: 1,
            ..Snapshot::default()
        };
        assert_eq!(s.line(), "load t=3s sent=10 acked=9 recv=8 err=1");
        let c = Snapshot {
            phase: "connect",
            t: 1,
            connected: 5,
            connecting_total: 10,
            ..Snapshot::default()
        };
        assert_eq!(c.line(), "connect t=1s connected=5/10 err=0");
    }
}
