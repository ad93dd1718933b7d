//! OpenAI's request and error schemas, as far as riffle serves them: parsed by hand from
//! `serde_json::Value` so every malformed field gets one clear OpenAI-style error
//! (`{"error": {"message", "type", "param", "code"}}`) naming it.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use riffle_host::generate::LogitAdjust;
use serde_json::{json, Map, Value};

/// An error answered in OpenAI's shape.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// One line saying what is wrong.
    pub message: String,
    /// OpenAI's `type`: `invalid_request_error`, `not_found_error`, `server_error`, ...
    pub kind: &'static str,
    /// A short machine-readable code (`model_not_found`, `context_length_exceeded`, ...),
    /// also the label of `riffle_errors_total`.
    pub code: &'static str,
    /// The request field at fault.
    pub param: Option<String>,
}

impl ApiError {
    /// A 400 `invalid_request_error`.
    pub fn invalid(code: &'static str, param: Option<&str>, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            code,
            param: param.map(str::to_string),
        }
    }
    /// A 500 `server_error`, `internal_error`.
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal_error",
            message,
        )
    }
    /// An error with any status.
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            message: message.into(),
            kind,
            code,
            param: None,
        }
    }
    /// The JSON body.
    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

/// A request body parsed as one JSON object.
///
/// # Errors
/// `invalid_json` for bytes that are not one JSON object.
pub fn object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::invalid(
            "invalid_json",
            None,
            "the request body must be a JSON object",
        )),
        Err(e) => Err(ApiError::invalid(
            "invalid_json",
            None,
            format!("the request body is not valid JSON: {e}"),
        )),
    }
}

fn wrong(param: &str, want: &str) -> ApiError {
    ApiError::invalid(
        "invalid_type",
        Some(param),
        format!("`{param}` must be {want}"),
    )
}

/// A required string field.
///
/// # Errors
/// A missing field or one of another type.
pub fn string(m: &Map<String, Value>, key: &str) -> Result<String, ApiError> {
    match m.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        None | Some(Value::Null) => Err(ApiError::invalid(
            "missing_required_parameter",
            Some(key),
            format!("`{key}` is required"),
        )),
        Some(_) => Err(wrong(key, "a string")),
    }
}

/// An optional number field within `[lo, hi]`.
///
/// # Errors
/// A value of another type or out of range.
pub fn number(
    m: &Map<String, Value>,
    key: &str,
    lo: f64,
    hi: f64,
) -> Result<Option<f64>, ApiError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            let v = n.as_f64().unwrap_or(f64::NAN);
            if !(lo..=hi).contains(&v) {
                return Err(ApiError::invalid(
                    "invalid_value",
                    Some(key),
                    format!("`{key}` must be between {lo} and {hi} (got {v})"),
                ));
            }
            Ok(Some(v))
        }
        Some(_) => Err(wrong(key, "a number")),
    }
}

/// An optional non-negative integer field.
///
/// # Errors
/// A value of another type, negative or fractional.
pub fn integer(m: &Map<String, Value>, key: &str) -> Result<Option<u64>, ApiError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| wrong(key, "a non-negative integer")),
        Some(_) => Err(wrong(key, "a non-negative integer")),
    }
}

/// An optional boolean field.
///
/// # Errors
/// A value of another type.
pub fn boolean(m: &Map<String, Value>, key: &str) -> Result<bool, ApiError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(wrong(key, "a boolean")),
    }
}

/// `stop`: a string or up to four strings (empty ones are ignored).
///
/// # Errors
/// Another type, or more than four.
pub fn stops(m: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let list = match m.get("stop") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => {
            let mut v = Vec::new();
            for x in a {
                match x {
                    Value::String(s) => v.push(s.clone()),
                    _ => return Err(wrong("stop", "a string or an array of strings")),
                }
            }
            v
        }
        Some(_) => return Err(wrong("stop", "a string or an array of strings")),
    };
    if list.len() > 4 {
        return Err(ApiError::invalid(
            "invalid_value",
            Some("stop"),
            "`stop` takes at most 4 sequences",
        ));
    }
    Ok(list.into_iter().filter(|s| !s.is_empty()).collect())
}

/// Rejects `n` other than 1 (one choice per request).
///
/// # Errors
/// `n` > 1.
pub fn single_choice(m: &Map<String, Value>) -> Result<(), ApiError> {
    match integer(m, "n")? {
        None | Some(1) => Ok(()),
        Some(_) => Err(ApiError::invalid(
            "invalid_value",
            Some("n"),
            "only `n` = 1 is supported",
        )),
    }
}

/// Most alternatives a request may ask for at each position (OpenAI's chat limit).
pub const MAX_TOP_LOGPROBS: u64 = 20;

/// Log probabilities asked for: `None` for none, else how many alternatives per token.
/// Chat: `logprobs: true` and `top_logprobs` (0 to 20, only with `logprobs`); completions:
/// `logprobs` as the number of alternatives (0 to 20; OpenAI stops at 5).
///
/// # Errors
/// Wrong types, a count over 20, `top_logprobs` without `logprobs: true`.
pub fn logprobs(m: &Map<String, Value>, chat: bool) -> Result<Option<usize>, ApiError> {
    let over = |key: &str, v: u64| {
        ApiError::invalid(
            "invalid_value",
            Some(key),
            format!("`{key}` must be at most {MAX_TOP_LOGPROBS} (got {v})"),
        )
    };
    if !chat {
        return match integer(m, "logprobs")? {
            Some(v) if v > MAX_TOP_LOGPROBS => Err(over("logprobs", v)),
            v => Ok(v.map(|v| v as usize)),
        };
    }
    let on = boolean(m, "logprobs")?;
    match integer(m, "top_logprobs")? {
        Some(v) if !on => Err(ApiError::invalid(
            "invalid_value",
            Some("top_logprobs"),
            format!("`top_logprobs` is {v}; it needs `logprobs: true`"),
        )),
        Some(v) if v > MAX_TOP_LOGPROBS => Err(over("top_logprobs", v)),
        v => Ok(on.then_some(v.unwrap_or(0) as usize)),
    }
}

/// Whether `response_format` asks for JSON mode (`{"type": "json_object"}`; other formats
/// are refused by [`refuse_unsupported`]).
pub fn json_mode(m: &Map<String, Value>) -> bool {
    m.get("response_format")
        .and_then(|f| f.get("type"))
        .and_then(Value::as_str)
        == Some("json_object")
}

/// `logit_bias` (token ids as strings, each to a value in -100..=100; ids below `vocab`),
/// `frequency_penalty` and `presence_penalty` (-2..=2).
///
/// # Errors
/// Wrong types, values out of range, ids that are not tokens of the model.
pub fn logit_adjust(m: &Map<String, Value>, vocab: usize) -> Result<LogitAdjust, ApiError> {
    let mut bias = Vec::new();
    match m.get("logit_bias") {
        None | Some(Value::Null) => {}
        Some(Value::Object(o)) => {
            for (k, v) in o {
                let id = k.parse::<u32>().ok().filter(|&id| (id as usize) < vocab);
                let Some(id) = id else {
                    return Err(ApiError::invalid(
                        "invalid_value",
                        Some("logit_bias"),
                        format!("`logit_bias` key {k:?} is not a token id below {vocab}"),
                    ));
                };
                let v = match v.as_f64() {
                    Some(v) if (-100.0..=100.0).contains(&v) => v,
                    _ => {
                        return Err(ApiError::invalid(
                            "invalid_value",
                            Some("logit_bias"),
                            format!("`logit_bias` values must be numbers in -100..100 (got {v})"),
                        ))
                    }
                };
                bias.push((id, v as f32));
            }
        }
        Some(_) => return Err(wrong("logit_bias", "an object of token ids to numbers")),
    }
    Ok(LogitAdjust {
        bias,
        frequency_penalty: number(m, "frequency_penalty", -2.0, 2.0)?.unwrap_or(0.0) as f32,
        presence_penalty: number(m, "presence_penalty", -2.0, 2.0)?.unwrap_or(0.0) as f32,
    })
}

/// Refuses request fields that would change the answer in ways riffle does not implement
/// (so a client never gets an answer that silently ignored them): a `response_format`
/// other than text or a JSON object (a JSON schema), tools or functions, `best_of` above 1,
/// a `suffix`. Their neutral values (`[]`, `1`, `""`), which many clients send by default,
/// are accepted.
///
/// # Errors
/// `unsupported_parameter`, naming the field.
pub fn refuse_unsupported(m: &Map<String, Value>) -> Result<(), ApiError> {
    let neutral = |key: &str, v: &Value| -> bool {
        match (key, v) {
            (_, Value::Null) => true,
            ("response_format", Value::Object(o)) => matches!(
                o.get("type").and_then(Value::as_str),
                Some("text" | "json_object")
            ),
            ("tools" | "functions", Value::Array(a)) => a.is_empty(),
            ("best_of", Value::Number(n)) => n.as_u64() == Some(1),
            ("suffix", Value::String(s)) => s.is_empty(),
            _ => false,
        }
    };
    for key in ["response_format", "tools", "functions", "best_of", "suffix"] {
        if let Some(v) = m.get(key) {
            if !neutral(key, v) {
                return Err(ApiError::invalid(
                    "unsupported_parameter",
                    Some(key),
                    format!("`{key}` = {v} is not supported by riffle serve"),
                ));
            }
        }
    }
    Ok(())
}

/// `messages`: role and text content of each (content as a string, or an array of
/// `{"type": "text", "text"}` parts).
///
/// # Errors
/// A missing or empty list, a message without a known role or text content.
pub fn messages(m: &Map<String, Value>) -> Result<Vec<(String, String)>, ApiError> {
    let Some(list) = m.get("messages") else {
        return Err(ApiError::invalid(
            "missing_required_parameter",
            Some("messages"),
            "`messages` is required",
        ));
    };
    let Value::Array(list) = list else {
        return Err(wrong("messages", "an array of messages"));
    };
    if list.is_empty() {
        return Err(ApiError::invalid(
            "invalid_value",
            Some("messages"),
            "`messages` must not be empty",
        ));
    }
    let mut out = Vec::new();
    for (i, msg) in list.iter().enumerate() {
        let p = format!("messages[{i}]");
        let Value::Object(o) = msg else {
            return Err(wrong(&p, "an object with `role` and `content`"));
        };
        let role = match o.get("role") {
            Some(Value::String(r))
                if matches!(r.as_str(), "system" | "user" | "assistant" | "developer") =>
            {
                if r == "developer" {
                    "system".to_string()
                } else {
                    r.clone()
                }
            }
            _ => {
                return Err(ApiError::invalid(
                    "invalid_value",
                    Some(&format!("{p}.role")),
                    format!("`{p}.role` must be `system`, `user` or `assistant`"),
                ))
            }
        };
        let content = match o.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => {
                let mut s = String::new();
                for part in parts {
                    match (part.get("type"), part.get("text")) {
                        (Some(Value::String(t)), Some(Value::String(x))) if t == "text" => {
                            s.push_str(x)
                        }
                        _ => {
                            return Err(ApiError::invalid(
                                "invalid_value",
                                Some(&format!("{p}.content")),
                                "only text content parts are supported",
                            ))
                        }
                    }
                }
                s
            }
            _ => return Err(wrong(&format!("{p}.content"), "a string")),
        };
        out.push((role, content));
    }
    Ok(out)
}

/// A completion's `prompt`: text, or token ids.
#[derive(Debug, Clone)]
pub enum Prompt {
    /// Text to tokenize.
    Text(String),
    /// Token ids as given.
    Ids(Vec<u32>),
}

/// `invalid_value` naming `param` for the first of `ids` that is not below `vocab`.
///
/// # Errors
/// An id outside the vocabulary.
pub fn ids_in_vocab(ids: &[u32], vocab: usize, param: &str) -> Result<(), ApiError> {
    match ids.iter().find(|&&i| i as usize >= vocab) {
        Some(bad) => Err(ApiError::invalid(
            "invalid_value",
            Some(param),
            format!("token id {bad} is outside the vocabulary of {vocab} tokens"),
        )),
        None => Ok(()),
    }
}

/// `prompt`: a string, a one-string array, an array of token ids, or a one-element array of
/// token-id arrays (how batching clients such as lm-eval-harness send one tokenized prompt).
///
/// # Errors
/// A missing prompt, several prompts, another type.
pub fn prompt(m: &Map<String, Value>) -> Result<Prompt, ApiError> {
    let value = match m.get("prompt") {
        Some(Value::Array(a)) if a.len() == 1 && a[0].is_array() => a.first(),
        Some(Value::Array(a))
            if a.len() > 1 && (a.iter().all(Value::is_array) || a.iter().all(Value::is_string)) =>
        {
            return Err(ApiError::invalid(
                "invalid_value",
                Some("prompt"),
                "one prompt per request is supported",
            ))
        }
        v => v,
    };
    match value {
        Some(Value::String(s)) => Ok(Prompt::Text(s.clone())),
        Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
            Ok(Prompt::Text(a[0].as_str().unwrap_or_default().to_string()))
        }
        Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_number) => {
            let mut ids = Vec::with_capacity(a.len());
            for x in a {
                let id = x
                    .as_u64()
                    .and_then(|v| u32::try_from(v).ok())
                    .ok_or_else(|| wrong("prompt", "text or an array of token ids"))?;
                ids.push(id);
            }
            Ok(Prompt::Ids(ids))
        }
        None | Some(Value::Null) => Err(ApiError::invalid(
            "missing_required_parameter",
            Some("prompt"),
            "`prompt` is required",
        )),
        Some(_) => Err(wrong("prompt", "text or an array of token ids")),
    }
}

/// `input` of embeddings: one text or an array of texts.
///
/// # Errors
/// A missing input, another type, an empty list.
pub fn inputs(m: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    match m.get("input") {
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_string) => Ok(a
            .iter()
            .map(|x| x.as_str().unwrap_or_default().to_string())
            .collect()),
        None | Some(Value::Null) => Err(ApiError::invalid(
            "missing_required_parameter",
            Some("input"),
            "`input` is required",
        )),
        Some(_) => Err(wrong("input", "a string or a non-empty array of strings")),
    }
}
