//! # riffle-host
//!
//! What every `std` front end of riffle shares (the `riffle` CLI, its server, the wasm
//! bindings), so those stay thin: rendering a model file's own chat template, and the
//! generation loop of a causal model (prefill in chunks, sampling, stop tokens, text
//! streamed as it is made without ever splitting a UTF-8 character).
//!
//! ```
//! use riffle_host::chat::{ChatTemplate, Message};
//! let t = ChatTemplate::new(
//!     "{% for m in messages %}<{{ m.role }}>{{ m.content }}</s>{% endfor %}\
//!      {% if add_generation_prompt %}<assistant>{% endif %}",
//!     "<s>",
//!     "</s>",
//! )?;
//! let text = t.render(&[Message::user("Hi")], true)?;
//! assert_eq!(text, "<user>Hi</s><assistant>");
//! # Ok::<(), riffle_host::chat::TemplateError>(())
//! ```

pub mod chat;
pub mod generate;
pub mod json;
pub mod perplexity;
pub mod text;
pub mod threads;
