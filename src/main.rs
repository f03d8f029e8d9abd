//! The `order-worker` binary: parse the command line, set up logging, run one command.
//! Everything else lives in the library; errors become one line on stderr and a non-zero exit.

use std::error::Error as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::error::{ContextKind, ErrorKind};
use order_worker::config::{self, Cli, Command, DeadLettersCommand};
use order_worker::{
    Worker, check, db, dead_letters, dev, kafka, lag, produce, shutdown, telemetry, validate,
};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let mut cli = match Cli::parse_with_default(std::env::args_os()) {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    // TOKIO_WORKER_THREADS is checked with the other settings and handed to the runtime, which
    // would panic on a wrong value if it read the variable itself.
    let prepared = utf8_env()
        .and_then(|env| cli.command.prepare(env).map_err(|e| e.to_string()))
        .and_then(|()| {
            let threads = std::env::var_os(config::RUNTIME_THREADS_ENV);
            config::runtime_threads(threads.as_deref()).map_err(|e| e.to_string())
        });
    let threads = match prepared {
        Ok(threads) => threads,
        Err(e) => {
            eprintln!("order-worker: {e} (see --help)");
            return ExitCode::from(2);
        }
    };
    let telemetry = match telemetry::init(cli.log.log_format) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("order-worker: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.get())
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("order-worker: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(run(cli));
    // Work still running (a read from a broker that does not answer) is not waited for: the
    // process ends now, as the stop's deadline promised.
    runtime.shutdown_timeout(Duration::from_millis(200));
    telemetry.shutdown();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("order-worker: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The environment's variables that are Unicode; a Kafka property variable that is not is an
/// error (clap has read its own variables already).
fn utf8_env() -> Result<Vec<(String, String)>, String> {
    let mut vars = Vec::new();
    for (name, value) in std::env::vars_os() {
        let Ok(name) = name.into_string() else {
            continue;
        };
        match value.into_string() {
            Ok(value) => vars.push((name, value)),
            Err(_) if name.starts_with(config::KAFKA_PROPERTY_PREFIX) => {
                return Err(format!("{name} is not valid UTF-8"));
            }
            Err(_) => {}
        }
    }
    Ok(vars)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(region) = cli.command.kafka().and_then(|k| k.aws_msk_iam_region()) {
        kafka::aws_msk_iam::install(region).await?;
    }
    match cli.command {
        Command::Run(cfg) => {
            let worker = Worker::start(&cfg.kafka, &cfg.worker)
                .await
                .context("failed to start")?;
            shutdown::on_signal(worker.stop_token(), Some(cfg.worker.shutdown_timeout));
            worker.wait().await?;
        }
        Command::Check(cfg) => {
            let report = check::check(&cfg).await;
            if cfg.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.text());
            }
            if !report.passed {
                bail!(
                    "{} of {} checks failed",
                    report.failed(),
                    report.checks.len()
                );
            }
        }
        Command::Validate(cfg) => {
            let report = validate::validate(&cfg).await?;
            if cfg.json {
                println!("{}", serde_json::to_string_pretty(&report.verdicts)?);
            } else {
                print!("{}", report.text());
            }
            if report.failed() > 0 {
                bail!(
                    "{} of {} events would be dead-lettered",
                    report.failed(),
                    report.verdicts.len()
                );
            }
        }
        Command::Migrate(cfg) => {
            let pool = db::pool(&cfg.db, 1)?;
            let applied = db::migrate(&pool).await.context("failed to migrate")?;
            println!("database is up to date; applied now: {applied:?}");
        }
        Command::Produce(cfg) => {
            let stop = Arc::new(AtomicBool::new(false));
            let flag = stop.clone();
            tokio::spawn(async move {
                shutdown::next_signal().await;
                flag.store(true, Ordering::Relaxed);
            });
            let report = produce::produce(&cfg, stop)
                .await
                .context("failed to publish")?;
            println!("{report}");
            if report.published.failed > 0 {
                bail!(
                    "{} messages were not acknowledged by the broker",
                    report.published.failed
                );
            }
        }
        Command::Lag(cfg) => {
            let json = cfg.json;
            let (lag, owners) = tokio::task::spawn_blocking(move || lag::describe(&cfg))
                .await
                .context("lag task")?
                .context("failed to read the group's lag")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&lag)?);
            } else {
                println!("{}", lag::print_table(&lag, &owners));
            }
        }
        Command::DeadLetters { command } => match command {
            DeadLettersCommand::List(cfg) => println!("{}", dead_letters::list(&cfg).await?),
            DeadLettersCommand::Purge(cfg) => {
                let n = dead_letters::purge(&cfg).await.context("failed to purge")?;
                let verb = if cfg.dry_run {
                    "would delete"
                } else {
                    "deleted"
                };
                println!("{verb} {n} dead letter(s) created before {}", cfg.before);
            }
            DeadLettersCommand::Replay(cfg) => {
                let report = dead_letters::replay(&cfg)
                    .await
                    .context("failed to replay")?;
                for (id, why) in &report.skipped {
                    println!("skipped {id}: {why}");
                }
                println!(
                    "replayed {} dead letter(s); {} failed",
                    report.published, report.failed
                );
                if report.failed > 0 {
                    bail!(
                        "{} dead letter(s) were not acknowledged; run the replay again",
                        report.failed
                    );
                }
            }
        },
        Command::Dev(cfg) => {
            let stop = CancellationToken::new();
            shutdown::on_signal(stop.clone(), Some(cfg.worker.shutdown_timeout));
            dev::dev(cfg, stop).await?;
        }
    }
    Ok(())
}

/// The error and its causes on one line, skipping causes whose text an outer message already
/// carries (library errors format their source into their own message).
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line.replace('\n', " ")
}

/// Help and version print as usual; any other usage error is one line that does not echo the
/// offending value (it may be a secret).
fn usage_error(e: &clap::Error) -> ExitCode {
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    let line = match (e.kind(), e.get(ContextKind::InvalidArg)) {
        (ErrorKind::ValueValidation | ErrorKind::InvalidValue, Some(arg)) => {
            let why = e.source().map(|s| format!(": {s}")).unwrap_or_default();
            format!("invalid value for {arg}{why}")
        }
        (ErrorKind::MissingRequiredArgument, Some(args)) => {
            format!("missing {args} (flag or environment variable)")
        }
        _ => e
            .to_string()
            .lines()
            .next()
            .unwrap_or("invalid arguments")
            .trim_start_matches("error: ")
            .to_owned(),
    };
    eprintln!("order-worker: {line} (see --help)");
    ExitCode::from(2)
}
