//! `worker`: JetStream → PostgreSQL. Reads its configuration from the environment (see README).
use nomnom::config::{WorkerConfig, init_logging};
use nomnom::worker::Worker;
use nomnom::worker::dead_letter::{self, ReplayFilter};
use tokio_util::sync::CancellationToken;

const USAGE: &str = "usage: worker                      consume until SIGTERM
       worker replay-dead-letters [--entity ENTITY] [--id MESSAGE_ID]
                                   publish dead letters again for processing
       worker healthcheck          exit 0 if the worker on WORKER_METRICS_PORT is healthy";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    init_logging();
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("worker: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let config = WorkerConfig::from_env()?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None => {}
        Some("replay-dead-letters") => return replay(config, &args[1..]).await,
        // For container HEALTHCHECKs: exit 0 when this worker answers /health.
        Some("healthcheck") => {
            let port = config
                .metrics_port
                .ok_or("WORKER_METRICS_PORT is 0: no health endpoint")?;
            return if nomnom::healthcheck(port) {
                Ok(())
            } else {
                Err(format!("no healthy worker on port {port}").into())
            };
        }
        Some("--help" | "-h" | "help") => {
            println!("{USAGE}");
            return Ok(());
        }
        Some(other) => return Err(format!("unknown command `{other}`\n{USAGE}").into()),
    }
    tracing::info!(stream = %config.nats.stream, consumer = %config.consumer, batch_size = config.batch_size, "worker starting");
    let worker = Worker::connect(config).await?;
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        nomnom::shutdown_signal().await;
        signal.cancel();
    });
    worker.run(shutdown).await?;
    Ok(())
}

/// `worker replay-dead-letters [--entity E] [--id ID]`.
async fn replay(config: WorkerConfig, args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let mut filter = ReplayFilter::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("{a} needs a value\n{USAGE}"))?;
        match a.as_str() {
            "--entity" => filter.entity = Some(value.clone()),
            "--id" => {
                filter.message_id = Some(
                    value
                        .parse()
                        .map_err(|_| format!("`{value}` is not a message id"))?,
                )
            }
            other => return Err(format!("unknown option `{other}`\n{USAGE}").into()),
        }
    }
    let js = nomnom::nats::connect(&config.nats).await?;
    nomnom::nats::ensure_stream(&js, &config.nats).await?;
    let pool = nomnom::db::pool(&config.database_url, 1)?;
    let report = dead_letter::replay(&js, &config.nats.stream, &pool, &filter).await?;
    for id in &report.replayed {
        println!("replayed {id}");
    }
    for (id, why) in &report.skipped {
        println!("skipped {id}: {why}");
    }
    println!(
        "{} replayed, {} skipped",
        report.replayed.len(),
        report.skipped.len()
    );
    Ok(())
}
