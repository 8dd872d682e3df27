//! Results: printed as aligned text lines while the run goes, or as one JSON object at the end.

use std::time::Duration;

use serde::Serialize;

/// One measured number (or a skipped one).
#[derive(Debug, Serialize)]
pub(crate) struct Metric {
    /// Stable key for `--json` consumers, e.g. `spawn_closed`.
    pub(crate) key: &'static str,
    /// What was measured, for people.
    pub(crate) label: String,
    #[serde(flatten)]
    pub(crate) value: Value,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum Value {
    /// Percentiles of latency samples, in milliseconds.
    Latency { p50_ms: f64, p95_ms: f64, n: usize },
    /// One number with its unit (`MiB/s`, `ms`, `KiB`).
    Scalar {
        value: f64,
        unit: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// Not measured, and why.
    Skipped { skipped: String },
}

/// Collects metrics and prints them.
#[derive(Debug)]
pub(crate) struct Report {
    json: bool,
    server: String,
    metrics: Vec<Metric>,
    notes: Vec<String>,
}

impl Report {
    pub(crate) fn new(json: bool, server: String) -> Report {
        if !json {
            println!("server: {server}");
        }
        Report {
            json,
            server,
            metrics: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// p50 and p95 of `samples`.
    pub(crate) fn latency(
        &mut self,
        key: &'static str,
        label: impl Into<String>,
        samples: &[Duration],
    ) {
        let value = Value::Latency {
            p50_ms: percentile_ms(samples, 0.5),
            p95_ms: percentile_ms(samples, 0.95),
            n: samples.len(),
        };
        self.push(key, label.into(), value);
    }

    /// One number with its unit and an optional detail.
    pub(crate) fn scalar(
        &mut self,
        key: &'static str,
        label: impl Into<String>,
        value: f64,
        unit: &'static str,
        detail: Option<String>,
    ) {
        self.push(
            key,
            label.into(),
            Value::Scalar {
                value,
                unit,
                detail,
            },
        );
    }

    /// A metric that could not be measured.
    pub(crate) fn skipped(
        &mut self,
        key: &'static str,
        label: impl Into<String>,
        why: impl Into<String>,
    ) {
        self.push(
            key,
            label.into(),
            Value::Skipped {
                skipped: why.into(),
            },
        );
    }

    /// A remark about the run (printed in text mode right away).
    pub(crate) fn note(&mut self, note: impl Into<String>) {
        let note = note.into();
        if !self.json {
            println!("note: {note}");
        }
        self.notes.push(note);
    }

    fn push(&mut self, key: &'static str, label: String, value: Value) {
        let metric = Metric { key, label, value };
        if !self.json {
            println!("{}", line(&metric));
        }
        self.metrics.push(metric);
    }

    /// Prints the JSON object in `--json` mode.
    pub(crate) fn finish(self) -> anyhow::Result<()> {
        if self.json {
            let out = serde_json::json!({
                "server": self.server,
                "metrics": self.metrics,
                "notes": self.notes,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Ok(())
    }
}

fn line(m: &Metric) -> String {
    let label = &m.label;
    match &m.value {
        Value::Latency { p50_ms, p95_ms, n } => {
            format!("{label:<52} p50 {p50_ms:>9.3} ms  p95 {p95_ms:>9.3} ms  (n={n})")
        }
        Value::Scalar {
            value,
            unit,
            detail,
        } => {
            let detail = detail
                .as_deref()
                .map(|d| format!("  ({d})"))
                .unwrap_or_default();
            // Milliseconds are small here (a wall time, a difference of latencies).
            let prec = if *unit == "ms" { 3 } else { 1 };
            format!("{label:<52} {value:>13.prec$} {unit}{detail}")
        }
        Value::Skipped { skipped } => format!("{label:<52} skipped: {skipped}"),
    }
}

/// The `p` percentile (0 to 1, nearest rank) of `samples`, in milliseconds; NaN when empty.
pub(crate) fn percentile_ms(samples: &[Duration], p: f64) -> f64 {
    let mut s = samples.to_vec();
    s.sort();
    s.get(((s.len().saturating_sub(1)) as f64 * p).round() as usize)
        .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
}

/// Mebibytes per second.
pub(crate) fn mib_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / secs
}
