//! `riffle import-peft`: PEFT OFT / BOFT adapter folders into riffle adapters.

use std::path::Path;

use crate::fail::{bad, Result};

/// `riffle import-peft` (not implemented yet).
pub fn run(dir: &Path, _base: &Path, _output: &Path) -> Result<()> {
    Err(bad(
        dir.display(),
        "import-peft is not implemented yet in this build",
    ))
}
