//! One module per command.

pub mod bench;
pub mod bench_llm;
pub mod chat;
pub mod demo;
pub mod generate;
pub mod import_peft;
pub mod inspect;
pub mod merge;
pub mod perplexity;
pub mod repl;
pub mod run;
pub mod tokenize;
