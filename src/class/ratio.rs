//! The ratio contract: for a request of `size` bytes, the worst `block bytes / usable
//! bytes` a block of its class may have ([`ratio_contract_limit`], in units of
//! `1 / LIMIT_DEN`), by rows of sizes ([`RATIO_CONTRACT_ROWS`]).
//!
//! Invariants: the rows cover `1..=8192` without gap or overlap, and
//! `ratio_contract_limit` is constant on each row (above it, the last row's figure); every
//! class `c` of the table meets it, `block_size * LIMIT_DEN <= capacity * stride *
//! ratio_contract_limit(stride)` ([`meets_ratio`], checked at compile time by the parent
//! module).

use super::Class;

/// Denominator of the ratio limits: a limit is `num / LIMIT_DEN`.
pub const LIMIT_DEN: u64 = 10_000_000;

/// The rows of the ratio contract: (first size, last size) of each row. Every size of a row
/// has the same limit, [`ratio_contract_limit`].
pub const RATIO_CONTRACT_ROWS: [(usize, usize); 13] = [
    (1, 1),
    (2, 2),
    (3, 4),
    (5, 8),
    (9, 16),
    (17, 64),
    (65, 128),
    (129, 256),
    (257, 512),
    (513, 1024),
    (1025, 2048),
    (2049, 4096),
    (4097, 8192),
];

/// The ratio contract: for requests of `size` bytes, the worst `block bytes / usable bytes`
/// a block may have, times [`LIMIT_DEN`]. The contract's rows end at 8 KiB
/// ([`RATIO_CONTRACT_ROWS`]); above, cohort holds its classes to the last row's figure.
///
/// # Examples
///
/// ```
/// use cohort::class::{ratio_contract_limit, LIMIT_DEN};
/// // A 64-byte request may lose at most this fraction of a block.
/// let limit = ratio_contract_limit(64) as f64 / LIMIT_DEN as f64;
/// assert!(limit > 1.0 && limit < 1.01);
/// ```
pub const fn ratio_contract_limit(size: usize) -> u64 {
    match size {
        0..=1 => 10_240_000,
        2 => 10_002_300,
        3..=4 => 10_000_340,
        5..=8 => 10_000_380,
        9..=16 => 10_000_458,
        17..=64 => 10_000_600,
        65..=128 => 10_001_000,
        129..=256 => 10_002_400,
        257..=512 => 10_005_000,
        513..=1024 => 10_010_000,
        1025..=2048 => 10_020_000,
        2049..=4096 => 10_040_000,
        _ => 10_080_000,
    }
}

/// True when the geometry meets the ratio contract for every size the class serves (the
/// worst is its largest size, the stride itself, whose row is the strictest it meets).
///
/// # Examples
///
/// ```
/// use cohort::class::{meets_ratio, CLASSES};
/// assert!(CLASSES.iter().all(meets_ratio));
/// ```
pub const fn meets_ratio(c: &Class) -> bool {
    let block = c.block_size() as u64;
    let usable = c.usable() as u64;
    block * LIMIT_DEN <= usable * ratio_contract_limit(c.stride as usize)
}
