//! SHA-256's compression function on the x86-64 SHA extensions (`sha256rnds2`,
//! `sha256msg1`, `sha256msg2`), chosen at run time: the hash behind a model's id, computed
//! over every byte of a base's tensor data at each load (98 MB for SmolLM2's Q4_1 file,
//! where the portable rounds in `crate::checksum` took about 0.4 s of every command's
//! start). Same digest bits as the portable code: the instructions compute FIPS 180-4's
//! rounds exactly.
//!
//! The state is kept as two vectors in the order the instructions want, `ABEF` and
//! `CDGH` (lane 3 first), and each `sha256rnds2` does two rounds; a block is 16 groups of
//! four rounds, the message words of group `g >= 4` made from those of groups `g - 4` to
//! `g - 1` by `sha256msg1`, an add of words `g - 2`/`g - 1` shifted by one, and
//! `sha256msg2`.
//!
//! Soundness: the kernel runs only after [`super::cpu::sha_available`] saw the SHA
//! extensions (with SSSE3 and SSE4.1), and reads `blocks` only in whole 64-byte blocks
//! inside the slice.
#![allow(unsafe_code)]

use core::arch::x86_64::{
    __m128i, _mm_add_epi32, _mm_alignr_epi8, _mm_blend_epi16, _mm_loadu_si128, _mm_set_epi64x,
    _mm_sha256msg1_epu32, _mm_sha256msg2_epu32, _mm_sha256rnds2_epu32, _mm_shuffle_epi32,
    _mm_shuffle_epi8, _mm_storeu_si128,
};

use super::cpu::sha_available;

/// The 64 round constants of FIPS 180-4, four per group.
const K: [u32; 64] = crate::checksum::SHA256_K;

/// Compresses every whole 64-byte block of `blocks` into `state` in order; `false`,
/// touching nothing, without the SHA extensions or when `blocks` is not whole blocks.
pub(super) fn compress_blocks(state: &mut [u32; 8], blocks: &[u8]) -> bool {
    if !blocks.len().is_multiple_of(64) || !sha_available() {
        return false;
    }
    // SAFETY: the SHA extensions, SSSE3 and SSE4.1 are available (checked above).
    unsafe { compress_sha(state, blocks) };
    true
}

/// # Safety
/// SHA, SSSE3 and SSE4.1 available; `blocks.len()` a multiple of 64.
#[target_feature(enable = "sha,ssse3,sse4.1")]
unsafe fn compress_sha(state: &mut [u32; 8], blocks: &[u8]) {
    // Big-endian words: reverse the bytes of each 32-bit lane.
    let swap = _mm_set_epi64x(0x0c0d_0e0f_0809_0a0b, 0x0405_0607_0001_0203);
    let sp = state.as_mut_ptr().cast::<__m128i>();
    // SAFETY: `state` is 32 bytes: two unaligned 16-byte loads.
    let (abcd, efgh) = unsafe { (_mm_loadu_si128(sp), _mm_loadu_si128(sp.add(1))) };
    // [A B C D] / [E F G H] (lane 0 first) to [F E B A] / [H G D C]: ABEF and CDGH with
    // lane 3 first, as the instructions number them.
    let badc = _mm_shuffle_epi32::<0xB1>(abcd);
    let hgfe = _mm_shuffle_epi32::<0x1B>(efgh);
    let mut abef = _mm_alignr_epi8::<8>(badc, hgfe);
    let mut cdgh = _mm_blend_epi16::<0xF0>(hgfe, badc);
    let kp = K.as_ptr().cast::<__m128i>();
    for block in blocks.chunks_exact(64) {
        let (abef0, cdgh0) = (abef, cdgh);
        let bp = block.as_ptr().cast::<__m128i>();
        // SAFETY: `block` is 64 bytes: four unaligned 16-byte loads.
        let mut w: [__m128i; 4] =
            core::array::from_fn(|i| _mm_shuffle_epi8(unsafe { _mm_loadu_si128(bp.add(i)) }, swap));
        for g in 0..16 {
            if g >= 4 {
                // Words 4g .. 4g + 3 from groups g - 4 (in w[g % 4]) to g - 1.
                let (w4, w3, w2, w1) = (w[g % 4], w[(g + 1) % 4], w[(g + 2) % 4], w[(g + 3) % 4]);
                let partial =
                    _mm_add_epi32(_mm_sha256msg1_epu32(w4, w3), _mm_alignr_epi8::<4>(w1, w2));
                w[g % 4] = _mm_sha256msg2_epu32(partial, w1);
            }
            // SAFETY: group g < 16 of the 64 constants.
            let k = unsafe { _mm_loadu_si128(kp.add(g)) };
            let wk = _mm_add_epi32(w[g % 4], k);
            cdgh = _mm_sha256rnds2_epu32(cdgh, abef, wk);
            abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32::<0x0E>(wk));
        }
        abef = _mm_add_epi32(abef, abef0);
        cdgh = _mm_add_epi32(cdgh, cdgh0);
    }
    // Back to [A B C D] / [E F G H].
    let feba = _mm_shuffle_epi32::<0x1B>(abef);
    let dchg = _mm_shuffle_epi32::<0xB1>(cdgh);
    let abcd = _mm_blend_epi16::<0xF0>(feba, dchg);
    let efgh = _mm_alignr_epi8::<8>(dchg, feba);
    // SAFETY: as the loads.
    unsafe {
        _mm_storeu_si128(sp, abcd);
        _mm_storeu_si128(sp.add(1), efgh);
    }
}
