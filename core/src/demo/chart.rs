//! The report's bar chart of one domain: a group of bars per task score, a bar per ablation
//! row, whiskers at ± one standard deviation when several seeds ran. Drawn with `plotters`
//! and labelled with the loss curves' built-in font, so it needs no font on the machine.

use plotters::prelude::*;

use super::seeds::Spread;
use crate::train::plot::{Align, draw_text, encode_png, format_tick, nice_step, text_width, ticks};

const WIDTH: u32 = 960;
const HEIGHT: u32 = 600;
const GRID: RGBColor = RGBColor(228, 228, 228);
const INK: RGBColor = RGBColor(40, 40, 40);
/// One colour per row, in table order (colour-blind-safe Okabe–Ito hues).
const PALETTE: [RGBColor; 8] = [
    RGBColor(153, 153, 153),
    RGBColor(86, 180, 233),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(213, 94, 0),
    RGBColor(0, 114, 178),
    RGBColor(240, 228, 66),
];

/// One bar series: a row of the table with one value per column.
pub struct BarRow {
    /// Legend text.
    pub label: String,
    /// The row's cell per column (`None`: not evaluated).
    pub cells: Vec<Option<Spread>>,
}

/// Renders the grouped bar chart as PNG bytes: `columns` name the groups (task scores, 0–100).
pub fn render_score_chart(
    title: &str,
    columns: &[String],
    rows: &[BarRow],
) -> Result<Vec<u8>, String> {
    if columns.is_empty() || rows.is_empty() {
        return Err("no scores to chart".into());
    }
    let top_value = rows
        .iter()
        .flat_map(|row| row.cells.iter().flatten())
        .map(|cell| cell.mean + cell.sd.unwrap_or(0.0))
        .fold(0.0f64, f64::max);
    let y_hi = (top_value * 1.1).clamp(10.0, 105.0);
    let y_step = nice_step(y_hi, 6.0);
    let y_ticks = ticks(0.0, y_hi, y_step);
    let legend_rows = rows.len().div_ceil(2) as u32;
    let (top, left, right) = (48u32, 64u32, 24u32);
    let bottom = 64 + legend_rows * 24;
    let groups = columns.len() as f64;

    let mut buf = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (WIDTH, HEIGHT)).into_drawing_area();
        let err = |e: DrawingAreaErrorKind<_>| format!("drawing the score chart: {e}");
        root.fill(&WHITE).map_err(err)?;
        let area = root.margin(top, bottom, left, right);
        let mut chart = ChartBuilder::on(&area)
            .build_cartesian_2d(0.0..groups, 0.0..y_hi)
            .map_err(err)?;
        let (px, py) = chart.plotting_area().get_pixel_range();
        let (x0, x1, y0, y1) = (px.start, px.end - 1, py.start, py.end - 1);
        let text =
            |s: &str, x: i32, y: i32, h: Align, v: Align| draw_text(&root, s, x, y, h, v, INK);

        for &y in &y_ticks {
            let (_, cy) = chart.backend_coord(&(0.0, y));
            root.draw(&PathElement::new(vec![(x0, cy), (x1, cy)], GRID))
                .map_err(err)?;
            text(
                &format_tick(y, y_step),
                x0 - 9,
                cy,
                Align::End,
                Align::Center,
            )
            .map_err(err)?;
        }
        let bar_width = 0.8 / rows.len() as f64;
        for (r, row) in rows.iter().enumerate() {
            let color = PALETTE[r % PALETTE.len()];
            for (g, cell) in row.cells.iter().enumerate() {
                let Some(cell) = cell else { continue };
                let left_x = g as f64 + 0.1 + r as f64 * bar_width;
                let value = cell.mean.clamp(0.0, y_hi);
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(left_x, 0.0), (left_x + bar_width * 0.9, value)],
                        color.filled(),
                    )))
                    .map_err(err)?;
                if let Some(sd) = cell.sd.filter(|sd| *sd > 0.0 && cell.n >= 2) {
                    let mid = left_x + bar_width * 0.45;
                    let (lo, hi) = ((cell.mean - sd).max(0.0), (cell.mean + sd).min(y_hi));
                    let (cx, cy_lo) = chart.backend_coord(&(mid, lo));
                    let (_, cy_hi) = chart.backend_coord(&(mid, hi));
                    for path in [
                        vec![(cx, cy_lo), (cx, cy_hi)],
                        vec![(cx - 3, cy_lo), (cx + 3, cy_lo)],
                        vec![(cx - 3, cy_hi), (cx + 3, cy_hi)],
                    ] {
                        root.draw(&PathElement::new(path, INK)).map_err(err)?;
                    }
                }
            }
        }
        root.draw(&PathElement::new(vec![(x0, y0), (x0, y1), (x1, y1)], INK))
            .map_err(err)?;
        let group_pixels = (x1 - x0) / columns.len() as i32;
        for (g, column) in columns.iter().enumerate() {
            let (cx, _) = chart.backend_coord(&(g as f64 + 0.5, 0.0));
            for (line, words) in label_lines(column, group_pixels - 8).iter().enumerate() {
                text(
                    words,
                    cx,
                    y1 + 10 + line as i32 * 18,
                    Align::Center,
                    Align::Start,
                )
                .map_err(err)?;
            }
        }
        text(title, x0, y0 - 12, Align::Start, Align::End).map_err(err)?;
        let legend_top = y1 + 56;
        let column_width = (x1 - x0) / 2;
        for (r, row) in rows.iter().enumerate() {
            let lx = x0 + (r % 2) as i32 * column_width;
            let ly = legend_top + (r / 2) as i32 * 24;
            let color = PALETTE[r % PALETTE.len()];
            root.draw(&Rectangle::new(
                [(lx, ly - 7), (lx + 18, ly + 7)],
                color.filled(),
            ))
            .map_err(err)?;
            text(&row.label, lx + 26, ly, Align::Start, Align::Center).map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    encode_png(buf, WIDTH, HEIGHT, "the score chart")
}

/// `label` broken at spaces into lines of at most `width` pixels (a longer word stays whole).
fn label_lines(label: &str, width: i32) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in label.split_whitespace() {
        match lines.last_mut() {
            Some(line) if text_width(&format!("{line} {word}")) <= width => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spread(values: &[f64]) -> Option<Spread> {
        Spread::of(values, true)
    }

    #[test]
    fn renders_bars_with_whiskers_as_png() {
        let rows = vec![
            BarRow {
                label: "general base".into(),
                cells: vec![Spread::of(&[8.3], false), Spread::of(&[0.0], false)],
            },
            BarRow {
                label: "caption only".into(),
                cells: vec![spread(&[20.0, 24.0, 28.0]), None],
            },
        ];
        let png = render_score_chart(
            "biomed",
            &["biomed_vqa open".into(), "mcq acc".into()],
            &rows,
        )
        .unwrap();
        let image = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!(image.dimensions(), (WIDTH, HEIGHT));
        // Both rows' colours are drawn.
        for color in [PALETTE[0], PALETTE[1]] {
            assert!(
                image.pixels().any(|p| p.0 == [color.0, color.1, color.2]),
                "colour {color:?} missing"
            );
        }
        assert!(render_score_chart("x", &[], &rows).is_err());
    }

    #[test]
    fn labels_wrap_at_spaces() {
        let width = text_width("biomed_vqa closed");
        assert_eq!(
            label_lines("biomed_vqa closed yes/no", width),
            vec!["biomed_vqa closed", "yes/no"]
        );
        assert_eq!(
            label_lines("food_ingredients", 10),
            vec!["food_ingredients"]
        );
    }
}
