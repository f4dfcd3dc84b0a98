//! `nomnom-schema`: the schema ledger (`entities.lock`) from the command line. It needs only
//! this crate, not the binaries built from the new YAML (whose build may be refusing it):
//!
//! ```sh
//! cargo run -p nomnom-codegen --bin nomnom-schema -- check   # the changes since the ledger, classified
//! cargo run -p nomnom-codegen --bin nomnom-schema -- lock    # record the YAML's shape (refused changes need --accept-breaking)
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nomnom_codegen::ledger::{self, ChangeClass, Ledger};

#[derive(Parser)]
#[command(
    about = "The schema ledger: what entities/*.yaml changed since it was recorded, and recording it"
)]
struct Cli {
    /// The entities directory.
    #[arg(long, default_value = "entities", global = true)]
    entities: PathBuf,
    /// The ledger (default: entities.lock beside the entities directory).
    #[arg(long, global = true)]
    lock: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Lists the changes since the ledger, each classified; exits 1 when a build would refuse one.
    Check,
    /// Records the YAML's shape in the ledger (creating it the first time).
    Lock {
        /// Record changes a build refuses (breaking, or needing a backfill) after handling
        /// their data yourself.
        #[arg(long)]
        accept_breaking: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let lock = cli.lock.clone().unwrap_or_else(|| {
        cli.entities
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join(ledger::LOCK_FILE)
    });
    let files = match nomnom_codegen::read_dir(&cli.entities) {
        Ok(files) => files,
        Err(e) => {
            eprintln!("error: {}: {e}", cli.entities.display());
            return ExitCode::FAILURE;
        }
    };
    let schema = match nomnom_codegen::load_and_validate(&files) {
        Ok(schema) => schema,
        Err(d) => {
            eprintln!("{d}");
            return ExitCode::FAILURE;
        }
    };
    let shown = lock.display().to_string();
    let recorded = match std::fs::read_to_string(&lock) {
        Ok(text) => match Ledger::parse(&text) {
            Ok(l) => Some(l),
            Err(why) => {
                eprintln!("error: {shown}: not a schema ledger: {why}");
                return ExitCode::FAILURE;
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            eprintln!("error: {shown}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let changes = recorded
        .as_ref()
        .map(|r| ledger::compare(r, &schema, &shown))
        .unwrap_or_default();
    for c in &changes {
        println!(
            "{}:{}:{}: {}: {}",
            c.file,
            c.loc.line,
            c.loc.col,
            c.class.label(),
            c.what
        );
        if !c.class.builds()
            && let Some(remedy) = &c.remedy
        {
            println!("  remedy: {remedy}");
        }
    }
    let refused = changes.iter().filter(|c| !c.class.builds()).count();
    match cli.command {
        Command::Check => {
            match (&recorded, refused) {
                (None, _) => {
                    println!("no ledger at {shown}: `nomnom-schema lock` records the first one")
                }
                (Some(_), 0) => println!(
                    "{} changes since {shown}; a build takes them all",
                    changes.len()
                ),
                (Some(_), n) => {
                    println!(
                        "{n} of {} changes since {shown} are refused by a build",
                        changes.len()
                    );
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Command::Lock { accept_breaking } => {
            if refused > 0 && !accept_breaking {
                eprintln!(
                    "error: {refused} change(s) would lose or leave stored data unhandled ({}); handle the data, then run again with --accept-breaking",
                    changes
                        .iter()
                        .filter(|c| !c.class.builds())
                        .map(|c| c.class.label())
                        .collect::<std::collections::BTreeSet<_>>()
                        .into_iter()
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                return ExitCode::FAILURE;
            }
            let ledger = Ledger::of(&schema);
            if let Err(e) = std::fs::write(&lock, ledger.to_text()) {
                eprintln!("error: {shown}: {e}");
                return ExitCode::FAILURE;
            }
            let accepted = changes
                .iter()
                .filter(|c| {
                    c.class == ChangeClass::Breaking || c.class == ChangeClass::NeedsBackfill
                })
                .count();
            println!(
                "wrote {shown}: {} entities{}",
                ledger.entities.len(),
                if accepted > 0 {
                    format!(", {accepted} refused change(s) accepted")
                } else {
                    String::new()
                }
            );
            ExitCode::SUCCESS
        }
    }
}
