//! `api`: HTTP ingestion server. Reads its configuration from the environment (see README).
use nomnom::api::{AppState, router};
use nomnom::config::{ApiConfig, init_logging};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    init_logging();
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("api: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let config = ApiConfig::from_env()?;
    match std::env::args().nth(1).as_deref() {
        None => {}
        // For container HEALTHCHECKs: exit 0 when this api answers /health.
        Some("healthcheck") if nomnom::healthcheck(config.port) => return Ok(()),
        Some("healthcheck") => return Err(format!("no healthy api on port {}", config.port).into()),
        Some(other) => {
            return Err(format!("unknown command `{other}` (usage: api [healthcheck])").into());
        }
    }
    let jetstream = nomnom::nats::connect(&config.nats).await?;
    nomnom::nats::ensure_stream(&jetstream, &config.nats).await?;
    // The pool connects lazily: the api starts (and answers 503 on /ready) while PostgreSQL is down.
    let db = nomnom::db::pool(&config.database_url, 4)?;
    let mut state = AppState::new(jetstream, config.nats.stream.clone(), db);
    state.max_body_bytes = config.max_body_bytes;
    state.max_batch_bytes = config.max_batch_bytes;
    state.max_batch_lines = config.max_batch_lines;
    let app = router(state);
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", config.port)).await?;
    tracing::info!(port = config.port, stream = %config.nats.stream, "api listening");
    nomnom::api::serve(listener, app, &config.limits, nomnom::shutdown_signal()).await;
    Ok(())
}
