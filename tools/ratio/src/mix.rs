//! The workload description: a mix of entries, each a request (size, alignment or malloc,
//! lifetime class) repeated `count` times, and its parser.
//!
//! Syntax (one entry; entries are separated by commas or, in a file, by lines):
//!
//! ```text
//! SIZE x COUNT [@LIFE] [:OPTION]...
//! ```
//!
//! - `SIZE`: bytes, or with a binary suffix `KiB` / `MiB` (`4KiB` is 4096).
//! - `COUNT`: a number, `_` separators allowed, or with a decimal suffix `k` / `M`
//!   (`50k` is 50 000, `2M` is 2 000 000).
//! - `LIFE`: a lifetime class, by name (`frame`, `request`, `long`, `life3` … `life7`) or by
//!   index (`0` … `7`). Default `frame` (0).
//! - options: `malloc` (allocate with `malloc(size)`, which aligns to the next power of two,
//!   instead of `alloc(Layout)`), `align=N` (the `Layout`'s alignment, a power of two;
//!   default the largest power of two dividing the size, at most 8), `keep=P` or `keep=P%`
//!   (the share, 0 to 100, still live at the end; the rest is freed, evenly spread;
//!   default 100), `list` (link the allocations into one singly linked list, a next pointer
//!   in each).
//!
//! In a file, `#` starts a comment and blank lines are skipped.

use std::fmt;

/// Number of lifetime classes the tool knows (see `Life` in `workload`).
pub const LIFE_COUNT: usize = 8;

/// The names of the lifetime classes, by index.
pub const LIFE_NAMES: [&str; LIFE_COUNT] = [
    "frame", "request", "long", "life3", "life4", "life5", "life6", "life7",
];

/// The mix run when the user gives none: long-lived linked lists built while short-lived
/// allocations of other lifetime classes come and go, plus a spread of size classes.
pub const DEFAULT_MIX: &str = "\
# Long-lived linked structures: nodes are a next pointer and a payload, Layout(size, 8).
24x200k@long:list
48x50k@long:list
# Per-frame scratch, allocated between the list nodes and all freed.
16x300k@frame:keep=0
64x100k@frame:keep=0
# Per-request objects, half of them still live: the same 24-byte struct through
# alloc(Layout(24, 8)) (24-byte slots) and through malloc(24) (32-byte slots).
24x100k@request:keep=50
24x100k@request:malloc:keep=50
100x40k@request:keep=25
3x50k@request
# A spread of other classes: tiny slots, exact-fit, the 1/8 steps above 1 KiB, and large.
1x5k@long
1000x4k@long
5000x300@request:keep=50
20KiBx8@long
";

/// How an entry allocates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum How {
    /// `alloc(Layout::from_size_align(size, align))`: the exact-fit stride.
    Layout {
        /// The layout's alignment.
        align: usize,
    },
    /// `malloc(size)`: aligned to the next power of two of the size (at most 4096).
    Malloc,
}

/// One entry of a mix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Bytes per allocation.
    pub size: usize,
    /// Number of allocations.
    pub count: usize,
    /// Lifetime class index, below [`LIFE_COUNT`].
    pub life: usize,
    /// How each allocation is made.
    pub how: How,
    /// Percent of the allocations still live at the end.
    pub keep: u8,
    /// Link the allocations into a list.
    pub list: bool,
}

impl Entry {
    /// True when allocation `i` is one of the kept ones: `keep` percent of the indices,
    /// evenly spread.
    pub fn kept(&self, i: usize) -> bool {
        let k = self.keep as usize;
        (i + 1) * k / 100 > i * k / 100
    }

    /// The alignment given to the allocator (for `malloc`, the one it guarantees).
    pub fn align(&self) -> usize {
        match self.how {
            How::Layout { align } => align,
            How::Malloc => cohort::class::malloc_align(self.size),
        }
    }
}

impl fmt::Display for Entry {
    /// The entry in the mix syntax, with every option spelled out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}@{}", self.size, self.count, LIFE_NAMES[self.life])?;
        match self.how {
            How::Layout { align } => write!(f, ":align={align}")?,
            How::Malloc => write!(f, ":malloc")?,
        }
        if self.keep != 100 {
            write!(f, ":keep={}%", self.keep)?;
        }
        if self.list {
            write!(f, ":list")?;
        }
        Ok(())
    }
}

/// Largest size an entry may ask for (1 GiB): a guard against typos, not a limit of cohort.
const MAX_SIZE: usize = 1 << 30;

/// The default `Layout` alignment for a size: the largest power of two dividing it, at
/// most 8 (what a Rust struct of that size usually has).
pub fn natural_align(size: usize) -> usize {
    (1usize << size.trailing_zeros()).min(8)
}

/// Parses a mix: entries separated by commas or newlines, `#` comments.
pub fn parse(text: &str) -> Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("");
        for item in line.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let e = parse_entry(item).map_err(|why| {
                if text.lines().nth(1).is_some() {
                    format!("line {}: `{item}`: {why}", n + 1)
                } else {
                    format!("`{item}`: {why}")
                }
            })?;
            out.push(e);
        }
    }
    if out.is_empty() {
        return Err("the mix has no entries".into());
    }
    Ok(out)
}

/// Parses one entry, `SIZExCOUNT[@LIFE][:OPTION]...`.
pub fn parse_entry(s: &str) -> Result<Entry, String> {
    let mut parts = s.split(':');
    let head = parts.next().unwrap_or_default();
    let (size_count, life) = match head.split_once('@') {
        Some((sc, life)) => (sc, parse_life(life.trim())?),
        None => (head, 0),
    };
    let (size, count) = size_count
        .split_once(['x', 'X'])
        .ok_or("expected SIZExCOUNT, e.g. 24x1000")?;
    let size = parse_size(size.trim())?;
    let count = parse_count(count.trim())?;
    let mut align = None;
    let mut malloc = false;
    let mut keep = 100;
    let mut list = false;
    for opt in parts.map(str::trim) {
        let (key, value) = opt
            .split_once('=')
            .map_or((opt, None), |(k, v)| (k, Some(v.trim())));
        match (key.trim(), value) {
            ("malloc", None) => malloc = true,
            ("list", None) => list = true,
            ("align", Some(v)) => {
                let a = parse_number(v).ok_or_else(|| format!("bad alignment `{v}`"))?;
                if !a.is_power_of_two() {
                    return Err(format!("alignment {a} is not a power of two"));
                }
                align = Some(a);
            }
            ("keep", Some(v)) => {
                let v = v.strip_suffix('%').unwrap_or(v).trim();
                keep = match parse_number(v) {
                    Some(k) if k <= 100 => k as u8,
                    _ => return Err(format!("keep wants a percentage from 0 to 100, not `{v}`")),
                };
            }
            _ => {
                return Err(format!(
                    "unknown option `{opt}` (options: malloc, align=N, keep=P%, list)"
                ))
            }
        }
    }
    let how = match (malloc, align) {
        (true, Some(_)) => return Err("`malloc` and `align=` exclude each other".into()),
        (true, None) => How::Malloc,
        (false, a) => How::Layout {
            align: a.unwrap_or_else(|| natural_align(size)),
        },
    };
    let e = Entry {
        size,
        count,
        life,
        how,
        keep,
        list,
    };
    if list && (size < size_of::<usize>() || e.align() < align_of::<usize>()) {
        return Err(format!(
            "a list node holds a pointer: it needs at least {} bytes aligned to {}",
            size_of::<usize>(),
            align_of::<usize>()
        ));
    }
    Ok(e)
}

fn parse_life(s: &str) -> Result<usize, String> {
    if let Some(i) = parse_number(s) {
        if i < LIFE_COUNT {
            return Ok(i);
        }
    }
    LIFE_NAMES
        .iter()
        .position(|n| n.eq_ignore_ascii_case(s))
        .ok_or_else(|| {
            format!(
                "unknown lifetime class `{s}` (use {} or 0 to {})",
                LIFE_NAMES.join(", "),
                LIFE_COUNT - 1
            )
        })
}

/// A plain decimal number, `_` separators allowed.
fn parse_number(s: &str) -> Option<usize> {
    let digits: String = s.chars().filter(|&c| c != '_').collect();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn with_suffix(s: &str, suffixes: &[(&str, usize)]) -> Option<usize> {
    for &(suffix, scale) in suffixes {
        if let Some(n) = s.strip_suffix(suffix) {
            return parse_number(n.trim())?.checked_mul(scale);
        }
    }
    parse_number(s)
}

fn parse_size(s: &str) -> Result<usize, String> {
    let size = with_suffix(s, &[("KiB", 1 << 10), ("MiB", 1 << 20)])
        .ok_or_else(|| format!("bad size `{s}` (bytes, or with KiB / MiB)"))?;
    if size == 0 || size > MAX_SIZE {
        return Err(format!("size {size} is outside 1 B to 1 GiB"));
    }
    Ok(size)
}

fn parse_count(s: &str) -> Result<usize, String> {
    let count = with_suffix(
        s,
        &[("k", 1000), ("K", 1000), ("M", 1_000_000), ("m", 1_000_000)],
    )
    .ok_or_else(|| format!("bad count `{s}` (a number, or with k / M)"))?;
    if count == 0 {
        return Err("count 0: leave the entry out".into());
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize, count: usize, life: usize, align: usize) -> Entry {
        Entry {
            size,
            count,
            life,
            how: How::Layout { align },
            keep: 100,
            list: false,
        }
    }

    #[test]
    fn plain_entries() {
        assert_eq!(
            parse("16x100000@0").unwrap(),
            vec![layout(16, 100_000, 0, 8)]
        );
        assert_eq!(
            parse("24x50k@request, 3x1_000@long,12x2M").unwrap(),
            vec![
                layout(24, 50_000, 1, 8),
                layout(3, 1000, 2, 1),
                layout(12, 2_000_000, 0, 4)
            ]
        );
        assert_eq!(parse("4KiBx2@LONG").unwrap(), vec![layout(4096, 2, 2, 8)]);
        assert_eq!(parse("1MiBx1@7").unwrap(), vec![layout(1 << 20, 1, 7, 8)]);
    }

    #[test]
    fn options() {
        let e = parse_entry("24x10@1:malloc:keep=50%").unwrap();
        assert_eq!((e.how, e.keep, e.list), (How::Malloc, 50, false));
        assert_eq!(e.align(), 32);
        let e = parse_entry("24x10:align=64:keep=0:list").unwrap();
        assert_eq!(
            (e.how, e.keep, e.list, e.life),
            (How::Layout { align: 64 }, 0, true, 0)
        );
    }

    #[test]
    fn files_with_comments_and_lines() {
        let text = "# a comment\n16x10@frame  # scratch\n\n  24x5@long:list, 8x1\n";
        let mix = parse(text).unwrap();
        assert_eq!(mix.len(), 3);
        assert!(mix[1].list);
        let err = parse("16x10\n24x@long\n").unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
    }

    #[test]
    fn errors_say_what_is_wrong() {
        for (bad, says) in [
            ("", "no entries"),
            ("16", "SIZExCOUNT"),
            ("0x10", "outside"),
            ("2048MiBx1", "outside"),
            ("16x0", "count 0"),
            ("16x10@9", "unknown lifetime class"),
            ("16x10@forever", "unknown lifetime class"),
            ("16x10:align=3", "power of two"),
            ("16x10:keep=101", "0 to 100"),
            ("16x10:malloc:align=8", "exclude"),
            ("16x10:zero", "unknown option"),
            ("4x10:list", "list node"),
            ("12x10:list", "list node"),
            ("12kx10", "bad size"),
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains(says), "`{bad}` gave `{err}`");
        }
    }

    #[test]
    fn keep_spreads_evenly() {
        let mut e = layout(8, 1000, 0, 8);
        for keep in [0u8, 1, 25, 50, 99, 100] {
            e.keep = keep;
            let kept: Vec<usize> = (0..1000).filter(|&i| e.kept(i)).collect();
            assert_eq!(kept.len(), keep as usize * 10);
            if keep == 50 {
                assert!(kept.iter().all(|i| i % 2 == 1));
            }
        }
    }

    #[test]
    fn display_round_trips() {
        for e in parse(DEFAULT_MIX).unwrap() {
            assert_eq!(parse_entry(&e.to_string()).unwrap(), e);
        }
    }
}
