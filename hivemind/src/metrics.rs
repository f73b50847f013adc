//! Prometheus metrics: the daemon's own instruments (API requests), and the
//! exposition of a scrape in OpenMetrics (what Prometheus asks for) or the
//! classic text format (what `curl` and `promtool check metrics` read).
//!
//! What a scrape shows is gathered when it is asked for (see `api::metrics`):
//! counters the kernel or the runtime keep are read then, not mirrored.

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels as name-value pairs.
pub type Labels = Vec<(String, String)>;

/// The OpenMetrics content type.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The classic text format's content type.
pub const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

fn request_histogram() -> Histogram {
    // 1 ms to about 16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// API requests by method, route and status, with their latency.
#[derive(Debug, Clone)]
pub struct ApiStats {
    requests: Family<Labels, Histogram, fn() -> Histogram>,
}

impl Default for ApiStats {
    fn default() -> Self {
        Self {
            requests: Family::new_with_constructor(request_histogram),
        }
    }
}

impl ApiStats {
    /// Counts one answered request to `route` (the route's pattern, never
    /// the raw path: the series stay few).
    pub fn observe(&self, method: &str, route: &str, status: u16, took: Duration) {
        let labels = vec![
            ("method".to_string(), method.to_string()),
            ("route".to_string(), route.to_string()),
            ("status".to_string(), status.to_string()),
        ];
        self.requests
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "hivemind_api_request_duration_seconds",
            "API requests answered, by method, route and status, and how long they took",
            self.requests.clone(),
        );
    }
}

/// A scrape's text: OpenMetrics when `openmetrics`, else the classic format
/// (no `# EOF`, no `# UNIT`, counters' help and type under their `_total`
/// sample name).
pub fn expose(registry: &Registry, openmetrics: bool) -> Result<String, std::fmt::Error> {
    let mut text = String::new();
    encode(&mut text, registry)?;
    if openmetrics {
        return Ok(text);
    }
    let counters: std::collections::BTreeSet<String> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .map(str::to_string)
        .collect();
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[test]
    fn the_classic_format_names_counters_by_their_samples() {
        let mut registry = Registry::default();
        let family: Family<Labels, Counter> = Family::default();
        family
            .get_or_create(&vec![("app".to_string(), "web".to_string())])
            .inc_by(3);
        registry.register("hits", "Hits", family);
        let stats = ApiStats::default();
        stats.observe("GET", "/api/apps", 200, Duration::from_millis(3));
        stats.register(&mut registry);
        let open = expose(&registry, true).unwrap();
        assert!(open.ends_with("# EOF\n"), "{open}");
        let classic = expose(&registry, false).unwrap();
        assert!(classic.contains("# TYPE hits_total counter"), "{classic}");
        assert!(classic.contains("hits_total{app=\"web\"} 3"), "{classic}");
        assert!(!classic.contains("# EOF"));
        assert!(classic.contains(
            "hivemind_api_request_duration_seconds_count{method=\"GET\",route=\"/api/apps\",status=\"200\"} 1"
        ), "{classic}");
    }
}
