//! The small `cnn` of `docs/models.md`: stride-1 convolutions (`conv.{i}`) with ReLU and
//! 2x2 max pooling, then dense layers (`dense.{i}`) with ReLU between them. Convolutions
//! are slots too, as the matrix `(out_c, in_c·kh·kw)` over im2col patches.

use super::mlp::{
    check_float, dense_slot, find_bias, vector_arena_len, vector_forward, vector_widths, Convs,
};
use super::{Forward, InputKind};
use crate::gguf::Gguf;
use crate::runtime::linear::Linears;
use crate::runtime::model::Input;
use crate::runtime::slots::{push_indexed, reserve, NameBuf, Slot, SlotSink, SlotTable};
use crate::runtime::weights::TensorRef;
use crate::{Error, Result};

/// A `cnn`: its input geometry and how many convolutions it has (their weights are
/// slots, and their shapes follow from the slots: [`Convs`]).
#[derive(Debug, Clone)]
pub(crate) struct Cnn {
    convs: Convs,
    input_len: usize,
}

impl Cnn {
    /// Reads `cnn.*`, the convolutions and the dense layers into `slots`.
    pub(crate) fn load<'a>(g: &Gguf<'a>, slots: &mut dyn SlotSink<'a>) -> Result<Self> {
        let (mut c, mut h, mut w) = (
            g.get_u32("cnn.input_channels")? as usize,
            g.get_u32("cnn.input_height")? as usize,
            g.get_u32("cnn.input_width")? as usize,
        );
        let input_len = c
            .checked_mul(h)
            .and_then(|v| v.checked_mul(w))
            .ok_or(Error::CapacityExceeded)?;
        let n_convs = g.get_u32("cnn.conv_count")? as usize;
        let dense = g.get_u32("cnn.dense_count")? as usize;
        if dense == 0 || input_len == 0 || input_len > 1 << 20 {
            return Err(Error::CapacityExceeded);
        }
        reserve(slots, n_convs.saturating_add(dense))?;
        let convs = Convs {
            count: n_convs,
            input: (c, h, w),
        };
        for i in 0..n_convs {
            let mut name = NameBuf::new();
            push_indexed(&mut name, "conv.", i, ".weight")?;
            let wt = g.require_tensor(&name)?;
            let s = wt.shape();
            if s.len() != 4 || s[1] as usize != c || s[2] != s[3] || s[2] % 2 == 0 || s[0] == 0 {
                return Err(Error::ShapeMismatch { tensor: wt.index() });
            }
            let (out_c, k) = (s[0] as usize, s[2] as usize);
            let bias = find_bias(g, "conv.", i, out_c)?;
            check_float(&wt)?;
            slots.push(Slot::with_refs(TensorRef::new(&wt), bias, out_c, c * k * k))?;
            c = out_c;
            h /= 2;
            w /= 2;
            if h == 0 || w == 0 {
                return Err(Error::ShapeMismatch { tensor: wt.index() });
            }
        }
        let mut width = c * h * w;
        for i in 0..dense {
            let slot = dense_slot(g, "dense.", i, width)?;
            width = slot.rows;
            slots.push(slot)?;
        }
        Ok(Cnn { convs, input_len })
    }

    /// Widest activation (im2col patches included), slot input and slot output.
    fn widths(&self, slots: &SlotTable<'_>, head_rows: usize) -> (usize, usize, usize) {
        let (mut act, max_cols, max_rows) = vector_widths(slots, self.input_len, head_rows);
        for cv in self.convs.iter(slots) {
            act = act
                .max(cv.h * cv.w * cv.in_c * cv.kernel * cv.kernel)
                .max(cv.h * cv.w * cv.out_c);
        }
        (act, max_cols, max_rows)
    }
}

impl<'a> Forward<'a> for Cnn {
    fn input(&self) -> InputKind {
        InputKind::Vector {
            len: self.input_len,
        }
    }
    fn output_len(&self, slots: &SlotTable<'a>) -> usize {
        slots.as_slice().last().map_or(0, |s| s.rows)
    }
    /// The first convolution's pixels: each later one has a quarter as many.
    fn max_batch(&self) -> usize {
        match self.convs.count {
            0 => 1,
            _ => self.convs.input.1 * self.convs.input.2,
        }
    }
    fn arena_len(&self, slots: &SlotTable<'a>, _max_tokens: usize, head_rows: usize) -> usize {
        let (act, max_cols, max_rows) = self.widths(slots, head_rows);
        vector_arena_len(act, max_cols, max_rows, Forward::max_batch(self))
    }
    fn forward(
        &self,
        lin: &Linears<'_, 'a>,
        input: Input<'_>,
        output: &mut [f32],
        arena: &mut [f32],
    ) -> Result<usize> {
        let head_rows = lin.adapter.map_or(0, |p| p.head_rows());
        let widths = self.widths(lin.slots, head_rows);
        let batch = Forward::max_batch(self);
        vector_forward(
            lin,
            input,
            self.input_len,
            self.convs,
            widths,
            batch,
            output,
            arena,
        )
    }
}
