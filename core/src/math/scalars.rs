//! Read-only views of numbers stored as f32 or f16, typed or as little-endian bytes.

#[cfg(feature = "f16")]
use half::f16;

/// A read-only run of scalars, as the caller has them: typed slices, or the raw
/// little-endian bytes of a tensor inside a GGUF file (any alignment).
///
/// Values are widened to `f32` on read; widening f16 is exact.
#[derive(Debug, Clone, Copy)]
pub enum Scalars<'a> {
    /// Native `f32` values.
    F32(&'a [f32]),
    /// Native `f16` values.
    #[cfg(feature = "f16")]
    F16(&'a [f16]),
    /// Little-endian `f32` bytes (length a multiple of 4).
    F32Le(&'a [u8]),
    /// Little-endian `f16` bytes (length a multiple of 2).
    #[cfg(feature = "f16")]
    F16Le(&'a [u8]),
}

impl<'a> Scalars<'a> {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Scalars::F32(v) => v.len(),
            #[cfg(feature = "f16")]
            Scalars::F16(v) => v.len(),
            Scalars::F32Le(b) => b.len() / 4,
            #[cfg(feature = "f16")]
            Scalars::F16Le(b) => b.len() / 2,
        }
    }

    /// True when there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Value `i` widened to `f32`, or `None` past the end.
    #[inline]
    pub fn get(&self, i: usize) -> Option<f32> {
        match self {
            Scalars::F32(v) => v.get(i).copied(),
            #[cfg(feature = "f16")]
            Scalars::F16(v) => v.get(i).map(|h| h.to_f32()),
            Scalars::F32Le(b) => {
                let s = b.get(i.checked_mul(4)?..i.checked_mul(4)?.checked_add(4)?)?;
                Some(f32::from_le_bytes([s[0], s[1], s[2], s[3]]))
            }
            #[cfg(feature = "f16")]
            Scalars::F16Le(b) => {
                let s = b.get(i.checked_mul(2)?..i.checked_mul(2)?.checked_add(2)?)?;
                Some(f16::from_le_bytes([s[0], s[1]]).to_f32())
            }
        }
    }

    /// The sub-run `start .. start + len`, or `None` if it does not fit.
    pub fn slice(&self, start: usize, len: usize) -> Option<Scalars<'a>> {
        let end = start.checked_add(len)?;
        Some(match *self {
            Scalars::F32(v) => Scalars::F32(v.get(start..end)?),
            #[cfg(feature = "f16")]
            Scalars::F16(v) => Scalars::F16(v.get(start..end)?),
            Scalars::F32Le(b) => Scalars::F32Le(b.get(start.checked_mul(4)?..end.checked_mul(4)?)?),
            #[cfg(feature = "f16")]
            Scalars::F16Le(b) => Scalars::F16Le(b.get(start.checked_mul(2)?..end.checked_mul(2)?)?),
        })
    }

    /// Index of the first NaN or infinite value, if any.
    pub fn first_non_finite(&self) -> Option<usize> {
        (0..self.len()).find(|&i| !self.get(i).is_some_and(f32::is_finite))
    }

    /// Index of the first non-zero value whose magnitude is outside
    /// [`super::MIN_SCALE`]`..=`[`super::MAX_SCALE`] (or not finite), if any.
    pub fn first_out_of_scale_range(&self) -> Option<usize> {
        (0..self.len()).find(|&i| {
            self.get(i).is_some_and(|v| {
                v != 0.0 && !(super::MIN_SCALE..=super::MAX_SCALE).contains(&v.abs())
            })
        })
    }

    /// Index of the first value equal to zero, if any.
    pub fn first_zero(&self) -> Option<usize> {
        (0..self.len()).find(|&i| self.get(i) == Some(0.0))
    }
}
