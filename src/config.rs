//! Reading settings from environment variables: the helpers every layer's settings use and the
//! error that names the variable. Imports nothing of the crate: each layer owns its settings
//! (`api::ApiConfig`, `worker::WorkerConfig`, `nats::NatsConfig`, `store::pg::config`).

use std::time::Duration;

/// A variable is set but cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {name}={value:?} is invalid: {reason}")]
pub struct ConfigError {
    /// Variable name.
    pub name: &'static str,
    /// The value found.
    pub value: String,
    /// Why it was rejected.
    pub reason: String,
}

/// A variable's value; `default` when it is unset or blank.
pub fn var(name: &'static str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// A variable parsed as `T`; `default` when it is unset or blank.
pub fn parsed<T: std::str::FromStr>(name: &'static str, default: T) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().map_err(|e: T::Err| ConfigError {
            name,
            value: v.clone(),
            reason: e.to_string(),
        }),
        _ => Ok(default),
    }
}

/// A yes/no switch: `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`.
pub fn flag(name: &'static str, default: bool) -> Result<bool, ConfigError> {
    let v = var(name, if default { "true" } else { "false" });
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(ConfigError {
            name,
            value: v,
            reason: "use true or false".into(),
        }),
    }
}

/// A whole number of seconds, at least 1.
pub fn seconds(name: &'static str, default: Duration) -> Result<Duration, ConfigError> {
    Ok(Duration::from_secs(parsed(name, default.as_secs())?.max(1)))
}

/// A name that goes into NATS subjects and stream names: letters, digits, `_`, `-`.
pub fn stream_name(name: &'static str, default: &str) -> Result<String, ConfigError> {
    let v = var(name, default);
    let ok = !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(v)
    } else {
        Err(ConfigError {
            name,
            value: v,
            reason: "use letters, digits, `_` or `-` only (it names a stream and its subjects)"
                .into(),
        })
    }
}

/// A variable's value, `None` when it is unset or blank.
pub fn optional(name: &'static str) -> Option<String> {
    Some(var(name, "")).filter(|v| !v.is_empty())
}

/// The variables `source` (a settings file's code) reads through the helpers above, in order:
/// what its layer's list of variables must hold.
#[cfg(test)]
pub(crate) fn lookups(source: &str) -> Vec<&str> {
    let code = &source[..source.find("#[cfg(test)]").unwrap_or(source.len())];
    let mut read: Vec<&str> = Vec::new();
    for call in [
        "var(",
        "parsed(",
        "stream_name(",
        "seconds(",
        "flag(",
        "optional(",
    ] {
        for (i, _) in code.match_indices(call) {
            // rustfmt may put the name on the next line.
            let rest = code[i + call.len()..].trim_start();
            let Some(rest) = rest.strip_prefix('"') else {
                continue;
            };
            let name = &rest[..rest.find('"').unwrap_or(0)];
            if !name.is_empty() && !read.contains(&name) {
                read.push(name);
            }
        }
    }
    read
}
