//! Printing: stdout lines that survive a closed pipe, tables, durations, sizes, JSON
//! numbers.

use std::io::Write;
use std::time::Duration;

use serde_json::Value;

/// `s` with every control character (C0, DEL, C1) and every bidirectional-override
/// character written as `\uXXXX`: strings from files (`general.name`,
/// `adapter.task_name`, labels, tensor names) can then neither move the cursor, recolour
/// or clear the terminal, nor reorder what is shown. The escape is also valid inside a
/// JSON string, so JSON output stays JSON. The page (`www/main.js`, `clean`) escapes
/// the same set.
pub fn esc(s: &str) -> std::borrow::Cow<'_, str> {
    fn unsafe_char(c: char) -> bool {
        c.is_control()
            || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    }
    if !s.chars().any(unsafe_char) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out.into()
}

/// Prints one line on stdout, escaped with [`esc`] (every line riffle prints is one
/// line, whatever the strings from files in it hold). A closed pipe (`riffle ... |
/// head`) ends the program quietly with status 0; any other write error is a runtime
/// failure.
pub fn line(s: impl AsRef<str>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{}", esc(s.as_ref())).and_then(|_| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("riffle: <stdout>: {e}");
        std::process::exit(1);
    }
}

/// Column alignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Left.
    L,
    /// Right.
    R,
}

/// A text table with a header, a rule under it, and aligned columns.
pub fn table(header: &[&str], align: &[Align], rows: &[Vec<String>]) -> Vec<String> {
    let n = header.len();
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let fmt_row = |cells: &[String]| -> String {
        let mut s = String::new();
        for (i, w) in width.iter().enumerate() {
            let c = cells.get(i).map_or("", String::as_str);
            let pad = w.saturating_sub(c.chars().count());
            if i > 0 {
                s.push_str("  ");
            }
            match align.get(i).copied().unwrap_or(Align::L) {
                Align::L => {
                    s.push_str(c);
                    if i + 1 < n {
                        s.extend(std::iter::repeat_n(' ', pad));
                    }
                }
                Align::R => {
                    s.extend(std::iter::repeat_n(' ', pad));
                    s.push_str(c);
                }
            }
        }
        s.trim_end().to_string()
    };
    let head: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    let mut out = vec![fmt_row(&head)];
    let total: usize = width.iter().sum::<usize>() + 2 * n.saturating_sub(1);
    out.push("─".repeat(total));
    out.extend(rows.iter().map(|r| fmt_row(r)));
    out
}

/// A duration with a unit that keeps 2-3 significant digits.
pub fn duration(d: Duration) -> String {
    seconds(d.as_secs_f64())
}

/// A byte count, with the exact figure after a rounded one.
pub fn bytes_exact(n: usize) -> String {
    if n < 10 * 1024 {
        format!("{n} B")
    } else {
        format!("{} ({n} bytes)", bytes(n))
    }
}

/// Seconds with a readable unit.
pub fn seconds(s: f64) -> String {
    let ns = s * 1e9;
    if ns < 1_000.0 {
        format!("{ns:.0} ns")
    } else if ns < 1_000_000.0 {
        format!("{:.1} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{s:.2} s")
    }
}

/// A byte count: exact below 10 KiB, else KiB / MiB.
pub fn bytes(n: usize) -> String {
    let f = n as f64;
    if n < 10 * 1024 {
        format!("{n} B")
    } else if f < 1024.0 * 1024.0 {
        format!("{:.1} KiB", f / 1024.0)
    } else {
        format!("{:.1} MiB", f / (1024.0 * 1024.0))
    }
}

/// A JSON number for an `f32`, printed with the shortest digits that read back as the
/// same `f32` (`null` for NaN and infinities).
pub fn num(x: f32) -> Value {
    if !x.is_finite() {
        return Value::Null;
    }
    // The f32's shortest decimal, read as f64, prints back as the same short decimal.
    let short: f64 = x.to_string().parse().unwrap_or(x as f64);
    serde_json::Number::from_f64(short).map_or(Value::Null, Value::Number)
}

/// A JSON array of `f32`s.
pub fn nums(v: &[f32]) -> Value {
    Value::Array(v.iter().map(|x| num(*x)).collect())
}

/// A JSON number for an `f64` rounded to `digits` decimals.
pub fn round(x: f64, digits: i32) -> Value {
    let p = 10f64.powi(digits);
    let r: f64 = format!("{:.*}", digits.max(0) as usize, (x * p).round() / p)
        .parse()
        .unwrap_or(x);
    serde_json::Number::from_f64(r).map_or(Value::Null, Value::Number)
}

/// Median of a list of samples (seconds).
pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// A percentage with one decimal.
pub fn percent(num: usize, den: usize) -> String {
    if den == 0 {
        return "-".into();
    }
    format!("{:.1}%", 100.0 * num as f64 / den as f64)
}

/// True when stderr is a terminal (prompts, progress bars).
pub fn stderr_is_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}

/// A progress bar that stays hidden for its first second, then draws on stderr when stderr
/// is a terminal (long runs only, and never in pipes).
pub struct LazyBar {
    bar: indicatif::ProgressBar,
    start: std::time::Instant,
    shown: bool,
}

impl LazyBar {
    /// A bar of `len` steps with the message `msg`.
    pub fn new(len: u64, msg: &str) -> Self {
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(len),
            indicatif::ProgressDrawTarget::hidden(),
        );
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(msg.to_string());
        LazyBar {
            bar,
            start: std::time::Instant::now(),
            shown: false,
        }
    }

    /// One step done.
    pub fn inc(&mut self) {
        if !self.shown && self.start.elapsed().as_secs_f64() > 1.0 && stderr_is_terminal() {
            self.bar
                .set_draw_target(indicatif::ProgressDrawTarget::stderr());
            self.shown = true;
        }
        self.bar.inc(1);
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod esc_tests {
    use super::esc;

    #[test]
    fn control_and_bidi_characters_are_escaped() {
        assert_eq!(esc("plain – ünïcode"), "plain – ünïcode");
        assert_eq!(
            esc("a\x1b[2Jb\nc\r\u{7f}\u{9b}"),
            "a\\u001b[2Jb\\u000ac\\u000d\\u007f\\u009b"
        );
        assert_eq!(esc("x\u{202e}y\u{2066}"), "x\\u202ey\\u2066");
        // Still a JSON string after escaping.
        let j = format!("\"{}\"", esc("\u{7f}\u{202e}"));
        assert_eq!(
            serde_json::from_str::<String>(&j).unwrap(),
            "\u{7f}\u{202e}"
        );
    }
}
