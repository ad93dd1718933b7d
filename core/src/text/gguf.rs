//! The tokenizer over a GGUF `bert` file: its `tokenizer.ggml.tokens` string array is
//! the vocabulary (phantom-space spelling), its special-token keys the [`SpecialTokens`].

use super::index::index_len;
use super::vocab::{Spelling, VocabSource};
use super::wordpiece::{SpecialTokens, Tokenizer};
use crate::gguf::{
    Gguf, StringArray, KEY_TOKENIZER_BOS_ID, KEY_TOKENIZER_CLS_ID, KEY_TOKENIZER_EOS_ID,
    KEY_TOKENIZER_MASK_ID, KEY_TOKENIZER_MODEL, KEY_TOKENIZER_PAD_ID, KEY_TOKENIZER_SEP_ID,
    KEY_TOKENIZER_TOKENS, KEY_TOKENIZER_UNK_ID, TOKENIZER_MODEL_BERT,
};
use crate::{Error, Result};

/// A GGUF string array as a vocabulary: locators are the array's own O(1) locators, the
/// spelling is llama.cpp's [`Spelling::PhantomSpace`].
impl VocabSource for StringArray<'_> {
    fn len(&self) -> usize {
        StringArray::len(self)
    }

    fn for_each<F: FnMut(u32, u32, &str)>(&self, mut f: F) {
        // The reader caps arrays far below 2^32 elements.
        for (id, (locator, token)) in self.iter().enumerate() {
            f(id as u32, locator, token);
        }
    }

    fn token_at(&self, locator: u32) -> Option<&str> {
        self.str_at(locator)
    }

    fn spelling(&self) -> Spelling {
        Spelling::PhantomSpace
    }
}

/// The optional id under `key`: `Ok(None)` when the key is absent.
fn optional_id(gguf: &Gguf<'_>, key: &'static str) -> Result<Option<u32>> {
    match gguf.get_u32(key) {
        Ok(id) => Ok(Some(id)),
        Err(Error::MissingKey { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

impl SpecialTokens {
    /// The special-token ids of a GGUF `bert` file: `[CLS]` from
    /// `tokenizer.ggml.cls_token_id`, or `bos_token_id` where (as in llama.cpp's BERT
    /// files) there is none; `[SEP]` from `seperator_token_id`, or `eos_token_id`;
    /// `[UNK]` from `unknown_token_id`; `[PAD]` and `[MASK]` from `padding_token_id` and
    /// `mask_token_id` when present.
    ///
    /// # Errors
    /// [`Error::MissingKey`] when `[CLS]`, `[SEP]` or `[UNK]` has no key;
    /// [`Error::WrongValueType`] when an id is not an integer in `u32` range.
    pub fn from_gguf(gguf: &Gguf<'_>) -> Result<Self> {
        let either = |a: &'static str, b: &'static str| -> Result<u32> {
            optional_id(gguf, a)?.map_or_else(|| gguf.get_u32(b), Ok)
        };
        Ok(SpecialTokens {
            cls: either(KEY_TOKENIZER_CLS_ID, KEY_TOKENIZER_BOS_ID)?,
            sep: either(KEY_TOKENIZER_SEP_ID, KEY_TOKENIZER_EOS_ID)?,
            unk: gguf.get_u32(KEY_TOKENIZER_UNK_ID)?,
            pad: optional_id(gguf, KEY_TOKENIZER_PAD_ID)?,
            mask: optional_id(gguf, KEY_TOKENIZER_MASK_ID)?,
        })
    }
}

/// The WordPiece vocabulary (`tokenizer.ggml.tokens`) of a GGUF file whose
/// `tokenizer.ggml.model` is `bert`.
///
/// # Errors
/// [`Error::UnsupportedModel`] for another tokenizer model; [`Error::MissingKey`] or
/// [`Error::WrongValueType`] for missing or mistyped keys.
pub fn gguf_vocab<'a>(gguf: &Gguf<'a>) -> Result<StringArray<'a>> {
    if gguf.get_str(KEY_TOKENIZER_MODEL)? != TOKENIZER_MODEL_BERT {
        return Err(Error::UnsupportedModel);
    }
    gguf.get_strings(KEY_TOKENIZER_TOKENS)
}

/// The index length ([`index_len`]) a GGUF `bert` file's tokenizer needs.
///
/// # Errors
/// As [`gguf_vocab`].
pub fn gguf_index_len(gguf: &Gguf<'_>) -> Result<usize> {
    gguf_vocab(gguf).map(|v| index_len(v.len()))
}

impl<'a, 'i> Tokenizer<'i, StringArray<'a>> {
    /// The tokenizer of a GGUF `bert` file (a llama.cpp conversion or riffle's own):
    /// vocabulary from [`gguf_vocab`], ids from [`SpecialTokens::from_gguf`], index in
    /// `index_buf` (at least [`gguf_index_len`] elements).
    ///
    /// ```
    /// use riffle_core::gguf::Gguf;
    /// use riffle_core::text::{gguf_index_len, Tokenizer};
    ///
    /// let gguf = Gguf::parse(include_bytes!("../../../tests/data/gguf/bert_mini.gguf"))?;
    /// let mut index = vec![0u32; gguf_index_len(&gguf)?];
    /// let tokenizer = Tokenizer::from_gguf(&gguf, &mut index)?;
    /// let mut ids = [0u32; 8];
    /// let n = tokenizer.encode("Hello, world!", 8, &mut ids)?;
    /// assert_eq!(&ids[..n], &[2, 6, 1, 7, 1, 3]); // [CLS] hello [UNK] world [UNK] [SEP]
    /// # Ok::<(), riffle_core::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`gguf_vocab`], [`SpecialTokens::from_gguf`] and [`Tokenizer::new`].
    pub fn from_gguf(gguf: &Gguf<'a>, index_buf: &'i mut [u32]) -> Result<Self> {
        let vocab = gguf_vocab(gguf)?;
        let special = SpecialTokens::from_gguf(gguf)?;
        Tokenizer::new(vocab, index_buf, special)
    }
}
