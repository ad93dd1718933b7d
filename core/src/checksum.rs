//! Checksums of the file format: CRC-32 (IEEE, as zlib's `crc32`) and SHA-256
//! (FIPS 180-4), both dependency-free, allocation-free and panic-free.
//!
//! `docs/format.md` uses them for two bindings: an adapter stores the CRC-32 of
//! its data span in `riffle.data_crc32` (checked on every load, adapters are small),
//! and a base model is named by the lowercase hex SHA-256 of its data span,
//! `riffle.model_id` (recomputing it over megabytes is an explicit, opt-in call).
//!
//! ```
//! use riffle_core::checksum::{crc32, sha256, hex_lower};
//!
//! assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
//! let digest = sha256(b"abc");
//! assert_eq!(
//!     hex_lower(&digest).as_str(),
//!     "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
//! );
//! ```
//!
//! Both have a streaming form ([`Crc32`], [`Sha256`]) for callers that see the data
//! in pieces (a file read in chunks, flash pages).

/// The reflected IEEE 802.3 polynomial used by zlib, PNG and Ethernet.
const CRC32_POLY: u32 = 0xedb8_8320;

/// Byte-at-a-time lookup table of the reflected CRC-32, built at compile time (1 KiB).
#[cfg(feature = "crc32-table")]
const CRC32_TABLE: [u32; 256] = crc32_table::<256>(8);

/// Nibble-at-a-time table (64 bytes, two lookups per byte), without the `crc32-table`
/// feature: the same CRC in less flash.
#[cfg(not(feature = "crc32-table"))]
const CRC32_NIBBLES: [u32; 16] = crc32_table::<16>(4);

/// `table[n]` = the register `n` after `bits` shifts of the reflected CRC (`N = 2^bits`).
const fn crc32_table<const N: usize>(bits: u32) -> [u32; N] {
    let mut table = [0u32; N];
    let mut n = 0;
    while n < N {
        let mut c = n as u32;
        let mut k = 0;
        while k < bits {
            c = if c & 1 != 0 {
                CRC32_POLY ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[n] = c;
        n += 1;
    }
    table
}

/// A running CRC-32 (IEEE, reflected, init and final xor `0xffffffff`: zlib's `crc32`).
///
/// ```
/// use riffle_core::checksum::{crc32, Crc32};
/// let mut c = Crc32::new();
/// c.update(b"1234");
/// c.update(b"56789");
/// assert_eq!(c.finish(), crc32(b"123456789"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crc32 {
    state: u32,
}

impl Default for Crc32 {
    fn default() -> Self {
        Self::new()
    }
}

impl Crc32 {
    /// A CRC over no bytes yet.
    pub const fn new() -> Self {
        Crc32 { state: 0xffff_ffff }
    }

    /// Feeds more bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        let mut c = self.state;
        for &b in bytes {
            #[cfg(feature = "crc32-table")]
            {
                // The index is a u8, always < 256: no bounds check can fail.
                c = CRC32_TABLE[usize::from((c as u8) ^ b)] ^ (c >> 8);
            }
            #[cfg(not(feature = "crc32-table"))]
            {
                c ^= u32::from(b);
                // Indices are masked to 4 bits, always < 16.
                c = CRC32_NIBBLES[(c & 0xf) as usize] ^ (c >> 4);
                c = CRC32_NIBBLES[(c & 0xf) as usize] ^ (c >> 4);
            }
        }
        self.state = c;
    }

    /// The CRC of all bytes fed so far (the running state is kept).
    pub const fn finish(&self) -> u32 {
        !self.state
    }
}

/// CRC-32 of `bytes`, equal to Python's `zlib.crc32(bytes)`.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut c = Crc32::new();
    c.update(bytes);
    c.finish()
}

#[cfg(feature = "sha256")]
/// SHA-256 round constants (FIPS 180-4, section 4.2.2).
pub(crate) const SHA256_K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

#[cfg(feature = "sha256")]
/// SHA-256 initial hash value (FIPS 180-4, section 5.3.3).
const H0: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

#[cfg(feature = "sha256")]
/// A running SHA-256 (FIPS 180-4). About 100 bytes of state, no allocation.
///
/// ```
/// use riffle_core::checksum::{sha256, Sha256};
/// let mut h = Sha256::new();
/// h.update(b"a");
/// h.update(b"bc");
/// assert_eq!(h.finalize(), sha256(b"abc"));
/// ```
#[derive(Debug, Clone)]
pub struct Sha256 {
    state: [u32; 8],
    block: [u8; 64],
    block_len: usize,
    total_len: u64,
}

#[cfg(feature = "sha256")]
impl Default for Sha256 {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(feature = "sha256")]
impl Sha256 {
    /// A hash over no bytes yet.
    pub const fn new() -> Self {
        Sha256 {
            state: H0,
            block: [0; 64],
            block_len: 0,
            total_len: 0,
        }
    }

    /// Feeds more bytes.
    pub fn update(&mut self, mut bytes: &[u8]) {
        // Bit lengths wrap modulo 2^64 as FIPS 180-4 allows; no real input gets there.
        self.total_len = self.total_len.wrapping_add(bytes.len() as u64);
        if self.block_len > 0 {
            let free = self.block.get_mut(self.block_len..).unwrap_or_default();
            let n = free.len().min(bytes.len());
            let (head, rest) = bytes.split_at(n);
            if let Some(dst) = free.get_mut(..n) {
                dst.copy_from_slice(head);
            }
            self.block_len += n;
            bytes = rest;
            if self.block_len < 64 {
                return;
            }
            compress(&mut self.state, &self.block);
            self.block_len = 0;
        }
        let whole = bytes.len() - bytes.len() % 64;
        let (blocks, rest) = bytes.split_at(whole);
        if !crate::math::gemm::sha256_blocks(&mut self.state, blocks) {
            for chunk in blocks.chunks_exact(64) {
                if let Ok(block) = <&[u8; 64]>::try_from(chunk) {
                    compress(&mut self.state, block);
                }
            }
        }
        if let Some(dst) = self.block.get_mut(..rest.len()) {
            dst.copy_from_slice(rest);
        }
        self.block_len = rest.len();
    }

    /// The digest of all bytes fed so far.
    pub fn finalize(mut self) -> [u8; 32] {
        let bit_len = self.total_len.wrapping_mul(8);
        let mut pad = [0u8; 72];
        pad[0] = 0x80;
        // Pad with 0x80, zeros, then the 64-bit big-endian bit length, to a multiple of 64.
        let zeros = (119 - self.block_len) % 64; // block_len < 64, so 1 + zeros + 8 fills the block
        let total = 1 + zeros;
        self.update_no_len(pad.get(..total).unwrap_or_default());
        self.update_no_len(&bit_len.to_be_bytes());
        let mut out = [0u8; 32];
        for (dst, word) in out.chunks_exact_mut(4).zip(self.state) {
            dst.copy_from_slice(&word.to_be_bytes());
        }
        out
    }

    fn update_no_len(&mut self, bytes: &[u8]) {
        let len = self.total_len;
        self.update(bytes);
        self.total_len = len;
    }
}

#[cfg(feature = "sha256")]
/// One SHA-256 compression of a 64-byte block into `state`.
fn compress(state: &mut [u32; 8], block: &[u8; 64]) {
    let mut w = [0u32; 64];
    for (wi, c) in w.iter_mut().zip(block.chunks_exact(4)) {
        *wi = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
    }
    for i in 16..64 {
        let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
        let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16]
            .wrapping_add(s0)
            .wrapping_add(w[i - 7])
            .wrapping_add(s1);
    }
    let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = *state;
    for (&k, &wi) in SHA256_K.iter().zip(w.iter()) {
        let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
        let ch = (e & f) ^ (!e & g);
        let t1 = h
            .wrapping_add(s1)
            .wrapping_add(ch)
            .wrapping_add(k)
            .wrapping_add(wi);
        let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
        let maj = (a & b) ^ (a & c) ^ (b & c);
        let t2 = s0.wrapping_add(maj);
        h = g;
        g = f;
        f = e;
        e = d.wrapping_add(t1);
        d = c;
        c = b;
        b = a;
        a = t1.wrapping_add(t2);
    }
    for (s, v) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
        *s = s.wrapping_add(v);
    }
}

#[cfg(feature = "sha256")]
/// SHA-256 of `bytes`, equal to Python's `hashlib.sha256(bytes).digest()`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(bytes);
    h.finalize()
}

/// Lowercase hex of a 32-byte digest: the spelling of `riffle.model_id`.
pub fn hex_lower(digest: &[u8; 32]) -> heapless::String<64> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = heapless::String::new();
    for &b in digest {
        for nibble in [b >> 4, b & 0x0f] {
            // 64 characters exactly fill the capacity, so push never fails.
            let _ = s.push(char::from(DIGITS[usize::from(nibble)]));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bit at a time, the definition both tables implement.
    fn crc32_bitwise(bytes: &[u8]) -> u32 {
        let mut c = 0xffff_ffffu32;
        for &b in bytes {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    CRC32_POLY ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }

    #[test]
    fn crc_matches_the_bitwise_definition() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        let data: [u8; 300] = core::array::from_fn(|i| (i * 131 + 7) as u8);
        for n in [0, 1, 2, 3, 31, 64, 255, 300] {
            assert_eq!(crc32(&data[..n]), crc32_bitwise(&data[..n]), "length {n}");
        }
    }

    #[cfg(feature = "crc32-table")]
    #[test]
    fn crc_table_spot_values() {
        assert_eq!(CRC32_TABLE[1], 0x7707_3096);
        assert_eq!(CRC32_TABLE[255], 0x2d02_ef8d);
    }

    #[cfg(feature = "sha256")]
    #[test]
    fn sha_padding_boundaries() {
        // 55, 56, 63, 64 bytes straddle the one-block/two-block padding boundary.
        let vectors: [(usize, &str); 4] = [
            (
                55,
                "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318",
            ),
            (
                56,
                "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a",
            ),
            (
                63,
                "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34",
            ),
            (
                64,
                "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb",
            ),
        ];
        for (n, want) in vectors {
            let data = [b'a'; 64];
            assert_eq!(hex_lower(&sha256(&data[..n])).as_str(), want, "length {n}");
        }
    }

    /// Long messages go through the SHA-extension kernel where the CPU has one: FIPS
    /// 180-2's one million `a`s, fed in uneven pieces, and the kernel's state against the
    /// portable rounds block by block.
    #[cfg(feature = "sha256")]
    #[test]
    fn long_messages_hash_as_the_portable_rounds_do() {
        let mut h = Sha256::new();
        let piece = [b'a'; 1000];
        let mut fed = 0;
        for k in 0.. {
            let n = (k * 37 % 1000 + 1).min(1_000_000 - fed);
            h.update(&piece[..n]);
            fed += n;
            if fed == 1_000_000 {
                break;
            }
        }
        assert_eq!(
            hex_lower(&h.finalize()).as_str(),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        );
        let blocks: [u8; 64 * 9] = core::array::from_fn(|i| (i * 167 + 13) as u8);
        let mut portable = H0;
        for b in blocks.chunks_exact(64) {
            if let Ok(block) = <&[u8; 64]>::try_from(b) {
                compress(&mut portable, block);
            }
        }
        let mut kernel = H0;
        if crate::math::gemm::sha256_blocks(&mut kernel, &blocks) {
            assert_eq!(kernel, portable);
        }
        assert!(!crate::math::gemm::sha256_blocks(
            &mut kernel,
            &blocks[..100]
        ));
    }
}
