//! A Grafana dashboard's queries held against what running processes export: every
//! metric a query names must be a family in the scrape, and every label it groups by
//! or matches on must be on that family's samples. A renamed metric or label fails.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// What one scrape (OpenMetrics or Prometheus text) holds.
#[derive(Debug, Default)]
pub struct Scrape {
    /// Family names, from their `# TYPE` lines.
    families: BTreeSet<String>,
    /// Label names seen on each family's samples.
    labels: BTreeMap<String, BTreeSet<String>>,
}

impl Scrape {
    pub fn parse(text: &str) -> Self {
        let mut scrape = Self::default();
        for line in text.lines() {
            if let Some(declared) = line.strip_prefix("# TYPE ") {
                scrape.families.extend(declared.split(' ').next().map(str::to_owned));
            }
        }
        for line in text.lines().filter(|line| !line.starts_with('#') && !line.is_empty()) {
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            let family = scrape.family_of(&line[..name_end]).to_owned();
            let labels = scrape.labels.entry(family).or_default();
            if line[name_end..].starts_with('{') {
                labels.extend(label_names(&line[name_end + 1..]));
            }
        }
        scrape
    }

    /// The family a sample name belongs to (`x_total`, `x_bucket`, ... are `x`).
    fn family_of<'a>(&self, sample: &'a str) -> &'a str {
        ["_total", "_bucket", "_sum", "_count", "_created", "_info"]
            .iter()
            .filter_map(|suffix| sample.strip_suffix(suffix))
            .find(|family| self.families.contains(*family))
            .unwrap_or(sample)
    }
}

/// The label names of a sample's `a="x",b="y"}` part.
fn label_names(mut rest: &str) -> Vec<String> {
    let mut names = Vec::new();
    while let Some((name, after)) = rest.split_once("=\"") {
        names.push(name.trim_start_matches(',').trim().to_owned());
        // Skip the value, escapes included.
        let mut escaped = false;
        let end = after.char_indices().find(|&(_, c)| {
            let closes = c == '"' && !escaped;
            escaped = c == '\\' && !escaped;
            closes
        });
        let Some((end, _)) = end else { break };
        rest = &after[end + 1..];
        if rest.starts_with('}') {
            break;
        }
    }
    names
}

/// The metric names in a PromQL expression, with the labels it matches on.
fn metrics_of(expr: &str) -> Vec<(String, Vec<String>)> {
    let mut found = Vec::new();
    let mut rest = expr;
    while let Some(start) = rest.find("jetway_") {
        let tail = &rest[start..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        let name = tail[..end].to_owned();
        let mut matched = Vec::new();
        if let Some(selector) = tail[end..].strip_prefix('{') {
            let selector = &selector[..selector.find('}').unwrap_or(selector.len())];
            matched = selector
                .split(',')
                .filter_map(|m| m.split(['=', '!']).next())
                .map(|l| l.trim().to_owned())
                .filter(|l| !l.is_empty())
                .collect();
        }
        found.push((name, matched));
        rest = &tail[end..];
    }
    found
}

/// The labels of every `by (...)` in an expression.
fn grouped_by(expr: &str) -> Vec<String> {
    expr.match_indices("by (")
        .filter_map(|(at, _)| expr[at + 4..].split_once(')').map(|(list, _)| list))
        .flat_map(|list| list.split(',').map(|l| l.trim().to_owned()))
        .filter(|l| !l.is_empty())
        .collect()
}

/// Checks the queries of `dashboard` whose metrics `ours` selects against `scrape`;
/// returns how many metric references were checked, or every problem found.
pub fn check(dashboard: &Path, scrape: &Scrape, ours: impl Fn(&str) -> bool) -> Result<usize, String> {
    let text = std::fs::read_to_string(dashboard).map_err(|e| format!("{}: {e}", dashboard.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", dashboard.display()))?;
    let (mut checked, mut problems) = (0, Vec::new());
    for panel in json["panels"].as_array().into_iter().flatten() {
        let title = panel["title"].as_str().unwrap_or("a panel");
        for expr in panel["targets"].as_array().into_iter().flatten().filter_map(|t| t["expr"].as_str()) {
            let metrics: Vec<_> = metrics_of(expr).into_iter().filter(|(name, _)| ours(name)).collect();
            for (name, matched) in &metrics {
                checked += 1;
                let family = scrape.family_of(name);
                if !scrape.families.contains(family) {
                    problems.push(format!("{title}: {name} is not exported"));
                    continue;
                }
                let on_samples = scrape.labels.get(family).cloned().unwrap_or_default();
                for label in matched.iter().chain(&grouped_by(expr)) {
                    if !on_samples.contains(label) {
                        problems.push(format!("{title}: {name} has no label {label} (it has {on_samples:?})"));
                    }
                }
            }
        }
    }
    if problems.is_empty() { Ok(checked) } else { Err(problems.join("\n")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_labels_and_queries_are_read() {
        let scrape = Scrape::parse(
            "# TYPE jetway_x counter\njetway_x_total{kind=\"a,\\\"b\",le=\"1\"} 1\n# TYPE jetway_y gauge\njetway_y 2\n",
        );
        assert_eq!(scrape.family_of("jetway_x_total"), "jetway_x");
        assert_eq!(scrape.labels["jetway_x"], BTreeSet::from(["kind".to_owned(), "le".to_owned()]));
        assert!(scrape.labels["jetway_y"].is_empty());
        let expr = "sum by (namespace, consumer) (rate(jetway_x_total{namespace=~\"$ns\"}[1m])) / jetway_y";
        assert_eq!(
            metrics_of(expr),
            [("jetway_x_total".into(), vec!["namespace".into()]), ("jetway_y".into(), vec![])]
        );
        assert_eq!(grouped_by(expr), ["namespace", "consumer"]);
    }
}
