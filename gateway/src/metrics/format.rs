//! The two ways `/metrics` is written. Scrapers that ask for OpenMetrics (Prometheus does, in
//! its `Accept` header) get the client library's output as it is; everyone else (`curl`,
//! `promtool check metrics`, older scrapers) gets the classic text format 0.0.4, which differs in
//! three points: a counter's `HELP` and `TYPE` name its samples' name (with `_total`), there are
//! no `# UNIT` lines, and no `# EOF`.

use std::collections::HashSet;

/// A `/metrics` answer's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text.
    OpenMetrics,
    /// Prometheus text format 0.0.4.
    Text,
}

impl Format {
    /// The format a scraper asked for in its `Accept` header.
    pub fn accepted(accept: Option<&str>) -> Self {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Self::OpenMetrics,
            _ => Self::Text,
        }
    }

    /// The answer's `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Self::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
    }

    /// `openmetrics` (as encoded) in this format.
    pub(crate) fn finish(self, openmetrics: String) -> String {
        match self {
            Self::OpenMetrics => openmetrics,
            Self::Text => classic(&openmetrics),
        }
    }
}

/// OpenMetrics text as text format 0.0.4.
fn classic(open: &str) -> String {
    let counters: HashSet<&str> = open
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open.len() + 1024);
    for line in open.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let descriptor = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        if let Some((prefix, rest)) = descriptor {
            let name = rest.split(' ').next().unwrap_or_default();
            if counters.contains(name) {
                out.push_str(prefix);
                out.push_str(name);
                out.push_str("_total");
                out.push_str(&rest[name.len()..]);
                out.push('\n');
                continue;
            }
        }
        let sample = line.split(['{', ' ']).next().unwrap_or_default();
        if sample
            .strip_suffix("_created")
            .is_some_and(|n| counters.contains(n))
        {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_by_their_samples_and_openmetrics_only_lines_go() {
        let open = "# HELP a_requests Requests.\n# TYPE a_requests counter\na_requests_total{x=\"1\"} 2\na_requests_created 17.0\n# HELP a_took_seconds Time.\n# TYPE a_took_seconds histogram\n# UNIT a_took_seconds seconds\na_took_seconds_count 1\n# EOF\n";
        assert_eq!(
            Format::Text.finish(open.to_owned()),
            "# HELP a_requests_total Requests.\n# TYPE a_requests_total counter\na_requests_total{x=\"1\"} 2\n# HELP a_took_seconds Time.\n# TYPE a_took_seconds histogram\na_took_seconds_count 1\n"
        );
        assert_eq!(Format::OpenMetrics.finish(open.to_owned()), open);
    }

    #[test]
    fn prometheus_gets_openmetrics_and_curl_the_text_format() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::accepted(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::accepted(Some("*/*")), Format::Text);
        assert_eq!(Format::accepted(None), Format::Text);
    }
}
