//! `worker`: JetStream → PostgreSQL. Reads its configuration from the environment (see README).
use nomnom::config::{WorkerConfig, init_logging};
use nomnom::worker::Worker;
use tokio_util::sync::CancellationToken;

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
