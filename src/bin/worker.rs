//! `worker`: JetStream → PostgreSQL. Reads its configuration from the environment (see README).
use clap::{Parser, Subcommand};
use std::path::PathBuf;

use nomnom::admin::{self, dead_letters};
use nomnom::bulk::Format;
use nomnom::envelope::MessageChunk;
use nomnom::generated::RootEntity;
use nomnom::load::{LoadOptions, Progress, load_file};
use nomnom::process::{healthcheck, shutdown_signal};
use nomnom::store::{DeadLetterFilter, ReasonClass};
use nomnom::worker::Worker;
use nomnom::worker::WorkerConfig;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Consumes messages from NATS JetStream and writes their rows to PostgreSQL until SIGTERM.
/// Configuration comes from the environment (NATS_URL, DATABASE_URL, … see README).
#[derive(Parser)]
#[command(name = "worker", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Dead letters: list, show, replay, discard.
    DeadLetters {
        #[command(subcommand)]
        action: DeadLetterCommand,
    },
    /// Publish dead letters again for processing (as `dead-letters replay`).
    ReplayDeadLetters {
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Exit 0 if the worker on WORKER_METRICS_PORT answers /health (container HEALTHCHECK).
    Healthcheck,
    /// List the entities this build was generated from (entities/*.yaml): their routes and tables.
    Entities,
    /// Print an entity's example body (its `example:` in YAML, or one built from its types).
    Example {
        /// The entity (any case: `order`, `Order`).
        entity: String,
    },
    /// The database's entity tables against this build's YAML: `plan` prints the SQL that
    /// would bring them to it (keeping every stored value), `apply` runs it — what the worker
    /// does at start-up, as a step of its own. Both refuse, naming every difference, a
    /// database that no safe change brings to the YAML.
    Schema {
        #[command(subcommand)]
        action: SchemaCommand,
    },
    /// Load a file of one entity's messages (CSV, NDJSON or a JSON array; .gz too) into the
    /// stream: every row checked like the api checks it, rejected rows written to a file with
    /// their reasons. Loading the same file again stores nothing twice. Exits 1 if any row
    /// was rejected.
    Load {
        /// The entity every row is a message of.
        #[arg(long)]
        entity: String,
        /// The file's format (default: from its name: .csv/.tbl, .ndjson/.jsonl, .json).
        #[arg(long, value_enum)]
        format: Option<Format>,
        /// Where rejected rows are written (default: <file>.rejected.ndjson).
        #[arg(long)]
        rejects: Option<PathBuf>,
        /// The file.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum SchemaCommand {
    /// Print the SQL `apply` would run (nothing is changed).
    Plan {
        /// Plan even for a database whose schema is neither this build's nor its
        /// `entities.lock`'s (refused otherwise).
        #[arg(long)]
        any_shape: bool,
    },
    /// Create the database if missing, run the infrastructure migrations and apply the plan.
    Apply {
        /// Apply it even though the database's schema is newer than this build's, and make
        /// this build's the current one (a rollback: workers of the newer build then stop
        /// consuming until they are replaced or their schema is applied again).
        #[arg(long)]
        make_current: bool,
        /// Apply even to a database whose schema is neither this build's nor its
        /// `entities.lock`'s (refused otherwise).
        #[arg(long)]
        any_shape: bool,
    },
}

/// Which dead letters (every filter given must hold).
#[derive(clap::Args)]
struct FilterArgs {
    /// Only dead letters of this entity (any case).
    #[arg(long)]
    entity: Option<String>,
    /// Only the dead letter of this message id.
    #[arg(long)]
    id: Option<Uuid>,
    /// Only those whose reason contains this text (any case).
    #[arg(long)]
    reason: Option<String>,
    /// Only those of this reason class (invalid, refused_by_database, unknown_entity,
    /// undecodable, max_deliveries, unclassified).
    #[arg(long, value_parser = parse_class)]
    class: Option<ReasonClass>,
    /// Only those first dead-lettered since this time (2026-12-07T10:00:00Z) or age (30m, 2h, 7d).
    #[arg(long)]
    since: Option<String>,
}

impl FilterArgs {
    fn filter(self) -> Result<DeadLetterFilter, Box<dyn std::error::Error>> {
        let since = match &self.since {
            Some(text) => Some(dead_letters::parse_since(text, chrono::Utc::now())?),
            None => None,
        };
        Ok(DeadLetterFilter {
            message_id: self.id,
            entity: self.entity,
            reason: self.reason,
            class: self.class,
            since,
        })
    }
}

fn parse_class(label: &str) -> Result<ReasonClass, String> {
    ReasonClass::parse(label).ok_or_else(|| {
        let known: Vec<&str> = ReasonClass::ALL.iter().map(|c| c.label()).collect();
        format!("not a reason class (known: {})", known.join(", "))
    })
}

#[derive(Subcommand)]
enum DeadLetterCommand {
    /// A page of dead letters, oldest first: a table, or JSON with --json.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Start after this cursor (printed at the end of the previous page).
        #[arg(long)]
        after: Option<String>,
        /// JSON (one array) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One dead letter in full, its body pretty-printed.
    Show {
        /// Its message id.
        id: Uuid,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// How many of the filter's dead letters would pass validation now (nothing is published).
    DryRun {
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Publish the filter's dead letters again for processing (all without a filter).
    Replay {
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Discard one dead letter: it leaves the dead letters (replay no longer sees it) and is kept
    /// whole in `discarded_dead_letters` with the note and who discarded it (`cli:$USER`).
    Discard {
        /// Its message id.
        #[arg(long)]
        id: Uuid,
        /// Why (kept with it).
        #[arg(long)]
        note: String,
    },
}

/// `worker schema plan|apply`.
async fn schema(
    database_url: &str,
    action: SchemaCommand,
) -> Result<(), Box<dyn std::error::Error>> {
    let any_shape = match action {
        SchemaCommand::Plan { any_shape } | SchemaCommand::Apply { any_shape, .. } => any_shape,
    };
    if !any_shape {
        nomnom::store::pg::refuse_unknown_shape(database_url).await?;
    }
    match action {
        SchemaCommand::Plan { .. } => {
            let plan = nomnom::store::pg::plan_schema(database_url).await?;
            if let Some(newer) = nomnom::store::pg::schema_head_at(database_url)
                .await?
                .newer_than_own()
            {
                println!(
                    "-- the database's schema {} (applied {}) is newer than this build's {}: apply refrains and this build's workers do not consume; apply --make-current would run:",
                    newer.version,
                    newer.applied_at,
                    nomnom::generated::SCHEMA_VERSION
                );
            }
            if plan.is_empty() {
                println!("-- the tables have the YAML's shape: nothing to change");
            }
            for statement in plan.statements() {
                println!("{statement}");
            }
        }
        SchemaCommand::Apply { make_current, .. } => {
            let changes = if make_current {
                nomnom::store::pg::make_schema_current(database_url).await?
            } else {
                nomnom::store::pg::prepare_schema(database_url).await?
            };
            if let Some(newer) = &changes.behind {
                return Err(format!(
                    "nothing applied: the database's schema {} (applied {}) is newer than this build's {}; to roll back to this build's, run `worker schema apply --make-current`",
                    newer.version,
                    newer.applied_at,
                    nomnom::generated::SCHEMA_VERSION
                )
                .into());
            }
            for table in &changes.created {
                println!("created table {table}");
            }
            for column in &changes.added_columns {
                println!("added column {column}");
            }
            for change in &changes.altered {
                println!("{change}");
            }
            if changes == Default::default() {
                println!("the tables have the YAML's shape: nothing changed");
            }
        }
    }
    Ok(())
}

// The worker stays on the system allocator: with mimalloc its peak memory under 100 KiB
// messages no longer followed WORKER_MAX_BATCH_BYTES (152 MB against a 130 MB bound in
// tests/template/binaries.rs), and the purge settings that fixed that cost more CPU than mimalloc saved
// (docs/BENCHMARKS.md).
fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    nomnom::process::run_main(run(cli))
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match &cli.command {
        Some(Command::Entities) => {
            print!("{}", nomnom::describe::entities());
            return Ok(());
        }
        Some(Command::Example { entity }) => {
            println!("{}", nomnom::describe::example(entity)?);
            return Ok(());
        }
        _ => {}
    }
    let config = WorkerConfig::from_env()?;
    match cli.command {
        None | Some(Command::Entities | Command::Example { .. }) => {}
        Some(Command::ReplayDeadLetters { filter }) => {
            return replay(config, &filter.filter()?).await;
        }
        Some(Command::DeadLetters { action }) => return dead_letters(config, action).await,
        Some(Command::Schema { action }) => return schema(&config.database_url, action).await,
        Some(Command::Load {
            entity,
            format,
            rejects,
            file,
        }) => return load(config, &entity, format, rejects, &file).await,
        Some(Command::Healthcheck) => {
            let port = config
                .metrics_port
                .ok_or("WORKER_METRICS_PORT is 0: no health endpoint")?;
            return if healthcheck(config.metrics_host, port) {
                Ok(())
            } else {
                Err(format!("no healthy worker on port {port}").into())
            };
        }
    }
    tracing::info!(stream = %config.nats.stream, consumer = %config.consumer, batch_size = config.batch_size, "worker starting");
    let worker = Worker::connect(config).await?;
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        signal.cancel();
    });
    worker.run(shutdown).await?;
    Ok(())
}

/// `worker load --entity E [--format F] [--rejects R] FILE`.
async fn load(
    config: WorkerConfig,
    entity_name: &str,
    format: Option<Format>,
    rejects: Option<PathBuf>,
    file: &std::path::Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let entity = RootEntity::from_name(entity_name).ok_or_else(|| {
        let known: Vec<&str> = RootEntity::ALL.iter().map(|e| e.snake_name()).collect();
        format!(
            "unknown entity `{entity_name}` (known: {})",
            known.join(", ")
        )
    })?;
    let mut options = LoadOptions::for_file(entity, file, format)?;
    if let Some(r) = rejects {
        options.rejects = r;
    }
    let js = nomnom::nats::connect(&config.nats).await?;
    nomnom::nats::ensure_stream(&js, &config.nats).await?;
    let max_payload = js.client().server_info().max_payload;
    options.max_row_bytes = max_payload.saturating_sub(MessageChunk::overhead(1));
    if options.largest_message() > max_payload {
        return Err(format!(
            "the NATS server's max_payload is {max_payload} bytes; loading needs at least {} (a chunk of {} KiB of rows and its headers): raise max_payload",
            options.largest_message(),
            nomnom::envelope::CHUNK_BYTES / 1024
        )
        .into());
    }
    let publisher = nomnom::nats::JetStreamPublisher::new(js);
    // Which chunks the database holds already (a re-run skips them).
    let store = nomnom::store::pg::PgStore::open(&config.database_url, 1)?;
    let started = std::time::Instant::now();
    let report = load_file(
        &publisher,
        Some(&store),
        &config.nats.stream,
        &options,
        Progress::for_stderr(),
    )
    .await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}: {} rows, {} accepted ({} already loaded before), {} rejected, in {secs:.1} s ({:.0} rows/s); {} chunks published for the worker to store",
        file.display(),
        report.rows,
        report.accepted,
        report.already_loaded,
        report.rejected,
        report.rows as f64 / secs.max(0.001),
        report.chunks_sent
    );
    if report.rejected > 0 {
        return Err(format!(
            "{} rows rejected; their reasons are in {}",
            report.rejected,
            options.rejects.display()
        )
        .into());
    }
    Ok(())
}

/// `worker dead-letters list|show|replay|discard`.
async fn dead_letters(
    config: WorkerConfig,
    action: DeadLetterCommand,
) -> Result<(), Box<dyn std::error::Error>> {
    use nomnom::store::{DeadLetterPage, Store as _};
    let store = nomnom::store::pg::PgStore::open(&config.database_url, 1)?;
    match action {
        DeadLetterCommand::List {
            filter,
            limit,
            after,
            json,
        } => {
            let after = after
                .as_deref()
                .map(dead_letters::parse_cursor)
                .transpose()?;
            let page = DeadLetterPage {
                filter: filter.filter()?,
                after,
                limit: limit.clamp(1, 10_000),
            };
            let (rows, next) = dead_letters::page(&store, &page).await?;
            if json {
                let rows: Vec<_> = rows.iter().map(dead_letters::to_json).collect();
                println!("{}", serde_json::Value::Array(rows));
            } else {
                print!("{}", dead_letters::table(&rows));
                match next {
                    Some(cursor) => println!("{} shown; more: --after {cursor}", rows.len()),
                    None => println!("{} shown", rows.len()),
                }
            }
            Ok(())
        }
        DeadLetterCommand::Show { id, json } => {
            let page = DeadLetterPage {
                filter: DeadLetterFilter {
                    message_id: Some(id),
                    ..Default::default()
                },
                after: None,
                limit: 1,
            };
            let found = store.dead_letters(&page).await?;
            let dead = found
                .first()
                .ok_or_else(|| format!("no dead letter with message id {id}"))?;
            if json {
                println!("{}", dead_letters::to_json(dead));
            } else {
                print!("{}", dead_letters::detail(dead));
            }
            Ok(())
        }
        DeadLetterCommand::Replay { filter } => replay(config, &filter.filter()?).await,
        DeadLetterCommand::Discard { id, note } => {
            if dead_letters::discard(&store, id, &dead_letters::cli_operator(), &note).await? {
                println!("discarded {id} (kept in discarded_dead_letters)");
                Ok(())
            } else {
                Err(format!("no dead letter with message id {id}").into())
            }
        }
        DeadLetterCommand::DryRun { filter } => {
            let found =
                dead_letters::dry_run(&store, &filter.filter()?, &dead_letters::cli_operator())
                    .await?;
            for (why, n) in &found.refusals {
                println!("{n:>8}  would be refused: {why}");
            }
            println!(
                "{} of {} would pass validation now",
                found.would_pass, found.total
            );
            Ok(())
        }
    }
}

/// `worker dead-letters replay [filters]` (and `worker replay-dead-letters`).
async fn replay(
    config: WorkerConfig,
    filter: &DeadLetterFilter,
) -> Result<(), Box<dyn std::error::Error>> {
    let js = nomnom::nats::connect(&config.nats).await?;
    nomnom::nats::ensure_stream(&js, &config.nats).await?;
    let store = nomnom::store::pg::PgStore::open(&config.database_url, 1)?;
    let publisher = nomnom::nats::JetStreamPublisher::new(js);
    // On a terminal, a progress bar over the dead letters the filter matches (a page at a time).
    let progress = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        let total = nomnom::store::Store::count_dead_letters(&store, filter).await?;
        let bar = indicatif::ProgressBar::new(u64::try_from(total).unwrap_or(0));
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} dead letters ({elapsed}, {eta} left) {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(bar)
    } else {
        None
    };
    let mut on_page = |so_far: &admin::ReplayReport| {
        if let Some(bar) = &progress {
            bar.set_position((so_far.replayed.len() + so_far.skipped.len()) as u64);
            bar.set_message(format!(
                "{} replayed, {} skipped",
                so_far.replayed.len(),
                so_far.skipped.len()
            ));
        }
    };
    let report = dead_letters::replay(
        &store,
        &publisher,
        &config.nats.stream,
        filter,
        &dead_letters::cli_operator(),
        &mut on_page,
    )
    .await;
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    let report = report?;
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
