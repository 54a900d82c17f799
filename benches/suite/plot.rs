//! SVG bar charts (plotters, SVG backend only).

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;

/// One colour per series, in the report's column order (System first, in grey).
const COLORS: [RGBColor; 7] = [
    RGBColor(120, 120, 120),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
];

/// A tick label: two significant digits below 10, whole numbers above.
fn tick(v: &f64) -> String {
    match *v {
        v if v < 1.0 => format!("{v:.2}"),
        v if v < 10.0 => format!("{v:.1}"),
        v => format!("{v:.0}"),
    }
}

/// Horizontal grouped bars on a log scale: one group per row, one bar per series (`None`: no
/// bar). `reference` draws a vertical line there (1 for ratios to System).
pub struct Chart<'a> {
    pub title: &'a str,
    pub x_desc: &'a str,
    pub rows: &'a [String],
    pub series: &'a [(String, Vec<Option<f64>>)],
    pub reference: Option<f64>,
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
        let values = series.iter().flat_map(|s| s.1.iter().flatten().copied());
        let (lo, hi) = values
            .filter(|v| *v > 0.0)
            .chain(reference)
            .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
        if lo > hi {
            return Ok(()); // nothing to draw
        }
        // The bars get the left 65% of the (logarithmic) width, the legend the rest.
        let (lo, hi) = (lo / 1.5, hi * 1.5);
        let hi = ((hi.ln() - 0.35 * lo.ln()) / 0.65).exp();
        let bar = 14.0;
        let height = 90 + (rows.len() as f64 * (series.len() as f64 + 1.0) * bar) as u32;
        let root = SVGBackend::new(path, (900, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(280)
            .build_cartesian_2d((lo..hi).log_scale(), 0.0..rows.len() as f64)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_labels(12)
            .x_label_formatter(&tick)
            .x_desc(x_desc)
            .draw()?;
        let slot = 1.0 / (series.len() as f64 + 1.0);
        for (s, (name, vals)) in series.iter().enumerate() {
            let color = COLORS[s % COLORS.len()];
            let bars = vals.iter().enumerate().filter_map(|(r, v)| {
                // Row 0 at the top.
                let top = rows.len() as f64 - r as f64 - slot * (s as f64 + 0.5);
                v.filter(|v| *v > 0.0)
                    .map(|v| Rectangle::new([(lo, top), (v, top - slot)], color.filled()))
            });
            chart
                .draw_series(bars)?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled())
                });
        }
        if let Some(x) = reference {
            let line = PathElement::new(vec![(x, 0.0), (x, rows.len() as f64)], BLACK);
            chart.draw_series(std::iter::once(line))?;
        }
        for (r, row) in rows.iter().enumerate() {
            let (_, y) = chart.backend_coord(&(lo, rows.len() as f64 - r as f64 - 0.5));
            let style =
                TextStyle::from(("sans-serif", 13)).pos(Pos::new(HPos::Right, VPos::Center));
            root.draw_text(row, &style, (285, y))?;
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
