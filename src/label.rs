//! Labels: an allocator instance's (or a shared region's) name in its reports, so that a
//! program with several allocators knows which one a misuse report, a verify error or a
//! statistics table is about.
//!
//! A [`Label`] is a plain value (at most [`LABEL_BYTES`] bytes of UTF-8, no allocation: the
//! reports that show it are made on paths that must not allocate); a [`LabelCell`] holds one
//! where other threads, or other processes of a shared region, read it. Invariants:
//! `len <= LABEL_BYTES`, and `bytes[..len]` is UTF-8 for every label [`Label::new`] makes.

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

/// Bytes a [`Label`] holds at most (longer labels are cut at a character boundary).
pub const LABEL_BYTES: usize = 31;

/// An allocator instance's (or a shared region's) name in its reports: [`Misuse`](crate::Misuse) messages,
/// [`VerifyError`](crate::VerifyError)s and [`Stats`](crate::Stats), so that a program with
/// several allocators knows which one complained. Set with
/// [`Cohort::set_label`](crate::Cohort::set_label) or at creation
/// ([`Cohort::labelled`](crate::Cohort::labelled)); empty by default. A plain value of at
/// most [`LABEL_BYTES`] bytes (reports are made without allocating).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Label {
    len: u8,
    bytes: [u8; LABEL_BYTES],
}

impl Label {
    /// `text`, cut to at most [`LABEL_BYTES`] bytes at a character boundary.
    ///
    /// # Examples
    ///
    /// ```
    /// let l = cohort::Label::new("render thread's arena");
    /// assert_eq!(l.as_str(), "render thread's arena");
    /// assert_eq!(cohort::Label::new(&"é".repeat(20)).as_str().len(), 30);
    /// ```
    pub const fn new(text: &str) -> Label {
        let b = text.as_bytes();
        let mut len = if b.len() < LABEL_BYTES {
            b.len()
        } else {
            LABEL_BYTES
        };
        // Back to a character boundary: a continuation byte is 0b10xx_xxxx.
        while len < b.len() && len > 0 && b[len] & 0xc0 == 0x80 {
            len -= 1;
        }
        let mut bytes = [0; LABEL_BYTES];
        let mut i = 0;
        while i < len {
            bytes[i] = b[i];
            i += 1;
        }
        Label {
            len: len as u8,
            bytes,
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        let b = &self.bytes[..(self.len as usize).min(LABEL_BYTES)];
        match core::str::from_utf8(b) {
            Ok(s) => s,
            // Not reached for a label made by `new`; a torn read of a label being set is cut
            // to its valid part.
            Err(e) => core::str::from_utf8(&b[..e.valid_up_to()]).unwrap_or(""),
        }
    }

    /// True for the empty label (the default).
    pub fn is_empty(&self) -> bool {
        self.as_str().is_empty()
    }

    /// The label as four words (for [`LabelCell`]).
    const fn to_words(self) -> [u64; 4] {
        let mut b = [0u8; 32];
        b[0] = self.len;
        let mut i = 0;
        while i < LABEL_BYTES {
            b[i + 1] = self.bytes[i];
            i += 1;
        }
        let mut w = [0u64; 4];
        let mut k = 0;
        while k < 4 {
            let mut j = 0;
            while j < 8 {
                w[k] |= (b[k * 8 + j] as u64) << (8 * j);
                j += 1;
            }
            k += 1;
        }
        w
    }

    fn from_words(w: [u64; 4]) -> Label {
        let mut b = [0u8; 32];
        for (k, word) in w.iter().enumerate() {
            b[k * 8..k * 8 + 8].copy_from_slice(&word.to_le_bytes());
        }
        let mut bytes = [0; LABEL_BYTES];
        bytes.copy_from_slice(&b[1..]);
        Label {
            len: b[0].min(LABEL_BYTES as u8),
            bytes,
        }
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl fmt::Debug for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// A [`Label`] that may be set while other threads read it: four atomic words, read and
/// written one by one (a read racing a write may mix the two labels; it is cut to valid
/// text). All zero is the empty label, so a region's state that reads zero holds one.
/// Position independent: it may live in a region shared between processes.
pub(crate) struct LabelCell([AtomicU64; 4]);

impl LabelCell {
    /// A cell holding `label`.
    pub(crate) const fn new(label: Label) -> LabelCell {
        let w = label.to_words();
        LabelCell([
            AtomicU64::new(w[0]),
            AtomicU64::new(w[1]),
            AtomicU64::new(w[2]),
            AtomicU64::new(w[3]),
        ])
    }

    /// The label.
    pub(crate) fn get(&self) -> Label {
        Label::from_words(core::array::from_fn(|k| self.0[k].load(Ordering::Relaxed)))
    }

    /// Sets the label.
    pub(crate) fn set(&self, label: Label) {
        for (cell, w) in self.0.iter().zip(label.to_words()) {
            cell.store(w, Ordering::Relaxed);
        }
    }
}

/// " [label]" after the word "cohort" in a report, or nothing for the empty label.
pub(crate) struct LabelTag(pub Label);

impl fmt::Display for LabelTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            Ok(())
        } else {
            write!(f, " [{}]", self.0.as_str())
        }
    }
}
