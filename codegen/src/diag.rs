//! Diagnostics: every problem found in the entity YAML, with file, line and column.

use std::fmt;

/// A position in a YAML file (1-based line and column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Loc {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
}

/// One problem in one YAML file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file as the user knows it (e.g. `entities/order.yaml`).
    pub file: String,
    /// Where in the file.
    pub loc: Loc,
    /// What is wrong, and what was expected.
    pub message: String,
    /// A suggestion ("did you mean ...").
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.loc.line, self.loc.col, self.message
        )?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// All problems found, in file then position order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Records a problem without a hint.
    pub fn error(&mut self, file: &str, loc: Loc, message: impl Into<String>) {
        self.push(file, loc, message, None);
    }

    /// Records a problem with an optional hint.
    pub fn push(&mut self, file: &str, loc: Loc, message: impl Into<String>, hint: Option<String>) {
        self.0.push(Diagnostic {
            file: file.to_string(),
            loc,
            message: message.into(),
            hint,
        });
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sorts by file and position, dropping exact duplicates, so output is deterministic.
    pub fn sorted(mut self) -> Self {
        self.0
            .sort_by(|a, b| (&a.file, a.loc, &a.message).cmp(&(&b.file, b.loc, &b.message)));
        self.0.dedup();
        self
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error: {d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// The closest candidate to `word`, if it is close enough to be a likely typo.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    nomnom_runtime::closest_name(word, candidates)
}

/// "did you mean `x`?" with the full list of what is known.
pub(crate) fn did_you_mean(word: &str, known: &[&str]) -> String {
    let list = known.join(", ");
    match closest(word, known.iter().copied()) {
        Some(c) => format!("did you mean `{c}`? (known: {list})"),
        None => format!("known: {list}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_finds_typos_and_rejects_strangers() {
        assert_eq!(closest("Strng", ["String", "Integer"]), Some("String"));
        assert_eq!(
            closest("sorce_type", ["source_type", "fields"]),
            Some("source_type")
        );
        assert_eq!(closest("banana", ["String", "Integer"]), None);
    }
}
