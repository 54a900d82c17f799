//! Byte sizes for people: `512 B`, `24 KiB`, `1.50 MiB` ([`ByteSize`]), and MiB as a number
//! for reports with a fixed unit ([`mib`]).

use std::fmt;

/// A byte count shown with a binary unit: exact multiples without decimals (`24 KiB`),
/// others with two (`1.50 MiB`). Honours the formatter's width and alignment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
        let n = self.0;
        if n < 1024 {
            return f.pad(&format!("{n} B"));
        }
        let (mut unit, mut scale) = (0, 1024u64);
        while unit + 1 < UNITS.len() && n >= scale * 1024 {
            unit += 1;
            scale *= 1024;
        }
        let s = if n.is_multiple_of(scale) {
            format!("{} {}", n / scale, UNITS[unit])
        } else {
            format!("{:.2} {}", n as f64 / scale as f64, UNITS[unit])
        };
        f.pad(&s)
    }
}

impl From<usize> for ByteSize {
    fn from(n: usize) -> Self {
        ByteSize(n as u64)
    }
}

/// `bytes` in MiB (2^20 bytes), as a number.
pub fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(ByteSize(0).to_string(), "0 B");
        assert_eq!(ByteSize(1023).to_string(), "1023 B");
        assert_eq!(ByteSize(1024).to_string(), "1 KiB");
        assert_eq!(ByteSize(1536).to_string(), "1.50 KiB");
        assert_eq!(ByteSize(1 << 20).to_string(), "1 MiB");
        assert_eq!(ByteSize(3 << 30).to_string(), "3 GiB");
        assert_eq!(ByteSize(5 << 40).to_string(), "5 TiB");
        assert_eq!(format!("{:>8}|", ByteSize(1024)), "   1 KiB|");
        assert_eq!(mib(3 << 19), 1.5);
    }
}
