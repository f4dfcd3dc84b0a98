//! What the api's and the worker's metrics share.

/// The Prometheus text exposition of a registry (api and worker `/metrics`).
pub fn prometheus_text(registry: &prometheus::Registry) -> String {
    use prometheus::Encoder as _;
    let mut out = Vec::new();
    // Encoding into a Vec cannot fail for well-formed metrics.
    let _ = prometheus::TextEncoder::new().encode(&registry.gather(), &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// `nomnom_schema_info{schema_version="…"} 1`: the schema version this binary checks or parses
/// against (api and worker `/metrics`), so a mismatch between them shows on one dashboard.
pub fn schema_info() -> prometheus::IntGaugeVec {
    let info = prometheus::IntGaugeVec::new(
        prometheus::Opts::new(
            "nomnom_schema_info",
            "The schema version this binary was built from (always 1)",
        ),
        &["schema_version"],
    )
    .expect("valid metric");
    info.with_label_values(&[crate::generated::SCHEMA_VERSION])
        .set(1);
    info
}
