//! What this build was generated from, for people: the entities with their routes and tables
//! (`worker entities`) and an entity's example body (`worker example`).

use std::fmt::Write as _;

use crate::generated::RootEntity;

/// One line per entity posted directly: its name, routes and the tables it writes.
pub fn entities() -> String {
    let mut out = String::new();
    for entity in RootEntity::ALL {
        let snake = entity.snake_name();
        let tables = match entity.tables() {
            [] => "not stored".to_string(),
            tables => format!("tables {}", tables.join(", ")),
        };
        let _ = writeln!(
            out,
            "{name}: POST /ingest/message/{snake}, /ingest/batch/{snake}; {tables}",
            name = entity.name()
        );
    }
    out
}

/// The example body of `entity` (any case), as one line of JSON.
pub fn example(entity: &str) -> Result<String, String> {
    let root = RootEntity::from_name(entity).ok_or_else(|| {
        let known: Vec<&str> = RootEntity::ALL.iter().map(|e| e.snake_name()).collect();
        format!(
            "no entity `{entity}` is posted directly (known: {})",
            known.join(", ")
        )
    })?;
    Ok(root.example().to_string())
}
