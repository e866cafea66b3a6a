//! Counters for `GET /metrics` (Prometheus text format). Plain atomics,
//! updated on the hot paths without locks; rendered on demand.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds (seconds) of the script duration histogram.
const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0];

#[derive(Default)]
pub struct Metrics {
    pub connections_opened: AtomicU64,
    pub connections_closed: AtomicU64,
    pub handshakes_refused: AtomicU64,
    /// `[kind][outcome]`: kind open/message/close/resume, outcome ok/failed/unavailable.
    events: [[AtomicU64; 3]; 4],
    pub spawn_failures: AtomicU64,
    pub events_queued: AtomicI64,
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub http_cgi_requests: AtomicU64,
    pub cluster_lost: AtomicU64,
    /// Message events dropped because their connection had ended.
    pub events_dropped: AtomicU64,
    /// Bytes of the distinct message buffers queued to clients (the gauge of
    /// `--max-outgoing-bytes-total`, kept by the hub's outgoing budget).
    pub outgoing_bytes: AtomicUsize,
    /// Bytes of request bodies held for scripts (`--max-request-body-total`).
    pub request_body_bytes: AtomicUsize,
    /// Per-connection processes started, alive, and sent SIGKILL.
    pub procs_started: AtomicU64,
    pub procs_running: AtomicI64,
    pub procs_killed: AtomicU64,
    /// Resumable sessions detached now, waiting for their client.
    pub sessions_detached: AtomicI64,
    /// Resumes, by [`Resumed`].
    resumes: [AtomicU64; 3],
    duration_buckets: [AtomicU64; BUCKETS.len()],
    duration_count: AtomicU64,
    duration_sum_us: AtomicU64,
}

static METRICS: std::sync::OnceLock<Metrics> = std::sync::OnceLock::new();

/// The process-wide counters.
pub fn get() -> &'static Metrics {
    METRICS.get_or_init(Metrics::default)
}

/// How a resume went, for `ws2http_resumes_total{result}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resumed {
    Ok,
    /// Refused with 4410 (`expired`).
    Expired,
    /// Refused with 4400 (`bad`).
    Bad,
}

pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Relaxed);
}

impl Metrics {
    /// Records one finished event: kind 0/1/2/3 (open/message/close/resume), outcome
    /// 0/1/2 (ok/failed/unavailable), and how long its script took.
    pub fn event(&self, kind: usize, outcome: usize, took: Duration) {
        self.events[kind.min(3)][outcome.min(2)].fetch_add(1, Relaxed);
        let secs = took.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.duration_buckets[i].fetch_add(1, Relaxed);
            }
        }
        self.duration_count.fetch_add(1, Relaxed);
        self.duration_sum_us.fetch_add(took.as_micros() as u64, Relaxed);
    }

    /// Counts one resume.
    pub fn resumed(&self, how: Resumed) {
        self.resumes[how as usize].fetch_add(1, Relaxed);
    }

    /// The Prometheus text exposition; gauges that live elsewhere are passed in.
    pub fn render(&self, connections: usize, rooms: usize) -> String {
        let mut s = String::with_capacity(4096);
        self.render_counters(&mut s);
        self.render_events(&mut s);
        self.render_gauges(&mut s, connections, rooms);
        self.render_durations(&mut s);
        self.render_sessions(&mut s);
        crate::tls::expiry::render(&mut s);
        s
    }

    /// The plain counters, each with its help text.
    fn render_counters(&self, s: &mut String) {
        let counters: [(&str, &str, &AtomicU64); 13] = [
            ("ws2http_connections_opened_total", "WebSocket connections opened.", &self.connections_opened),
            (
                "ws2http_connections_closed_total",
                "WebSocket connections whose close event ran.",
                &self.connections_closed,
            ),
            (
                "ws2http_handshakes_refused_total",
                "Handshakes refused by a limit or the Origin check.",
                &self.handshakes_refused,
            ),
            ("ws2http_spawn_failures_total", "Scripts that could not be started.", &self.spawn_failures),
            ("ws2http_messages_in_total", "Messages received from clients.", &self.messages_in),
            ("ws2http_messages_out_total", "Messages queued to clients.", &self.messages_out),
            ("ws2http_bytes_in_total", "Payload bytes received from clients.", &self.bytes_in),
            ("ws2http_bytes_out_total", "Payload bytes queued to clients.", &self.bytes_out),
            ("ws2http_http_cgi_requests_total", "Plain HTTP requests run as classic CGI.", &self.http_cgi_requests),
            (
                "ws2http_cluster_lost_total",
                "Cross-instance actions lost while Redis was unreachable.",
                &self.cluster_lost,
            ),
            (
                "ws2http_connection_procs_started_total",
                "Per-connection processes started (--per-connection).",
                &self.procs_started,
            ),
            (
                "ws2http_connection_procs_killed_total",
                "Per-connection processes sent SIGKILL after their connection ended.",
                &self.procs_killed,
            ),
            (
                "ws2http_events_dropped_total",
                "Message events still queued when their connection ended, dropped without running.",
                &self.events_dropped,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", v.load(Relaxed));
        }
    }

    /// Events run, one series per event type and outcome.
    fn render_events(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "# HELP ws2http_events_total Events run, by type and outcome.\n# TYPE ws2http_events_total counter"
        );
        for (k, kind) in ["open", "message", "close", "resume"].iter().enumerate() {
            for (o, outcome) in ["ok", "failed", "unavailable"].iter().enumerate() {
                let _ = writeln!(
                    s,
                    "ws2http_events_total{{event=\"{kind}\",outcome=\"{outcome}\"}} {}",
                    self.events[k][o].load(Relaxed)
                );
            }
        }
    }

    /// The gauges: open connections and rooms (passed in), queued events,
    /// bytes queued to clients.
    fn render_gauges(&self, s: &mut String, connections: usize, rooms: usize) {
        let _ = writeln!(s, "# HELP ws2http_connections Open WebSocket connections.\n# TYPE ws2http_connections gauge\nws2http_connections {connections}");
        let _ = writeln!(
            s,
            "# HELP ws2http_rooms Rooms with at least one member.\n# TYPE ws2http_rooms gauge\nws2http_rooms {rooms}"
        );
        let _ = writeln!(
            s,
            "# HELP ws2http_events_queued Events received and waiting for their script.\n# TYPE ws2http_events_queued gauge\nws2http_events_queued {}",
            self.events_queued.load(Relaxed).max(0)
        );
        let _ = writeln!(
            s,
            "# HELP ws2http_outgoing_bytes Bytes of messages queued to clients and not yet sent (a buffer shared by a broadcast counts once).\n# TYPE ws2http_outgoing_bytes gauge\nws2http_outgoing_bytes {}",
            self.outgoing_bytes.load(Relaxed)
        );
        let _ = writeln!(
            s,
            "# HELP ws2http_request_body_bytes Bytes of page request bodies held for their scripts.\n# TYPE ws2http_request_body_bytes gauge\nws2http_request_body_bytes {}",
            self.request_body_bytes.load(Relaxed)
        );
        let _ = writeln!(
            s,
            "# HELP ws2http_connection_procs Per-connection processes alive (--per-connection).\n# TYPE ws2http_connection_procs gauge\nws2http_connection_procs {}",
            self.procs_running.load(Relaxed).max(0)
        );
    }

    /// Resumable sessions: detached now, resumes by result.
    fn render_sessions(&self, s: &mut String) {
        let _ = writeln!(s, "# HELP ws2http_sessions_detached Resumable sessions whose client is away, waiting for a resume.\n# TYPE ws2http_sessions_detached gauge\nws2http_sessions_detached {}", self.sessions_detached.load(Relaxed).max(0));
        let _ = writeln!(s, "# HELP ws2http_resumes_total Session resumes, by result (ok, expired: 4410, bad: 4400).\n# TYPE ws2http_resumes_total counter");
        for (i, result) in ["ok", "expired", "bad"].iter().enumerate() {
            let _ = writeln!(s, "ws2http_resumes_total{{result=\"{result}\"}} {}", self.resumes[i].load(Relaxed));
        }
    }

    /// The script duration histogram.
    fn render_durations(&self, s: &mut String) {
        let _ = writeln!(s, "# HELP ws2http_script_duration_seconds How long event scripts ran.\n# TYPE ws2http_script_duration_seconds histogram");
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                s,
                "ws2http_script_duration_seconds_bucket{{le=\"{b}\"}} {}",
                self.duration_buckets[i].load(Relaxed)
            );
        }
        let count = self.duration_count.load(Relaxed);
        let _ = writeln!(s, "ws2http_script_duration_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(s, "ws2http_script_duration_seconds_sum {}", self.duration_sum_us.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(s, "ws2http_script_duration_seconds_count {count}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.event(1, 0, Duration::from_millis(3));
        m.event(1, 1, Duration::from_millis(300));
        add(&m.messages_in, 2);
        let text = m.render(5, 2);
        assert!(text.contains("ws2http_events_total{event=\"message\",outcome=\"ok\"} 1\n"));
        assert!(text.contains("ws2http_events_total{event=\"message\",outcome=\"failed\"} 1\n"));
        assert!(text.contains("ws2http_script_duration_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("ws2http_script_duration_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("ws2http_connections 5\n"));
        assert!(text.contains("ws2http_messages_in_total 2\n"));
        assert!(text.contains("# TYPE ws2http_outgoing_bytes gauge\nws2http_outgoing_bytes 0\n"));
    }
}
