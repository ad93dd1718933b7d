//! The committed digits models, adapters and held-out sets, embedded in the binary for
//! `riffle demo` (no files, no network). Each file sits in a 32-byte-aligned static, as
//! GGUF data prefers (the core reads at any address; aligned is just faster).

/// Bytes with 32-byte alignment.
#[repr(C, align(32))]
pub struct Aligned<T: ?Sized>(pub T);

macro_rules! embed {
    ($path:literal) => {{
        static FILE: &Aligned<[u8]> =
            &Aligned(*include_bytes!(concat!("../../models/digits/", $path)));
        (concat!("models/digits/", $path), &FILE.0)
    }};
}

/// An embedded file: its repository path and its bytes.
pub type File = (&'static str, &'static [u8]);

/// One embedded base with its four task adapters.
pub struct Family {
    /// The base model.
    pub base: File,
    /// Adapters, in task order: rotated, inverted, noisy, parity.
    pub adapters: [File; 4],
}

/// The digits MLP (64-64-64-10) and its adapters.
pub fn mlp() -> Family {
    Family {
        base: embed!("mlp.gguf"),
        adapters: [
            embed!("mlp-rotated.gguf"),
            embed!("mlp-inverted.gguf"),
            embed!("mlp-noisy.gguf"),
            embed!("mlp-parity.gguf"),
        ],
    }
}

/// The digits CNN (two 3x3 convolutions, two dense layers) and its adapters.
pub fn cnn() -> Family {
    Family {
        base: embed!("cnn.gguf"),
        adapters: [
            embed!("cnn-rotated.gguf"),
            embed!("cnn-inverted.gguf"),
            embed!("cnn-noisy.gguf"),
            embed!("cnn-parity.gguf"),
        ],
    }
}

/// Held-out sets in task order: digits, rotated, inverted, noisy, parity.
pub fn heldout() -> [File; 5] {
    [
        embed!("heldout-digits.gguf"),
        embed!("heldout-rotated.gguf"),
        embed!("heldout-inverted.gguf"),
        embed!("heldout-noisy.gguf"),
        embed!("heldout-parity.gguf"),
    ]
}
