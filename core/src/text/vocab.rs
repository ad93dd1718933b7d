//! Where the vocabulary comes from: the [`VocabSource`] trait and [`LineVocab`].

use crate::{Error, Result};

/// How a vocabulary spells word-start and continuation pieces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Spelling {
    /// HF `vocab.txt` / `tokenizer.json`: a word-start piece as is (`hello`), a
    /// continuation with a `##` prefix (`##ing`).
    Hf,
    /// llama.cpp's GGUF `bert` vocabulary ("phantom space"): a word-start piece with a
    /// leading U+2581 (`▁hello`), a continuation without prefix (`ing`), control tokens
    /// (`[CLS]`) as is.
    PhantomSpace,
}

impl Spelling {
    /// Splits a stored token into `(is_continuation, piece)`, the key the tokenizer
    /// looks word pieces up by.
    ///
    /// `Hf`: `##x` (x non-empty) is the continuation `x`, anything else a word start.
    /// `PhantomSpace`: `▁x` is the word start `x`, anything else a continuation (control
    /// tokens included; the tokenizer never looks those up as pieces, see
    /// [`super::Tokenizer`]).
    ///
    /// ```
    /// use riffle_core::text::Spelling;
    /// assert_eq!(Spelling::Hf.split("##ing"), (true, "ing"));
    /// assert_eq!(Spelling::Hf.split("#"), (false, "#"));
    /// assert_eq!(Spelling::PhantomSpace.split("▁hello"), (false, "hello"));
    /// assert_eq!(Spelling::PhantomSpace.split("#"), (true, "#"));
    /// ```
    pub fn split(self, token: &str) -> (bool, &str) {
        match self {
            Spelling::Hf => match token.strip_prefix("##") {
                Some(rest) if !rest.is_empty() => (true, rest),
                _ => (false, token),
            },
            Spelling::PhantomSpace => match token.strip_prefix('\u{2581}') {
                Some(rest) => (false, rest),
                None => (true, token),
            },
        }
    }
}

/// A vocabulary the tokenizer can index without copying it: token `id` is the `id`-th
/// string, and each string has a `u32` *locator* that gets it back in O(1).
///
/// Implemented by [`LineVocab`] (a `vocab.txt` in memory) and, for GGUF files, by the
/// GGUF reader's string array (locator = byte offset of the element in the file).
pub trait VocabSource {
    /// Number of tokens; ids are `0..len`.
    fn len(&self) -> usize;

    /// True when there are no tokens.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f(id, locator, token)` for every token, in id order.
    fn for_each<F: FnMut(u32, u32, &str)>(&self, f: F);

    /// The token whose locator (as passed by [`VocabSource::for_each`]) is `locator`;
    /// `None` for a locator that is not one. Must be cheap (O(1) plus the token's
    /// length): the tokenizer calls it on every hash hit.
    fn token_at(&self, locator: u32) -> Option<&str>;

    /// How the tokens are spelled.
    fn spelling(&self) -> Spelling;
}

impl<T: VocabSource> VocabSource for &T {
    fn len(&self) -> usize {
        (**self).len()
    }
    fn for_each<F: FnMut(u32, u32, &str)>(&self, f: F) {
        (**self).for_each(f)
    }
    fn token_at(&self, locator: u32) -> Option<&str> {
        (**self).token_at(locator)
    }
    fn spelling(&self) -> Spelling {
        (**self).spelling()
    }
}

/// A vocabulary held as text, one token per line (HF's `vocab.txt`, or the same in
/// phantom-space spelling). The locator of a token is the byte offset of its line.
///
/// Lines end at `\n`; trailing whitespace (a `\r`, say) is not part of the token, as in
/// HF's `WordPiece::read_file`. A final newline does not start another token.
///
/// ```
/// use riffle_core::text::{LineVocab, Spelling, VocabSource};
/// let v = LineVocab::new("[PAD]\nhello\n##s\n", Spelling::Hf)?;
/// assert_eq!(v.len(), 3);
/// assert_eq!(v.token_at(6), Some("hello"));
/// # Ok::<(), riffle_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct LineVocab<'a> {
    text: &'a str,
    len: usize,
    spelling: Spelling,
}

impl<'a> LineVocab<'a> {
    /// Wraps `text`; counts its lines (O(bytes)).
    ///
    /// # Errors
    /// [`Error::BadVocabulary`] when `text` is 4 GiB or longer (locators are `u32`).
    /// Never panics.
    pub fn new(text: &'a str, spelling: Spelling) -> Result<Self> {
        if u32::try_from(text.len()).is_err() {
            return Err(Error::BadVocabulary { id: u32::MAX });
        }
        let newlines = text.bytes().filter(|&b| b == b'\n').count();
        let len = if text.is_empty() || text.ends_with('\n') {
            newlines
        } else {
            newlines + 1
        };
        Ok(LineVocab {
            text,
            len,
            spelling,
        })
    }
}

impl VocabSource for LineVocab<'_> {
    fn len(&self) -> usize {
        self.len
    }

    fn for_each<F: FnMut(u32, u32, &str)>(&self, mut f: F) {
        let mut at = 0usize;
        for (id, line) in self.text.split('\n').take(self.len).enumerate() {
            // `new` checked that every offset fits in u32, and ids are below len.
            f(id as u32, at as u32, line.trim_end());
            at += line.len() + 1;
        }
    }

    fn token_at(&self, locator: u32) -> Option<&str> {
        let at = usize::try_from(locator).ok()?;
        if at > 0 && self.text.as_bytes().get(at - 1) != Some(&b'\n') {
            return None;
        }
        let rest = self.text.get(at..)?;
        let line = rest.split('\n').next()?;
        Some(line.trim_end())
    }

    fn spelling(&self) -> Spelling {
        self.spelling
    }
}
