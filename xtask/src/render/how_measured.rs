//! The "How measured" text of a report, written from what actually ran:
//! where the broker and the load were, which workloads were paced (open
//! loop, latency from the intended send time) and which were not, what the
//! CPU and memory figures cover, and how loss was judged. Shared by the
//! Markdown and HTML reports.

use loadgen::{Scenario, Workload};

use crate::model::broker::BrokerKind;
use crate::model::report::Report;
use crate::model::units::thousands;

/// Paragraphs of plain text (no markup), in order.
pub fn paragraphs(report: &Report) -> Vec<String> {
    let env = &report.environment;
    let ran: Vec<&Workload> = report
        .workloads
        .iter()
        .filter(|w| !w.status.is_skipped())
        .map(|w| &w.workload)
        .collect();
    let mut out = Vec::new();

    // Where the broker and the load ran.
    let sampled = report.broker_usage.is_some_and(|u| u.samples > 0);
    let broker = match report.broker.kind {
        BrokerKind::Built if env.emulated => format!(
            "The broker is this workspace's release build for {}, run under {} on this host (an emulator: its speed, RSS and CPU are the emulator's, not the target's)",
            env.target_triple, env.runner
        ),
        BrokerKind::Built => format!(
            "The broker is this workspace's release build, run {} on this host",
            env.runner
        ),
        BrokerKind::Mosquitto => "The broker is the system mosquitto, started on this host with a generated config".into(),
        BrokerKind::External if sampled => "The broker is an external one (started by someone else); its process was sampled through the pid given".into(),
        BrokerKind::External => "The broker is an external one (started by someone else) and was not sampled: its memory and CPU are not in this report".into(),
        BrokerKind::None => "No broker ran".into(),
    };
    out.push(format!(
        "{broker}. Load comes from `loadgen` on the same host, so broker and load generator share the {} cores this run could use; loadgen's own CPU is reported next to the broker's.",
        env.usable()
    ));

    // Paced and unpaced workloads: what latency means for each.
    let names = |keep: &dyn Fn(&Workload) -> bool| -> Vec<String> {
        ran.iter()
            .filter(|w| keep(w))
            .map(|w| format!("`{}`", w.name))
            .collect()
    };
    let messaging = |w: &Workload| w.scenario != Scenario::ConnectionStorm;
    let paced = names(&|w| messaging(w) && w.total_rate() > 0);
    let unpaced = names(&|w| messaging(w) && w.total_rate() == 0);
    let storms = names(&|w| w.scenario == Scenario::ConnectionStorm);
    if !paced.is_empty() {
        out.push(format!(
            "Paced, open loop ({}): every message has an intended send time from the target rate, and end-to-end latency is receive time minus that intended time, so a stalled publisher or broker shows up as latency (coordinated omission corrected); how far publishers fell behind their schedule is reported as publish delay.",
            paced.join(", ")
        ));
    }
    if !unpaced.is_empty() {
        out.push(format!(
            "Unpaced ({}): publishers send as fast as the client library takes messages, so the intended send time is the actual one; latency there includes the time messages queue in the broker and the clients, and describes a saturated system, not service latency.",
            unpaced.join(", ")
        ));
    }
    if !storms.is_empty() {
        out.push(format!(
            "Connection storms ({}): connections attempted and established and the time to establish them; no messages.",
            storms.join(", ")
        ));
    }

    // Counting.
    if ran.iter().any(|w| messaging(w)) {
        let late = ran
            .iter()
            .filter(|w| messaging(w))
            .map(|w| w.late_secs)
            .fold(f64::NAN, f64::max);
        out.push(format!(
            "Delivered msg/s counts deliveries received inside the measured window (warm-up and drain excluded), whenever they were sent; offered, sent and acknowledged rates are reported apart. A measured message that arrives after the drain but within {late} s more is late (counted, and in the latency); one that never arrives is lost. Loss is judged by each workload's delivery guarantee: none allowed for at-least-once (MQTT QoS ≥ 1, Kafka acks ≥ 1, AMQP confirms or persistent), a bounded fraction for at-most-once. Latencies are recorded in HDR histograms (merged by adding, never by averaging percentiles)."
        ));
    }

    // Resources.
    if sampled {
        out.push(
            "The broker's memory (VmRSS of /proc/<pid>/status) and CPU time (utime + stime of /proc/<pid>/stat) are sampled every 250 ms. \
Broker CPU per msg is the CPU time in the measured window (samples straddling its ends counted in part) over the messages delivered in it, per established connection for a storm over the whole storm: the figure to compare and gate, since it moves little with what else runs on the machine. \
CPU % is the same time over wall time and the cores this run could use. Peak RSS covers the whole time a workload's load ran."
                .to_string(),
        );
    }
    let repeats = report.repeat;
    if repeats > 1 {
        out.push(format!(
            "Each workload ran {} times; the summary shows medians and the sections min, median and max.",
            thousands(u64::from(repeats))
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::report::test_support::{quick_run, workload, workload_report};
    use crate::model::report::Status;

    #[test]
    fn the_text_follows_what_ran() {
        let mut r = quick_run(25_000.0, 3_000);
        // quick_run: a fan-in, a latency workload (paced here), a storm.
        r.workloads[1].workload.rate = 1_000;
        let text = paragraphs(&r).join("\n");
        assert!(text.contains("Paced, open loop (`lat`)"), "{text}");
        assert!(text.contains("Unpaced (`fanin`)"), "{text}");
        assert!(text.contains("Connection storms (`storm`)"), "{text}");
        assert!(text.contains("release build, run native"), "{text}");
        assert!(text.contains("Broker CPU per msg"), "{text}");

        // An external broker without samples: no claim about its memory or CPU.
        let mut ext = quick_run(25_000.0, 3_000);
        ext.broker.kind = BrokerKind::External;
        ext.broker_usage = None;
        let text = paragraphs(&ext).join("\n");
        assert!(text.contains("was not sampled"), "{text}");
        assert!(!text.contains("VmRSS"), "{text}");
        assert!(!text.contains("release build"), "{text}");

        // Only unpaced workloads: nothing claims open loop.
        let fanin = workload("fanin", "fan_in");
        let mut only = quick_run(25_000.0, 3_000);
        only.workloads = vec![workload_report(fanin, Vec::new(), Status::Ok)];
        let text = paragraphs(&only).join("\n");
        assert!(!text.contains("open loop"), "{text}");
        assert!(!text.contains("coordinated omission corrected"), "{text}");
    }
}
