//! `loadgen`: runs one workload against a broker and writes the result JSON.
//!
//! Exit codes: 0 completed, 3 aborted (the result is still written), 2 bad
//! input (workload file, flag, `RUST_LOG`), 1 anything else.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use loadgen::progress::ProgressMode;
use loadgen::runner::{self, RunError, RunOptions};
use loadgen::{Outcome, Workload};

#[derive(Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Load generator for the broker bench"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one workload against a broker and write its result JSON.
    Run(RunArgs),
    /// Load workload files and report the first problem in each (for CI).
    Validate {
        /// Workload TOML files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Workload spec (TOML), e.g. bench/workloads/mqtt-qos1.toml.
    #[arg(long, value_name = "FILE")]
    workload: PathBuf,
    /// Broker address.
    #[arg(long, value_name = "HOST:PORT")]
    target: String,
    /// Where to write the result JSON.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Override the workload's duration_secs.
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Override the workload's warmup_secs.
    #[arg(long, value_name = "SECS")]
    warmup: Option<f64>,
    /// No progress output on stderr (warnings and errors only).
    #[arg(long)]
    quiet: bool,
    /// Log level: error, warn, info, debug or trace [default: info, warn with
    /// --quiet]. RUST_LOG (e.g. `loadgen::kafka=debug`) sets levels per
    /// target; this one is for the rest.
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<tracing::Level>,
}

const EXIT_COMPLETED: u8 = 0;
const EXIT_OTHER: u8 = 1;
const EXIT_BAD_INPUT: u8 = 2;
const EXIT_ABORTED: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { files } => validate(&files),
        Command::Run(args) => {
            let level = args.log_level.unwrap_or(if args.quiet {
                tracing::Level::WARN
            } else {
                tracing::Level::INFO
            });
            if let Err(e) = init_logging(level) {
                eprintln!("loadgen: {e}");
                return ExitCode::from(EXIT_BAD_INPUT);
            }
            match run(args) {
                Ok(code) => ExitCode::from(code),
                Err(e) => {
                    eprintln!("loadgen: {e:#}");
                    ExitCode::from(EXIT_OTHER)
                }
            }
        }
    }
}

/// Logs to stderr through a `Targets` filter: `RUST_LOG` when set, with
/// `level` for every target it does not name; otherwise `level` for all.
fn init_logging(level: tracing::Level) -> Result<(), String> {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let rust_log = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty());
    let filter = match &rust_log {
        Some(spec) => {
            let targets: Targets = spec.parse().map_err(|e| {
                format!(
                    "RUST_LOG=`{spec}`: {e} (expected e.g. `info` or `info,loadgen::mqtt=debug`)"
                )
            })?;
            match targets.default_level() {
                Some(_) => targets,
                None => targets.with_default(level),
            }
        }
        None => Targets::new().with_default(level),
    };
    tracing_subscriber::fmt()
        .with_max_level(LevelFilter::TRACE)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // Whoever filters by target wants to see the targets.
        .with_target(rust_log.is_some())
        .finish()
        .with(filter)
        .init();
    Ok(())
}

fn validate(files: &[PathBuf]) -> ExitCode {
    let mut bad = 0;
    for file in files {
        match Workload::load(file) {
            Ok(w) => println!(
                "{}: ok ({} {})",
                file.display(),
                w.protocol,
                w.scenario.as_str()
            ),
            Err(e) => {
                eprintln!("{e}");
                bad += 1;
            }
        }
    }
    ExitCode::from(if bad == 0 {
        EXIT_COMPLETED
    } else {
        EXIT_BAD_INPUT
    })
}

fn bad_input(message: impl std::fmt::Display) -> anyhow::Result<u8> {
    eprintln!("{message}");
    Ok(EXIT_BAD_INPUT)
}

fn run(args: RunArgs) -> anyhow::Result<u8> {
    let mut workload = match Workload::load(&args.workload) {
        Ok(w) => w,
        Err(e) => return bad_input(e),
    };
    if let Some(duration) = args.duration {
        workload.duration_secs = duration;
    }
    if let Some(warmup) = args.warmup {
        workload.warmup_secs = warmup;
    }
    if let Err(message) = workload.validate() {
        return bad_input(format_args!("--duration/--warmup: {message}"));
    }
    let options = RunOptions {
        target: args.target.clone(),
        progress: ProgressMode::for_stderr(args.quiet),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = match runtime.block_on(runner::run(&workload, &options)) {
        Ok(result) => result,
        Err(e @ RunError::BadTarget(_)) => return bad_input(format_args!("--target: {e}")),
    };
    // Driver tasks still closing must not keep the process alive.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    write_result(&args.out, &result.to_json())?;

    let c = &result.counts;
    eprintln!(
        "{}: {:?} in {:.1} s: sent {} ({:.0}/s), received {} of {} expected, lost {}, connections {}/{}{}",
        workload.name,
        result.outcome,
        result.measured_secs,
        c.sent,
        result.rates.sent_per_sec,
        c.received,
        c.expected,
        c.lost,
        result.connections.established,
        result.connections.attempted,
        result
            .latency
            .end_to_end
            .as_ref()
            .map(|l| format!(", e2e p50 {} us p99 {} us", l.p50_us, l.p99_us))
            .unwrap_or_default(),
    );
    Ok(match result.outcome {
        Outcome::Completed => EXIT_COMPLETED,
        Outcome::Aborted => {
            eprintln!(
                "loadgen: run aborted: {}",
                result.error.as_deref().unwrap_or("unknown reason")
            );
            EXIT_ABORTED
        }
    })
}

fn write_result(path: &Path, json: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the directory of {}", path.display()))?;
    }
    std::fs::write(path, format!("{json}\n"))
        .with_context(|| format!("writing the result to {}", path.display()))
}
