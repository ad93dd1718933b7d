//! The CLI's one error type: a message that already names the file, and an exit status.
//!
//! Bad input (a missing, unreadable or malformed file, a wrong base, an unknown task, an
//! input of the wrong length) exits with status 2; a failure while running exits with 1.

use std::fmt;

use riffle_core::gguf::Gguf;

/// Exit status of a bad input.
pub const EXIT_INPUT: i32 = 2;
/// Exit status of a runtime failure.
pub const EXIT_RUNTIME: i32 = 1;

/// An error ready to print as `riffle: <message>`.
#[derive(Debug)]
pub struct Fail {
    /// Exit status.
    pub code: i32,
    /// One line: `<file>: <problem>`.
    pub message: String,
}

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Fail {}

/// Shorthand for the CLI's results.
pub type Result<T, E = Fail> = std::result::Result<T, E>;

/// A bad input, named by `what` (a file name, `<stdin>:3`, `--task`).
pub fn bad(what: impl fmt::Display, problem: impl fmt::Display) -> Fail {
    Fail {
        code: EXIT_INPUT,
        message: format!("{what}: {problem}"),
    }
}

/// A failure while running (an output file that cannot be written, a core error on
/// inputs already validated).
pub fn runtime(what: impl fmt::Display, problem: impl fmt::Display) -> Fail {
    Fail {
        code: EXIT_RUNTIME,
        message: format!("{what}: {problem}"),
    }
}

/// The core's message for `err`, with the names of the tensors it points at in `file`
/// (the core's errors carry table indices, not names).
pub fn describe(err: riffle_core::Error, file: Option<&Gguf<'_>>) -> String {
    use riffle_core::Error as E;
    let base = err.to_string();
    let index = match err {
        E::UnknownTensorType { tensor, .. }
        | E::TensorOutOfRange { tensor }
        | E::Misaligned { tensor }
        | E::UnknownTensor { tensor }
        | E::ShapeMismatch { tensor }
        | E::RotatedReplacement { tensor } => Some(tensor),
        _ => None,
    };
    let name = index
        .and_then(|i| file?.tensor(i as usize))
        .map(|t| t.name());
    match name {
        Some(n) if !n.is_empty() => format!("{base} [tensor {} is `{n}`]", index.unwrap_or(0)),
        _ => base,
    }
}

/// A bad input from a core error on `file`.
pub fn core_bad(what: impl fmt::Display, err: riffle_core::Error, file: Option<&Gguf<'_>>) -> Fail {
    bad(what, describe(err, file))
}

/// Why [`riffle_core::Error::UnsupportedModel`] was returned for the model `g`: an
/// architecture the runtime does not know, or a known one with settings it does not
/// support (a pooling type, a causal `bert`, ...; not "architecture mlp is not supported").
pub fn unsupported_model(g: &Gguf<'_>) -> String {
    const KNOWN: [&str; 4] = ["mlp", "cnn", "bert", "llama"];
    match g.get_str(riffle_core::gguf::KEY_ARCHITECTURE) {
        Ok(a) if KNOWN.contains(&a) => format!(
            "this `{a}` model uses settings this runtime does not support (see its `{a}.*` keys)"
        ),
        a => format!(
            "architecture `{}` is not supported by this runtime",
            a.unwrap_or("?")
        ),
    }
}
