//! `api`: HTTP ingestion server. Reads its configuration from the environment (see README).
use clap::{Parser, Subcommand};
use nomnom::api::ApiConfig;
use nomnom::api::{AppState, metrics_router, router};
use nomnom::process::{healthcheck, shutdown_signal};

/// Accepts messages over HTTP, validates them against entities/*.yaml and publishes them to
/// NATS JetStream. Configuration comes from the environment (PORT, NATS_URL, … see README).
#[derive(Parser)]
#[command(name = "api", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Exit 0 if the api on PORT answers /health (container HEALTHCHECK).
    Healthcheck,
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    nomnom::process::run_main(run(cli))
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let config = ApiConfig::from_env()?;
    if let Some(Command::Healthcheck) = cli.command {
        return if healthcheck(config.host, config.port) {
            Ok(())
        } else {
            Err(format!("no healthy api on port {}", config.port).into())
        };
    }
    let jetstream = nomnom::nats::connect(&config.nats).await?;
    nomnom::nats::ensure_stream(&jetstream, &config.nats).await?;
    // The pool connects lazily: the api starts (and answers 503 on /ready) while PostgreSQL is down.
    let store = nomnom::store::pg::PgStore::open(&config.database_url, 4)?;
    let mut state = AppState::new(
        jetstream,
        config.nats.stream.clone(),
        std::sync::Arc::new(store),
    );
    state.max_body_bytes = config.max_body_bytes;
    if state.body_limit() < config.max_body_bytes {
        tracing::info!(
            max_body_bytes = state.body_limit(),
            "MAX_BODY_BYTES lowered to what the NATS server's max_payload carries with a dead letter's headers"
        );
    }
    state.max_batch_bytes = config.max_batch_bytes;
    state.max_batch_lines = config.max_batch_lines;
    state.body_budget =
        std::sync::Arc::new(nomnom::api::BodyBudget::new(config.max_inflight_body_bytes));
    if config.keys.enabled() {
        tracing::info!(keys = config.keys.len(), "API keys required");
    } else {
        tracing::warn!(
            "no API keys configured: anyone who reaches port {} can post messages, read their status and metrics; set API_KEYS or API_KEYS_FILE (and REQUIRE_AUTH=true in production)",
            config.port
        );
    }
    state.keys = config.keys.clone();
    state.metrics_on_main_port = config.metrics_port.is_none();
    state.consumer = config.consumer.clone();
    let admin_server = match config.admin_port {
        Some(port) => {
            let listener = tokio::net::TcpListener::bind((config.admin_host, port)).await?;
            tracing::info!(host = %config.admin_host, port, "console listening");
            let app = nomnom::api::admin_router(state.clone());
            let limits = config.limits.clone();
            Some(tokio::spawn(async move {
                nomnom::api::serve(listener, app, &limits, std::future::pending()).await;
            }))
        }
        None => None,
    };
    let metrics_server = match config.metrics_port {
        Some(port) => {
            let listener = tokio::net::TcpListener::bind((config.host, port)).await?;
            tracing::info!(port, "metrics listening");
            let app = metrics_router(state.clone());
            let limits = config.limits.clone();
            Some(tokio::spawn(async move {
                nomnom::api::serve(listener, app, &limits, std::future::pending()).await;
            }))
        }
        None => None,
    };
    let app = router(state);
    let listener = tokio::net::TcpListener::bind((config.host, config.port)).await?;
    tracing::info!(port = config.port, stream = %config.nats.stream, "api listening");
    nomnom::api::serve(listener, app, &config.limits, shutdown_signal()).await;
    for task in [metrics_server, admin_server].into_iter().flatten() {
        task.abort();
    }
    Ok(())
}
