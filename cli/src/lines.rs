//! Lines of standard input with a length cap.
//!
//! `repl` and `run --stdin` read one input per line. A line longer than [`MAX_LINE`]
//! bytes is skipped to its end without being stored (`/dev/zero` or a file without
//! newlines costs at most [`MAX_LINE`] bytes of memory), and a line that is not UTF-8
//! is reported; both are bad lines (`<stdin>:N: ...`) after which reading goes on.

use std::io::BufRead;

/// Longest line accepted, in bytes (without the line end): 1 MiB.
pub const MAX_LINE: usize = 1 << 20;

/// One line of input.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A UTF-8 line, without its line end (`\n` or `\r\n`).
    Text(String),
    /// A line longer than [`MAX_LINE`] bytes (skipped).
    TooLong,
    /// A line that is not UTF-8.
    NotUtf8,
}

impl Line {
    /// The text, or the problem to report for the line.
    pub fn text(self) -> Result<String, String> {
        match self {
            Line::Text(s) => Ok(s),
            Line::TooLong => Err(format!("line is longer than {} bytes (skipped)", MAX_LINE)),
            Line::NotUtf8 => Err("line is not valid UTF-8 text".into()),
        }
    }
}

/// Reads lines from `input` with [`MAX_LINE`] as the cap.
pub struct Lines<R> {
    input: R,
    buf: Vec<u8>,
    skip_long: bool,
}

impl<R: BufRead> Lines<R> {
    /// Lines of `input`; a line past the cap is read to its end and skipped, so the
    /// next line can be read (`repl`: the session goes on).
    pub fn new(input: R) -> Self {
        Lines {
            input,
            buf: Vec::new(),
            skip_long: true,
        }
    }

    /// Lines of `input`; a line past the cap is reported as soon as the cap is passed,
    /// without reading on (`run --stdin`, which stops at a bad line: an endless line
    /// such as `/dev/zero` ends the run at once).
    pub fn stopping(input: R) -> Self {
        Lines {
            skip_long: false,
            ..Lines::new(input)
        }
    }

    /// The next line, `None` at the end of the input.
    ///
    /// # Errors
    /// A read error of the input.
    pub fn next_line(&mut self) -> std::io::Result<Option<Line>> {
        self.buf.clear();
        let mut too_long = false;
        let mut any = false;
        loop {
            let chunk = match self.input.fill_buf() {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if chunk.is_empty() {
                break; // End of input: the last line had no line end.
            }
            any = true;
            let (part, used, end) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (&chunk[..i], i + 1, true),
                None => (chunk, chunk.len(), false),
            };
            if !too_long {
                if self.buf.len() + part.len() > MAX_LINE {
                    too_long = true;
                    self.buf = Vec::new(); // Give the memory back.
                    if !self.skip_long {
                        return Ok(Some(Line::TooLong));
                    }
                } else {
                    self.buf.extend_from_slice(part);
                }
            }
            self.input.consume(used);
            if end {
                break;
            }
        }
        if !any {
            return Ok(None);
        }
        if too_long {
            return Ok(Some(Line::TooLong));
        }
        if self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        Ok(Some(
            match String::from_utf8(std::mem::take(&mut self.buf)) {
                Ok(s) => Line::Text(s),
                Err(_) => Line::NotUtf8,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(bytes: &[u8]) -> Vec<Line> {
        let mut r = Lines::new(std::io::BufReader::with_capacity(7, bytes));
        let mut out = Vec::new();
        while let Some(l) = r.next_line().unwrap() {
            out.push(l);
        }
        out
    }

    #[test]
    fn lines_caps_and_bad_utf8() {
        let t = |s: &str| Line::Text(s.into());
        assert_eq!(all(b""), vec![]);
        assert_eq!(
            all(b"a\nbc\r\n\nlast"),
            vec![t("a"), t("bc"), t(""), t("last")]
        );
        let mut long = vec![b'x'; MAX_LINE + 1];
        long.extend(b"\nok\n");
        assert_eq!(all(&long), vec![Line::TooLong, t("ok")]);
        let mut exact = vec![b'y'; MAX_LINE];
        exact.push(b'\n');
        assert_eq!(all(&exact).len(), 1);
        assert_eq!(all(b"\xff\xfe\nok"), vec![Line::NotUtf8, t("ok")]);
        // Stopping: an endless line is reported after the cap, not read to its end.
        let mut endless = Lines::stopping(std::io::BufReader::new(std::io::repeat(0)));
        assert_eq!(endless.next_line().unwrap(), Some(Line::TooLong));
    }
}
