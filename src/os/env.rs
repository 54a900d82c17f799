//! What cohort reads from the process's environment, each variable once per process,
//! without allocating (`getenv`, and parsing the C string in place: the first read can
//! happen inside the process's first allocation, even when cohort is the C `malloc`).
//!
//! - `COHORT_RESERVE`: the address space an instance made by `Cohort::new` reserves (the
//!   default is `DEFAULT_RESERVATION`, 256 GiB). Read at the first instance initialisation;
//!   instances made with an explicit reservation ignore it. From [`MIN_RESERVE`] (4 MiB) to
//!   [`MAX_RESERVE`] (128 TiB), rounded down to whole 2 MiB blocks.
//! - `COHORT_PAGE_SIZE`: a page size larger than the kernel's for every mapping, commit and
//!   decommit (a multiple of the kernel's page, a power of two, at most `MAX_PAGE`), so a
//!   machine with 4 KiB pages runs the code paths of a kernel with 16 or 64 KiB pages.
//!   Read at the first use of the page size.
//! - What an instance keeps of the memory its program no longer uses (the defaults of
//!   `Retention`, read at the first instance initialisation; `Cohort::set_retention`
//!   overrides them for one instance):
//!   - `COHORT_LARGE_CACHE`: the most bytes of freed large mappings kept for reuse (a size
//!     up to 1T; `0`: none);
//!   - `COHORT_LARGE_CACHE_MAPPINGS`: the most freed large mappings kept (0 to 64);
//!   - `COHORT_EMPTY_BLOCKS`: the most bytes of empty small blocks kept committed (a size
//!     up to 1T, counted in whole 2 MiB blocks);
//!   - `COHORT_DECAY`: the longest time kept memory stays unused before it is given back:
//!     digits then `ms` or `s` (`250ms`, `2s`, `0s`), at most one hour.
//!
//! A size is written `DIGITS[UNIT]`: decimal digits, then nothing (bytes) or one of `K`,
//! `M`, `G`, `T` (either case, powers of 1024), optionally followed by `iB` (`64G`,
//! `64GiB`, `512m`, `1073741824`). Nothing else is accepted: no spaces, signs, fractions or
//! other suffixes. A value that is not a size, or is out of range, is reported on standard
//! error once, and the default is used. A variable set to the empty string is read as unset
//! (the shell's `COHORT_DECAY= program` turns an exported setting off for one run).

// A `Complaint` is a few hundred bytes returned by value: it cannot be boxed, as nothing
// here may allocate.
#![allow(clippy::result_large_err)]

use core::ffi::CStr;
use core::sync::atomic::{AtomicUsize, Ordering};

/// The smallest reservation `COHORT_RESERVE` may ask for: two 2 MiB blocks.
pub const MIN_RESERVE: usize = 4 << 20;
/// The largest reservation `COHORT_RESERVE` may ask for: the user address space of x86-64
/// (and of arm64 with 48-bit addresses).
pub const MAX_RESERVE: usize = 128 << 40;

/// A variable once read: [`UNREAD`], [`UNSET`] (absent or rejected), or its value (every
/// value a variable accepts is below both).
struct Once(AtomicUsize);
const UNREAD: usize = usize::MAX;
const UNSET: usize = usize::MAX - 1;

impl Once {
    const fn new() -> Once {
        Once(AtomicUsize::new(UNREAD))
    }

    /// The value of `name` as `parse` reads it, or `None` when it is absent or rejected.
    /// Read on the first call (reporting a rejected value then); later calls return the
    /// same answer.
    fn get(&self, name: &CStr, parse: fn(&[u8]) -> Result<usize, Complaint>) -> Option<usize> {
        let mut value = self.0.load(Ordering::Relaxed);
        if value == UNREAD {
            let (read, complaint) = match with_var(name, parse) {
                None => (UNSET, None),
                Some(Ok(v)) => (v, None),
                Some(Err(complaint)) => (UNSET, Some(complaint)),
            };
            value =
                match self
                    .0
                    .compare_exchange(UNREAD, read, Ordering::Relaxed, Ordering::Relaxed)
                {
                    Ok(_) => {
                        if let Some(complaint) = complaint {
                            complaint.write();
                        }
                        read
                    }
                    Err(first) => first,
                };
        }
        (value != UNSET).then_some(value)
    }
}

static RESERVE: Once = Once::new();

/// The reservation `COHORT_RESERVE` asks for, or `None` when it is absent or rejected (then
/// the caller uses its default).
pub fn reservation() -> Option<usize> {
    RESERVE.get(c"COHORT_RESERVE", read_reservation)
}

/// The largest byte bound `COHORT_LARGE_CACHE` and `COHORT_EMPTY_BLOCKS` accept.
pub const MAX_KEPT: usize = 1 << 40;
/// The most mappings `COHORT_LARGE_CACHE_MAPPINGS` accepts.
pub const MAX_MAPPINGS: usize = 64;
/// The longest `COHORT_DECAY` accepted, in milliseconds (one hour).
pub const MAX_DECAY_MS: usize = 3_600_000;

static LARGE_CACHE: Once = Once::new();
static LARGE_CACHE_MAPPINGS: Once = Once::new();
static EMPTY_BLOCKS: Once = Once::new();
static DECAY: Once = Once::new();

/// What the retention variables set (`None`: absent or rejected, the default is used).
pub struct Retention {
    pub large_cache_bytes: Option<usize>,
    pub large_cache_mappings: Option<usize>,
    pub empty_block_bytes: Option<usize>,
    pub delay_ms: Option<usize>,
}

/// The retention variables (see the module docs), each read once per process.
pub fn retention() -> Retention {
    Retention {
        large_cache_bytes: LARGE_CACHE.get(c"COHORT_LARGE_CACHE", |v| {
            read_kept("COHORT_LARGE_CACHE", v)
        }),
        large_cache_mappings: LARGE_CACHE_MAPPINGS
            .get(c"COHORT_LARGE_CACHE_MAPPINGS", read_mappings),
        empty_block_bytes: EMPTY_BLOCKS.get(c"COHORT_EMPTY_BLOCKS", |v| {
            read_kept("COHORT_EMPTY_BLOCKS", v)
        }),
        delay_ms: DECAY.get(c"COHORT_DECAY", read_decay),
    }
}

fn read_kept(var: &str, value: &[u8]) -> Result<usize, Complaint> {
    parse_size(value)
        .filter(|&bytes| bytes <= MAX_KEPT)
        .ok_or_else(|| {
            Complaint::new(
                var,
                value,
                "is not a size up to 1T (digits, then K, M, G or T for KiB, MiB, GiB, TiB: \
                 like 64M)",
                "using the default",
            )
        })
}

fn read_mappings(value: &[u8]) -> Result<usize, Complaint> {
    let digits_only = !value.is_empty() && value.iter().all(u8::is_ascii_digit);
    digits_only
        .then(|| parse_size(value))
        .flatten()
        .filter(|&n| n <= MAX_MAPPINGS)
        .ok_or_else(|| {
            Complaint::new(
                "COHORT_LARGE_CACHE_MAPPINGS",
                value,
                "is not a count from 0 to 64",
                "using the default",
            )
        })
}

fn read_decay(value: &[u8]) -> Result<usize, Complaint> {
    parse_millis(value)
        .filter(|&ms| ms <= MAX_DECAY_MS)
        .ok_or_else(|| {
            Complaint::new(
                "COHORT_DECAY",
                value,
                "is not a time up to one hour (digits, then ms or s: like 250ms or 2s)",
                "using the default",
            )
        })
}

/// Parses a time written `DIGITS(ms|s)` into milliseconds; `None` when `s` is not one or it
/// overflows.
pub fn parse_millis(s: &[u8]) -> Option<usize> {
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    let scale = match &s[digits..] {
        b"ms" => 1,
        b"s" => 1000,
        _ => return None,
    };
    if digits == 0 {
        return None;
    }
    let mut n: usize = 0;
    for &b in &s[..digits] {
        n = n.checked_mul(10)?.checked_add(usize::from(b - b'0'))?;
    }
    n.checked_mul(scale)
}

fn read_reservation(value: &[u8]) -> Result<usize, Complaint> {
    match parse_size(value) {
        Some(bytes) if (MIN_RESERVE..=MAX_RESERVE).contains(&bytes) => Ok(bytes),
        _ => Err(Complaint::new(
            "COHORT_RESERVE",
            value,
            "is not a size from 4M to 128T (digits, then K, M, G or T for KiB, MiB, GiB, TiB: \
             like 64G)",
            "using the default reservation",
        )),
    }
}

/// The page size to use given the kernel's, and what was wrong with `COHORT_PAGE_SIZE` if
/// it was set to something unusable (then the kernel's page is used).
pub fn page_size(kernel: usize) -> (usize, Option<Complaint>) {
    let usable = |page: usize| {
        page.is_power_of_two()
            && page >= kernel
            && page <= super::MAX_PAGE
            && page.is_multiple_of(kernel)
    };
    match with_var(c"COHORT_PAGE_SIZE", |value| {
        parse_size(value).filter(|&p| usable(p)).ok_or_else(|| {
            Complaint::new(
                "COHORT_PAGE_SIZE",
                value,
                "is not a power of two from the kernel's page size to 256K that the kernel's \
                 page divides (like 64K)",
                "using the kernel's page size",
            )
        })
    }) {
        None => (kernel, None),
        Some(Ok(page)) => (page, None),
        Some(Err(complaint)) => (kernel, Some(complaint)),
    }
}

/// Calls `f` with the value of the environment variable `name`, if it is set and not empty
/// (an empty value means unset: see the module docs).
fn with_var<R>(name: &CStr, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
    // SAFETY: getenv reads the environment; its result, when not null, is a NUL-terminated
    // string that stays valid until the environment is changed, and `f` reads it before this
    // function returns. (Changing the environment while another thread reads it is undefined
    // in C; cohort reads it only during its first allocation and first instance
    // initialisation.)
    unsafe {
        let value = libc::getenv(name.as_ptr());
        if value.is_null() {
            return None;
        }
        let value = CStr::from_ptr(value).to_bytes();
        (!value.is_empty()).then(|| f(value))
    }
}

/// Parses a size written `DIGITS[K|M|G|T[iB]]` (see the module docs); `None` when `s` is
/// not one or it overflows.
pub fn parse_size(s: &[u8]) -> Option<usize> {
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let mut n: usize = 0;
    for &b in &s[..digits] {
        n = n.checked_mul(10)?.checked_add(usize::from(b - b'0'))?;
    }
    let shift = match &s[digits..] {
        [] => 0,
        [unit, rest @ ..] if rest.is_empty() || rest == b"iB" => match unit.to_ascii_uppercase() {
            b'K' => 10,
            b'M' => 20,
            b'G' => 30,
            b'T' => 40,
            _ => return None,
        },
        _ => return None,
    };
    n.checked_mul(1 << shift)
}

/// A message saying an environment variable's value was not used, built without
/// allocating: `cohort: VAR="value" <problem>; <fallback>`.
pub struct Complaint {
    buf: [u8; 384],
    len: usize,
}

impl Complaint {
    /// At most 64 bytes of the value are quoted.
    fn new(var: &str, value: &[u8], problem: &str, fallback: &str) -> Complaint {
        let mut c = Complaint {
            buf: [0; 384],
            len: 0,
        };
        let shown = &value[..value.len().min(64)];
        let parts: [&[u8]; 9] = [
            b"cohort: ",
            var.as_bytes(),
            b"=\"",
            shown,
            if shown.len() < value.len() {
                b"...\" "
            } else {
                b"\" "
            },
            problem.as_bytes(),
            b"; ",
            fallback.as_bytes(),
            b"\n",
        ];
        for part in parts {
            let n = part.len().min(c.buf.len() - c.len);
            c.buf[c.len..c.len + n].copy_from_slice(&part[..n]);
            c.len += n;
        }
        c
    }

    /// The message.
    pub fn text(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Writes the message to standard error.
    pub fn write(&self) {
        super::write_stderr(self.text());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_strictly() {
        let ok: [(&[u8], usize); 9] = [
            (b"0", 0),
            (b"4096", 4096),
            (b"64K", 64 << 10),
            (b"64k", 64 << 10),
            (b"512M", 512 << 20),
            (b"64G", 64 << 30),
            (b"64GiB", 64 << 30),
            (b"1T", 1 << 40),
            (b"0016M", 16 << 20),
        ];
        for (text, bytes) in ok {
            assert_eq!(
                parse_size(text),
                Some(bytes),
                "{:?}",
                core::str::from_utf8(text)
            );
        }
        let bad: [&[u8]; 14] = [
            b"",
            b"G",
            b"64X",
            b"64 G",
            b" 64G",
            b"64G ",
            b"-1",
            b"+64G",
            b"1.5G",
            b"64GB",
            b"64Gib",
            b"64KK",
            b"0x100",
            b"99999999999999999999",
        ];
        for text in bad {
            assert_eq!(parse_size(text), None, "{:?}", core::str::from_utf8(text));
        }
        assert_eq!(parse_size(b"16777216T"), None, "2^64 bytes overflows");
    }

    #[test]
    fn a_complaint_quotes_the_value_and_says_what_is_used() {
        let c = Complaint::new(
            "COHORT_RESERVE",
            b"lots",
            "is not a size",
            "using the default",
        );
        assert_eq!(
            c.text(),
            b"cohort: COHORT_RESERVE=\"lots\" is not a size; using the default\n"
        );
        let long = [b'9'; 100];
        let c = Complaint::new(
            "COHORT_RESERVE",
            &long,
            "is not a size",
            "using the default",
        );
        let text = core::str::from_utf8(c.text()).unwrap();
        assert!(
            text.contains(&format!("=\"{}...\" is", "9".repeat(64))),
            "{text}"
        );
    }

    #[test]
    fn retention_values_parse_strictly() {
        assert_eq!(read_kept("V", b"64M").ok(), Some(64 << 20));
        assert_eq!(read_kept("V", b"0").ok(), Some(0));
        assert_eq!(read_kept("V", b"1T").ok(), Some(1 << 40));
        assert!(read_kept("V", b"1025G").is_err());
        assert!(read_kept("V", b"-1").is_err());
        assert_eq!(read_mappings(b"0").ok(), Some(0));
        assert_eq!(read_mappings(b"64").ok(), Some(64));
        for bad in [&b"65"[..], b"1K", b"", b"3 ", b"x"] {
            assert!(
                read_mappings(bad).is_err(),
                "{:?}",
                core::str::from_utf8(bad)
            );
        }
        assert_eq!(read_decay(b"250ms").ok(), Some(250));
        assert_eq!(read_decay(b"2s").ok(), Some(2000));
        assert_eq!(read_decay(b"0s").ok(), Some(0));
        assert_eq!(read_decay(b"3600s").ok(), Some(3_600_000));
        let bad: [&[u8]; 10] = [
            b"", b"1", b"ms", b"s", b"1.5s", b"2 s", b"2S", b"2sec", b"3601s", b"-1s",
        ];
        for text in bad {
            assert!(
                read_decay(text).is_err(),
                "{:?}",
                core::str::from_utf8(text)
            );
        }
        assert_eq!(parse_millis(b"99999999999999999999ms"), None, "overflows");
    }

    #[test]
    fn the_reservation_is_bounded() {
        assert!(read_reservation(b"4M").is_ok());
        assert!(read_reservation(b"4095K").is_err());
        assert!(read_reservation(b"128T").is_ok());
        assert!(read_reservation(b"129T").is_err());
    }
}
