//! A causal model's tokenizer for the front ends: the core's no_std byte-level BPE
//! (`riffle_core::text::bpe`, ids equal to llama.cpp's) with owned outputs, the tokens
//! that end a generation, and the token bytes the generation loop streams.

use riffle_core::gguf::Gguf;
use riffle_core::text::bpe::BpeTokenizer;
use riffle_core::Error;

use crate::generate::TokenBytes;

/// Spellings of end-of-turn tokens that chat templates close a message with; one that is
/// a control token of the vocabulary ends a generation like end-of-sequence does.
const END_OF_TURN: [&str; 4] = ["<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"];

/// A model file's tokenizer (`tokenizer.ggml.*`), its index in a caller buffer.
#[derive(Debug)]
pub struct Vocabulary<'i, 'a> {
    bpe: BpeTokenizer<'a, 'i>,
    stop: Vec<u32>,
}

impl<'i, 'a> Vocabulary<'i, 'a> {
    /// `u32`s of index the tokenizer of `g` needs.
    ///
    /// # Errors
    /// The core's errors for a file without a usable BPE vocabulary.
    pub fn index_len(g: &Gguf<'a>) -> Result<usize, Error> {
        BpeTokenizer::index_len(g)
    }

    /// The tokenizer of `g`, its index built in `index`.
    ///
    /// # Errors
    /// The core's errors for a malformed vocabulary or merges.
    pub fn new(g: &Gguf<'a>, index: &'i mut [u32]) -> Result<Self, Error> {
        let bpe = BpeTokenizer::from_gguf(g, index)?;
        let mut stop = Vec::new();
        if let (Some(eos), _) = bpe.eos() {
            stop.push(eos);
        }
        if let Ok(eot) = g.get_u32("tokenizer.ggml.eot_token_id") {
            stop.push(eot);
        }
        for s in END_OF_TURN {
            if let Some(id) = bpe.token_id(s) {
                if bpe.token_type(id) == riffle_core::gguf::TOKEN_TYPE_CONTROL {
                    stop.push(id);
                }
            }
        }
        stop.sort_unstable();
        stop.dedup();
        Ok(Vocabulary { bpe, stop })
    }

    /// The core tokenizer.
    pub fn bpe(&self) -> &BpeTokenizer<'a, 'i> {
        &self.bpe
    }

    /// Token ids of `text` as llama.cpp gives them (special tokens in the text parsed; a
    /// beginning-of-sequence token only if the file asks for one).
    ///
    /// # Errors
    /// The core's errors.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, Error> {
        // Every token covers at least one byte, two more for added special tokens; room
        // for two ids a byte lets the tokenizer cache pair ranks there (long words, CJK
        // paragraphs, are 60-70x faster with it; the ids are the same).
        let mut out = vec![0u32; 2 * text.len() + 2];
        let n = self.bpe.encode(text, &mut out)?;
        out.truncate(n);
        Ok(out)
    }

    /// Tokens that end a generation: end of sequence, end of turn.
    pub fn stop_tokens(&self) -> Vec<u32> {
        self.stop.clone()
    }
}

impl TokenBytes for Vocabulary<'_, '_> {
    fn token_bytes(&self, id: u32, out: &mut Vec<u8>) {
        // Control tokens print nothing; an id outside the vocabulary cannot come from
        // the model's logits, and prints nothing too.
        let _ = self.bpe.piece_bytes(id, false, |b| out.push(b));
    }
}
