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
//! - `LIFE`: the lifetime class, a name of your choice (letters, digits, `_`, `-`; case
//!   does not matter): the first name a mix uses is class 0, the next new one class 1, and
//!   so on, up to [`LIFE_COUNT`] names. Default `default`.
//! - options: `malloc` (allocate with `malloc(size)`, which aligns to the next power of two,
//!   instead of `alloc(Layout)`), `align=N` (the `Layout`'s alignment, a power of two;
//!   default the largest power of two dividing the size, at most 8), `keep=P` or `keep=P%`
//!   (the share, 0 to 100, still live at the end; the rest is freed, evenly spread;
//!   default 100), `list` (link the allocations into one singly linked list, a next pointer
//!   in each).
//!
//! In a file, `#` starts a comment and blank lines are skipped.

use std::fmt;

/// Number of lifetime classes a mix may name (see `Life` in `workload`).
pub const LIFE_COUNT: usize = 8;

/// The lifetime class of an entry that names none.
pub const DEFAULT_LIFE: &str = "default";

/// The lifetime classes a mix names, in the order it first names them: the name's position
/// is the class's index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lives {
    names: Vec<String>,
}

impl Lives {
    /// The index of the class called `name`, giving it the next index if it is new.
    pub fn index(&mut self, name: &str) -> Result<usize, String> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "bad lifetime class name `{name}` (letters, digits, _ and -)"
            ));
        }
        if let Some(i) = self.names.iter().position(|n| n.eq_ignore_ascii_case(name)) {
            return Ok(i);
        }
        if self.names.len() == LIFE_COUNT {
            return Err(format!(
                "`{name}` would be a lifetime class too many: a mix names at most {LIFE_COUNT} \
                 ({})",
                self.names.join(", ")
            ));
        }
        self.names.push(name.to_owned());
        Ok(self.names.len() - 1)
    }

    /// The name of class `i` (a class the mix named).
    pub fn name(&self, i: usize) -> &str {
        &self.names[i]
    }

    /// The names, by index.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

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
# A spread of other classes: tiny slots, exact-fit, the 1/8 steps above 1 KiB.
1x5k@long
1000x4k@long
5000x300@request:keep=50
# Medium sizes (above 16 KiB, up to 1 MiB): runs of granules in medium blocks.
20KiBx8@long
100KiBx40@request:keep=50
700KiBx4@frame:keep=0
# Large (above 1 MiB): a mapping of its own.
2MiBx2@long
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
    /// Lifetime class index, below [`LIFE_COUNT`] (see [`Lives`]).
    pub life: usize,
    /// The lifetime class's name, as the mix spells it first.
    pub life_name: String,
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
    /// The entry in the mix syntax, short: counts with `k` / `M` when exact, options only
    /// where they differ from the defaults.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = match self.count {
            c if c % 1_000_000 == 0 => format!("{}M", c / 1_000_000),
            c if c % 1000 == 0 => format!("{}k", c / 1000),
            c => c.to_string(),
        };
        write!(f, "{}x{count}@{}", self.size, self.life_name)?;
        match self.how {
            How::Layout { align } if align == natural_align(self.size) => {}
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

/// Parses a mix: entries separated by commas or newlines, `#` comments; lifetime class
/// names are looked up in (and added to) `lives`, so several mixes can share them.
pub fn parse(text: &str, lives: &mut Lives) -> Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("");
        for item in line.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let e = parse_entry(item, lives).map_err(|why| {
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
pub fn parse_entry(s: &str, lives: &mut Lives) -> Result<Entry, String> {
    let mut parts = s.split(':');
    let head = parts.next().unwrap_or_default();
    let (size_count, life_name) = match head.split_once('@') {
        Some((sc, life)) => (sc, life.trim()),
        None => (head, DEFAULT_LIFE),
    };
    let life = lives.index(life_name)?;
    let life_name = lives.name(life).to_owned();
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
        life_name,
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

pub fn parse_size(s: &str) -> Result<usize, String> {
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

    fn layout(size: usize, count: usize, life: (usize, &str), align: usize) -> Entry {
        Entry {
            size,
            count,
            life: life.0,
            life_name: life.1.into(),
            how: How::Layout { align },
            keep: 100,
            list: false,
        }
    }

    fn parse1(text: &str) -> Result<Vec<Entry>, String> {
        parse(text, &mut Lives::default())
    }

    #[test]
    fn plain_entries() {
        assert_eq!(
            parse1("16x100000@frame").unwrap(),
            vec![layout(16, 100_000, (0, "frame"), 8)]
        );
        assert_eq!(
            parse1("24x50k@request, 3x1_000@long,12x2M, 8x1@Request").unwrap(),
            vec![
                layout(24, 50_000, (0, "request"), 8),
                layout(3, 1000, (1, "long"), 1),
                layout(12, 2_000_000, (2, "default"), 4),
                layout(8, 1, (0, "request"), 8),
            ]
        );
        assert_eq!(
            parse1("4KiBx2@7").unwrap(),
            vec![layout(4096, 2, (0, "7"), 8)]
        );
    }

    #[test]
    fn users_name_their_lifetime_classes() {
        let mut lives = Lives::default();
        let mix = parse("24x10@ast:list, 16x10@tokens:keep=0", &mut lives).unwrap();
        assert_eq!((mix[0].life, mix[1].life), (0, 1));
        // A second mix shares the names.
        let more = parse("8x1@ir, 8x1@AST", &mut lives).unwrap();
        assert_eq!((more[0].life, more[1].life), (2, 0));
        assert_eq!(lives.names(), ["ast", "tokens", "ir"]);
        let nine = (0..9)
            .map(|i| format!("8x1@c{i}"))
            .collect::<Vec<_>>()
            .join(",");
        let err = parse1(&nine).unwrap_err();
        assert!(err.contains("at most 8"), "{err}");
        assert!(parse1("8x1@a.b")
            .unwrap_err()
            .contains("bad lifetime class name"));
    }

    #[test]
    fn options() {
        let mut lives = Lives::default();
        let e = parse_entry("24x10@x:malloc:keep=50%", &mut lives).unwrap();
        assert_eq!((e.how, e.keep, e.list), (How::Malloc, 50, false));
        assert_eq!(e.align(), 32);
        let e = parse_entry("24x10:align=64:keep=0:list", &mut lives).unwrap();
        assert_eq!(
            (e.how, e.keep, e.list, e.life),
            (How::Layout { align: 64 }, 0, true, 1)
        );
    }

    #[test]
    fn files_with_comments_and_lines() {
        let text = "# a comment\n16x10@frame  # scratch\n\n  24x5@long:list, 8x1\n";
        let mix = parse1(text).unwrap();
        assert_eq!(mix.len(), 3);
        assert!(mix[1].list);
        let err = parse1("16x10\n24x@long\n").unwrap_err();
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
            ("16x10@", "bad lifetime class name"),
            ("16x10@for ever", "bad lifetime class name"),
            ("16x10:align=3", "power of two"),
            ("16x10:keep=101", "0 to 100"),
            ("16x10:malloc:align=8", "exclude"),
            ("16x10:zero", "unknown option"),
            ("4x10:list", "list node"),
            ("12x10:list", "list node"),
            ("12kx10", "bad size"),
        ] {
            let err = parse1(bad).unwrap_err();
            assert!(err.contains(says), "`{bad}` gave `{err}`");
        }
    }

    #[test]
    fn keep_spreads_evenly() {
        let mut e = layout(8, 1000, (0, "a"), 8);
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
        let mut lives = Lives::default();
        for e in parse(DEFAULT_MIX, &mut lives).unwrap() {
            assert_eq!(parse_entry(&e.to_string(), &mut lives).unwrap(), e);
        }
        let e = parse1("24x1500@a:align=4:keep=5:list").unwrap_err();
        assert!(e.contains("list node"), "{e}");
        let e = &parse1("24x1500@a:align=16:keep=5").unwrap()[0];
        assert_eq!(e.to_string(), "24x1500@a:align=16:keep=5%");
    }
}
