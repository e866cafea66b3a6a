//! Percentiles, medians over runs, and the cells of the report tables.

use std::time::Duration;

/// Nearest-rank percentile of `v` (sorted here), `p` in 0..=100.
pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

/// Latency percentiles of one run, in seconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Lat {
    pub p50: f64,
    pub p99: f64,
}

impl Lat {
    pub fn of(samples: &[Duration]) -> Lat {
        let mut v: Vec<f64> = samples.iter().map(Duration::as_secs_f64).collect();
        Lat { p50: percentile(&mut v, 50.0), p99: percentile(&mut v, 99.0) }
    }
}

/// Median, min and max of one figure over the K runs.
#[derive(Clone, Copy, Debug)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(values: &[f64]) -> Spread {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Spread { median: f64::NAN, min: f64::NAN, max: f64::NAN };
        }
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Spread { median, min: v[0], max: v[n - 1] }
    }

    /// `median (min–max)` with `f` formatting each number; just the median
    /// when there was one run.
    pub fn fmt(&self, f: impl Fn(f64) -> String) -> String {
        if !self.median.is_finite() {
            return "n/a".into();
        }
        if self.min == self.max {
            f(self.median)
        } else {
            format!("{} ({}–{})", f(self.median), f(self.min), f(self.max))
        }
    }
}

/// Events or connections per second.
pub fn rate(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

/// A ratio such as ws2http ÷ baseline.
pub fn ratio(x: f64) -> String {
    format!("{x:.2}")
}

/// Seconds as µs or ms.
pub fn dur(s: f64) -> String {
    let us = s * 1e6;
    if us.abs() < 1000.0 {
        format!("{us:.0} µs")
    } else if us.abs() < 100_000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{:.0} ms", us / 1000.0)
    }
}

/// Bytes as KiB (or MiB).
pub fn bytes(b: f64) -> String {
    if b.abs() >= 10.0 * 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / 1024.0 / 1024.0)
    } else {
        format!("{:.1} KiB", b / 1024.0)
    }
}

pub fn plain(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

/// A markdown table, printed as it is built so a long run shows progress.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table { rows: vec![header.iter().map(|s| s.to_string()).collect()] }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for (i, r) in self.rows.iter().enumerate() {
            out.push_str("| ");
            out.push_str(&r.join(" | "));
            out.push_str(" |\n");
            if i == 0 {
                out.push('|');
                for _ in r {
                    out.push_str(" --- |");
                }
                out.push('\n');
            }
        }
        out
    }
}

pub fn verdict(pass: bool) -> &'static str {
    if pass {
        "PASS"
    } else {
        "MISS"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_spreads() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut v, 50.0), 50.0);
        assert_eq!(percentile(&mut v, 99.0), 99.0);
        let s = Spread::of(&[3.0, 1.0, 2.0, 10.0]);
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 10.0));
        assert_eq!(s.fmt(plain), "2.50 (1–10)");
    }
}
