//! `--svg FILE`: every live block after the free phase as one bar, coloured by lifetime
//! class: the small blocks, then the medium ones (labelled `medium`). A bar is the block's bytes (2 MiB high): the dark part is what the workload
//! requested in it, the light part above it what is resident besides (so dark + light is the
//! block's resident bytes, and their ratio its occupancy, printed above the bar); the rest
//! of the block is reserved address space only.

use crate::report::{ratio, BlockRow};
use crate::table::bytes;
use crate::Report;
use cohort::class::MEDIUM_CLASS;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;

/// The colour of lifetime class `life` (the palette past its grey).
fn color(life: usize) -> RGBColor {
    let colors = &test_support::PALETTE[1..];
    let (r, g, b) = colors[life % colors.len()];
    RGBColor(r, g, b)
}

const MIB: f64 = (1 << 20) as f64;

/// Draws the chart to `path`. The chart is drawn in memory and written with one checked
/// write: the drawing library's file backend drops a failed write's error.
pub fn write(r: &Report, path: &Path) -> Result<(), String> {
    let mut svg = String::new();
    draw(r, &mut svg)
        .map_err(|e| e.to_string())
        .and_then(|()| std::fs::write(path, svg).map_err(|e| e.to_string()))
        .map_err(|e| format!("--svg {}: {e}", path.display()))
}

fn draw(r: &Report, svg: &mut String) -> Result<(), Box<dyn std::error::Error>> {
    let blocks: Vec<&BlockRow> = r.end.blocks.iter().chain(&r.end.medium).collect();
    let n = blocks.len().max(1);
    let top = blocks
        .iter()
        .map(|b| b.block.block_bytes as f64 / MIB)
        .fold(2.0, f64::max);
    let width = (180 + 42 * n as u32).clamp(900, 8000);
    let root = SVGBackend::with_string(svg, (width, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let (head, body) = root.split_vertically(64);
    head.draw_text(
        "Each live block after the free phase: requested and resident bytes",
        &("sans-serif", 18).into_font().into_text_style(&head),
        (80, 10),
    )?;
    let mut chart = ChartBuilder::on(&body)
        .margin(12)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..n as f64, 0.0..top * 1.12)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .light_line_style(WHITE)
        .x_desc(
            "live blocks by lifetime class, labelled with their stride (medium blocks: medium); \
             above each: its occupancy",
        )
        .y_desc("MiB of the block")
        .y_label_formatter(&|y| format!("{y:.2}"))
        .draw()?;
    let below = ("sans-serif", 11)
        .into_font()
        .into_text_style(&root)
        .pos(Pos::new(HPos::Center, VPos::Top));
    for (i, row) in blocks.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
        let label = match row.block.size_class {
            MEDIUM_CLASS => "medium".to_owned(),
            _ => bytes(row.block.stride as u64),
        };
        root.draw_text(&label, &below, (x, y + 4))?;
    }
    for (i, row) in blocks.iter().enumerate() {
        let b = &row.block;
        let color = color(b.life);
        let (x0, x1) = (i as f64 + 0.12, i as f64 + 0.88);
        let requested = (row.requested as f64 / MIB).min(b.resident_bytes as f64 / MIB);
        let resident = b.resident_bytes as f64 / MIB;
        let reserved = b.block_bytes as f64 / MIB;
        chart.draw_series([
            Rectangle::new([(x0, 0.0), (x1, reserved)], BLACK.mix(0.25)),
            Rectangle::new([(x0, requested), (x1, resident)], color.mix(0.35).filled()),
            Rectangle::new([(x0, 0.0), (x1, requested)], color.filled()),
        ])?;
        let label = ratio(b.resident_bytes as u64, row.requested)
            .map_or_else(|| "-".to_owned(), |o| format!("{o:.2}"));
        chart.draw_series([Text::new(
            label,
            (i as f64 + 0.5, reserved + top * 0.02),
            ("sans-serif", 11)
                .into_font()
                .into_text_style(&root)
                .pos(Pos::new(HPos::Center, VPos::Bottom)),
        )])?;
    }
    // The legend, in a row under the title: one entry per lifetime class present.
    let mut lives: Vec<usize> = blocks.iter().map(|b| b.block.life).collect();
    lives.sort_unstable();
    lives.dedup();
    let legend = ("sans-serif", 13).into_font().into_text_style(&root);
    let mut x = 80;
    for l in lives {
        let name = r.lives.name(l);
        head.draw(&Rectangle::new([(x, 40), (x + 12, 52)], color(l).filled()))?;
        head.draw_text(name, &legend, (x + 17, 39))?;
        x += 40 + 8 * name.len() as i32;
    }
    head.draw_text(
        "dark: requested; light: resident besides; outline: the whole block",
        &legend,
        (x + 20, 39),
    )?;
    root.present()?;
    Ok(())
}
