//! Broker resource sampling from `/proc/<pid>`: resident memory (`VmRSS` of
//! `status`) and CPU time (`utime + stime` of `stat`) every 250 ms, turned
//! into a time series with CPU % of one core and of the whole machine.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub const INTERVAL: Duration = Duration::from_millis(250);

/// One sample; CPU % covers the interval since the previous sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the bench run started.
    pub t: f64,
    pub rss_bytes: u64,
    /// CPU time over wall time in the interval; 100 = one core busy.
    pub cpu_core_percent: f64,
    /// The same over the cores the run may use (affinity, cgroup quota);
    /// 100 = all of them busy.
    pub cpu_machine_percent: f64,
    /// CPU seconds the process used in the interval ending at `t`, and the
    /// interval's length (0 in reports written before they were recorded:
    /// [`Sample::cpu_and_interval`] then derives them from the percentage).
    #[serde(default)]
    pub cpu_secs: f64,
    #[serde(default)]
    pub interval_secs: f64,
}

impl Sample {
    /// (CPU seconds, interval seconds) of this sample.
    pub fn cpu_and_interval(&self) -> (f64, f64) {
        if self.interval_secs > 0.0 {
            (self.cpu_secs, self.interval_secs)
        } else {
            let interval = INTERVAL.as_secs_f64();
            (self.cpu_core_percent / 100.0 * interval, interval)
        }
    }
}

/// CPU seconds the sampled process used in `[from, to]` (seconds since the
/// epoch). Each sample covers the interval ending at its `t`; a sample that
/// straddles an end counts for the part inside, its CPU spread evenly over
/// its interval. None when no sample covers any of the window.
pub fn cpu_secs_between(samples: &[Sample], from: f64, to: f64) -> Option<f64> {
    let mut cpu = 0.0;
    let mut covered = 0.0;
    for s in samples {
        let (secs, interval) = s.cpu_and_interval();
        let overlap = s.t.min(to) - (s.t - interval).max(from);
        if overlap > 0.0 && interval > 0.0 {
            cpu += secs * overlap / interval;
            covered += overlap;
        }
    }
    // Scaled to the whole window when the samples leave gaps (the first
    // interval of a run, a missed reading).
    (covered > 0.0).then(|| cpu * (to - from) / covered)
}

/// What a stretch of samples says about the broker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub samples: usize,
    pub peak_rss_bytes: u64,
    /// Average over the samples (equal intervals, so time-weighted).
    pub avg_cpu_machine_percent: f64,
    pub peak_cpu_machine_percent: f64,
    pub avg_cpu_core_percent: f64,
    pub peak_cpu_core_percent: f64,
}

impl Usage {
    /// None when there is no sample to summarise.
    pub fn of(samples: &[Sample]) -> Option<Usage> {
        if samples.is_empty() {
            return None;
        }
        let n = samples.len() as f64;
        let max = |f: fn(&Sample) -> f64| samples.iter().map(f).fold(0.0, f64::max);
        Some(Usage {
            samples: samples.len(),
            peak_rss_bytes: samples.iter().map(|s| s.rss_bytes).max().unwrap_or(0),
            avg_cpu_machine_percent: samples.iter().map(|s| s.cpu_machine_percent).sum::<f64>() / n,
            peak_cpu_machine_percent: max(|s| s.cpu_machine_percent),
            avg_cpu_core_percent: samples.iter().map(|s| s.cpu_core_percent).sum::<f64>() / n,
            peak_cpu_core_percent: max(|s| s.cpu_core_percent),
        })
    }
}

/// A background thread sampling one process until stopped.
pub struct Sampler {
    stop: mpsc::Sender<()>,
    thread: Option<JoinHandle<()>>,
    samples: Arc<Mutex<Vec<Sample>>>,
}

impl Sampler {
    /// Starts sampling `pid`; `epoch` is time 0 of the samples.
    pub fn start(pid: u32, cores: usize, epoch: Instant) -> Sampler {
        let (stop, stopped) = mpsc::channel::<()>();
        let samples = Arc::new(Mutex::new(Vec::new()));
        let out = Arc::clone(&samples);
        let ticks_per_sec = clock_ticks_per_sec();
        let cores = cores.max(1) as f64;
        let thread = std::thread::spawn(move || {
            let mut previous = read_proc(pid).map(|r| (Instant::now(), r.cpu_ticks));
            loop {
                match stopped.recv_timeout(INTERVAL) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
                // A vanished process just stops producing samples; the bench
                // loop notices the exit through the process handle.
                let Some(reading) = read_proc(pid) else {
                    continue;
                };
                let now = Instant::now();
                if let Some((then, ticks)) = previous {
                    let wall = now.duration_since(then).as_secs_f64();
                    let cpu = reading.cpu_ticks.saturating_sub(ticks) as f64 / ticks_per_sec;
                    let core = if wall > 0.0 { cpu / wall * 100.0 } else { 0.0 };
                    out.lock().expect("sampler lock").push(Sample {
                        t: now.duration_since(epoch).as_secs_f64(),
                        rss_bytes: reading.rss_bytes,
                        cpu_core_percent: core,
                        cpu_machine_percent: core / cores,
                        cpu_secs: cpu,
                        interval_secs: wall,
                    });
                }
                previous = Some((now, reading.cpu_ticks));
            }
        });
        Sampler {
            stop,
            thread: Some(thread),
            samples,
        }
    }

    /// Samples taken in `[from, to]` (seconds since the epoch).
    pub fn between(&self, from: f64, to: f64) -> Vec<Sample> {
        self.samples
            .lock()
            .expect("sampler lock")
            .iter()
            .filter(|s| s.t >= from && s.t <= to)
            .copied()
            .collect()
    }

    /// Stops the thread and returns every sample.
    pub fn finish(mut self) -> Vec<Sample> {
        self.halt();
        std::mem::take(&mut *self.samples.lock().expect("sampler lock"))
    }

    fn halt(&mut self) {
        let _ = self.stop.send(());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.halt();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Reading {
    rss_bytes: u64,
    cpu_ticks: u64,
}

fn read_proc(pid: u32) -> Option<Reading> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(Reading {
        // A zombie has no VmRSS line: it holds no memory any more.
        rss_bytes: parse_status_rss(&status).unwrap_or(0),
        cpu_ticks: parse_stat_cpu_ticks(&stat)?,
    })
}

/// `VmRSS` of `/proc/<pid>/status`, in bytes.
pub fn parse_status_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `utime + stime` of `/proc/<pid>/stat`, in clock ticks. The command name
/// (field 2) may hold spaces and parentheses, so fields count from the last `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_status_and_stat_parse() {
        let status = "Name:\tbroker\nVmPeak:\t  200 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_status_rss(status), Some(12345 * 1024));
        assert_eq!(parse_status_rss("Name:\tzombie\nState:\tZ\n"), None);
        let stat =
            "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 1000 0";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(325));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn usage_summarises_samples() {
        let s = |t, rss, core| Sample {
            t,
            rss_bytes: rss,
            cpu_core_percent: core,
            cpu_machine_percent: core / 2.0,
            cpu_secs: 0.0,
            interval_secs: 0.0,
        };
        let usage = Usage::of(&[s(0.25, 10, 100.0), s(0.5, 30, 50.0), s(0.75, 20, 0.0)]).unwrap();
        assert_eq!(usage.samples, 3);
        assert_eq!(usage.peak_rss_bytes, 30);
        assert_eq!(usage.avg_cpu_core_percent, 50.0);
        assert_eq!(usage.avg_cpu_machine_percent, 25.0);
        assert_eq!(usage.peak_cpu_machine_percent, 50.0);
        assert!(Usage::of(&[]).is_none());
    }

    fn sample(t: f64, cpu_secs: f64, interval_secs: f64) -> Sample {
        Sample {
            t,
            rss_bytes: 1,
            cpu_core_percent: cpu_secs / interval_secs * 100.0,
            cpu_machine_percent: cpu_secs / interval_secs * 50.0,
            cpu_secs,
            interval_secs,
        }
    }

    #[test]
    fn cpu_in_a_window_counts_straddling_samples_in_part() {
        // 0.1 CPU-s in each 0.25 s interval ending at 0.25, 0.5, ... 2.0.
        let samples: Vec<Sample> = (1..=8)
            .map(|i| sample(i as f64 * 0.25, 0.1, 0.25))
            .collect();
        let near = |a: f64, b: f64| (a - b).abs() < 1e-9;
        // Whole intervals.
        assert!(near(cpu_secs_between(&samples, 0.5, 1.5).unwrap(), 0.4));
        // Half of the intervals at each end: 0.05 + 0.3 + 0.05.
        assert!(near(cpu_secs_between(&samples, 0.375, 1.375).unwrap(), 0.4));
        // A window inside one interval: its share.
        assert!(near(cpu_secs_between(&samples, 0.3, 0.4).unwrap(), 0.04));
        // Beyond the last sample: scaled from what is covered.
        assert!(near(cpu_secs_between(&samples, 1.5, 2.5).unwrap(), 0.4));
        assert!(cpu_secs_between(&samples, 3.0, 4.0).is_none());
        assert!(cpu_secs_between(&[], 0.0, 1.0).is_none());
        // A sample from an older report (no seconds recorded): from its percentage.
        let old = Sample {
            cpu_secs: 0.0,
            interval_secs: 0.0,
            ..sample(0.25, 0.1, 0.25)
        };
        assert!(near(cpu_secs_between(&[old], 0.0, 0.25).unwrap(), 0.1));
    }

    #[test]
    fn samples_this_process() {
        let epoch = Instant::now();
        let sampler = Sampler::start(std::process::id(), 1, epoch);
        // Busy for a while so there is CPU time to see.
        let until = Instant::now() + Duration::from_millis(600);
        let mut x = 0u64;
        while Instant::now() < until {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let samples = sampler.finish();
        assert!(!samples.is_empty());
        assert!(samples.iter().all(|s| s.rss_bytes > 0));
        // On a loaded machine the busy thread may get little of a core, but
        // it gets some, and each sample's seconds and percentage agree.
        let cpu: f64 = samples.iter().map(|s| s.cpu_secs).sum();
        assert!(cpu > 0.0, "{samples:?}");
        for s in &samples {
            assert!(s.interval_secs > 0.2, "{s:?}");
            let pct = s.cpu_secs / s.interval_secs * 100.0;
            assert!((pct - s.cpu_core_percent).abs() < 1e-6, "{s:?}");
        }
    }
}
