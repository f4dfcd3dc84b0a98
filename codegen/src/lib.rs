//! nomnom-codegen: entity YAML → Rust models, parsers, `ParsedMessage` and diesel code.
//!
//! Used from `build.rs` like prost-build:
//!
//! ```no_run
//! nomnom_codegen::Builder::new("entities").out_dir(std::env::var("OUT_DIR").unwrap()).run_for_cargo();
//! ```
//!
//! Stages: load (YAML → entity definitions, with positions) → validate (cross-file checks)
//! → [`generate`] (quote + prettyplease). Every problem is a [`Diagnostic`] with file:line:col.
//! The public API is [`Builder`] (for `build.rs`) and what tests and tools need to run the
//! stages on YAML given as text ([`load_and_validate`], [`generate_from_sources`]).

mod diag;
mod example;
mod generate;
mod ident;
pub mod ledger;
mod load;
mod model;
mod types;
mod validate;

use std::path::{Path, PathBuf};

pub use diag::{Diagnostic, Diagnostics, Loc};
pub use generate::{GeneratedFile, TOP_FILE, generate};
pub use load::{SourceFile, read_dir};
pub use types::FieldType;
pub use validate::Schema;

/// Why code generation failed.
#[derive(Debug, thiserror::Error)]
pub enum CodegenError {
    /// The entities directory or an output file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The YAML has problems; every one is listed.
    #[error("{0}")]
    Schema(Diagnostics),
}

/// Loads and validates YAML sources: all problems of all files at once.
pub fn load_and_validate(files: &[SourceFile]) -> Result<Schema, Diagnostics> {
    let loaded = load::load(files);
    let mut diags = loaded.diagnostics;
    if files.is_empty() {
        diags.error(
            "entities",
            Loc { line: 1, col: 1 },
            "no entity files (*.yaml) found",
        );
    }
    // Cross-file checks run even when some files have problems, so every problem shows at once.
    match validate::validate_loaded(loaded.entities, loaded.all_files_loaded) {
        Ok(schema) if diags.is_empty() => Ok(schema),
        Ok(_) => Err(diags.sorted()),
        Err(more) => {
            diags.0.extend(more.0);
            Err(diags.sorted())
        }
    }
}

/// Generates code for YAML given as text (tests and tools).
pub fn generate_from_sources(files: &[SourceFile]) -> Result<Vec<GeneratedFile>, Diagnostics> {
    Ok(generate(&load_and_validate(files)?))
}

/// Judges the YAML's changes against the ledger at `lock` (none there: nothing to judge): the
/// notes of the changes a build takes, or the errors of those it refuses.
pub fn judge_changes(schema: &Schema, lock: &Path) -> Result<Diagnostics, Diagnostics> {
    judge(schema, read_lock(lock)?.as_ref(), lock)
}

/// [`judge_changes`] against the ledger read from `lock`.
fn judge(
    schema: &Schema,
    recorded: Option<&ledger::Ledger>,
    lock: &Path,
) -> Result<Diagnostics, Diagnostics> {
    let Some(recorded) = recorded else {
        return Ok(Diagnostics::default());
    };
    let changes = ledger::compare(recorded, schema, &lock.display().to_string());
    let (errors, notes) = ledger::diagnostics(&changes);
    if errors.0.is_empty() {
        Ok(notes)
    } else {
        Err(errors)
    }
}

/// The schema ledger at `lock` (none there: `None`), or why it cannot be read.
fn read_lock(lock: &Path) -> Result<Option<ledger::Ledger>, Diagnostics> {
    let shown = lock.display().to_string();
    let text = match std::fs::read_to_string(lock) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            let mut d = Diagnostics::default();
            d.error(
                &shown,
                Loc { line: 1, col: 1 },
                format!("cannot read the schema ledger: {e}"),
            );
            return Err(d);
        }
    };
    let recorded = ledger::Ledger::parse(&text).map_err(|why| {
        let mut d = Diagnostics::default();
        d.push(
            &shown,
            Loc { line: 1, col: 1 },
            format!("not a schema ledger: {why}"),
            Some(
                "restore it from version control, or write it again with `nomnom-schema lock`"
                    .into(),
            ),
        );
        d
    })?;
    Ok(Some(recorded))
}

/// What a successful run read and wrote.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// Every YAML file read (for `cargo:rerun-if-changed`).
    pub inputs: Vec<String>,
    /// Files whose contents changed and were rewritten.
    pub written: Vec<PathBuf>,
    /// What builds but deserves a look, with file:line:col (`cargo::warning` lines).
    pub warnings: Diagnostics,
}

/// Reads `entities_dir`, generates code and writes it to `out_dir`.
#[derive(Debug, Clone)]
pub struct Builder {
    entities_dir: PathBuf,
    out_dir: Option<PathBuf>,
    lock_file: Option<PathBuf>,
}

impl Builder {
    /// A builder reading `entities_dir/*.yaml`.
    pub fn new(entities_dir: impl Into<PathBuf>) -> Self {
        Self {
            entities_dir: entities_dir.into(),
            out_dir: None,
            lock_file: None,
        }
    }

    /// The schema ledger the YAML is judged against (default: [`ledger::LOCK_FILE`] beside
    /// the entities directory; none there, nothing is judged).
    pub fn lock_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.lock_file = Some(path.into());
        self
    }

    /// The ledger's path.
    fn lock_path(&self) -> PathBuf {
        self.lock_file.clone().unwrap_or_else(|| {
            self.entities_dir
                .parent()
                .unwrap_or(Path::new("."))
                .join(ledger::LOCK_FILE)
        })
    }

    /// Where generated files go (default: `$OUT_DIR`).
    pub fn out_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.out_dir = Some(dir.into());
        self
    }

    /// Runs all stages; files are only rewritten when their contents change.
    pub fn run(&self) -> Result<RunReport, CodegenError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| CodegenError::Io { path, source }
        };
        let files = load::read_dir(&self.entities_dir).map_err(io(&self.entities_dir))?;
        let inputs = files.iter().map(|f| f.path.clone()).collect();
        let mut schema = load_and_validate(&files).map_err(CodegenError::Schema)?;
        let lock = self.lock_path();
        let recorded = read_lock(&lock).map_err(CodegenError::Schema)?;
        let notes = judge(&schema, recorded.as_ref(), &lock).map_err(CodegenError::Schema)?;
        schema.warnings.0.extend(notes.0);
        schema.locked_version = recorded.map(|l| l.version());
        let generated = generate(&schema);
        let out_dir = match &self.out_dir {
            Some(d) => d.clone(),
            None => PathBuf::from(std::env::var_os("OUT_DIR").ok_or_else(|| CodegenError::Io {
                path: "$OUT_DIR".into(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "OUT_DIR is not set"),
            })?),
        };
        std::fs::create_dir_all(&out_dir).map_err(io(&out_dir))?;
        let mut written = Vec::new();
        for f in generated {
            let path = out_dir.join(&f.name);
            if std::fs::read_to_string(&path).ok().as_deref() != Some(f.contents.as_str()) {
                std::fs::write(&path, &f.contents).map_err(io(&path))?;
                written.push(path);
            }
        }
        Ok(RunReport {
            inputs,
            written,
            warnings: schema.warnings,
        })
    }

    /// For `build.rs`: prints `cargo:rerun-if-changed` lines, each warning as `cargo::warning`
    /// lines (cargo shows them as `warning: …`), and on failure each problem as a
    /// `cargo::error` line, which cargo shows as `error: …` and fails the build.
    pub fn run_for_cargo(&self) {
        println!("cargo:rerun-if-changed={}", self.entities_dir.display());
        // Also rerun when files appear or vanish: cargo watches the directory's mtime.
        if let Ok(files) = load::read_dir(&self.entities_dir) {
            for f in &files {
                println!("cargo:rerun-if-changed={}", f.path);
            }
        }
        let lock = self.lock_path();
        if lock.exists() {
            println!("cargo:rerun-if-changed={}", lock.display());
        }
        match self.run() {
            Ok(report) => {
                for line in report
                    .warnings
                    .0
                    .iter()
                    .flat_map(|d| d.to_string().lines().map(String::from).collect::<Vec<_>>())
                {
                    println!("cargo::warning={line}");
                }
            }
            Err(CodegenError::Schema(diags)) => {
                for line in diags
                    .0
                    .iter()
                    .flat_map(|d| d.to_string().lines().map(String::from).collect::<Vec<_>>())
                {
                    println!("cargo::error={line}");
                }
                // `cargo::error` fails the build with these lines only (no build-script dump).
            }
            Err(e) => {
                println!("cargo::error={e}");
            }
        }
    }
}
