//! Counters of a server, rendered in Prometheus' text format (`GET /metrics`).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Totals of one model (the base's id or an adapter's task).
#[derive(Debug, Default, Clone)]
struct PerModel {
    requests: u64,
    prompt_tokens: u64,
    cached_tokens: u64,
    completion_tokens: u64,
    prompt_seconds: f64,
    decode_seconds: f64,
}

/// What one finished request adds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// Prompt tokens of the request.
    pub prompt_tokens: usize,
    /// Of those, tokens whose keys and values came from the prompt cache.
    pub cached_tokens: usize,
    /// Generated tokens.
    pub completion_tokens: usize,
    /// Seconds spent reading the (uncached) prompt.
    pub prompt_seconds: f64,
    /// Seconds spent generating.
    pub decode_seconds: f64,
}

/// The server's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    models: Mutex<BTreeMap<String, PerModel>>,
    responses: Mutex<BTreeMap<(&'static str, u16), u64>>,
    errors: Mutex<BTreeMap<&'static str, u64>>,
    /// Requests waiting for a worker.
    pub queued: AtomicUsize,
    /// Requests running.
    pub running: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Escapes a label value.
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// Counts a finished request for `model`.
    pub fn finished(&self, model: &str, u: Usage) {
        let mut m = lock(&self.models);
        let e = m.entry(model.to_string()).or_default();
        e.requests += 1;
        e.prompt_tokens += u.prompt_tokens as u64;
        e.cached_tokens += u.cached_tokens as u64;
        e.completion_tokens += u.completion_tokens as u64;
        e.prompt_seconds += u.prompt_seconds;
        e.decode_seconds += u.decode_seconds;
    }

    /// Counts a response of `endpoint` with `status`.
    pub fn response(&self, endpoint: &'static str, status: u16) {
        *lock(&self.responses).entry((endpoint, status)).or_default() += 1;
    }

    /// Counts an error by its code.
    pub fn error(&self, code: &'static str) {
        *lock(&self.errors).entry(code).or_default() += 1;
    }

    /// The text format, with `resident` adapters, `slots` decoder slots and the process's
    /// resident memory.
    pub fn render(&self, resident: usize, slots: usize) -> String {
        let mut s = String::new();
        let models = lock(&self.models).clone();
        let mut family = |name: &str, kind: &str, help: &str, get: &dyn Fn(&PerModel) -> String| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (m, v) in &models {
                let _ = writeln!(s, "{name}{{model=\"{}\"}} {}", label(m), get(v));
            }
        };
        family(
            "riffle_requests_total",
            "counter",
            "Generation and embedding requests finished, by model (base id or adapter task).",
            &|v| v.requests.to_string(),
        );
        family(
            "riffle_prompt_tokens_total",
            "counter",
            "Prompt tokens (embedding inputs included), by model.",
            &|v| v.prompt_tokens.to_string(),
        );
        family(
            "riffle_prompt_cached_tokens_total",
            "counter",
            "Prompt tokens whose keys and values came from the prompt cache, by model.",
            &|v| v.cached_tokens.to_string(),
        );
        family(
            "riffle_completion_tokens_total",
            "counter",
            "Generated tokens, by model.",
            &|v| v.completion_tokens.to_string(),
        );
        family(
            "riffle_prompt_seconds_total",
            "counter",
            "Seconds spent reading prompts, by model.",
            &|v| format!("{:.6}", v.prompt_seconds),
        );
        family(
            "riffle_decode_seconds_total",
            "counter",
            "Seconds spent generating, by model.",
            &|v| format!("{:.6}", v.decode_seconds),
        );
        family(
            "riffle_prompt_tokens_per_second",
            "gauge",
            "Prompt tokens read per second of prompt time (uncached tokens), by model.",
            &|v| {
                let t = (v.prompt_tokens - v.cached_tokens) as f64;
                format!(
                    "{:.3}",
                    if v.prompt_seconds > 0.0 {
                        t / v.prompt_seconds
                    } else {
                        0.0
                    }
                )
            },
        );
        family(
            "riffle_decode_tokens_per_second",
            "gauge",
            "Tokens generated per second of decode time, by model.",
            &|v| {
                let t = v.completion_tokens as f64;
                format!(
                    "{:.3}",
                    if v.decode_seconds > 0.0 {
                        t / v.decode_seconds
                    } else {
                        0.0
                    }
                )
            },
        );
        let _ = writeln!(
            s,
            "# HELP riffle_http_responses_total HTTP responses, by endpoint and status.\n\
             # TYPE riffle_http_responses_total counter"
        );
        for ((e, st), n) in lock(&self.responses).iter() {
            let _ = writeln!(
                s,
                "riffle_http_responses_total{{endpoint=\"{e}\",status=\"{st}\"}} {n}"
            );
        }
        let _ = writeln!(
            s,
            "# HELP riffle_errors_total Error answers, by kind (the error's code).\n\
             # TYPE riffle_errors_total counter"
        );
        for (k, n) in lock(&self.errors).iter() {
            let _ = writeln!(s, "riffle_errors_total{{kind=\"{k}\"}} {n}");
        }
        let gauges = [
            (
                "riffle_queue_depth",
                "Requests waiting for a worker.",
                self.queued.load(Ordering::Relaxed),
            ),
            (
                "riffle_requests_running",
                "Requests being computed.",
                self.running.load(Ordering::Relaxed),
            ),
            (
                "riffle_adapters_resident",
                "Adapters resident (loadable by task name).",
                resident,
            ),
            (
                "riffle_slots",
                "Decoder slots (requests computed at once).",
                slots,
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        if let Some(rss) = resident_bytes() {
            let _ = writeln!(
                s,
                "# HELP process_resident_memory_bytes Resident memory of the server.\n\
                 # TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {rss}"
            );
        }
        s
    }
}

/// Appends the batch thread's counters (`[steps, tokens]`: their ratio is the mean number
/// of requests decoded together; both 0 without batching).
pub fn render_batching(s: &mut String, [steps, tokens]: [u64; 2]) {
    let counters = [
        (
            "riffle_decode_batches_total",
            "Decoding steps that read every running request's next token together.",
            steps,
        ),
        (
            "riffle_decode_batched_tokens_total",
            "Tokens those steps decoded (per step: the requests decoded together).",
            tokens,
        ),
    ];
    for (name, help, v) in counters {
        let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
    }
}

/// The process's resident memory (Linux `/proc/self/statm`), in bytes.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
