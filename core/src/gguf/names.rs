//! The duplicate-name check of [`super::Gguf::parse`], without an allocator and
//! without quadratic rescans.
//!
//! The names of a table (the metadata keys, or the tensor names) are indexed in
//! chunks of [`INDEX_LEN`]: the offsets of one chunk's names go into a stack array,
//! which is heap-sorted by name; equal neighbours are duplicates inside the chunk,
//! and every later name is looked up by binary search. A table of `n` names costs
//! `O(n log n)` name comparisons when `n <= INDEX_LEN` (every real model: SmolLM2
//! has 273 tensors and 40 keys), and `O(n^2 / INDEX_LEN * log INDEX_LEN)` beyond;
//! at the limits (65,536 names) that is under a second, where the Bloom filter this
//! replaces rescanned the table once per name (79 s for 65,000 tensors). Each chunk
//! walks the table once more to collect its offsets, so a key table with a large
//! string array is walked `n / INDEX_LEN + 1` times, not `n` times.

use core::cmp::Ordering;

use super::cursor::Cursor;
use super::tensor::read_info;
use super::value::{read_type, skip_value};
use super::{index_u32, HEADER_LEN, MAX_NAME_LEN};
use crate::{Error, Result};

/// Names indexed per chunk: 8 KiB of stack on 64-bit hosts, 1 KiB on 32-bit targets
/// (microcontrollers, wasm), where the tables are small anyway.
const INDEX_LEN: usize = if cfg!(target_pointer_width = "64") {
    1024
} else {
    256
};

/// One table of names in a file.
#[derive(Clone, Copy)]
pub(super) enum Table {
    /// The `count` metadata keys, from the end of the header.
    Keys,
    /// The tensor infos, from `infos_start`.
    Tensors {
        /// Offset of the first tensor info.
        infos_start: usize,
    },
}

/// Calls `f(index, offset)` for each name of `table` from index `from` on, in file
/// order, where `offset` is that of the name's length prefix; stops when `f` returns
/// `false`. The table was validated before, so a read error only ends the walk.
// One copy of the walk for both callers (`dyn`, not inlined): it runs once per chunk,
// and a copy per closure costs a firmware hundreds of bytes.
#[inline(never)]
fn walk(
    bytes: &[u8],
    table: Table,
    count: usize,
    from: usize,
    f: &mut dyn FnMut(usize, usize) -> bool,
) {
    match table {
        Table::Keys => {
            let mut cur = Cursor::new(bytes, HEADER_LEN);
            for i in 0..count {
                let at = cur.pos();
                if i >= from && !f(i, at) {
                    return;
                }
                let ok = cur.raw_string(MAX_NAME_LEN).is_ok()
                    && read_type(&mut cur).is_ok_and(|vt| skip_value(&mut cur, vt, false).is_ok());
                if !ok {
                    return;
                }
            }
        }
        Table::Tensors { infos_start } => {
            let mut cur = Cursor::new(bytes, infos_start);
            for i in 0..count {
                let at = cur.pos();
                if i >= from && !f(i, at) {
                    return;
                }
                if read_info(&mut cur, index_u32(i)).is_err() {
                    return;
                }
            }
        }
    }
}

/// The name whose length prefix is at `at` (empty if unreadable, which validation
/// already excluded).
fn name_at(bytes: &[u8], at: usize) -> &[u8] {
    Cursor::new(bytes, at)
        .raw_string(MAX_NAME_LEN)
        .map_or(&[][..], |(s, _)| s)
}

/// Names first, then offsets: a total order in which equal names are in file order.
fn by_name(bytes: &[u8], a: usize, b: usize) -> Ordering {
    name_at(bytes, a).cmp(name_at(bytes, b)).then(a.cmp(&b))
}

/// Heap sort of `v` by [`by_name`]: no allocation, no recursion, `O(len log len)`
/// comparisons, a few dozen instructions of code.
fn sort(bytes: &[u8], v: &mut [usize]) {
    let len = v.len();
    for start in (0..len / 2).rev() {
        sift_down(bytes, v, start, len);
    }
    for end in (1..len).rev() {
        v.swap(0, end);
        sift_down(bytes, v, 0, end);
    }
}

/// Restores the max-heap property of `v[..end]` below `root`.
fn sift_down(bytes: &[u8], v: &mut [usize], mut root: usize, end: usize) {
    loop {
        let left = root.saturating_mul(2).saturating_add(1);
        if left >= end {
            return;
        }
        let right = left.saturating_add(1);
        let child = match (v.get(left), v.get(right)) {
            (Some(&l), Some(&r)) if right < end && by_name(bytes, l, r) == Ordering::Less => right,
            _ => left,
        };
        match (v.get(root), v.get(child)) {
            (Some(&p), Some(&c)) if by_name(bytes, p, c) == Ordering::Less => {
                v.swap(root, child);
                root = child;
            }
            _ => return,
        }
    }
}

/// Checks that the `count` names of `table` are distinct.
///
/// # Errors
/// [`Error::DuplicateName`] with the smallest index whose name occurs at a smaller
/// index too.
pub(super) fn check_unique(bytes: &[u8], table: Table, count: usize) -> Result<()> {
    let mut index = [0usize; INDEX_LEN];
    // The smallest second occurrence found so far.
    let mut best = count;
    let mut first = 0;
    // A chunk starting at or after `best` cannot find an earlier second occurrence.
    while first < best {
        let len = INDEX_LEN.min(count.saturating_sub(first));
        let end = first.saturating_add(len);
        let mut n = 0;
        walk(bytes, table, count, first, &mut |i, at| {
            if let Some(slot) = index.get_mut(n) {
                *slot = at;
                n = n.saturating_add(1);
            }
            i.saturating_add(1) < end
        });
        let chunk = index.get_mut(..n).unwrap_or_default();
        // Offsets grow with the index, so a name's rank by offset in the chunk is its
        // index less `first`; keep the smallest duplicate offset and rank it after.
        let mut dup_at = None::<usize>;
        sort(bytes, chunk);
        for pair in chunk.windows(2) {
            if let [a, b] = *pair {
                if name_at(bytes, a) == name_at(bytes, b) {
                    dup_at = Some(dup_at.map_or(b, |d| d.min(b)));
                }
            }
        }
        if let Some(d) = dup_at {
            let rank = chunk.iter().filter(|&&o| o < d).count();
            best = best.min(first.saturating_add(rank));
        }
        let chunk = &*chunk;
        walk(bytes, table, count, end, &mut |i, at| {
            if i >= best {
                return false;
            }
            let name = name_at(bytes, at);
            if chunk
                .binary_search_by(|&o| name_at(bytes, o).cmp(name))
                .is_ok()
            {
                best = i;
                return false;
            }
            true
        });
        first = end;
        if len == 0 {
            break;
        }
    }
    if best < count {
        return Err(Error::DuplicateName {
            index: index_u32(best),
        });
    }
    Ok(())
}
