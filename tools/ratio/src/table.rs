//! Aligned text tables and the number formats of the text output.

use test_support::ByteSize;

/// A table: a header, rows of cells, and rules (horizontal lines) before chosen rows.
pub struct Table {
    head: Vec<&'static str>,
    /// Per column: right-aligned (numbers) or left-aligned (names).
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
    rules: Vec<usize>,
}

impl Table {
    /// A table with these columns; a column whose name starts with `<` is left-aligned
    /// (the `<` is not printed), the others right-aligned.
    pub fn new(head: &[&'static str]) -> Self {
        Table {
            head: head.iter().map(|h| h.trim_start_matches('<')).collect(),
            right: head.iter().map(|h| !h.starts_with('<')).collect(),
            rows: Vec::new(),
            rules: Vec::new(),
        }
    }

    /// Adds a row (as many cells as columns).
    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.head.len());
        self.rows.push(cells);
    }

    /// Draws a rule before the next row.
    pub fn rule(&mut self) {
        self.rules.push(self.rows.len());
    }

    /// The table as text, each line indented by three spaces.
    pub fn render(&self) -> String {
        let cols = self.head.len();
        let mut width: Vec<usize> = self.head.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in width.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &mut dyn Iterator<Item = &str>| {
            let mut s = String::from(" ");
            for (c, cell) in cells.enumerate() {
                let pad = width[c] - cell.chars().count();
                s.push_str("  ");
                if self.right[c] {
                    s.push_str(&" ".repeat(pad));
                    s.push_str(cell);
                } else {
                    s.push_str(cell);
                    if c + 1 < cols {
                        s.push_str(&" ".repeat(pad));
                    }
                }
            }
            s.push('\n');
            s
        };
        let rule = format!(
            "   {}\n",
            "-".repeat(width.iter().sum::<usize>() + 2 * (cols - 1))
        );
        let mut out = line(&mut self.head.iter().copied());
        out.push_str(&rule);
        for (i, row) in self.rows.iter().enumerate() {
            if self.rules.contains(&i) && i > 0 {
                out.push_str(&rule);
            }
            out.push_str(&line(&mut row.iter().map(String::as_str)));
        }
        out
    }
}

/// Bytes with a binary unit: `512 B`, `24 KiB`, `1.50 MiB`.
pub fn bytes(n: u64) -> String {
    ByteSize(n).to_string()
}

/// A count with thousands separators: `1,234,567`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// Decimals of a geometry-kind ratio (block bytes / usable bytes: geometry, the ratio
/// contract's figures): they differ from 1 in the fifth decimal.
pub const GEOMETRY_PLACES: usize = 7;
/// Decimals of a cost-kind ratio (rounding, occupancy).
pub const COST_PLACES: usize = 3;

/// A ratio with `places` decimals, or `-` when undefined (nothing to divide by).
pub fn ratio(r: Option<f64>, places: usize) -> String {
    r.map_or_else(|| "-".into(), |r| format!("{r:.places$}"))
}

/// A geometry-kind ratio, [`GEOMETRY_PLACES`] decimals.
pub fn geometry(r: Option<f64>) -> String {
    ratio(r, GEOMETRY_PLACES)
}

/// A cost-kind ratio, [`COST_PLACES`] decimals.
pub fn cost(r: Option<f64>) -> String {
    ratio(r, COST_PLACES)
}

/// A share as a percentage, or `-`.
pub fn percent(r: Option<f64>) -> String {
    r.map_or_else(|| "-".into(), |r| format!("{:.1}%", r * 100.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(bytes(1536), "1.50 KiB");
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(ratio(None, 3), "-");
        assert_eq!(ratio(Some(1.5), 3), "1.500");
    }

    #[test]
    fn columns_align() {
        let mut t = Table::new(&["<name", "n"]);
        t.row(vec!["a".into(), "1".into()]);
        t.rule();
        t.row(vec!["total".into(), "100".into()]);
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "   name     n");
        assert_eq!(lines[2], "   a        1");
        assert!(lines[3].trim().chars().all(|c| c == '-'));
        assert_eq!(lines[4], "   total  100");
    }
}
