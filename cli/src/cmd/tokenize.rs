//! `riffle tokenize`: the token ids of a text under a GGUF file's own tokenizer, without
//! loading the model: byte-level BPE for `tokenizer.ggml.model = gpt2` (llama.cpp's ids,
//! `llama-tokenize` with its defaults), WordPiece for `bert`.

use std::borrow::Cow;
use std::path::Path;

use riffle_core::gguf::{Gguf, KEY_TOKENIZER_MODEL};
use riffle_core::text::bpe::{BpeTokenizer, TOKENIZER_MODEL_GPT2};
use riffle_core::text::{gguf_index_len, Tokenizer};
use serde_json::json;

use crate::fail::{bad, core_bad, Result};
use crate::files::{parse_gguf, Mapped};
use crate::limits::zeroed;

/// The file's bytes, or a copy with its tensor count set to 0 when this build's GGUF
/// reader does not know a tensor type of the file: the tokenizer needs only metadata.
fn metadata_bytes<'a>(name: &str, bytes: &'a [u8]) -> Result<Cow<'a, [u8]>> {
    match Gguf::parse(bytes) {
        Err(riffle_core::Error::UnknownTensorType { .. }) if bytes.len() >= 16 => {
            let mut copy = zeroed::<u8>(bytes.len(), &format!("{name}: a metadata copy"))?;
            copy.copy_from_slice(bytes);
            if let Some(count) = copy.get_mut(8..16) {
                count.fill(0);
            }
            Ok(Cow::Owned(copy))
        }
        _ => Ok(Cow::Borrowed(bytes)),
    }
}

/// `riffle tokenize`.
pub fn run(model: &Path, text: &str, json_out: bool) -> Result<()> {
    let f = Mapped::open(model)?;
    let name = f.name();
    let bytes = metadata_bytes(name, f.bytes())?;
    let g = parse_gguf(name, &bytes)?;
    let kind = match g.get_str(KEY_TOKENIZER_MODEL) {
        Ok(k) => k,
        Err(riffle_core::Error::MissingKey { .. }) => {
            return Err(bad(name, "has no tokenizer (no tokenizer.ggml.model)"))
        }
        Err(e) => return Err(core_bad(name, e, Some(&g))),
    };
    let (ids, pieces): (Vec<u32>, Vec<String>) = match kind {
        TOKENIZER_MODEL_GPT2 => {
            let len = BpeTokenizer::index_len(&g).map_err(|e| core_bad(name, e, Some(&g)))?;
            let mut index = vec![0u32; len];
            let tok =
                BpeTokenizer::from_gguf(&g, &mut index).map_err(|e| core_bad(name, e, Some(&g)))?;
            // Twice the text's length: room for the merge workspace's rank cache.
            let mut out = zeroed::<u32>(2 * text.len() + 2, "--text")?;
            let n = tok
                .encode(text, &mut out)
                .map_err(|e| core_bad("--text", e, None))?;
            out.truncate(n);
            let pieces = out
                .iter()
                .map(|&id| {
                    let mut b = Vec::new();
                    let _ = tok.piece_bytes(id, true, |x| b.push(x));
                    String::from_utf8_lossy(&b).into_owned()
                })
                .collect();
            (out, pieces)
        }
        "bert" => {
            let len = gguf_index_len(&g).map_err(|e| core_bad(name, e, Some(&g)))?;
            let mut index = zeroed::<u32>(len, &format!("{name}: the tokenizer index"))?;
            let tok =
                Tokenizer::from_gguf(&g, &mut index).map_err(|e| core_bad(name, e, Some(&g)))?;
            // Every piece and the two specials fit in text.len() + 2 ids.
            let max = text.len() + 2;
            let mut out = zeroed::<u32>(max, "--text")?;
            let n = tok
                .encode(text, max, &mut out)
                .map_err(|e| core_bad("--text", e, None))?;
            out.truncate(n);
            let vocab =
                riffle_core::text::gguf_vocab(&g).map_err(|e| core_bad(name, e, Some(&g)))?;
            let texts: Vec<&str> = vocab.iter().map(|(_, t)| t).collect();
            let pieces = out
                .iter()
                .map(|&id| texts.get(id as usize).copied().unwrap_or("").to_string())
                .collect();
            (out, pieces)
        }
        other => {
            return Err(bad(
                name,
                format!("tokenizer model `{other}` is not supported (gpt2, bert)"),
            ))
        }
    };
    if json_out {
        println!("{}", json!({ "ids": ids }));
    } else {
        for (id, piece) in ids.iter().zip(&pieces) {
            println!("{id:>6} -> {piece:?}");
        }
    }
    Ok(())
}
