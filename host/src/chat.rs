//! Chat templates: the Jinja template a model file carries in `tokenizer.chat_template`,
//! rendered by a real Jinja engine (minijinja) for a list of messages, as Hugging Face's
//! `apply_chat_template` and llama.cpp do. Rendering is bounded (a hostile template that
//! loops forever runs out of fuel and is an error).

use std::collections::BTreeMap;
use std::fmt;

use minijinja::{Environment, Error as JinjaError, ErrorKind, Value};
use riffle_core::gguf::Gguf;

/// Instructions a template may execute before rendering is abandoned.
const FUEL: u64 = 5_000_000;

/// Key of the chat template in a GGUF file.
pub const KEY_CHAT_TEMPLATE: &str = "tokenizer.chat_template";

/// A template that does not parse or fails to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError(pub String);

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "chat template: {}", self.0)
    }
}

impl std::error::Error for TemplateError {}

impl From<JinjaError> for TemplateError {
    fn from(e: JinjaError) -> Self {
        // One line: the kind and detail, without the template source dump.
        let detail = e.detail().map(|d| format!(": {d}")).unwrap_or_default();
        let line = e.line().map(|l| format!(" (line {l})")).unwrap_or_default();
        TemplateError(format!("{}{detail}{line}", e.kind()))
    }
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl Message {
    /// A message with `role`.
    pub fn new(role: &str, content: &str) -> Self {
        Message {
            role: role.to_string(),
            content: content.to_string(),
        }
    }
    /// A user message.
    pub fn user(content: &str) -> Self {
        Self::new("user", content)
    }
    /// A system message.
    pub fn system(content: &str) -> Self {
        Self::new("system", content)
    }
    /// An assistant message.
    pub fn assistant(content: &str) -> Self {
        Self::new("assistant", content)
    }
}

/// A parsed chat template with the special tokens it may print.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

impl fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Parses `source`; `bos` and `eos` are the texts of the model's beginning and end of
    /// sequence tokens (the template's `bos_token`, `eos_token`).
    ///
    /// # Errors
    /// [`TemplateError`] for a template that does not parse.
    pub fn new(source: &str, bos: &str, eos: &str) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_fuel(Some(FUEL));
        env.set_recursion_limit(64);
        // Hugging Face templates call `raise_exception` to refuse a conversation.
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<Value, JinjaError> {
                Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_template_owned("chat".to_string(), source.to_string())?;
        Ok(ChatTemplate {
            env,
            bos: bos.to_string(),
            eos: eos.to_string(),
        })
    }

    /// The template of a GGUF file (`tokenizer.chat_template`), with its special tokens'
    /// texts (`tokenizer.ggml.bos_token_id`, `eos_token_id`). `None` for a file without
    /// a template.
    ///
    /// # Errors
    /// [`TemplateError`] for a template that does not parse.
    pub fn from_gguf(g: &Gguf<'_>) -> Result<Option<Self>, TemplateError> {
        let Ok(source) = g.get_str(KEY_CHAT_TEMPLATE) else {
            return Ok(None);
        };
        let token = |key: &'static str| -> String {
            let tokens = g.get_strings("tokenizer.ggml.tokens").ok();
            g.get_u32(key)
                .ok()
                .and_then(|id| tokens?.iter().nth(id as usize).map(|(_, s)| s.to_string()))
                .unwrap_or_default()
        };
        Self::new(
            source,
            &token("tokenizer.ggml.bos_token_id"),
            &token("tokenizer.ggml.eos_token_id"),
        )
        .map(Some)
    }

    /// The prompt text for `messages`, ending with the assistant's turn opening when
    /// `add_generation_prompt`.
    ///
    /// # Errors
    /// [`TemplateError`] when rendering fails (including `raise_exception`, or a template
    /// that runs out of fuel).
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        let msgs: Vec<Value> = messages
            .iter()
            .map(|m| {
                let mut map = BTreeMap::new();
                map.insert("role".to_string(), Value::from(m.role.as_str()));
                map.insert("content".to_string(), Value::from(m.content.as_str()));
                Value::from(map)
            })
            .collect();
        let mut ctx = BTreeMap::new();
        ctx.insert("messages".to_string(), Value::from(msgs));
        ctx.insert(
            "add_generation_prompt".to_string(),
            Value::from(add_generation_prompt),
        );
        ctx.insert("bos_token".to_string(), Value::from(self.bos.as_str()));
        ctx.insert("eos_token".to_string(), Value::from(self.eos.as_str()));
        let tmpl = self.env.get_template("chat")?;
        Ok(tmpl.render(Value::from(ctx))?)
    }
}

#[cfg(test)]
mod tests {
    use super::{ChatTemplate, Message};

    /// The ChatML template of SmolLM2-135M-Instruct's GGUF, verbatim.
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn chatml_renders_as_transformers_does() {
        let t = ChatTemplate::new(SMOLLM2, "<|im_start|>", "<|im_end|>").unwrap();
        let got = t
            .render(&[Message::user("What is the capital of France?")], true)
            .unwrap();
        assert_eq!(
            got,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
        );
        let got = t
            .render(&[Message::system("Be brief."), Message::user("Hi")], false)
            .unwrap();
        assert_eq!(
            got,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        );
    }

    #[test]
    fn bad_and_hostile_templates_are_errors() {
        assert!(ChatTemplate::new("{% for x in %}", "", "").is_err());
        let raising = ChatTemplate::new("{{ raise_exception('no system role') }}", "", "").unwrap();
        let e = raising.render(&[], true).unwrap_err();
        assert!(e.0.contains("no system role"), "{e}");
        let forever = ChatTemplate::new(
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            "",
            "",
        )
        .unwrap();
        assert!(forever.render(&[], true).is_err());
    }
}
