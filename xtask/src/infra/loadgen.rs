//! Running the loadgen binary for one repeat of a workload: bounded by a
//! budget (warm-up + duration + drain + slack), sampling the broker meanwhile,
//! and stopping early when the broker dies.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use loadgen::{LoadResult, Outcome};

use crate::infra::launcher::target_address;
use crate::infra::launcher::RunningBroker;
use crate::infra::sampler::Sampler;
use crate::infra::sampler::Usage;
use crate::model::report::{cpu_us_per, RepeatReport};
use crate::model::suite::PlannedWorkload;

/// Slack on top of a workload's own timing before loadgen counts as hung:
/// more than loadgen's own 30 s deadline slack, so that it normally cuts
/// itself off and writes its partial result first.
pub(crate) const LOADGEN_SLACK: Duration = Duration::from_secs(45);
/// How long loadgen gets to notice a dead broker and write its partial result.
pub(crate) const ABORT_GRACE: Duration = Duration::from_secs(5);

/// What one bench run shares across its workloads.
pub(crate) struct RunContext<'a> {
    pub(crate) run_dir: &'a Path,
    pub(crate) loadgen: &'a Path,
    pub(crate) cores: usize,
    pub(crate) epoch: Instant,
}

/// How a loadgen process ended.
pub(crate) enum Ended {
    Exited(ExitStatus),
    /// Killed by us: over its time budget.
    Overran(Duration),
    /// Killed by us: the broker died and loadgen did not stop in time.
    KilledAfterBrokerDeath,
    SpawnFailed(String),
}

impl RunContext<'_> {
    fn secs(&self, t: Instant) -> f64 {
        t.duration_since(self.epoch).as_secs_f64()
    }

    /// Runs loadgen once; returns the repeat's report and, if the broker died
    /// meanwhile, how.
    pub(crate) fn run_repeat(
        &self,
        planned: &PlannedWorkload,
        effective_file: &Path,
        repeat: u32,
        broker: &mut RunningBroker,
        sampler: Option<&Sampler>,
    ) -> (RepeatReport, Option<String>) {
        let name = &planned.workload.name;
        let result_rel = format!("results/{name}-{repeat}.json");
        let log_rel = format!("logs/{name}-{repeat}.log");
        let result_file = self.run_dir.join(&result_rel);
        let log_file = self.run_dir.join(&log_rel);
        let budget = budget(&planned.workload);

        let started = Instant::now();
        let mut death = None;
        let spawned = target_address(broker, planned.workload.protocol)
            .map_err(anyhow::Error::msg)
            .and_then(|target| {
                self.spawn_loadgen(effective_file, &target, &result_file, &log_file)
            });
        let ended = match spawned {
            Err(e) => Ended::SpawnFailed(format!("{e:#}")),
            Ok(mut child) => wait_for_loadgen(&mut child, broker, budget, &mut death),
        };
        let finished = Instant::now();

        let (result, unreadable) = match std::fs::read_to_string(&result_file) {
            Ok(text) => match LoadResult::from_json(&text) {
                Ok(r) => (Some(r), None),
                Err(e) => (None, Some(format!("{result_rel}: {e}"))),
            },
            Err(_) => (None, None),
        };
        let failure = failure(
            &ended,
            result.as_ref(),
            unreadable,
            death.as_deref(),
            &log_file,
        );

        let (from, to) = (self.secs(started), self.secs(finished));
        let (measured_from, measured_to) =
            measured_window(from, to, &planned.workload, result.as_ref());
        let lifetime = sampler.map(|s| s.between(from, to)).unwrap_or_default();
        let window: Vec<_> = lifetime
            .iter()
            .copied()
            .filter(|s| s.t >= measured_from && s.t <= measured_to)
            .collect();
        // A window shorter than one sampling interval has no sample of its own.
        let broker_usage = Usage::of(&window).or_else(|| Usage::of(&lifetime));
        let wall = to - from;
        let loadgen_cpu_percent = result.as_ref().filter(|_| wall > 0.0).map(|r| {
            (r.loadgen.cpu_user_secs + r.loadgen.cpu_system_secs) / wall / self.cores.max(1) as f64
                * 100.0
        });
        let storm = planned.workload.scenario == loadgen::Scenario::ConnectionStorm;
        let broker_cpu_secs =
            crate::infra::sampler::cpu_secs_between(&lifetime, measured_from, measured_to);
        let broker_cpu_us_per_message = result
            .as_ref()
            .filter(|_| !storm)
            .and_then(|r| cpu_us_per(broker_cpu_secs, r.counts.delivered));
        let broker_cpu_us_per_connection = result.as_ref().filter(|_| storm).and_then(|r| {
            cpu_us_per(
                crate::infra::sampler::cpu_secs_between(&lifetime, from, to),
                r.connections.established,
            )
        });
        let report = RepeatReport {
            repeat,
            result_file: result_rel,
            log_file: log_rel,
            loadgen_exit: match &ended {
                Ended::Exited(status) => Some(crate::infra::launcher::describe_exit(*status)),
                Ended::Overran(_) | Ended::KilledAfterBrokerDeath => Some("killed by xtask".into()),
                Ended::SpawnFailed(_) => None,
            },
            failure,
            started: from,
            ended: to,
            measured_from,
            measured_to,
            broker_peak_rss_bytes: Usage::of(&lifetime).map(|u| u.peak_rss_bytes),
            broker_samples: lifetime,
            broker_usage,
            loadgen_cpu_percent,
            broker_cpu_secs,
            broker_cpu_us_per_message,
            broker_cpu_us_per_connection,
            result,
        };
        (report, death)
    }

    fn spawn_loadgen(
        &self,
        workload: &Path,
        target: &str,
        out: &Path,
        log: &Path,
    ) -> Result<Child> {
        let log = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        Command::new(self.loadgen)
            .arg("run")
            .arg("--workload")
            .arg(workload)
            .args(["--target", target])
            .arg("--out")
            .arg(out)
            .arg("--quiet")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("cannot start {}", self.loadgen.display()))
    }
}

/// Warm-up + duration + drain + late listening + connecting at the
/// workload's connect rate + slack.
pub(crate) fn budget(w: &loadgen::Workload) -> Duration {
    expected(w) + LOADGEN_SLACK
}

/// How long a repeat of `w` may take: warm-up + duration + drain + late
/// listening (only when deliveries are missing) + connecting at the
/// workload's connect rate.
pub(crate) fn expected(w: &loadgen::Workload) -> Duration {
    let clients =
        u64::from(w.publishers) + u64::from(w.subscribers) + u64::from(w.idle_connections);
    let connecting = if w.connect_rate > 0 {
        clients as f64 / w.connect_rate as f64
    } else {
        0.0
    };
    Duration::from_secs_f64(
        w.warmup_secs + w.duration_secs + w.drain_secs + w.late_secs + connecting,
    )
}

/// Polls loadgen and the broker every 100 ms until loadgen ends; kills
/// loadgen when it overruns `budget` or outlives the broker by `ABORT_GRACE`.
pub(crate) fn wait_for_loadgen(
    child: &mut Child,
    broker: &mut RunningBroker,
    budget: Duration,
    death: &mut Option<String>,
) -> Ended {
    let start = Instant::now();
    let mut died_at: Option<Instant> = None;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                if death.is_none() {
                    // Loadgen may have ended because the broker did.
                    *death = broker.exited();
                }
                return Ended::Exited(status);
            }
            Ok(None) => {}
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Ended::SpawnFailed(format!("cannot wait for loadgen: {e}"));
            }
        }
        if died_at.is_none() {
            if let Some(how) = broker.exited() {
                println!(
                    "    broker {how}; waiting up to {} s for loadgen to stop",
                    ABORT_GRACE.as_secs()
                );
                *death = Some(how);
                died_at = Some(Instant::now());
            }
        }
        if died_at.is_some_and(|t| t.elapsed() > ABORT_GRACE) {
            crate::infra::launcher::terminate(child, Duration::from_secs(1));
            let _ = child.wait();
            return Ended::KilledAfterBrokerDeath;
        }
        if start.elapsed() > budget {
            crate::infra::launcher::terminate(child, Duration::from_secs(2));
            let _ = child.wait();
            return Ended::Overran(budget);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Why a repeat failed, if it did, in one line.
pub(crate) fn failure(
    ended: &Ended,
    result: Option<&LoadResult>,
    unreadable: Option<String>,
    death: Option<&str>,
    log: &Path,
) -> Option<String> {
    if let Some(how) = death {
        return Some(format!("broker {how} during this workload"));
    }
    let last_line = || {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        text.lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| l.trim().to_string())
            .unwrap_or_else(|| "(no output)".into())
    };
    let aborted = |r: &LoadResult| {
        format!(
            "loadgen aborted: {}",
            r.error.clone().unwrap_or_else(|| "no reason given".into())
        )
    };
    match ended {
        Ended::SpawnFailed(e) => Some(e.clone()),
        Ended::Overran(budget) => Some(format!(
            "loadgen still running after {} s (connecting + warm-up + duration + drain + {} s); killed",
            budget.as_secs(),
            LOADGEN_SLACK.as_secs()
        )),
        Ended::KilledAfterBrokerDeath => Some("loadgen killed after the broker died".into()),
        Ended::Exited(status) => match (status.code(), result) {
            (_, _) if unreadable.is_some() => unreadable,
            (Some(0), Some(r)) if r.outcome == Outcome::Completed => None,
            (Some(0) | Some(3), Some(r)) if r.outcome == Outcome::Aborted => Some(aborted(r)),
            (Some(0), _) => Some("loadgen exited 0 but wrote no result".into()),
            (Some(3), _) => Some(format!("loadgen aborted without a result: {}", last_line())),
            (Some(2), _) => Some(format!("loadgen rejected its input: {}", last_line())),
            _ => Some(format!(
                "loadgen {}: {}",
                crate::infra::launcher::describe_exit(*status),
                last_line()
            )),
        },
    }
}

/// The measured window (seconds since the run started), estimated from the
/// result: after connecting and warm-up, `measured_secs` long, inside the
/// loadgen process's lifetime. Without a result: the whole lifetime.
pub(crate) fn measured_window(
    from: f64,
    to: f64,
    w: &loadgen::Workload,
    result: Option<&LoadResult>,
) -> (f64, f64) {
    let Some(r) = result else {
        return (from, to);
    };
    let start = (from + r.connections.time_to_establish_secs + w.warmup_secs).min(to);
    let end = (start + r.measured_secs).min(to);
    (start, end)
}
