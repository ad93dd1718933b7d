//! Convolution helpers of the `cnn` architecture: layout changes, im2col for a
//! zero-padded stride-1 convolution, and 2x2 max pooling.

/// Geometry of one convolution: input channels, output channels, square kernel size,
/// input height and width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv {
    /// Input channels.
    pub in_c: usize,
    /// Output channels.
    pub out_c: usize,
    /// Kernel height and width (odd).
    pub kernel: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
}

/// `(c, h, w)` (PyTorch) to `(h, w, c)` (pixel-major).
pub fn chw_to_hwc(src: &[f32], c: usize, h: usize, w: usize, dst: &mut [f32]) {
    for ci in 0..c {
        for p in 0..h * w {
            dst[p * c + ci] = src[ci * h * w + p];
        }
    }
}

/// `(h, w, c)` to `(c, h, w)`.
pub fn hwc_to_chw(src: &[f32], c: usize, h: usize, w: usize, dst: &mut [f32]) {
    for p in 0..h * w {
        for ci in 0..c {
            dst[ci * h * w + p] = src[p * c + ci];
        }
    }
}

/// Patches of a zero-padded, stride-1 convolution: row `p` = pixel `p`, in the
/// `(ci, dy, dx)` order of PyTorch's flattened `(out_c, in_c, kh, kw)` weight.
#[inline]
pub fn im2col(x: &[f32], cv: &Conv, pad: usize, out: &mut [f32]) {
    let k = cv.kernel;
    let patch = cv.in_c * k * k;
    for py in 0..cv.h {
        for px in 0..cv.w {
            let row = &mut out[(py * cv.w + px) * patch..][..patch];
            for ci in 0..cv.in_c {
                for dy in 0..k {
                    for dx in 0..k {
                        let (sy, sx) = ((py + dy).wrapping_sub(pad), (px + dx).wrapping_sub(pad));
                        row[(ci * k + dy) * k + dx] = if sy < cv.h && sx < cv.w {
                            x[(sy * cv.w + sx) * cv.in_c + ci]
                        } else {
                            0.0
                        };
                    }
                }
            }
        }
    }
}

/// 2x2 max pooling, stride 2 (floor), on `(h, w, c)` activations.
#[inline]
pub fn maxpool2(x: &[f32], h: usize, w: usize, c: usize, out: &mut [f32]) {
    let (oh, ow) = (h / 2, w / 2);
    for y in 0..oh {
        for xx in 0..ow {
            for ci in 0..c {
                let at = |dy: usize, dx: usize| x[((2 * y + dy) * w + 2 * xx + dx) * c + ci];
                out[(y * ow + xx) * c + ci] = at(0, 0).max(at(0, 1)).max(at(1, 0)).max(at(1, 1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{chw_to_hwc, hwc_to_chw, im2col, maxpool2, Conv};

    #[test]
    fn im2col_product_equals_direct_convolution_and_pooling_takes_maxima() {
        // 2 channels, 3x4 image, 3x3 kernel, padding 1; one output channel.
        let cv = Conv {
            in_c: 2,
            out_c: 1,
            kernel: 3,
            h: 3,
            w: 4,
        };
        let chw: [f32; 24] = core::array::from_fn(|i| (i as f32 * 0.7).sin());
        let wt: [f32; 18] = core::array::from_fn(|i| (i as f32 * 1.3).cos());
        let mut hwc = [0.0f32; 24];
        chw_to_hwc(&chw, 2, 3, 4, &mut hwc);
        let mut back = [0.0f32; 24];
        hwc_to_chw(&hwc, 2, 3, 4, &mut back);
        assert_eq!(back, chw);
        let mut cols = [0.0f32; 12 * 18];
        im2col(&hwc, &cv, 1, &mut cols);
        for y in 0..3 {
            for x in 0..4 {
                let mut want = 0.0f32;
                for c in 0..2 {
                    for dy in 0..3 {
                        for dx in 0..3 {
                            let (sy, sx) = (y as i32 + dy as i32 - 1, x as i32 + dx as i32 - 1);
                            if (0..3).contains(&sy) && (0..4).contains(&sx) {
                                want += chw[c * 12 + sy as usize * 4 + sx as usize]
                                    * wt[(c * 3 + dy) * 3 + dx];
                            }
                        }
                    }
                }
                let row = &cols[(y * 4 + x) * 18..][..18];
                let got: f32 = row.iter().zip(&wt).map(|(a, b)| a * b).sum();
                assert!((got - want).abs() < 1e-5);
            }
        }
        let mut pooled = [0.0f32; 4];
        maxpool2(&hwc, 3, 4, 2, &mut pooled);
        for c in 0..2 {
            for x in 0..2 {
                let m = [0, 1]
                    .iter()
                    .flat_map(|dy| [0, 1].map(|dx| chw[c * 12 + dy * 4 + 2 * x + dx]))
                    .fold(f32::NEG_INFINITY, f32::max);
                assert_eq!(pooled[x * 2 + c], m);
            }
        }
    }
}
