//! The region header: the first words of a shared or file-backed region, which make it
//! self-describing.
//!
//! The header is [`WORDS`] 64-bit words at the region's base (little-endian, as every
//! target cohort supports is), in the first [`HEADER_BYTES`]:
//!
//! | word | what |
//! |---|---|
//! | `MAGIC` | [`MAGIC`]: this is a cohort region |
//! | `VERSION` | [`LAYOUT_VERSION`] of the code that formatted it: this header's layout |
//! | `STATE` | [`NEVER_WRITTEN`], [`INITIALISING`] or [`READY`] (the only word that changes after formatting, with the roots) |
//! | `FLAGS` | [`FLAG_CHECKED`]: formatted by a checked build (live bits in the region) |
//! | `LIFE_COUNT`, `CLASS_COUNT`, `CLASS_HASH` | the lifetime classes; the size-class table (count and a hash of its geometry) |
//! | `LIFE_NAMES` | a hash of the lifetime classes' names ([`names_hash`]): a type with as many classes of other names is refused |
//! | `BLOCK_SIZE`, `PAGE_SIZE`, `CAPACITY` | the geometry: bytes per block, per page, in the whole region |
//! | `STATE_OFFSET`, `STATE_LEN`, `BLOCKS_OFFSET`, `UNIT_COUNT` | where the instance's state and the blocks are |
//! | `CREATOR_PID`, `CREATOR_WORD` | the process that formatted it: pid, and its process word (pid, pid namespace, start time) |
//! | `STATE_LAYOUT` | the layout version of the instance's state (the instance layer's) |
//! | `CHECKSUM` | a hash of every word above except `STATE` |
//! | `ROOTS..` | [`ROOT_SLOTS`] root slots: offsets (0 = empty) a process finds its data by |
//!
//! Layout equations (checked by [`validate`]): `STATE_OFFSET = max(HEADER_BYTES, PAGE_SIZE)`
//! (the state starts on a page); `SEAL = STATE_OFFSET` (a seal page's bytes);
//! `BLOCKS_OFFSET = round_up(STATE_OFFSET + STATE_LEN + SEAL, BLOCK_SIZE)`;
//! `CAPACITY = BLOCKS_OFFSET + UNIT_COUNT * BLOCK_SIZE + SEAL`, `UNIT_COUNT >= 1`;
//! the seal pages are at `STATE_OFFSET + STATE_LEN` and `CAPACITY - SEAL` (see
//! `attach`: each holds the attach generation in its first word);
//! `STATE_LEN = state_len(UNIT_COUNT, LIFE_COUNT, checked)` of the opener's code;
//! every root is 0 or below `CAPACITY`; the file holds at least `CAPACITY` bytes.
//!
//! Validation reads the words into a plain array first ([`Header::snapshot`]) and checks
//! that: any bytes at all give an answer, never a crash, and nothing is written.

use super::error::RegionError;
use crate::class::{BLOCK_SIZE, CLASSES, CLASS_COUNT};
use core::sync::atomic::{AtomicU64, Ordering};

/// The bytes the header takes: the instance's state starts at the first page boundary
/// from here ([`Expected::state_offset`]).
pub(crate) const HEADER_BYTES: usize = 4096;
/// "cohortR" and a 1, read as a little-endian word.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"cohortR\x01");
/// The layout of the header and of where things lie in a region: bumped whenever it
/// changes, so that code never attaches to a region it would misread. (The instance state's
/// own layout has a version of its own, `STATE_LAYOUT`.) 6: the seals take every write of
/// the state (`crate::pool::write_seal`), and an opener accepts a seal below `GEN` while a
/// slot is held: a build of 5 on the same region would refuse what 6 writes.
pub(crate) const LAYOUT_VERSION: u64 = 6;
/// The number of root slots in the header.
pub const ROOT_SLOTS: usize = 16;

/// `STATE` of a header nobody has written (the file was just created and sized).
pub(crate) const NEVER_WRITTEN: u64 = 0;
/// `STATE` while the creator formats the instance's state.
pub(crate) const INITIALISING: u64 = 1;
/// `STATE` once the region is ready to be opened.
pub(crate) const READY: u64 = 2;

/// `FLAGS` bit: the region was formatted by a checked build.
pub(crate) const FLAG_CHECKED: u64 = 1;

pub(crate) const W_MAGIC: usize = 0;
pub(crate) const W_VERSION: usize = 1;
pub(crate) const W_STATE: usize = 2;
const W_FLAGS: usize = 3;
const W_LIFE_COUNT: usize = 4;
const W_CLASS_COUNT: usize = 5;
const W_CLASS_HASH: usize = 6;
const W_BLOCK_SIZE: usize = 7;
const W_PAGE_SIZE: usize = 8;
const W_CAPACITY: usize = 9;
const W_STATE_OFFSET: usize = 10;
const W_STATE_LEN: usize = 11;
const W_BLOCKS_OFFSET: usize = 12;
const W_UNIT_COUNT: usize = 13;
const W_CREATOR_PID: usize = 14;
const W_CREATOR_WORD: usize = 15;
const W_STATE_LAYOUT: usize = 16;
const W_LIFE_NAMES: usize = 17;
pub(crate) const W_CHECKSUM: usize = 18;
const W_ROOTS: usize = 19;
/// The header's words.
pub(crate) const WORDS: usize = W_ROOTS + ROOT_SLOTS;
const _: () = assert!(WORDS * 8 <= HEADER_BYTES);

/// The bytes of the instance state for a region of `unit_count` blocks and `life_count`
/// lifetime classes, in a checked build or not (`None` when it would not fit in the
/// address space): the instance layer's measure.
pub(crate) type StateLen = fn(unit_count: usize, life_count: usize, checked: bool) -> Option<usize>;

/// The header as it lies in the region.
#[repr(C)]
pub(crate) struct Header {
    words: [AtomicU64; WORDS],
}

/// What an opener's code expects of a region: everything it would misread otherwise.
#[derive(Clone, Copy)]
pub(crate) struct Expected {
    /// The lifetime classes of the opener's type (the header's count).
    pub(crate) life_count: usize,
    /// A hash of their names, in index order ([`names_hash`]).
    pub(crate) life_names: u64,
    /// The lifetime classes its instance is built for (the state's measure: the type's and
    /// the hidden ones).
    pub(crate) inside_count: usize,
    pub(crate) checked: bool,
    pub(crate) page_size: usize,
    /// The instance state's layout version.
    pub(crate) state_layout: u64,
    pub(crate) state_len: StateLen,
}

/// Where things are in a region: the part of the header an instance is built from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) capacity: usize,
    pub(crate) state_offset: usize,
    pub(crate) state_len: usize,
    pub(crate) blocks_offset: usize,
    pub(crate) unit_count: usize,
}

impl Expected {
    /// Where the instance's state starts: past the header, on a page boundary (so that its
    /// page-aligned parts are page aligned in memory too).
    pub(crate) fn state_offset(&self) -> usize {
        HEADER_BYTES.max(self.page_size)
    }

    /// The bytes of each seal page (the one between the state and the blocks, and the one
    /// after the blocks): a page, as the header's.
    pub(crate) fn seal_bytes(&self) -> usize {
        self.state_offset()
    }

    /// Where the blocks start for a state of `state_len` bytes: past the state and the
    /// middle seal, on a block boundary.
    fn blocks_offset(&self, state_len: usize) -> Option<usize> {
        self.state_offset()
            .checked_add(state_len)?
            .checked_add(self.seal_bytes())?
            .checked_next_multiple_of(BLOCK_SIZE)
    }
}

impl Layout {
    /// The end of the blocks: `BLOCKS_OFFSET + UNIT_COUNT * BLOCK_SIZE`, where the tail seal
    /// page starts (`CAPACITY - SEAL`). Every allocation lies in `[blocks_offset,
    /// blocks_end())`.
    pub(crate) fn blocks_end(&self) -> usize {
        self.blocks_offset + self.unit_count * BLOCK_SIZE
    }

    /// The layout of a new region whose blocks hold `blocks` bytes (rounded down to whole
    /// blocks, at least one), as a region's options count its capacity: the header, the
    /// state and the seals come on top.
    pub(crate) fn of_blocks(blocks: usize, expect: &Expected) -> Result<Layout, RegionError> {
        let units = (blocks / BLOCK_SIZE).max(1);
        let capacity = (expect.state_len)(units, expect.inside_count, expect.checked)
            .and_then(|len| expect.blocks_offset(len))
            .and_then(|offset| offset.checked_add(units.checked_mul(BLOCK_SIZE)?))
            .ok_or(RegionError::Capacity {
                requested: blocks,
                minimum: None,
            })?;
        let layout = Layout::new(capacity, expect)?;
        debug_assert_eq!(layout.unit_count, units);
        Ok(layout)
    }

    /// The layout of a new region of `capacity` bytes (rounded up to whole blocks, plus the
    /// tail seal's page), or the
    /// error saying why there is none (too small to hold the state and one block, or too
    /// large to address).
    pub(crate) fn new(capacity: usize, expect: &Expected) -> Result<Layout, RegionError> {
        let too_big = RegionError::Capacity {
            requested: capacity,
            minimum: None,
        };
        let capacity = capacity.checked_next_multiple_of(BLOCK_SIZE).ok_or(too_big)?;
        // The state grows with the unit count: fix the count from the capacity, then check
        // the state and the blocks fit.
        let guess = capacity / BLOCK_SIZE;
        for unit_count in (1..=guess).rev() {
            let state_len = (expect.state_len)(unit_count, expect.inside_count, expect.checked);
            let Some((state_len, blocks_offset)) = state_len.and_then(|len| {
                Some((len, expect.blocks_offset(len)?))
            }) else {
                return Err(RegionError::Capacity {
                    requested: capacity,
                    minimum: None,
                });
            };
            // The tail seal comes on top of the capacity asked for (rounded).
            let end = blocks_offset
                .checked_add(unit_count * BLOCK_SIZE)
                .filter(|&end| end <= capacity)
                .and_then(|end| end.checked_add(expect.seal_bytes()));
            if let Some(used) = end {
                return Ok(Layout {
                    capacity: used,
                    state_offset: expect.state_offset(),
                    state_len,
                    blocks_offset,
                    unit_count,
                });
            }
        }
        let minimum = (expect.state_len)(1, expect.inside_count, expect.checked)
            .and_then(|len| expect.blocks_offset(len))
            .and_then(|offset| offset.checked_add(BLOCK_SIZE));
        Err(RegionError::Capacity {
            requested: capacity,
            minimum,
        })
    }
}

/// A hash of the size-class table's geometry: two builds whose tables differ in any slot
/// stride, first slot, capacity or run length hash differently (as far as 64 bits can).
pub(crate) fn class_hash() -> u64 {
    let mut h = Fnv::new();
    for c in CLASSES.iter() {
        for v in [c.stride, c.first, c.capacity, c.limit, c.run_len] {
            h.word(u64::from(v));
        }
    }
    h.0
}

/// The hash of lifetime-class names the header keeps (`LIFE_NAMES`): 64-bit FNV-1a over
/// each name's bytes, each followed by its length (so that `["ab", "c"]` and `["a", "bc"]`
/// differ).
pub(crate) fn names_hash(names: &[&str]) -> u64 {
    let mut h = Fnv::new();
    for name in names {
        for b in name.bytes() {
            h.byte(b);
        }
        h.word(name.len() as u64);
    }
    h.0
}

/// 64-bit FNV-1a over words, byte by byte.
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn byte(&mut self, b: u8) {
        self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }

    fn word(&mut self, w: u64) {
        for b in w.to_le_bytes() {
            self.byte(b);
        }
    }
}

/// The checksum of a header's words: every word before `CHECKSUM` except `STATE`.
pub(crate) fn checksum(words: &[u64; WORDS]) -> u64 {
    let mut h = Fnv::new();
    for (i, &w) in words[..W_CHECKSUM].iter().enumerate() {
        h.word(if i == W_STATE { 0 } else { w });
    }
    h.0
}

/// The words a creator writes for `layout`, with `STATE` [`INITIALISING`] and no roots.
pub(crate) fn format_words(layout: &Layout, expect: &Expected, pid: i32, word: u64) -> [u64; WORDS] {
    let mut w = [0u64; WORDS];
    w[W_MAGIC] = MAGIC;
    w[W_VERSION] = LAYOUT_VERSION;
    w[W_STATE] = INITIALISING;
    w[W_FLAGS] = if expect.checked { FLAG_CHECKED } else { 0 };
    w[W_LIFE_COUNT] = expect.life_count as u64;
    w[W_CLASS_COUNT] = CLASS_COUNT as u64;
    w[W_CLASS_HASH] = class_hash();
    w[W_BLOCK_SIZE] = BLOCK_SIZE as u64;
    w[W_PAGE_SIZE] = expect.page_size as u64;
    w[W_CAPACITY] = layout.capacity as u64;
    w[W_STATE_OFFSET] = layout.state_offset as u64;
    w[W_STATE_LEN] = layout.state_len as u64;
    w[W_BLOCKS_OFFSET] = layout.blocks_offset as u64;
    w[W_UNIT_COUNT] = layout.unit_count as u64;
    w[W_CREATOR_PID] = pid as u64;
    w[W_CREATOR_WORD] = word;
    w[W_STATE_LAYOUT] = expect.state_layout;
    w[W_LIFE_NAMES] = expect.life_names;
    w[W_CHECKSUM] = checksum(&w);
    w
}

/// Checks a header's words against what the opener expects, for a file of `file_len`
/// bytes; returns the region's layout, or the first thing that differs. Never writes, never
/// panics, whatever the words hold. `STATE` is not looked at (the caller waits for it).
pub(crate) fn validate(w: &[u64; WORDS], file_len: u64, expect: &Expected) -> Result<Layout, RegionError> {
    let layout = validate_layout(w, file_len, expect)?;
    for (slot, &root) in w[W_ROOTS..].iter().enumerate() {
        if root >= layout.capacity as u64 {
            return Err(RegionError::Root {
                slot,
                offset: root,
                capacity: layout.capacity as u64,
            });
        }
    }
    Ok(layout)
}

/// [`validate`] without the root slots: what a reader that checks each root on its own
/// needs (`SharedCohort::salvage`: one damaged root must not hide the others).
pub(crate) fn validate_layout(
    w: &[u64; WORDS],
    file_len: u64,
    expect: &Expected,
) -> Result<Layout, RegionError> {
    if w[W_MAGIC] != MAGIC {
        return Err(RegionError::BadMagic {
            found: w[W_MAGIC].to_le_bytes(),
        });
    }
    if w[W_VERSION] != LAYOUT_VERSION {
        return Err(RegionError::Version {
            what: "region",
            expected: LAYOUT_VERSION,
            found: w[W_VERSION],
        });
    }
    if w[W_STATE_LAYOUT] != expect.state_layout {
        return Err(RegionError::Version {
            what: "instance state",
            expected: expect.state_layout,
            found: w[W_STATE_LAYOUT],
        });
    }
    let sum = checksum(w);
    if w[W_CHECKSUM] != sum {
        return Err(RegionError::Corrupt {
            expected: sum,
            found: w[W_CHECKSUM],
        });
    }
    if w[W_LIFE_COUNT] != expect.life_count as u64 {
        return Err(RegionError::LifetimeClasses {
            expected: expect.life_count,
            found: w[W_LIFE_COUNT],
        });
    }
    if w[W_LIFE_NAMES] != expect.life_names {
        return Err(RegionError::LifetimeNames {
            expected: expect.life_names,
            found: w[W_LIFE_NAMES],
        });
    }
    let same = |field: &'static str, word: usize, expected: u64| {
        if w[word] == expected {
            Ok(())
        } else {
            Err(RegionError::Geometry {
                field,
                expected,
                found: w[word],
            })
        }
    };
    same("block size", W_BLOCK_SIZE, BLOCK_SIZE as u64)?;
    same("page size", W_PAGE_SIZE, expect.page_size as u64)?;
    same("size-class count", W_CLASS_COUNT, CLASS_COUNT as u64)?;
    same("size-class table hash", W_CLASS_HASH, class_hash())?;
    same(
        "checked-build flag",
        W_FLAGS,
        if expect.checked { FLAG_CHECKED } else { 0 },
    )?;
    same("state offset", W_STATE_OFFSET, expect.state_offset() as u64)?;
    // Sizes this process cannot address are garbage (or another machine's).
    let unit_count = usize::try_from(w[W_UNIT_COUNT]).unwrap_or(usize::MAX);
    let max_units = (isize::MAX as usize) / BLOCK_SIZE;
    if unit_count == 0 || unit_count > max_units {
        return Err(RegionError::Geometry {
            field: "block count",
            expected: 1,
            found: w[W_UNIT_COUNT],
        });
    }
    let blocks = (expect.state_len)(unit_count, expect.inside_count, expect.checked)
        .and_then(|len| Some((len, expect.blocks_offset(len)?)));
    let Some((state_len, blocks_offset)) = blocks else {
        return Err(RegionError::Geometry {
            field: "block count",
            expected: 1,
            found: w[W_UNIT_COUNT],
        });
    };
    same("state length", W_STATE_LEN, state_len as u64)?;
    same("blocks offset", W_BLOCKS_OFFSET, blocks_offset as u64)?;
    let capacity = (unit_count as u128) * (BLOCK_SIZE as u128)
        + blocks_offset as u128
        + expect.seal_bytes() as u128;
    if u128::from(w[W_CAPACITY]) != capacity || capacity > isize::MAX as u128 {
        return Err(RegionError::Geometry {
            field: "capacity",
            expected: u64::try_from(capacity).unwrap_or(u64::MAX),
            found: w[W_CAPACITY],
        });
    }
    let capacity = capacity as usize;
    if file_len < capacity as u64 {
        return Err(RegionError::Truncated {
            expected: capacity as u64,
            found: file_len,
        });
    }
    Ok(Layout {
        capacity,
        state_offset: expect.state_offset(),
        state_len,
        blocks_offset,
        unit_count,
    })
}

impl Header {
    /// The header at `base`.
    ///
    /// # Safety
    /// `base` is aligned to 8 and maps at least [`HEADER_BYTES`] readable bytes for `'a`
    /// (writable too if the header is written through the result).
    pub(crate) unsafe fn at<'a>(base: *const u8) -> &'a Header {
        // SAFETY: the caller guarantees the bytes are mapped for 'a; any bits are valid
        // atomics.
        unsafe { &*base.cast::<Header>() }
    }

    /// A copy of the words, read one by one (the roots and state may change meanwhile).
    pub(crate) fn snapshot(&self) -> [u64; WORDS] {
        core::array::from_fn(|i| self.words[i].load(Ordering::Acquire))
    }

    /// `STATE`.
    pub(crate) fn state(&self) -> u64 {
        self.words[W_STATE].load(Ordering::Acquire)
    }

    /// The creator's pid and process word.
    pub(crate) fn creator(&self) -> (u64, u64) {
        (
            self.words[W_CREATOR_PID].load(Ordering::Relaxed),
            self.words[W_CREATOR_WORD].load(Ordering::Relaxed),
        )
    }

    /// Writes the words of a new region, `STATE` last (Release), so an opener that reads it
    /// non-zero (Acquire) reads the rest whole.
    pub(crate) fn write(&self, words: &[u64; WORDS]) {
        for (i, &w) in words.iter().enumerate().filter(|&(i, _)| i != W_STATE) {
            self.words[i].store(w, Ordering::Relaxed);
        }
        self.words[W_STATE].store(words[W_STATE], Ordering::Release);
    }

    /// Marks the region ready: everything written before is seen by any process that reads
    /// the state [`READY`].
    pub(crate) fn publish_ready(&self) {
        self.words[W_STATE].store(READY, Ordering::Release);
    }

    /// Root slot `slot` (below [`ROOT_SLOTS`]): 0 or an offset.
    pub(crate) fn root(&self, slot: usize) -> &AtomicU64 {
        &self.words[W_ROOTS + slot]
    }
}

#[cfg(test)]
pub(crate) mod tests;
