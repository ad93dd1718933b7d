//! A bounds-checked little-endian reader over untrusted bytes.
//!
//! Every read either returns the value and advances, or returns
//! [`Error::Truncated`] with the offset of the structure that did not fit; nothing
//! indexes a slice directly, and positions are `usize` with checked arithmetic
//! (32 bits on the microcontroller, while GGUF counts are `u64`).

use crate::{Error, Result};

/// Reads little-endian fields from `buf`, starting at `pos`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// A file offset as stored in errors.
#[inline]
pub(crate) fn off(pos: usize) -> u64 {
    pos as u64
}

impl<'a> Cursor<'a> {
    /// A cursor at byte `pos` of `buf` (a `pos` past the end fails on the first read).
    pub(crate) fn new(buf: &'a [u8], pos: usize) -> Self {
        Cursor { buf, pos }
    }

    /// The whole file.
    pub(crate) fn buf(&self) -> &'a [u8] {
        self.buf
    }

    /// Current byte offset in the file.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// The next `n` bytes; the structure starting at `at` is reported if they do not fit.
    pub(crate) fn take_for(&mut self, n: usize, at: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(Error::Truncated { offset: off(at) })?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(Error::Truncated { offset: off(at) })?;
        self.pos = end;
        Ok(s)
    }

    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        self.take_for(n, self.pos)
    }

    /// The next `N` bytes as an array.
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let at = self.pos;
        let s = self.take(N)?;
        <[u8; N]>::try_from(s).map_err(|_| Error::Truncated { offset: off(at) })
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        self.array().map(u32::from_le_bytes)
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        self.array().map(u64::from_le_bytes)
    }

    /// A `u64` count or length that must be `<= cap`, as a `usize`.
    ///
    /// A value above `cap` (or above `usize::MAX`) is [`Error::LimitExceeded`] at the
    /// offset of the field.
    pub(crate) fn count(&mut self, cap: u64) -> Result<usize> {
        let at = self.pos;
        let n = self.u64()?;
        if n > cap {
            return Err(Error::LimitExceeded { offset: off(at) });
        }
        usize::try_from(n).map_err(|_| Error::LimitExceeded { offset: off(at) })
    }

    /// A GGUF string (`u64` length, then bytes) of at most `cap` bytes, not checked
    /// for UTF-8. Returns the bytes and the offset of the string (its length field).
    pub(crate) fn raw_string(&mut self, cap: u64) -> Result<(&'a [u8], usize)> {
        let at = self.pos;
        let len = self.count(cap)?;
        let bytes = self.take_for(len, at)?;
        Ok((bytes, at))
    }

    /// A GGUF string of at most `cap` bytes, checked for UTF-8.
    pub(crate) fn string(&mut self, cap: u64) -> Result<(&'a str, usize)> {
        let (bytes, at) = self.raw_string(cap)?;
        let s = core::str::from_utf8(bytes).map_err(|_| Error::InvalidUtf8 { offset: off(at) })?;
        Ok((s, at))
    }
}
