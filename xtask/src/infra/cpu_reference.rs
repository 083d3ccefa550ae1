//! The machine's CPU reference: CPU microseconds (both ends together) per
//! 64-byte TCP round trip on loopback, measured by xtask itself right before
//! the broker starts and again after it stops.
//!
//! Why: broker CPU per message is mostly this kind of work (a read, a
//! wake-up, a write), and it moves with the machine far more than with what
//! else runs on it. The CI runner of stop 24 charged every workload 1.7-3.9x
//! the CPU per message this 2-vCPU VM measured, the fixed-rate 1,000 msg/s
//! latency workloads included (2.6-3.0x), so thresholds set on one machine
//! cannot gate another without knowing how dear a CPU microsecond of
//! syscalls and wake-ups is there. A profile records the reference its CPU
//! thresholds were set at (`cpu_reference_us_per_round_trip`); the gate
//! scales those thresholds by how much dearer the run's machine was
//! (`analysis::gate::cpu_scale`), and the report shows the factor.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Bursts per measurement and round trips per burst: about 0.1-0.3 s on the
/// machines seen here, twice per run.
pub const BURSTS: usize = 5;
pub const ROUND_TRIPS: u32 = 2_000;
const MESSAGE: usize = 64;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuReference {
    /// Median over every burst: CPU µs per round trip, client and echo
    /// server together.
    pub us_per_round_trip: f64,
    /// Each burst's figure, in the order measured (before the broker
    /// started, then after it stopped).
    pub bursts: Vec<f64>,
    pub round_trips_per_burst: u32,
}

impl CpuReference {
    /// The summary of `bursts`; None when there is none (the measurement
    /// failed both times).
    pub fn of(bursts: Vec<f64>, round_trips_per_burst: u32) -> Option<CpuReference> {
        let mut sorted: Vec<f64> = bursts.iter().copied().filter(|b| b.is_finite()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Some(CpuReference {
            us_per_round_trip: median,
            bursts,
            round_trips_per_burst,
        })
    }
}

/// CPU µs per round trip of one burst from the process CPU time before and
/// after it (ns).
pub fn per_round_trip(cpu_before_ns: u64, cpu_after_ns: u64, round_trips: u32) -> f64 {
    cpu_after_ns.saturating_sub(cpu_before_ns) as f64 / 1_000.0 / f64::from(round_trips.max(1))
}

/// This process's CPU time (user + system, every thread), ns.
fn process_cpu_ns() -> std::io::Result<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// `bursts` bursts of `round_trips` 64-byte round trips between two threads
/// of xtask's own over loopback TCP, both pinned to one CPU; one figure per
/// burst. Must run while xtask itself is otherwise idle (no sampler
/// thread), since the CPU clock is the whole process's. The calling
/// thread's affinity is untouched (the broker and loadgen inherit it).
pub fn measure(bursts: usize, round_trips: u32) -> std::io::Result<Vec<f64>> {
    // Both ends on one CPU: the figure is then the machine's speed at this
    // work (syscalls, a context switch), not where the scheduler put the two
    // threads. Unpinned, on an idle 2-vCPU VM, bursts swung between 4.5 µs
    // (same core) and 58 µs (a cross-core wake-up out of idle each way).
    let cpu = first_allowed_cpu();
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                pin(cpu);
                measure_here(bursts, round_trips, cpu)
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("CPU reference thread panicked")))
    })
}

/// The lowest CPU this process may run on; None when that cannot be read.
fn first_allowed_cpu() -> Option<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity
    // fills it for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        (0..libc::CPU_SETSIZE as usize).find(|&c| libc::CPU_ISSET(c, &set))
    }
}

/// Pins the calling thread (only it: the threads are the reference's own)
/// to `cpu`; unpinned when `cpu` is None or the call fails.
fn pin(cpu: Option<usize>) {
    let Some(cpu) = cpu else { return };
    // SAFETY: as above; sched_setaffinity(0) applies to the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn measure_here(bursts: usize, round_trips: u32, cpu: Option<usize>) -> std::io::Result<Vec<f64>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        pin(cpu);
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut buf = [0u8; MESSAGE];
        loop {
            match s.read_exact(&mut buf) {
                Ok(()) => s.write_all(&buf)?,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    });
    let result = (|| {
        let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        c.set_nodelay(true)?;
        c.set_read_timeout(Some(Duration::from_secs(10)))?;
        let out = [0x5au8; MESSAGE];
        let mut back = [0u8; MESSAGE];
        // One warm-up burst, not recorded: first-touch page faults and the
        // echo thread's start.
        for _ in 0..round_trips / 4 {
            c.write_all(&out)?;
            c.read_exact(&mut back)?;
        }
        let mut figures = Vec::with_capacity(bursts);
        for _ in 0..bursts {
            let before = process_cpu_ns()?;
            for _ in 0..round_trips {
                c.write_all(&out)?;
                c.read_exact(&mut back)?;
            }
            let after = process_cpu_ns()?;
            if back != out {
                return Err(std::io::Error::other("echo returned other bytes"));
            }
            figures.push(per_round_trip(before, after, round_trips));
        }
        Ok(figures)
    })();
    // The client is dropped by now (or never connected): the echo thread
    // ends on EOF, or on its accept when connect failed, which cannot
    // happen after a failed connect: unblock it with a throwaway connection.
    if result.is_err() {
        let _ = TcpStream::connect_timeout(&addr, Duration::from_millis(200));
    }
    let _ = echo.join();
    result
}

/// [`measure`] with the default sizes; a failure is printed and gives no
/// figures (the gate then does not scale).
pub fn measure_or_warn(when: &str) -> Vec<f64> {
    match measure(BURSTS, ROUND_TRIPS) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("    warning: CPU reference {when} not measured: {e}");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_round_trip_divides_the_cpu_delta() {
        assert_eq!(per_round_trip(1_000_000, 41_000_000, 2_000), 20.0);
        // A clock that went backwards is no negative cost.
        assert_eq!(per_round_trip(5, 3, 10), 0.0);
    }

    #[test]
    fn summary_is_the_median_and_ignores_nothing_finite() {
        let r = CpuReference::of(vec![30.0, 10.0, 20.0, 1000.0], 2_000).unwrap();
        assert_eq!(r.us_per_round_trip, 25.0);
        assert_eq!(r.bursts.len(), 4);
        let r = CpuReference::of(vec![30.0, f64::NAN, 10.0], 1).unwrap();
        assert_eq!(r.us_per_round_trip, 20.0);
        assert!(CpuReference::of(vec![], 1).is_none());
    }

    #[test]
    fn a_real_measurement_costs_cpu_per_round_trip() {
        let figures = measure(2, 200).unwrap();
        assert_eq!(figures.len(), 2);
        // Two syscalls each way and two wake-ups cost well over 0.1 µs and
        // far under 10 ms per round trip on any machine this runs on.
        for f in figures {
            assert!(f > 0.1 && f < 10_000.0, "{f} µs per round trip");
        }
    }
}
