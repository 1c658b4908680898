//! The `vigil` command line. Only argument handling lives here; everything else is the library.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use vigil::config::Config;

/// mimalloc, not glibc's malloc: events are allocated on the engine thread and freed on the
/// event-store writer's, and glibc's per-arena locks made those cross-thread frees wake each
/// other up (about a quarter of the engine's time flat out; see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its place in `mi_option_e` of mimalloc 3, which the
/// `libmimalloc-sys` bindings do not name; the test below checks it reads the documented
/// default).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed memory stays with the process before mimalloc gives it back to the system.
/// Its default (1 s) is shorter than the life of the memory a busy pipeline recycles (a batch's
/// events, freed on another thread), so that memory went back and was faulted in and zeroed
/// again: 2,800 page faults a second flat out, several per cent of the CPU in the kernel's
/// page clearing. With 10 s they fell to 400 a second (BENCHMARKS.md). Memory idle longer than
/// that still goes back, and the forced collect after each correlation-state save returns it at
/// once (`pipeline::give_back_memory`).
const PURGE_DELAY_MS: std::ffi::c_long = 10_000;

/// Sets the allocator's options; first thing in `main`.
/// An operator's `MIMALLOC_PURGE_DELAY` is left to win.
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: sets one process-wide option of the allocator; no pointer is passed, and the
    // option is read atomically by the allocator whenever it decides to purge.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
}

#[derive(Parser)]
#[command(
    name = "vigil",
    version,
    about = "Open SIEM / SOC event-correlation engine"
)]
struct Cli {
    /// Configuration file (TOML). Without it, the embedded defaults are used.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service: syslog collectors, rule engine, store, API.
    Run,
    /// Replay log files through the pipeline in event time; offenses as JSON lines on stdout.
    Replay {
        /// Files to read, one record per line (syslog with or without <PRI>).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// No progress lines on stderr.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Parse lines from stdin and print each normalized event (or its rejection) as JSON.
    Parse,
    /// Rule pack commands.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Send syslog load to a running Vigil and report sustained EPS and offense latency.
    Loadgen(vigil::loadgen::LoadgenArgs),
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Compile every rule and report problems.
    Lint {
        /// A rule file or a folder searched recursively (default: rules.dir from the config).
        path: Option<PathBuf>,
        /// Same as PATH (kept for scripts).
        #[arg(long, conflicts_with = "path")]
        dir: Option<PathBuf>,
    },
    /// Run every rule's test cases (events in, offenses or silence out).
    Test {
        /// A rules folder, searched recursively (default: rules.dir from the config).
        path: Option<PathBuf>,
        /// Same as PATH (kept for scripts).
        #[arg(long, conflicts_with = "path")]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Load the config, parser definitions and rules; report every problem.
    Check,
    /// Print the effective configuration as TOML.
    Show,
}

fn main() -> ExitCode {
    tune_allocator();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VIGIL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vigil: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Run => {
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            rt.block_on(vigil::app::run(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay { files, quiet } => {
            let (offenses, summary) = vigil::replay::replay(&config, &files, !quiet)?;
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            vigil::replay::write_json_lines(&mut out, &offenses)?;
            out.flush()?;
            if !quiet {
                eprintln!(
                    "replay: done, {} lines, {} events, {} dead letters, {} offenses",
                    summary.lines,
                    summary.events,
                    summary.dead_letters,
                    offenses.len()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Parse => parse_stdin(&config),
        Command::Rules { command } => {
            let (dir, test) = match command {
                RulesCommand::Lint { path, dir } => (path.or(dir), false),
                RulesCommand::Test { path, dir } => (path.or(dir), true),
            };
            let mut config = config;
            if let Some(dir) = dir {
                config.rules.dir = dir;
            }
            if !test {
                let report = vigil::correlate::lint(&config.rules.dir)?;
                for p in &report.problems {
                    println!("{p}");
                }
                println!(
                    "loaded {}, unsupported {}, failed {}",
                    report.loaded, report.unsupported, report.failed
                );
                return Ok(exit(report.failed == 0));
            }
            let dir = config.rules.dir.clone();
            let results = vigil::correlate::ruletest::run(&config, &dir)?;
            let failed = results.iter().filter(|r| r.failure.is_some()).count();
            for r in &results {
                match &r.failure {
                    None => println!("ok   {} :: {}", r.rule, r.case),
                    Some(f) => println!("FAIL {} :: {}: {f}", r.rule, r.case),
                }
            }
            println!("{} passed, {} failed", results.len() - failed, failed);
            Ok(exit(failed == 0))
        }
        Command::Config { command } => match command {
            ConfigCommand::Show => {
                let mut shown = config;
                if shown.api.token.is_some() {
                    shown.api.token = Some("<redacted>".into());
                }
                if shown.store.clickhouse.password.is_some() {
                    shown.store.clickhouse.password = Some("<redacted>".into());
                }
                println!("{}", toml::to_string_pretty(&shown)?);
                Ok(ExitCode::SUCCESS)
            }
            ConfigCommand::Check => {
                let (_, def_problems) = vigil::app::build_normalizer(&config)?;
                let (rules, rule_problems) = vigil::app::load_rules(&config)?;
                for p in def_problems.iter().chain(&rule_problems) {
                    println!("error: {p}");
                }
                let ok = def_problems.is_empty() && rule_problems.is_empty();
                println!(
                    "config {}: {} rules loaded, {} rule problems, {} definition problems",
                    if ok { "ok" } else { "has problems" },
                    rules.len(),
                    rule_problems.len(),
                    def_problems.len()
                );
                Ok(exit(ok))
            }
        },
        Command::Loadgen(args) => {
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let report = rt.block_on(vigil::loadgen::run(args))?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn parse_stdin(config: &Config) -> anyhow::Result<ExitCode> {
    let (normalizer, problems) = vigil::app::build_normalizer(config)?;
    for p in &problems {
        eprintln!("vigil: parser definition refused: {p}");
    }
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut line = Vec::new();
    let mut reader = stdin.lock();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            line.pop();
        }
        if line.is_empty() {
            continue;
        }
        let meta = vigil::parsers::normalize::RecordMeta {
            observer_type: "stdin",
            observer_id: "stdin",
            peer: None,
            received_at: chrono::Utc::now(),
        };
        let value = match normalizer.normalize(&line, &meta) {
            Ok(event) => serde_json::to_value(&event)?,
            Err(r) => serde_json::json!({ "rejected": { "reason": r.reason, "detail": r.detail } }),
        };
        serde_json::to_writer(&mut out, &value)?;
        out.write_all(b"\n")?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    /// The option number is mimalloc's purge delay: before `tune_allocator` it reads that
    /// option's default (1,000 ms in mimalloc 3), and after, the value set. A mimalloc whose
    /// options moved fails here rather than tuning another option.
    #[test]
    fn the_purge_delay_option_is_the_one_tuned() {
        // SAFETY: reads and sets one allocator option; no pointer is passed.
        let before = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        assert_eq!(before, 1000);
        super::tune_allocator();
        // SAFETY: as above.
        let after = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(after, super::PURGE_DELAY_MS);
    }
}
