//! JSON mode: a byte-at-a-time recogniser of one JSON object (RFC 8259), small enough to be
//! copied for every candidate token, so that generation can keep only the tokens whose
//! bytes extend what was generated into a prefix of a valid object
//! ([`crate::generate::GenerateOptions::json_object`]).
//!
//! The object starts at the first byte and nothing follows it. Whitespace between tokens is
//! allowed in runs of at most [`MAX_WHITESPACE_RUN`] bytes and
//! nesting to [`MAX_DEPTH`] levels: a model may otherwise fill its budget with blank lines
//! or open brackets without end, which no caller wants from a JSON mode.
//!
//! ```
//! use riffle_host::json::JsonObject;
//! let mut j = JsonObject::new();
//! assert!(j.push_all(br#"{"a": [1, -2.5e3, "x\u00e9"], "b": null}"#));
//! assert!(j.is_complete());
//! assert!(!j.clone().push_all(b" "), "nothing may follow the object");
//! let mut k = JsonObject::new();
//! assert!(k.push_all(br#"{"a": tr"#) && !k.is_complete());
//! assert!(!k.clone().push_all(b"x"), "`trx` is no literal");
//! assert!(!JsonObject::new().push_all(b"[1]"), "the top level is an object");
//! ```

/// Deepest nesting of objects and arrays accepted.
pub const MAX_DEPTH: u32 = 64;
/// Longest run of whitespace accepted between tokens.
pub const MAX_WHITESPACE_RUN: u8 = 16;

/// Where in the grammar the next byte falls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// Before the top-level object.
    Start,
    /// A value is expected (after `:`, `,` in an array, or `[`).
    Value,
    /// After `[`: a value or `]`.
    ValueOrClose,
    /// After `{`: a key or `}`.
    KeyOrClose,
    /// After `,` in an object: a key.
    Key,
    /// After a key: `:`.
    Colon,
    /// After a value inside a container: `,` or the container's close.
    CommaOrClose,
    /// Inside a string (`key` says whether it is an object key).
    Str { key: bool },
    /// After a backslash in a string.
    Escape { key: bool },
    /// Inside `\uXXXX`, `left` hex digits to go.
    Unicode { key: bool, left: u8 },
    /// Inside a number.
    Num(Num),
    /// Inside `true`, `false` or `null`: the literal and how many bytes were read.
    Literal { word: &'static [u8], read: u8 },
    /// The object is complete.
    Done,
}

/// The parts of a number (`-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Num {
    /// After `-`.
    Minus,
    /// After a leading `0`.
    Zero,
    /// In the integer digits.
    Int,
    /// After `.`.
    Dot,
    /// In the fraction digits.
    Frac,
    /// After `e` or `E`.
    Exp,
    /// After the exponent's sign.
    ExpSign,
    /// In the exponent digits.
    ExpDigits,
}

impl Num {
    /// Whether a number may end here.
    fn complete(self) -> bool {
        matches!(self, Num::Zero | Num::Int | Num::Frac | Num::ExpDigits)
    }
}

/// A recogniser of one JSON object, fed one byte at a time; `Copy`, so trying a candidate
/// token costs a copy of a few words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonObject {
    at: At,
    /// Open containers, innermost at bit `depth - 1`: 1 for an object, 0 for an array.
    kinds: u64,
    depth: u32,
    /// Whitespace bytes read in a row.
    blank: u8,
}

impl Default for JsonObject {
    fn default() -> Self {
        Self::new()
    }
}

impl JsonObject {
    /// Nothing read yet.
    pub fn new() -> Self {
        JsonObject {
            at: At::Start,
            kinds: 0,
            depth: 0,
            blank: 0,
        }
    }

    /// Whether the object is complete (nothing more may follow).
    pub fn is_complete(&self) -> bool {
        self.at == At::Done
    }

    /// Reads `bytes`; `false` (the state then undefined) as soon as one cannot continue a
    /// JSON object.
    pub fn push_all(&mut self, bytes: &[u8]) -> bool {
        bytes.iter().all(|&b| self.push(b))
    }

    /// Whether the innermost open container is an object.
    fn in_object(&self) -> bool {
        self.depth > 0 && (self.kinds >> (self.depth - 1)) & 1 == 1
    }

    fn open(&mut self, object: bool) -> bool {
        if self.depth >= MAX_DEPTH {
            return false;
        }
        self.kinds = (self.kinds & !(1 << self.depth)) | (u64::from(object) << self.depth);
        self.depth += 1;
        self.at = if object {
            At::KeyOrClose
        } else {
            At::ValueOrClose
        };
        true
    }

    fn close(&mut self, object: bool) -> bool {
        if self.depth == 0 || self.in_object() != object {
            return false;
        }
        self.depth -= 1;
        self.after_value();
        true
    }

    /// A value ended: what follows it.
    fn after_value(&mut self) {
        self.at = if self.depth == 0 {
            At::Done
        } else {
            At::CommaOrClose
        };
    }

    /// The first byte of a value.
    fn value(&mut self, b: u8) -> bool {
        self.at = match b {
            b'{' => return self.open(true),
            b'[' => return self.open(false),
            b'"' => At::Str { key: false },
            b'-' => At::Num(Num::Minus),
            b'0' => At::Num(Num::Zero),
            b'1'..=b'9' => At::Num(Num::Int),
            b't' => At::Literal {
                word: b"true",
                read: 1,
            },
            b'f' => At::Literal {
                word: b"false",
                read: 1,
            },
            b'n' => At::Literal {
                word: b"null",
                read: 1,
            },
            _ => return false,
        };
        true
    }

    /// Reads one byte; `false` (the state then undefined) if it cannot continue a JSON
    /// object.
    pub fn push(&mut self, b: u8) -> bool {
        let blank = matches!(b, b' ' | b'\t' | b'\n' | b'\r');
        let between = !matches!(
            self.at,
            At::Str { .. }
                | At::Escape { .. }
                | At::Unicode { .. }
                | At::Literal { .. }
                | At::Num(_)
        );
        if blank && between {
            // The object starts at the first byte and nothing follows it.
            if matches!(self.at, At::Start | At::Done) || self.blank >= MAX_WHITESPACE_RUN {
                return false;
            }
            self.blank += 1;
            return true;
        }
        self.blank = 0;
        match self.at {
            At::Done => false,
            At::Start => b == b'{' && self.open(true),
            At::Value => self.value(b),
            At::ValueOrClose => b == b']' && self.close(false) || b != b']' && self.value(b),
            At::KeyOrClose | At::Key => {
                if b == b'"' {
                    self.at = At::Str { key: true };
                    true
                } else {
                    self.at == At::KeyOrClose && b == b'}' && self.close(true)
                }
            }
            At::Colon => {
                self.at = At::Value;
                b == b':'
            }
            At::CommaOrClose => match b {
                b',' => {
                    self.at = if self.in_object() { At::Key } else { At::Value };
                    true
                }
                b'}' => self.close(true),
                b']' => self.close(false),
                _ => false,
            },
            At::Str { key } => match b {
                b'"' => {
                    if key {
                        self.at = At::Colon;
                    } else {
                        self.after_value();
                    }
                    true
                }
                b'\\' => {
                    self.at = At::Escape { key };
                    true
                }
                // Control characters must be escaped; other bytes (UTF-8 included) pass.
                0..=0x1F => false,
                _ => true,
            },
            At::Escape { key } => {
                self.at = match b {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => At::Str { key },
                    b'u' => At::Unicode { key, left: 4 },
                    _ => return false,
                };
                true
            }
            At::Unicode { key, left } => {
                if !b.is_ascii_hexdigit() {
                    return false;
                }
                self.at = if left == 1 {
                    At::Str { key }
                } else {
                    At::Unicode {
                        key,
                        left: left - 1,
                    }
                };
                true
            }
            At::Literal { word, read } => {
                if word.get(read as usize) != Some(&b) {
                    return false;
                }
                if read as usize + 1 == word.len() {
                    self.after_value();
                } else {
                    self.at = At::Literal {
                        word,
                        read: read + 1,
                    };
                }
                true
            }
            At::Num(n) => {
                let next = match (n, b) {
                    (Num::Minus, b'0') => Num::Zero,
                    (Num::Minus, b'1'..=b'9') => Num::Int,
                    (Num::Int, b'0'..=b'9') => Num::Int,
                    (Num::Zero | Num::Int, b'.') => Num::Dot,
                    (Num::Dot | Num::Frac, b'0'..=b'9') => Num::Frac,
                    (Num::Zero | Num::Int | Num::Frac, b'e' | b'E') => Num::Exp,
                    (Num::Exp, b'+' | b'-') => Num::ExpSign,
                    (Num::Exp | Num::ExpSign | Num::ExpDigits, b'0'..=b'9') => Num::ExpDigits,
                    _ => {
                        // The number ends here; the byte belongs to what follows it.
                        if !n.complete() {
                            return false;
                        }
                        self.after_value();
                        return self.push(b);
                    }
                };
                self.at = At::Num(next);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{JsonObject, MAX_DEPTH, MAX_WHITESPACE_RUN};

    fn accepts(s: &str) -> bool {
        let mut j = JsonObject::new();
        j.push_all(s.as_bytes()) && j.is_complete()
    }

    fn prefix_ok(s: &str) -> bool {
        JsonObject::new().push_all(s.as_bytes())
    }

    #[test]
    fn valid_objects_are_accepted_and_complete() {
        for s in [
            "{}",
            r#"{"a":1}"#,
            "{ \"a\" : [ ] , \"b\" : { } }",
            r#"{"n": [0, -0, 12, -3.25, 1e5, 2E-3, 0.5e+10, 7]}"#,
            r#"{"s": "q\"\\\/\b\f\n\r\t\u00FFé😀", "t": true, "f": false, "z": null}"#,
            r#"{"deep": [[[{"x": [1, {"y": "z"}]}]]]}"#,
            "{\n  \"a\": 1\n}",
        ] {
            assert!(accepts(s), "{s}");
            assert!(serde_json::from_str::<serde_json::Value>(s).is_ok(), "{s}");
        }
    }

    #[test]
    fn invalid_input_is_refused_at_the_first_bad_byte() {
        for (s, ok_upto) in [
            ("[1]", 0),
            ("x", 0),
            (r#"{"a" 1}"#, 5),
            (r#"{"a": 01}"#, 7),
            (r#"{"a": 1.}"#, 8),
            (r#"{"a": .5}"#, 6),
            (r#"{"a": -}"#, 7),
            (r#"{"a": 1e}"#, 8),
            (r#"{"a": tru}"#, 9),
            (r#"{"a": nulx"#, 9),
            (r#"{"a": "\x"}"#, 8),
            (r#"{"a": "\u12G4"}"#, 11),
            (r#"{"a": [1,]}"#, 9),
            (r#"{"a": 1,}"#, 8),
            (r#"{"a": 1]"#, 7),
            (r#"{"a": [1}"#, 8),
            (r#"{1: 2}"#, 1),
            ("{\"a\n\": 1}", 3),
            (r#"{} {}"#, 2),
            (r#"{}x"#, 2),
        ] {
            let mut j = JsonObject::new();
            let bytes = s.as_bytes();
            assert!(j.push_all(&bytes[..ok_upto]), "{s}: prefix of {ok_upto}");
            assert!(!j.push(bytes[ok_upto]), "{s}: byte {ok_upto} accepted");
            assert!(serde_json::from_str::<serde_json::Value>(s).map_or(true, |v| !v.is_object()));
        }
        // Prefixes of valid objects are accepted and incomplete.
        let s = r#"{"a": [1, 2.5e-3, "x", {"b": null}], "c": true}"#;
        for n in 0..s.len() {
            let mut j = JsonObject::new();
            assert!(j.push_all(&s.as_bytes()[..n]) && !j.is_complete(), "{n}");
        }
    }

    #[test]
    fn whitespace_runs_and_depth_are_bounded() {
        let run = " ".repeat(MAX_WHITESPACE_RUN as usize);
        assert!(accepts(&format!("{{{run}\"a\":{run}1{run}}}")));
        assert!(!prefix_ok(&format!("{{{run} ")));
        assert!(!prefix_ok(" {"), "the object starts at once");
        // Whitespace inside strings is content, not a run.
        assert!(accepts(&format!("{{\"a\": \"{run}{run}\"}}")));
        let depth = MAX_DEPTH as usize;
        let nested = format!(
            "{{\"a\":{}{}}}",
            "[".repeat(depth - 1),
            "]".repeat(depth - 1)
        );
        assert!(accepts(&nested));
        assert!(!prefix_ok(&format!("{{\"a\":{}", "[".repeat(depth))));
    }

    /// A xorshift generator for the random documents.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    fn value(r: &mut Rng, depth: u32, out: &mut String) {
        const SCALARS: [&str; 12] = [
            "0",
            "-1",
            "12.5",
            "3e-2",
            "-0.0E+7",
            "true",
            "false",
            "null",
            "\"\"",
            "\"a b\"",
            "\"\\u00e9\\n\"",
            "\"é\"",
        ];
        match if depth > 3 { 2 } else { r.below(4) } {
            0 => object(r, depth + 1, out),
            1 => {
                out.push('[');
                for i in 0..r.below(4) {
                    if i > 0 {
                        out.push_str([",", ", "][r.below(2)]);
                    }
                    value(r, depth + 1, out);
                }
                out.push(']');
            }
            _ => out.push_str(SCALARS[r.below(SCALARS.len())]),
        }
    }

    fn object(r: &mut Rng, depth: u32, out: &mut String) {
        out.push('{');
        for i in 0..r.below(4) {
            if i > 0 {
                out.push(',');
            }
            out.push_str(["\"k\":", "\"key\" : ", "\n\"\":"][r.below(3)]);
            value(r, depth, out);
        }
        out.push('}');
    }

    #[test]
    fn agrees_with_serde_json_on_random_documents() {
        // Random objects, half of them with one byte replaced, inserted or removed; the
        // recogniser accepts exactly what serde_json parses as an object (no whitespace
        // before or after it: the object starts at the first byte, generation stops at
        // its end).
        let mut r = Rng(0x2545_F491_4F6C_DD1D);
        let (mut valid, mut invalid) = (0, 0);
        for _ in 0..20_000 {
            let mut s = String::new();
            object(&mut r, 0, &mut s);
            let mut bytes = s.into_bytes();
            if r.below(2) == 0 {
                let at = r.below(bytes.len());
                let alphabet = b"{}[],:\"\\0-.eE+tnu x1";
                let b = alphabet[r.below(alphabet.len())];
                match r.below(3) {
                    0 => bytes[at] = b,
                    1 => bytes.insert(at, b),
                    _ => {
                        bytes.remove(at);
                    }
                }
            }
            let Ok(s) = String::from_utf8(bytes) else {
                continue;
            };
            let serde = serde_json::from_str::<serde_json::Value>(&s).is_ok_and(|v| v.is_object())
                && !s.ends_with(char::is_whitespace)
                && !s.starts_with(char::is_whitespace);
            assert_eq!(accepts(&s), serde, "{s:?}");
            if serde {
                valid += 1;
            } else {
                invalid += 1;
            }
        }
        assert!(
            valid > 5000 && invalid > 5000,
            "{valid} valid, {invalid} invalid"
        );
    }
}
