//! SVG bar charts (plotters, SVG backend only).

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;

/// The palette entry of each allocator column of the report (`report::ALLOCATORS`): the
/// columns of one table never share a colour. The last two columns are cohort again in the
/// instruction counts only, where the lifetime table's columns 5 and 6 never appear.
const PALETTE_ENTRY: [usize; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 5, 6];

/// The colour of allocator column `column` of the report (System first, in grey), the same
/// in every plot.
fn color(column: usize) -> RGBColor {
    let (r, g, b) = test_support::PALETTE[PALETTE_ENTRY[column]];
    RGBColor(r, g, b)
}

/// A value as printed on a bar: three significant digits, no exponent.
fn label(v: f64) -> String {
    let digits = match v.abs() {
        v if v >= 100.0 => 0,
        v if v >= 10.0 => 1,
        v if v >= 1.0 => 2,
        _ => 3,
    };
    format!("{v:.digits$}")
}

/// Horizontal grouped bars on a linear axis from 0 (bar lengths are proportional to the
/// values; where a few values dwarf the rest, their bars are cut at the axis's end, see
/// [`axis_end`]), each bar labelled with its value: one group per row, one bar per series (`None`:
/// no bar; the `usize` is the allocator's column, which picks its colour). `reference` draws a labelled vertical line there (1 for ratios to System, whose
/// own bars, all 1, are left out).
pub struct Chart<'a> {
    pub title: &'a str,
    pub x_desc: &'a str,
    pub rows: &'a [String],
    pub series: &'a [(String, usize, Vec<Option<f64>>)],
    pub reference: Option<(f64, &'a str)>,
}

impl Chart<'_> {
    /// Writes the chart as SVG to `path`.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        self.draw(path)
            .map_err(|e| std::io::Error::other(e.to_string()))
    }

    fn draw(&self, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
        let Chart {
            title,
            x_desc,
            rows,
            series,
            reference,
        } = *self;
        let values: Vec<f64> = series
            .iter()
            .flat_map(|s| s.2.iter().flatten().copied())
            .collect();
        let end = axis_end(&values, reference.map(|r| r.0));
        if end <= 0.0 {
            return Ok(()); // nothing to draw
        }
        // Room right of the longest bar for its label, and for the legend.
        let hi = end * 1.3;
        let bar = 15.0;
        let height = 100 + (rows.len() as f64 * (series.len() as f64 + 1.0) * bar) as u32;
        let root = SVGBackend::new(path, (900, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(280)
            .build_cartesian_2d(0.0..hi, 0.0..rows.len() as f64)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_labels(12)
            .light_line_style(WHITE)
            .x_label_formatter(&|v| match hi {
                hi if hi >= 20.0 => format!("{v:.0}"),
                hi if hi >= 2.0 => format!("{v:.1}"),
                _ => format!("{v:.2}"),
            })
            .x_desc(x_desc)
            .draw()?;
        let slot = 1.0 / (series.len() as f64 + 1.0);
        let value_style =
            TextStyle::from(("sans-serif", 11)).pos(Pos::new(HPos::Left, VPos::Center));
        for (s, (name, column, vals)) in series.iter().enumerate() {
            let color = color(*column);
            // Row 0 at the top.
            let top = |r: usize| rows.len() as f64 - r as f64 - slot * (s as f64 + 0.5);
            // A bar past the axis's end is cut: drawn to the end with a gap before it.
            let bars = vals.iter().enumerate().flat_map(|(r, v)| {
                let bar = |from: f64, to: f64| {
                    Rectangle::new([(from, top(r)), (to, top(r) - slot)], color.filled())
                };
                match *v {
                    Some(v) if v > end => vec![bar(0.0, end * 0.95), bar(end * 0.97, end)],
                    Some(v) => vec![bar(0.0, v)],
                    None => vec![],
                }
            });
            chart
                .draw_series(bars)?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled())
                });
            let labels = vals.iter().enumerate().filter_map(|(r, v)| {
                v.map(|v| {
                    let at = (v.min(end) + hi * 0.005, top(r) - slot / 2.0);
                    Text::new(label(v), at, value_style.clone())
                })
            });
            chart.draw_series(labels)?;
        }
        if let Some((x, name)) = reference {
            // The line's name goes in the legend, beside the allocators'.
            let line = PathElement::new(vec![(x, 0.0), (x, rows.len() as f64)], BLACK);
            chart
                .draw_series(std::iter::once(line))?
                .label(name)
                .legend(|(x, y)| PathElement::new(vec![(x + 5, y - 6), (x + 5, y + 6)], BLACK));
        }
        for (r, row) in rows.iter().enumerate() {
            let (_, y) = chart.backend_coord(&(0.0, rows.len() as f64 - r as f64 - 0.5));
            let style =
                TextStyle::from(("sans-serif", 13)).pos(Pos::new(HPos::Right, VPos::Center));
            root.draw_text(row, &style, (285, y))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    }
}

/// A bar chart's axis ends at its largest value, unless a few values dwarf the rest (the
/// largest above `DWARF` times the upper quartile of the values): then it ends at `CUT`
/// times that quartile (and past the `reference` line), and the longer bars are cut there.
fn axis_end(values: &[f64], reference: Option<f64>) -> f64 {
    const DWARF: f64 = 8.0;
    const CUT: f64 = 3.0;
    let mut v: Vec<f64> = values
        .iter()
        .copied()
        .filter(|x| x.is_finite() && *x > 0.0)
        .collect();
    v.sort_by(f64::total_cmp);
    let reference = reference.unwrap_or(0.0);
    let Some(&max) = v.last() else {
        return reference;
    };
    let quartile = v[v.len() * 3 / 4];
    let end = if max > DWARF * quartile {
        (CUT * quartile).max(reference * 1.5)
    } else {
        max
    };
    end.max(reference)
}

/// One line of a [`Timeline`]: the allocator's name, its column, its (ms, value) points.
pub type Line = (String, usize, Vec<(f64, f64)>);

/// Lines of values against time, one per series (the `usize` is the allocator's column,
/// which picks its colour): x in milliseconds, y from 0.
pub struct Timeline<'a> {
    pub title: &'a str,
    pub y_desc: String,
    pub series: Vec<Line>,
}

impl Timeline<'_> {
    /// Writes the chart as SVG to `path`.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        self.draw(path)
            .map_err(|e| std::io::Error::other(e.to_string()))
    }

    fn draw(&self, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
        let points = || self.series.iter().flat_map(|s| s.2.iter().copied());
        let x_hi = points().map(|p| p.0).fold(0.0f64, f64::max);
        let y_hi = points().map(|p| p.1).fold(0.0f64, f64::max);
        if x_hi <= 0.0 || y_hi <= 0.0 {
            return Ok(()); // nothing to draw
        }
        let root = SVGBackend::new(path, (900, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(self.title, ("sans-serif", 20))
            .margin(10)
            .margin_right(30)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..x_hi, 0.0..y_hi * 1.05)?;
        chart
            .configure_mesh()
            .x_desc("milliseconds after the frees")
            .y_desc(self.y_desc.as_str())
            .draw()?;
        for (name, column, points) in &self.series {
            let color = color(*column);
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], color));
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    }
}
