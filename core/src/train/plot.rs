//! The loss-curve PNG written at the end of training.
//!
//! Lines, frame and grid are drawn with `plotters` on its bitmap backend; the picture is
//! encoded to PNG with the `image` crate. Plotters draws text only through a system font
//! library (`ttf`) or a font file we would have to ship (`ab_glyph`), so labels are drawn here
//! from a small built-in 5×7 pixel font instead: the plot needs no font anywhere and looks
//! the same on every machine.
//!
//! What is drawn: training loss per logged step (faint) with a smoothed line over it once there
//! are enough points, validation loss with dots where present, x = optimizer step.

use std::path::Path;

use plotters::prelude::*;

use super::metrics_log::MetricRow;

const WIDTH: u32 = 960;
const HEIGHT: u32 = 540;
/// Pixel size of one font cell.
const SCALE: i32 = 2;
const TRAIN_RAW: RGBColor = RGBColor(160, 190, 228);
const TRAIN: RGBColor = RGBColor(31, 102, 180);
const VAL: RGBColor = RGBColor(230, 110, 20);
const GRID: RGBColor = RGBColor(228, 228, 228);
const INK: RGBColor = RGBColor(40, 40, 40);

/// Draws training loss (and validation loss where present) against step into `out_png`.
/// Rows with a non-finite loss are left out. The file is written atomically.
pub fn plot_loss_curve(metrics: &[MetricRow], out_png: &Path) -> Result<(), String> {
    let png = render_loss_curve(metrics)?;
    crate::io::write_atomic(out_png, &png).map_err(|e| e.to_string())
}

/// Renders the loss curve as PNG bytes (see [`plot_loss_curve`]).
pub fn render_loss_curve(metrics: &[MetricRow]) -> Result<Vec<u8>, String> {
    let train: Vec<(f64, f64)> = metrics
        .iter()
        .filter(|r| r.loss.is_finite())
        .map(|r| (r.step as f64, r.loss))
        .collect();
    let val: Vec<(f64, f64)> = metrics
        .iter()
        .filter_map(|r| {
            r.val_loss
                .filter(|v| v.is_finite())
                .map(|v| (r.step as f64, v))
        })
        .collect();
    if train.is_empty() && val.is_empty() {
        return Err("no finite loss values to plot".into());
    }
    let smoothed = (train.len() >= 10).then(|| smooth(&train));

    let all = train.iter().chain(val.iter());
    let (mut x_lo, mut x_hi) = (f64::INFINITY, f64::NEG_INFINITY);
    let (mut y_lo, mut y_hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in all {
        x_lo = x_lo.min(x);
        x_hi = x_hi.max(x);
        y_lo = y_lo.min(y);
        y_hi = y_hi.max(y);
    }
    if x_hi - x_lo < 1.0 {
        x_lo -= 1.0;
        x_hi += 1.0;
    }
    let pad = if y_hi - y_lo > 1e-12 {
        0.05 * (y_hi - y_lo)
    } else {
        (0.05 * y_hi.abs()).max(1e-3)
    };
    let y_lo_axis = if y_lo >= 0.0 {
        (y_lo - pad).max(0.0)
    } else {
        y_lo - pad
    };
    let y_hi_axis = y_hi + pad;

    let x_step = nice_step(x_hi - x_lo, 8.0).max(1.0);
    let y_step = nice_step(y_hi_axis - y_lo_axis, 6.0);
    let x_ticks = ticks(x_lo, x_hi, x_step);
    let y_ticks = ticks(y_lo_axis, y_hi_axis, y_step);
    let y_labels: Vec<String> = y_ticks.iter().map(|&v| format_tick(v, y_step)).collect();
    let x_labels: Vec<String> = x_ticks.iter().map(|&v| format_tick(v, x_step)).collect();

    let label_w = y_labels.iter().map(|l| text_width(l)).max().unwrap_or(0);
    let left = (label_w + 20).max(60) as u32;
    let (top, bottom, right) = (48u32, 64u32, 24u32);

    let mut buf = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (WIDTH, HEIGHT)).into_drawing_area();
        let err = |e: DrawingAreaErrorKind<_>| format!("drawing the loss curve: {e}");
        root.fill(&WHITE).map_err(err)?;
        let area = root.margin(top, bottom, left, right);
        let mut chart = ChartBuilder::on(&area)
            .build_cartesian_2d(x_lo..x_hi, y_lo_axis..y_hi_axis)
            .map_err(err)?;
        let (px, py) = chart.plotting_area().get_pixel_range();
        let (x0, x1, y0, y1) = (px.start, px.end - 1, py.start, py.end - 1);

        // Grid and ticks at the labelled values.
        for &x in &x_ticks {
            let (cx, _) = chart.backend_coord(&(x, y_lo_axis));
            root.draw(&PathElement::new(vec![(cx, y0), (cx, y1)], GRID))
                .map_err(err)?;
            root.draw(&PathElement::new(vec![(cx, y1), (cx, y1 + 5)], INK))
                .map_err(err)?;
        }
        for &y in &y_ticks {
            let (_, cy) = chart.backend_coord(&(x_lo, y));
            root.draw(&PathElement::new(vec![(x0, cy), (x1, cy)], GRID))
                .map_err(err)?;
            root.draw(&PathElement::new(vec![(x0 - 5, cy), (x0, cy)], INK))
                .map_err(err)?;
        }

        // Curves.
        if let Some(smoothed) = &smoothed {
            chart
                .draw_series(LineSeries::new(
                    train.iter().copied(),
                    TRAIN_RAW.stroke_width(1),
                ))
                .map_err(err)?;
            chart
                .draw_series(LineSeries::new(
                    smoothed.iter().copied(),
                    TRAIN.stroke_width(2),
                ))
                .map_err(err)?;
        } else if !train.is_empty() {
            chart
                .draw_series(LineSeries::new(
                    train.iter().copied(),
                    TRAIN.stroke_width(2),
                ))
                .map_err(err)?;
            if train.len() == 1 {
                chart
                    .draw_series(train.iter().map(|&p| Circle::new(p, 3, TRAIN.filled())))
                    .map_err(err)?;
            }
        }
        if !val.is_empty() {
            chart
                .draw_series(LineSeries::new(val.iter().copied(), VAL.stroke_width(2)))
                .map_err(err)?;
            chart
                .draw_series(val.iter().map(|&p| Circle::new(p, 3, VAL.filled())))
                .map_err(err)?;
        }

        // Frame.
        root.draw(&PathElement::new(
            vec![(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)],
            INK,
        ))
        .map_err(err)?;

        // Labels.
        let text = |s: &str, x: i32, y: i32, h: Align, v: Align, color: RGBColor| {
            draw_text(&root, s, x, y, h, v, color)
        };
        for (&x, label) in x_ticks.iter().zip(&x_labels) {
            let (cx, _) = chart.backend_coord(&(x, y_lo_axis));
            text(label, cx, y1 + 10, Align::Center, Align::Start, INK).map_err(err)?;
        }
        for (&y, label) in y_ticks.iter().zip(&y_labels) {
            let (_, cy) = chart.backend_coord(&(x_lo, y));
            text(label, x0 - 9, cy, Align::End, Align::Center, INK).map_err(err)?;
        }
        text(
            "step",
            (x0 + x1) / 2,
            y1 + 36,
            Align::Center,
            Align::Start,
            INK,
        )
        .map_err(err)?;
        text("loss", x0, y0 - 10, Align::Start, Align::End, INK).map_err(err)?;

        // Legend, top right inside the frame.
        let mut entries: Vec<(&str, RGBColor)> = Vec::new();
        if smoothed.is_some() {
            entries.push(("train", TRAIN_RAW));
            entries.push(("train, smoothed", TRAIN));
        } else if !train.is_empty() {
            entries.push(("train", TRAIN));
        }
        if !val.is_empty() {
            entries.push(("validation", VAL));
        }
        let legend_w = entries
            .iter()
            .map(|(s, _)| text_width(s))
            .max()
            .unwrap_or(0)
            + 40;
        let lx = x1 - 12 - legend_w;
        for (i, (label, color)) in entries.iter().enumerate() {
            let ly = y0 + 16 + i as i32 * 22;
            root.draw(&PathElement::new(
                vec![(lx, ly), (lx + 24, ly)],
                color.stroke_width(3),
            ))
            .map_err(err)?;
            text(label, lx + 32, ly, Align::Start, Align::Center, INK).map_err(err)?;
        }
        root.present().map_err(err)?;
    }

    encode_png(buf, WIDTH, HEIGHT, "the loss curve")
}

/// Encodes an RGB buffer of `width × height` pixels as PNG (`what` names the picture in errors).
pub(crate) fn encode_png(
    buf: Vec<u8>,
    width: u32,
    height: u32,
    what: &str,
) -> Result<Vec<u8>, String> {
    let img = image::RgbImage::from_raw(width, height, buf)
        .ok_or_else(|| format!("internal error: {what}: buffer size"))?;
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| format!("encoding {what} as PNG: {e}"))?;
    Ok(png)
}

/// Exponential moving average with bias correction, its weight chosen from the number of
/// points (a window of about a twentieth of them, between 2 and 30 points).
fn smooth(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let n = points.len() as f64;
    let window = (n / 20.0).clamp(2.0, 30.0);
    let beta = 1.0 - 1.0 / window;
    let mut avg = 0.0;
    let mut weight = 0.0;
    points
        .iter()
        .map(|&(x, y)| {
            avg = beta * avg + (1.0 - beta) * y;
            weight = beta * weight + (1.0 - beta);
            (x, avg / weight)
        })
        .collect()
}

/// A round spacing (1, 2 or 5 times a power of ten) giving about `target` intervals.
pub(crate) fn nice_step(span: f64, target: f64) -> f64 {
    let raw = (span / target).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let f = if norm < 1.5 {
        1.0
    } else if norm < 3.0 {
        2.0
    } else if norm < 7.0 {
        5.0
    } else {
        10.0
    };
    f * mag
}

/// Multiples of `step` inside `[lo, hi]`.
pub(crate) fn ticks(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

/// A tick label with as many decimals as the spacing needs.
pub(crate) fn format_tick(v: f64, step: f64) -> String {
    if v.abs() >= 1e6 {
        let s = format!("{v:.2e}");
        return s.replace(".00e", "e").replace("0e", "e");
    }
    let decimals = (-step.log10().floor()).clamp(0.0, 8.0) as usize;
    let s = format!("{v:.decimals$}");
    if s.trim_start_matches('-')
        .chars()
        .all(|c| c == '0' || c == '.')
    {
        "0".into()
    } else {
        s
    }
}

/// Where a text anchor sits on the text: its start, centre or end (left/top, middle, right/bottom).
#[derive(Clone, Copy)]
pub(crate) enum Align {
    Start,
    Center,
    End,
}

/// Width in pixels of `s` in the built-in font.
pub(crate) fn text_width(s: &str) -> i32 {
    let n = s.chars().count() as i32;
    if n == 0 { 0 } else { n * 6 * SCALE - SCALE }
}

/// Draws `s` with the built-in font; `(x, y)` is the anchor for the given alignments.
pub(crate) fn draw_text<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    s: &str,
    x: i32,
    y: i32,
    h: Align,
    v: Align,
    color: RGBColor,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let w = text_width(s);
    let height = 7 * SCALE;
    let left = match h {
        Align::Start => x,
        Align::Center => x - w / 2,
        Align::End => x - w,
    };
    let top = match v {
        Align::Start => y,
        Align::Center => y - height / 2,
        Align::End => y - height,
    };
    for (i, ch) in s.chars().enumerate() {
        let rows = glyph(ch);
        let gx = left + i as i32 * 6 * SCALE;
        for (r, bits) in rows.iter().enumerate() {
            for c in 0..5 {
                if bits & (0b10000 >> c) != 0 {
                    for dy in 0..SCALE {
                        for dx in 0..SCALE {
                            area.draw_pixel(
                                (gx + c * SCALE + dx, top + r as i32 * SCALE + dy),
                                &color,
                            )?;
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// The 5×7 bitmap of a character: seven rows, bit 4 the leftmost column. Upper case is drawn
/// as lower case; characters without a glyph show as `?`.
fn glyph(ch: char) -> [u8; 7] {
    match ch.to_ascii_lowercase() {
        '0' => [
            0b01110, 0b10001, 0b10011, 0b10101, 0b11001, 0b10001, 0b01110,
        ],
        '1' => [
            0b00100, 0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110,
        ],
        '2' => [
            0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0b01000, 0b11111,
        ],
        '3' => [
            0b11111, 0b00010, 0b00100, 0b00010, 0b00001, 0b10001, 0b01110,
        ],
        '4' => [
            0b00010, 0b00110, 0b01010, 0b10010, 0b11111, 0b00010, 0b00010,
        ],
        '5' => [
            0b11111, 0b10000, 0b11110, 0b00001, 0b00001, 0b10001, 0b01110,
        ],
        '6' => [
            0b00110, 0b01000, 0b10000, 0b11110, 0b10001, 0b10001, 0b01110,
        ],
        '7' => [
            0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b01000, 0b01000,
        ],
        '8' => [
            0b01110, 0b10001, 0b10001, 0b01110, 0b10001, 0b10001, 0b01110,
        ],
        '9' => [
            0b01110, 0b10001, 0b10001, 0b01111, 0b00001, 0b00010, 0b01100,
        ],
        'a' => [
            0b00000, 0b00000, 0b01110, 0b00001, 0b01111, 0b10001, 0b01111,
        ],
        'b' => [
            0b10000, 0b10000, 0b10110, 0b11001, 0b10001, 0b10001, 0b11110,
        ],
        'c' => [
            0b00000, 0b00000, 0b01110, 0b10000, 0b10000, 0b10001, 0b01110,
        ],
        'd' => [
            0b00001, 0b00001, 0b01101, 0b10011, 0b10001, 0b10001, 0b01111,
        ],
        'e' => [
            0b00000, 0b00000, 0b01110, 0b10001, 0b11111, 0b10000, 0b01110,
        ],
        'f' => [
            0b00110, 0b01001, 0b01000, 0b11100, 0b01000, 0b01000, 0b01000,
        ],
        'g' => [
            0b00000, 0b01111, 0b10001, 0b10001, 0b01111, 0b00001, 0b01110,
        ],
        'h' => [
            0b10000, 0b10000, 0b10110, 0b11001, 0b10001, 0b10001, 0b10001,
        ],
        'i' => [
            0b00100, 0b00000, 0b01100, 0b00100, 0b00100, 0b00100, 0b01110,
        ],
        'j' => [
            0b00010, 0b00000, 0b00110, 0b00010, 0b00010, 0b10010, 0b01100,
        ],
        'k' => [
            0b10000, 0b10000, 0b10010, 0b10100, 0b11000, 0b10100, 0b10010,
        ],
        'l' => [
            0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110,
        ],
        'm' => [
            0b00000, 0b00000, 0b11010, 0b10101, 0b10101, 0b10001, 0b10001,
        ],
        'n' => [
            0b00000, 0b00000, 0b10110, 0b11001, 0b10001, 0b10001, 0b10001,
        ],
        'o' => [
            0b00000, 0b00000, 0b01110, 0b10001, 0b10001, 0b10001, 0b01110,
        ],
        'p' => [
            0b00000, 0b00000, 0b11110, 0b10001, 0b11110, 0b10000, 0b10000,
        ],
        'q' => [
            0b00000, 0b00000, 0b01101, 0b10011, 0b01111, 0b00001, 0b00001,
        ],
        'r' => [
            0b00000, 0b00000, 0b10110, 0b11001, 0b10000, 0b10000, 0b10000,
        ],
        's' => [
            0b00000, 0b00000, 0b01110, 0b10000, 0b01110, 0b00001, 0b11110,
        ],
        't' => [
            0b01000, 0b01000, 0b11100, 0b01000, 0b01000, 0b01001, 0b00110,
        ],
        'u' => [
            0b00000, 0b00000, 0b10001, 0b10001, 0b10001, 0b10011, 0b01101,
        ],
        'v' => [
            0b00000, 0b00000, 0b10001, 0b10001, 0b10001, 0b01010, 0b00100,
        ],
        'w' => [
            0b00000, 0b00000, 0b10001, 0b10001, 0b10101, 0b10101, 0b01010,
        ],
        'x' => [
            0b00000, 0b00000, 0b10001, 0b01010, 0b00100, 0b01010, 0b10001,
        ],
        'y' => [
            0b00000, 0b00000, 0b10001, 0b10001, 0b01111, 0b00001, 0b01110,
        ],
        'z' => [
            0b00000, 0b00000, 0b11111, 0b00010, 0b00100, 0b01000, 0b11111,
        ],
        ' ' => [0; 7],
        '.' => [
            0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b01100, 0b01100,
        ],
        ',' => [
            0b00000, 0b00000, 0b00000, 0b00000, 0b01100, 0b00100, 0b01000,
        ],
        '-' => [
            0b00000, 0b00000, 0b00000, 0b11111, 0b00000, 0b00000, 0b00000,
        ],
        '+' => [
            0b00000, 0b00100, 0b00100, 0b11111, 0b00100, 0b00100, 0b00000,
        ],
        ':' => [
            0b00000, 0b01100, 0b01100, 0b00000, 0b01100, 0b01100, 0b00000,
        ],
        '(' => [
            0b00010, 0b00100, 0b01000, 0b01000, 0b01000, 0b00100, 0b00010,
        ],
        ')' => [
            0b01000, 0b00100, 0b00010, 0b00010, 0b00010, 0b00100, 0b01000,
        ],
        '/' => [
            0b00000, 0b00001, 0b00010, 0b00100, 0b01000, 0b10000, 0b00000,
        ],
        '=' => [
            0b00000, 0b00000, 0b11111, 0b00000, 0b11111, 0b00000, 0b00000,
        ],
        '_' => [
            0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b11111,
        ],
        '%' => [
            0b11000, 0b11001, 0b00010, 0b00100, 0b01000, 0b10011, 0b00011,
        ],
        _ => [
            0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0b00000, 0b00100,
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(step: usize, loss: f64, val: Option<f64>) -> MetricRow {
        MetricRow {
            step,
            epoch: 0.0,
            loss,
            lr: 1e-4,
            grad_norm: 1.0,
            tokens_per_s: 100.0,
            peak_memory_mib: None,
            val_loss: val,
            loss_scale: None,
            skipped_steps: None,
        }
    }

    #[test]
    fn writes_a_png_with_train_and_val_curves() {
        let rows: Vec<MetricRow> = (1..=60)
            .map(|s| {
                let loss =
                    3.0 * (-(s as f64) / 15.0).exp() + 0.05 * ((s * 7919 % 13) as f64 / 13.0);
                row(s * 10, loss, (s % 10 == 0).then_some(loss + 0.2))
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("loss_curve.png");
        plot_loss_curve(&rows, &out).unwrap();
        let img = image::open(&out).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (WIDTH, HEIGHT));
        let count = |c: RGBColor| img.pixels().filter(|p| p.0 == [c.0, c.1, c.2]).count();
        assert!(count(TRAIN) > 200, "train line drawn");
        assert!(count(VAL) > 50, "validation line drawn");
        assert!(count(INK) > 500, "frame and labels drawn");
        // Only the PNG is left in the folder: the temp file was renamed.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        if let Ok(keep) = std::env::var("ADAMLLM_KEEP_PLOT") {
            std::fs::copy(&out, keep).unwrap();
        }
    }

    #[test]
    fn single_point_and_flat_curves_render() {
        render_loss_curve(&[row(1, 2.0, None)]).unwrap();
        render_loss_curve(&[row(1, 0.5, None), row(2, 0.5, None)]).unwrap();
        render_loss_curve(&[row(3, f64::NAN, Some(1.0))]).unwrap();
    }

    #[test]
    fn nothing_to_plot_is_an_error() {
        assert!(render_loss_curve(&[]).is_err());
        assert!(render_loss_curve(&[row(1, f64::NAN, None)]).is_err());
    }

    #[test]
    fn tick_helpers() {
        assert_eq!(nice_step(10.0, 5.0), 2.0);
        assert_eq!(nice_step(1.0, 6.0), 0.2);
        assert_eq!(nice_step(1000.0, 8.0), 100.0);
        assert_eq!(ticks(0.05, 1.0, 0.2).len(), 5);
        assert_eq!(format_tick(0.4, 0.2), "0.4");
        assert_eq!(format_tick(1500.0, 500.0), "1500");
        assert_eq!(format_tick(0.0, 0.05), "0");
        assert_eq!(format_tick(0.00015, 0.00005), "0.00015");
        assert_eq!(text_width("ab"), 22);
    }
}
