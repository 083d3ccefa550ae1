//! Every `cargo xtask` flag (clap definitions) and their translation into
//! each command's options; `main.rs` parses these and dispatches.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::commands::{bench, build_all, docker, micro};
use crate::infra::targets;

#[derive(Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "Build, test and benchmark the broker workspace"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// What CI runs: install missing tools, rustfmt check, workload files,
    /// lint of CI workflows and Dockerfiles, clippy, compile the criterion
    /// benches, release build of the broker, workspace tests (interop tests
    /// required), every fuzz target for ~20 s, cross-build + smoke,
    /// fast-path tests under qemu-aarch64,
    /// quick bench suite gated by the `ci` profile
    Ci {
        /// Install nothing; report missing tools and carry on
        #[arg(long)]
        no_install: bool,
    },
    /// Build broker and loadgen (release), run a workload suite against the
    /// broker, write reports/runs/<id>/report.{json,md}, and gate the result
    Bench(BenchArgs),
    /// Build the criterion micro-benchmarks (bench/benches/) for a target, run
    /// them natively or through its runner (qemu-user), and write their means,
    /// 95% CIs and throughput into reports/runs/<id>/report.{json,md,html}
    Micro(MicroArgs),
    /// Judge a bench report against a threshold profile, or with --baseline
    /// against a baseline; exit 1 if a threshold fails or a metric regressed
    Gate {
        /// A run directory (e.g. reports/latest) or its report.json
        report: PathBuf,
        /// Threshold profile in targets/profiles/ [default: the one the run
        /// used; with --baseline: none unless given]
        #[arg(long, value_name = "NAME")]
        profile: Option<String>,
        /// Compare with this baseline (reports/baselines/<triple>.json) and
        /// fail on regressions beyond the noise and --max-regression
        #[arg(long, value_name = "FILE")]
        baseline: Option<PathBuf>,
        /// Largest regression tolerated beyond the noise, per metric
        #[arg(long, value_name = "PCT", default_value = "10%", value_parser = parse_percent, requires = "baseline")]
        max_regression: f64,
        /// Gate against a baseline taken on another CPU model or core count
        #[arg(long, requires = "baseline")]
        force_machine: bool,
        /// REPORT is an A/B run (`bench --ab`): fail on its regressions
        #[arg(long, conflicts_with_all = ["baseline", "profile"])]
        ab: bool,
    },
    /// Re-render report.md and report.html of a run from its report.json
    Report {
        /// A run directory or its report.json
        report: PathBuf,
    },
    /// Compare two runs (or baselines) per workload and metric: A, B, B/A and
    /// a verdict from the repeat spread; writes compare.md and compare.html
    Compare {
        /// Run directory, report.json or baseline file
        a: PathBuf,
        /// Run directory, report.json or baseline file
        b: PathBuf,
        /// Directory for compare.{md,html} [default: reports/runs/compare-<A>-vs-<B>/]
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Write a run's summary numbers (no histograms) as a baseline file
    Baseline {
        /// A run directory or its report.json
        report: PathBuf,
        /// Baseline file [default: reports/baselines/<target triple>.json]
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Add up loadgen result files of one workload (scale-out workers):
    /// counts and HDR histograms summed, percentiles from the sum
    Merge {
        /// loadgen result JSON files
        #[arg(required = true, value_name = "RESULTS")]
        results: Vec<PathBuf>,
        /// Merged result file
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Lint the CI workflows in ci/ (actionlint + shellcheck), the
    /// Dockerfiles in docker/ (hadolint) and the shell scripts; the `ci` step
    /// of the same name
    Lint {
        /// Install nothing; report missing linters and carry on
        #[arg(long)]
        no_install: bool,
    },
    /// Coverage-guided fuzzing of the broker's decoders and recovery paths
    /// (fuzz/, cargo-fuzz, nightly): write the seed corpora, build every
    /// target once, run each for --time seconds; exit 1 on a crash, naming
    /// the reproducer (docs/fuzz.md)
    Fuzz {
        /// Run only this target (repeatable); see --list
        #[arg(long = "target", value_name = "NAME")]
        targets: Vec<String>,
        /// Seconds per target
        #[arg(long = "time", value_name = "SECS", default_value_t = 60)]
        seconds: u64,
        /// List the targets and exit
        #[arg(long)]
        list: bool,
        /// Extra libFuzzer flags, after `--` (e.g. -- -jobs=2 -max_len=65536)
        #[arg(last = true, value_name = "LIBFUZZER_FLAGS")]
        extra: Vec<String>,
    },
    /// Build the multi-arch broker image (docker/Dockerfile) with docker
    /// buildx; needs buildx and a running container engine
    Docker {
        /// Comma-separated Docker platforms; each maps to a triple in targets/
        #[arg(long, value_delimiter = ',', value_name = "PLATFORMS", default_value = docker::DEFAULT_PLATFORMS)]
        platforms: Vec<String>,
        /// Push to the registry named in --tag (otherwise: --load for one
        /// platform, an OCI archive in target/docker/ for several)
        #[arg(long)]
        push: bool,
        /// Image name and tag
        #[arg(long, value_name = "IMAGE", default_value = "broker:dev")]
        tag: String,
    },
    /// Build the broker for every target triple in targets/ (in parallel);
    /// artifacts and manifest.{json,md} in target/dist/
    BuildAll(BuildAllArgs),
    /// Install what the targets need: rust-std, cross linkers, qemu-user,
    /// wine, zig and cargo-zigbuild (apt only as root; idempotent)
    Setup {
        /// Comma-separated triples from targets/, or `all`
        #[arg(long, value_delimiter = ',', value_name = "TRIPLES")]
        targets: Vec<String>,
        /// Print the install commands instead of running them
        #[arg(long)]
        no_install: bool,
    },
    /// Per target: std installed, linker found, runner found, backend that would be used
    Doctor {
        /// Comma-separated triples from targets/, or `all`
        #[arg(long, value_delimiter = ',', value_name = "TRIPLES")]
        targets: Vec<String>,
    },
}

#[derive(clap::Args, Debug)]
pub(crate) struct BuildAllArgs {
    /// Comma-separated triples from targets/, or `all`. Targets named here
    /// that cannot be built fail the command; with `all`, they are reported
    /// as unavailable
    #[arg(long, value_delimiter = ',', value_name = "TRIPLES")]
    targets: Vec<String>,
    /// Build backend; auto: each target's first usable one (cross only
    /// when a container engine answers)
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    backend: BackendArg,
    /// Cargo profile for every target [default: each target file's own]
    #[arg(long, value_name = "NAME")]
    profile: Option<String>,
    /// Targets built at the same time [default: the number of cores]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    jobs: Option<u32>,
    /// Start each runnable artifact through its runner and do an MQTT round trip
    #[arg(long)]
    smoke: bool,
    /// Directory for artifacts and the manifest [default: target/dist]
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum BackendArg {
    Auto,
    Cross,
    Cargo,
    Zigbuild,
}

impl BackendArg {
    fn backend(self) -> Option<targets::Backend> {
        match self {
            BackendArg::Auto => None,
            BackendArg::Cross => Some(targets::Backend::Cross),
            BackendArg::Cargo => Some(targets::Backend::Cargo),
            BackendArg::Zigbuild => Some(targets::Backend::Zigbuild),
        }
    }
}

impl BuildAllArgs {
    pub(crate) fn options(self) -> build_all::Options {
        build_all::Options {
            targets: self.targets,
            backend: self.backend.backend(),
            profile: self.profile,
            jobs: self.jobs.map(|j| j as usize).unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            }),
            smoke: self.smoke,
            out: self.out,
        }
    }
}

#[derive(clap::Args, Debug)]
pub(crate) struct BenchArgs {
    /// Suite from bench/suites.toml: quick, default or full
    #[arg(long, default_value = "default", value_name = "NAME")]
    suite: String,
    /// Run this workload file instead of the suite (repeatable)
    #[arg(long, value_name = "FILE")]
    workload: Vec<PathBuf>,
    /// Override every workload's measured duration
    #[arg(long, value_name = "SECS", value_parser = positive_secs)]
    duration: Option<f64>,
    /// Run each workload N times; the report gives min/median/max. With
    /// --ab: N pairs per workload [default: 1; with --ab 5]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    repeat: Option<u32>,
    /// Interleaved A/B run: build the broker at git revision REV (base) and
    /// the working tree's (candidate), run each workload as pairs A B, B A,
    /// … and fail on a regression beyond the noise and the profile's
    /// max_regression_percent; writes ab.{json,md,html}
    #[arg(long, value_name = "REV", conflicts_with_all = ["target", "ab_binary"])]
    ab: Option<String>,
    /// The A/B base as a broker binary instead of a revision
    #[arg(long, value_name = "PATH", conflicts_with = "target")]
    ab_binary: Option<PathBuf>,
    /// Broker under test
    #[arg(long, value_enum, default_value_t = BrokerArg::Built)]
    broker: BrokerArg,
    /// MQTT address of the external broker (with --broker external); without
    /// it MQTT workloads are not run (the gate lists MQTT as not measured)
    #[arg(long, value_name = "HOST:PORT")]
    mqtt: Option<String>,
    /// Kafka address of the external broker (with --broker external); without
    /// it Kafka workloads are not run (the gate lists Kafka as not measured)
    #[arg(long, value_name = "HOST:PORT")]
    kafka: Option<String>,
    /// AMQP address of the external broker (with --broker external); without
    /// it AMQP workloads are not run (the gate lists AMQP as not measured)
    #[arg(long, value_name = "HOST:PORT")]
    amqp: Option<String>,
    /// Pid of the external broker, to sample its memory and CPU
    #[arg(long, value_name = "PID")]
    broker_pid: Option<u32>,
    /// Cross-build the broker for this triple (targets/<triple>.toml) and run
    /// it through the target's runner (qemu-user, wine); the load generator
    /// stays native. Emulated runs are labelled and their speed is not gated
    #[arg(long, value_name = "TRIPLE", conflicts_with_all = ["mqtt", "kafka", "amqp", "broker_pid"])]
    target: Option<String>,
    /// Threshold profile in targets/profiles/ [default: the platform class of
    /// --target, else the host's: high_perf on x86_64/aarch64, embedded on
    /// 32-bit ARM/RISC-V]
    #[arg(long, value_name = "NAME")]
    profile: Option<String>,
    /// Report gate verdicts without failing the command on them
    #[arg(long)]
    no_gate_exit: bool,
    /// Run directory [default: reports/runs/<UTC timestamp>-<host triple>/, linked as reports/latest]
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// After each `rate = "max"` workload's search, run it at these fractions
    /// of the found rate (search step length each) and chart latency against
    /// offered rate [default: 0.1,0.25,0.5,0.75,0.9,1.0]
    #[arg(long, value_name = "FRACTIONS", num_args = 0..=1, default_missing_value = crate::flags_sweep::DEFAULT_SWEEP, require_equals = false, value_parser = crate::flags_sweep::parse_fractions)]
    sweep: Option<crate::flags_sweep::Fractions>,
    /// Take this as the maximum rate (msg/s) instead of searching
    #[arg(long, value_name = "RATE", value_parser = clap::value_parser!(u64).range(1..))]
    sweep_max: Option<u64>,
}

#[derive(clap::Args, Debug)]
pub(crate) struct MicroArgs {
    /// Build for this triple (targets/<triple>.toml, cargo backend with its
    /// linker) and run through its runner; numbers taken under emulation are
    /// labelled [default: the host, natively]
    #[arg(long, value_name = "TRIPLE")]
    target: Option<String>,
    /// Only this bench executable (a file in bench/benches/; repeatable)
    #[arg(long = "bench", value_name = "NAME")]
    benches: Vec<String>,
    /// Criterion's filter: a regex over benchmark ids (e.g. `mqtt_decode/`)
    #[arg(long, value_name = "REGEX")]
    filter: Option<String>,
    /// Short runs: 0.3 s warm-up, 1 s measurement per benchmark (smoke runs,
    /// QEMU); explicit times below win
    #[arg(long)]
    quick: bool,
    /// Criterion warm-up per benchmark [default: 3, criterion's]
    #[arg(long, value_name = "SECS", value_parser = positive_secs)]
    warm_up_time: Option<f64>,
    /// Criterion measurement time per benchmark [default: 5, criterion's]
    #[arg(long, value_name = "SECS", value_parser = positive_secs)]
    measurement_time: Option<f64>,
    /// Compare with criterion baseline NAME saved earlier for the same target
    /// with --save-baseline NAME; the report gets a change column
    #[arg(long, value_name = "NAME", conflicts_with = "save_baseline")]
    baseline: Option<String>,
    /// Save this run as criterion baseline NAME (per target)
    #[arg(long, value_name = "NAME")]
    save_baseline: Option<String>,
    /// Run directory [default: reports/runs/<UTC timestamp>-<triple>/, linked as reports/latest]
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

impl MicroArgs {
    pub(crate) fn options(self) -> micro::Options {
        micro::Options {
            target: self.target,
            benches: self.benches,
            filter: self.filter,
            quick: self.quick,
            warm_up_secs: self.warm_up_time,
            measurement_secs: self.measurement_time,
            baseline: self.baseline,
            save_baseline: self.save_baseline,
            out: self.out,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum BrokerArg {
    /// This workspace's broker, built in release mode and started on a free port
    Built,
    /// A running broker at --mqtt (sampled if --broker-pid is given)
    External,
    /// The system mosquitto (Debian package `mosquitto`) with a generated config
    Mosquitto,
}

pub(crate) fn positive_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("`{s}` is not a positive number of seconds")),
    }
}

impl BenchArgs {
    pub(crate) fn options(self) -> anyhow::Result<bench::Options> {
        let external_flags = [
            ("--mqtt", self.mqtt.is_some()),
            ("--kafka", self.kafka.is_some()),
            ("--amqp", self.amqp.is_some()),
            ("--broker-pid", self.broker_pid.is_some()),
        ];
        let broker = match self.broker {
            BrokerArg::External => {
                if self.mqtt.is_none() && self.kafka.is_none() && self.amqp.is_none() {
                    anyhow::bail!(
                        "--broker external needs the address of at least one protocol: --mqtt, --kafka or --amqp HOST:PORT"
                    );
                }
                bench::BrokerChoice::External {
                    mqtt: self.mqtt,
                    kafka: self.kafka,
                    amqp: self.amqp,
                    pid: self.broker_pid,
                }
            }
            other => {
                if let Some((flag, _)) = external_flags.iter().find(|(_, set)| *set) {
                    anyhow::bail!(
                        "{flag} is for --broker external; the other brokers are started by bench"
                    );
                }
                match other {
                    BrokerArg::Mosquitto => bench::BrokerChoice::Mosquitto,
                    _ => bench::BrokerChoice::Built,
                }
            }
        };
        if self.target.is_some() && broker != bench::BrokerChoice::Built {
            anyhow::bail!("--target builds and runs our broker; it cannot go with --broker external or mosquitto");
        }
        let ab = match (self.ab, self.ab_binary) {
            (Some(rev), _) => Some(bench::AbBase::Rev(rev)),
            (None, Some(path)) => Some(bench::AbBase::Binary(path)),
            (None, None) => None,
        };
        if ab.is_some() && broker != bench::BrokerChoice::Built {
            anyhow::bail!(
                "--ab and --ab-binary compare two builds of this workspace's broker; drop --broker"
            );
        }
        Ok(bench::Options {
            target: self.target,
            suite: self.suite,
            workloads: self.workload,
            duration: self.duration,
            repeat: self.repeat.unwrap_or(if ab.is_some() { 5 } else { 1 }),
            broker,
            profile: self.profile,
            gate_exit: !self.no_gate_exit,
            out: self.out,
            ab,
            sweep: self.sweep.map(|f| f.0),
            sweep_max: self.sweep_max,
        })
    }
}

/// Parses `10%`, `10 %` or `10` as 0.10.
pub fn parse_percent(s: &str) -> Result<f64, String> {
    let t = s.trim().trim_end_matches('%').trim();
    match t.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v / 100.0),
        _ => Err(format!("`{s}` is not a percentage (e.g. 10%)")),
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use clap::CommandFactory;

    use super::*;
    use std::path::Path;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn ci_flags_parse() {
        let cli = Cli::try_parse_from(["xtask", "ci", "--no-install"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Ci { no_install: true })
        ));
        let cli = Cli::try_parse_from(["xtask"]).unwrap();
        assert!(cli.command.is_none());
        assert!(Cli::try_parse_from(["xtask", "ci", "--bogus"]).is_err());
    }

    /// `cargo xtask bench <args>` as the options bench would get, or the error.
    fn parse_bench(args: &[&str]) -> Result<bench::Options, String> {
        let mut argv = vec!["xtask", "bench"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).map(|c| c.command) {
            Ok(Some(Command::Bench(b))) => b.options().map_err(|e| e.to_string()),
            Ok(_) => unreachable!("bench parses as bench"),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn bench_flags_parse() {
        let parse = parse_bench;
        let o = parse(&[]).unwrap();
        assert_eq!(o.suite, "default");
        assert_eq!(o.repeat, 1);
        assert_eq!(o.broker, bench::BrokerChoice::Built);
        assert!(o.gate_exit && o.profile.is_none() && o.out.is_none());

        let o = parse(&[
            "--suite",
            "quick",
            "--profile",
            "ci",
            "--out",
            "/tmp/x",
            "--repeat",
            "3",
            "--duration",
            "1.5",
            "--no-gate-exit",
            "--workload",
            "a.toml",
            "--workload",
            "b.toml",
        ])
        .unwrap();
        assert_eq!(
            (o.suite.as_str(), o.repeat, o.duration),
            ("quick", 3, Some(1.5))
        );
        assert_eq!(
            o.workloads,
            [PathBuf::from("a.toml"), PathBuf::from("b.toml")]
        );
        assert!(!o.gate_exit);

        let o = parse(&[
            "--broker",
            "external",
            "--mqtt",
            "10.0.0.2:1883",
            "--broker-pid",
            "42",
        ])
        .unwrap();
        assert_eq!(
            o.broker,
            bench::BrokerChoice::External {
                mqtt: Some("10.0.0.2:1883".into()),
                kafka: None,
                amqp: None,
                pid: Some(42)
            }
        );
        let o = parse(&[
            "--broker",
            "external",
            "--mqtt",
            "10.0.0.2:1883",
            "--kafka",
            "10.0.0.2:9092",
            "--amqp",
            "10.0.0.2:5672",
        ])
        .unwrap();
        assert_eq!(
            o.broker,
            bench::BrokerChoice::External {
                mqtt: Some("10.0.0.2:1883".into()),
                kafka: Some("10.0.0.2:9092".into()),
                amqp: Some("10.0.0.2:5672".into()),
                pid: None
            }
        );
        assert!(
            parse(&["--amqp", "x:1"]).is_err(),
            "--amqp needs --broker external"
        );
        assert!(
            parse(&["--kafka", "x:1"]).is_err(),
            "--kafka needs --broker external"
        );
        assert_eq!(
            parse(&["--broker", "mosquitto"]).unwrap().broker,
            bench::BrokerChoice::Mosquitto
        );
        assert!(parse(&["--broker", "external"])
            .unwrap_err()
            .contains("--mqtt, --kafka or --amqp"));
        // RabbitMQ without its MQTT plugin: AMQP only, no --mqtt needed.
        assert_eq!(
            parse(&["--broker", "external", "--amqp", "127.0.0.1:15672"])
                .unwrap()
                .broker,
            bench::BrokerChoice::External {
                mqtt: None,
                kafka: None,
                amqp: Some("127.0.0.1:15672".into()),
                pid: None
            }
        );
        assert!(parse(&["--broker", "mosquitto", "--kafka", "x:1"]).is_err());
        assert!(parse(&["--broker-pid", "7"]).is_err());
        assert!(parse(&["--mqtt", "x:1"]).is_err());
        assert!(parse(&["--repeat", "0"]).is_err());
        assert!(parse(&["--duration", "0"])
            .unwrap_err()
            .contains("positive"));
        assert!(parse(&["--broker", "kafka"]).is_err());
    }

    #[test]
    fn sweep_flags_parse() {
        let o = parse_bench(&["--suite", "max"]).unwrap();
        assert_eq!((o.sweep, o.sweep_max), (None, None));
        let o = parse_bench(&["--sweep", "--suite", "max"]).unwrap();
        assert_eq!(o.sweep.unwrap(), [0.1, 0.25, 0.5, 0.75, 0.9, 1.0]);
        let o = parse_bench(&["--sweep", "0.5,1", "--sweep-max", "60000"]).unwrap();
        assert_eq!(
            (o.sweep.unwrap(), o.sweep_max),
            (vec![0.5, 1.0], Some(60_000))
        );
        assert!(parse_bench(&["--sweep", "0.5,0.2"])
            .unwrap_err()
            .contains("increasing"));
        assert!(parse_bench(&["--sweep-max", "0"]).is_err());
    }

    #[test]
    fn build_all_flags_parse() {
        let parse = |args: &[&str]| {
            let mut argv = vec!["xtask", "build-all"];
            argv.extend_from_slice(args);
            match Cli::try_parse_from(argv).map(|c| c.command) {
                Ok(Some(Command::BuildAll(b))) => Ok(b.options()),
                Ok(_) => unreachable!(),
                Err(e) => Err(e.to_string()),
            }
        };
        let o = parse(&[]).unwrap();
        assert!(o.targets.is_empty() && o.backend.is_none() && o.profile.is_none() && !o.smoke);
        assert!(o.jobs >= 1);
        let o = parse(&[
            "--targets",
            "aarch64-unknown-linux-musl,armv7-unknown-linux-gnueabihf",
            "--backend",
            "zigbuild",
            "--profile",
            "embedded",
            "--jobs",
            "3",
            "--smoke",
        ])
        .unwrap();
        assert_eq!(
            o.targets,
            [
                "aarch64-unknown-linux-musl",
                "armv7-unknown-linux-gnueabihf"
            ]
        );
        assert_eq!(o.backend, Some(targets::Backend::Zigbuild));
        assert_eq!((o.jobs, o.smoke), (3, true));
        assert!(parse(&["--jobs", "0"]).is_err());
        assert!(parse(&["--backend", "docker"]).is_err());
    }

    #[test]
    fn bench_ab_flags_parse() {
        let parse = parse_bench;
        let o = parse(&["--ab", "HEAD~1", "--suite", "quick"]).unwrap();
        assert_eq!(o.ab, Some(bench::AbBase::Rev("HEAD~1".into())));
        assert_eq!(o.repeat, 5, "A/B defaults to 5 pairs");
        let o = parse(&["--ab-binary", "/tmp/broker", "--repeat", "7"]).unwrap();
        assert_eq!(o.ab, Some(bench::AbBase::Binary("/tmp/broker".into())));
        assert_eq!(o.repeat, 7);
        assert_eq!(parse(&[]).unwrap().ab, None);
        assert!(parse(&["--ab", "x", "--ab-binary", "y"]).is_err());
        assert!(parse(&["--ab", "x", "--target", "aarch64-unknown-linux-gnu"]).is_err());
        assert!(parse(&["--ab", "x", "--broker", "mosquitto"])
            .unwrap_err()
            .contains("drop --broker"));
        let cli = Cli::try_parse_from(["xtask", "gate", "reports/runs/x", "--ab"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Gate { ab: true, .. })));
        assert!(Cli::try_parse_from(["xtask", "gate", "r", "--ab", "--baseline", "b"]).is_err());
    }

    #[test]
    fn bench_target_goes_with_our_broker_only() {
        let parse = parse_bench;
        let o = parse(&["--target", "aarch64-unknown-linux-gnu", "--suite", "quick"]).unwrap();
        assert_eq!(o.target.as_deref(), Some("aarch64-unknown-linux-gnu"));
        assert!(parse(&["--target", "x", "--broker", "mosquitto"]).is_err());
        assert!(parse(&["--target", "x", "--broker", "external", "--mqtt", "h:1"]).is_err());
    }

    #[test]
    fn micro_flags_parse() {
        let parse = |args: &[&str]| {
            let mut argv = vec!["xtask", "micro"];
            argv.extend_from_slice(args);
            match Cli::try_parse_from(argv).map(|c| c.command) {
                Ok(Some(Command::Micro(m))) => Ok(m.options()),
                Ok(_) => unreachable!("micro parses as micro"),
                Err(e) => Err(e.to_string()),
            }
        };
        let o = parse(&[]).unwrap();
        assert!(o.target.is_none() && o.benches.is_empty() && !o.quick && o.baseline.is_none());
        let o = parse(&[
            "--target",
            "aarch64-unknown-linux-gnu",
            "--quick",
            "--bench",
            "mqtt_codec",
            "--bench",
            "topic_match",
            "--filter",
            "decode",
            "--measurement-time",
            "2",
            "--baseline",
            "main",
        ])
        .unwrap();
        assert_eq!(o.target.as_deref(), Some("aarch64-unknown-linux-gnu"));
        assert_eq!(o.benches, ["mqtt_codec", "topic_match"]);
        assert_eq!(o.filter.as_deref(), Some("decode"));
        assert!(o.quick);
        assert_eq!(o.measurement_secs, Some(2.0));
        assert_eq!(o.baseline.as_deref(), Some("main"));
        assert!(parse(&["--baseline", "a", "--save-baseline", "b"]).is_err());
        assert!(parse(&["--warm-up-time", "0"]).is_err());
    }

    #[test]
    fn gate_flags_parse() {
        let cli = Cli::try_parse_from(["xtask", "gate", "reports/latest", "--profile", "embedded"])
            .unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Gate { report, profile: Some(p), baseline: None, .. }) if report == Path::new("reports/latest") && p == "embedded"
        ));
        assert!(Cli::try_parse_from(["xtask", "gate"]).is_err());
        let cli = Cli::try_parse_from([
            "xtask",
            "gate",
            "run",
            "--baseline",
            "reports/baselines/x.json",
            "--max-regression",
            "15%",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Gate { baseline: Some(b), max_regression, .. }) if b == Path::new("reports/baselines/x.json") && (max_regression - 0.15).abs() < 1e-12
        ));
        let cli = Cli::try_parse_from(["xtask", "gate", "run", "--baseline", "b.json"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Gate { max_regression, .. }) if (max_regression - 0.10).abs() < 1e-12
        ));
        assert!(Cli::try_parse_from(["xtask", "gate", "run", "--max-regression", "5%"]).is_err());
        assert!(Cli::try_parse_from([
            "xtask",
            "gate",
            "run",
            "--baseline",
            "b",
            "--max-regression",
            "x"
        ])
        .is_err());
    }

    #[test]
    fn report_compare_baseline_merge_flags_parse() {
        let cli = Cli::try_parse_from(["xtask", "compare", "/tmp/a", "/tmp/b", "--out", "/tmp/c"])
            .unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Compare { a, b, out: Some(o) }) if a == Path::new("/tmp/a") && b == Path::new("/tmp/b") && o == Path::new("/tmp/c")
        ));
        assert!(Cli::try_parse_from(["xtask", "compare", "/tmp/a"]).is_err());
        let cli = Cli::try_parse_from(["xtask", "baseline", "reports/latest"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Baseline { out: None, .. })
        ));
        let cli = Cli::try_parse_from(["xtask", "report", "reports/latest"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Report { .. })));
        let cli =
            Cli::try_parse_from(["xtask", "merge", "a.json", "b.json", "--out", "m.json"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Merge { results, out }) if results.len() == 2 && out == Path::new("m.json")
        ));
        assert!(Cli::try_parse_from(["xtask", "merge", "--out", "m.json"]).is_err());
        assert!(Cli::try_parse_from(["xtask", "merge", "a.json"]).is_err());
    }

    #[test]
    fn docker_and_lint_flags_parse() {
        let cli = Cli::try_parse_from(["xtask", "docker"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Docker { platforms, push: false, tag })
                if platforms == ["linux/amd64", "linux/arm64", "linux/arm/v7"] && tag == "broker:dev"
        ));
        let cli = Cli::try_parse_from([
            "xtask",
            "docker",
            "--platforms",
            "linux/arm64,linux/arm/v7",
            "--push",
            "--tag",
            "ghcr.io/o/broker:1.0",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Docker { platforms, push: true, tag })
                if platforms == ["linux/arm64", "linux/arm/v7"] && tag == "ghcr.io/o/broker:1.0"
        ));
        let cli = Cli::try_parse_from(["xtask", "lint", "--no-install"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Lint { no_install: true })
        ));
    }

    #[test]
    fn percentages_parse() {
        assert_eq!(parse_percent("10%"), Ok(0.10));
        assert_eq!(parse_percent("25 %"), Ok(0.25));
        assert_eq!(parse_percent("5"), Ok(0.05));
        assert!(parse_percent("-3%").is_err());
        assert!(parse_percent("ten").is_err());
    }

    #[test]
    fn bench_step_is_the_quick_suite_gated_by_ci() {
        let args = crate::commands::ci::bench_args(Path::new("/t/ci-bench"));
        let cli =
            Cli::try_parse_from(std::iter::once(OsString::from("xtask")).chain(args)).unwrap();
        let Some(Command::Bench(bench)) = cli.command else {
            panic!("not a bench command");
        };
        let o = bench.options().unwrap();
        assert_eq!(o.suite, "quick");
        assert_eq!(o.profile.as_deref(), Some("ci"));
        assert!(o.gate_exit && o.workloads.is_empty() && o.duration.is_none());
        assert_eq!(o.broker, bench::BrokerChoice::Built);
        assert_eq!(o.out.as_deref(), Some(Path::new("/t/ci-bench")));
        assert_eq!(o.repeat, 1);
        assert!(o.target.is_none());
        // No A/B run in `cargo xtask ci`: its time on a 2-core box is spoken for.
        assert!(o.ab.is_none());
    }
}
