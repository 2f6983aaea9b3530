//! Small, dependency-free drawing kit for the procedural demo domains.
//!
//! Everything is drawn from signed distances (negative inside, in pixels) so edges are
//! anti-aliased for free: a pixel centre at distance `d` from the outline gets coverage
//! `clamp(0.5 - d, 0, 1)`. Shapes are blended straight into an [`RgbImage`]; textures come
//! from a hashed value noise, so every result is a pure function of its arguments.

use image::{Rgb, RgbImage};

/// An sRGB colour.
pub type Color = [u8; 3];

/// Length of a vector (a plain square root; `f32::hypot` is a slow library call).
#[inline]
pub fn len(x: f32, y: f32) -> f32 {
    (x * x + y * y).sqrt()
}

/// Rounds a channel value to a byte, saturating (`+ 0.5` and truncation: `f32::round` is a
/// library call on the baseline x86-64 target).
#[inline]
pub fn to_byte(value: f32) -> u8 {
    (value.clamp(0.0, 255.0) + 0.5) as u8
}

/// Linear mix of two colours (`t = 0` gives `a`, `t = 1` gives `b`).
pub fn mix(a: Color, b: Color, t: f32) -> Color {
    let t = t.clamp(0.0, 1.0);
    let channel = |i: usize| to_byte(a[i] as f32 + (b[i] as f32 - a[i] as f32) * t);
    [channel(0), channel(1), channel(2)]
}

/// Multiplies every channel by `factor` (darker below 1, lighter above 1), saturating.
pub fn scale(color: Color, factor: f32) -> Color {
    let channel = |i: usize| to_byte(color[i] as f32 * factor);
    [channel(0), channel(1), channel(2)]
}

/// Adds `delta` to every channel, saturating.
pub fn shift(color: Color, delta: f32) -> Color {
    let channel = |i: usize| to_byte(color[i] as f32 + delta);
    [channel(0), channel(1), channel(2)]
}

/// Blends `color` onto one pixel with opacity `alpha` (0..=1). Out-of-range pixels are ignored.
#[inline]
pub fn blend(image: &mut RgbImage, x: i32, y: i32, color: Color, alpha: f32) {
    if alpha <= 0.0 || x < 0 || y < 0 || x >= image.width() as i32 || y >= image.height() as i32 {
        return;
    }
    let pixel = image.get_pixel_mut(x as u32, y as u32);
    if alpha >= 1.0 {
        *pixel = Rgb(color);
        return;
    }
    for (channel, target) in pixel.0.iter_mut().zip(color) {
        *channel = to_byte(*channel as f32 + (target as f32 - *channel as f32) * alpha);
    }
}

/// Fills the whole image with one colour.
pub fn clear(image: &mut RgbImage, color: Color) {
    for pixel in image.pixels_mut() {
        *pixel = Rgb(color);
    }
}

/// Sets every pixel from a function of its centre coordinates and its index (row-major,
/// for looking up a precomputed field such as [`NoiseGrid::field`]).
pub fn fill_with(image: &mut RgbImage, mut shade: impl FnMut(f32, f32, usize) -> Color) {
    let width = image.width() as usize;
    for (row, line) in image.as_mut().chunks_exact_mut(width * 3).enumerate() {
        let y = row as f32 + 0.5;
        for (column, pixel) in line.chunks_exact_mut(3).enumerate() {
            pixel.copy_from_slice(&shade(column as f32 + 0.5, y, row * width + column));
        }
    }
}

/// Axis-aligned bounds `(x0, y0, x1, y1)` in pixel coordinates.
pub type Bounds = (f32, f32, f32, f32);

/// Paints a shape given by a signed distance and a per-pixel colour. `paint(x, y)` returns
/// `(distance, colour)` for the pixel centre `(x, y)`; only pixels inside `bounds` (grown by
/// one pixel for the anti-aliased edge) are visited. `alpha` scales the opacity.
pub fn paint(
    image: &mut RgbImage,
    bounds: Bounds,
    alpha: f32,
    mut paint: impl FnMut(f32, f32) -> (f32, Color),
) {
    let (width, height) = (image.width() as i32, image.height() as i32);
    let x0 = ((bounds.0 - 1.0).floor() as i32).max(0);
    let y0 = ((bounds.1 - 1.0).floor() as i32).max(0);
    let x1 = ((bounds.2 + 1.0).ceil() as i32).min(width - 1);
    let y1 = ((bounds.3 + 1.0).ceil() as i32).min(height - 1);
    for y in y0..=y1 {
        for x in x0..=x1 {
            let (distance, color) = paint(x as f32 + 0.5, y as f32 + 0.5);
            let coverage = (0.5 - distance).clamp(0.0, 1.0);
            if coverage > 0.0 {
                blend(image, x, y, color, coverage * alpha);
            }
        }
    }
}

/// Fills a shape of one colour given by its signed distance function.
pub fn fill_sdf(
    image: &mut RgbImage,
    bounds: Bounds,
    color: Color,
    alpha: f32,
    sdf: impl Fn(f32, f32) -> f32,
) {
    paint(image, bounds, alpha, |x, y| (sdf(x, y), color));
}

/// Bounds of a disc.
pub fn disc_bounds(cx: f32, cy: f32, r: f32) -> Bounds {
    (cx - r, cy - r, cx + r, cy + r)
}

/// Signed distance to a circle.
#[inline]
pub fn sd_circle(x: f32, y: f32, cx: f32, cy: f32, r: f32) -> f32 {
    len(x - cx, y - cy) - r
}

/// Signed distance (first-order estimate) to a rotated ellipse with semi-axes `rx`, `ry`.
#[inline]
pub fn sd_ellipse(x: f32, y: f32, cx: f32, cy: f32, rx: f32, ry: f32, angle: f32) -> f32 {
    let (sin, cos) = angle.sin_cos();
    sd_ellipse_sc(x, y, cx, cy, rx, ry, sin, cos)
}

/// [`sd_ellipse`] with the rotation's sine and cosine precomputed.
#[inline]
#[allow(clippy::too_many_arguments)]
pub fn sd_ellipse_sc(
    x: f32,
    y: f32,
    cx: f32,
    cy: f32,
    rx: f32,
    ry: f32,
    sin: f32,
    cos: f32,
) -> f32 {
    let (dx, dy) = (x - cx, y - cy);
    let u = dx * cos + dy * sin;
    let v = -dx * sin + dy * cos;
    let k = len(u / rx, v / ry);
    let gradient = len(u / (rx * rx), v / (ry * ry));
    if gradient < 1e-6 {
        return -rx.min(ry);
    }
    (k - 1.0) * k / gradient
}

/// Distance from a point to a segment.
#[inline]
pub fn segment_distance(x: f32, y: f32, ax: f32, ay: f32, bx: f32, by: f32) -> f32 {
    let (vx, vy) = (bx - ax, by - ay);
    let (wx, wy) = (x - ax, y - ay);
    let length2 = vx * vx + vy * vy;
    let t = if length2 > 0.0 {
        ((wx * vx + wy * vy) / length2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    len(wx - vx * t, wy - vy * t)
}

/// Signed distance to a polygon (any simple polygon; even-odd inside test).
pub fn sd_polygon(x: f32, y: f32, points: &[(f32, f32)]) -> f32 {
    let mut distance = f32::INFINITY;
    let mut inside = false;
    let count = points.len();
    for i in 0..count {
        let (ax, ay) = points[i];
        let (bx, by) = points[(i + 1) % count];
        distance = distance.min(segment_distance(x, y, ax, ay, bx, by));
        if (ay > y) != (by > y) && x < ax + (y - ay) * (bx - ax) / (by - ay) {
            inside = !inside;
        }
    }
    if inside { -distance } else { distance }
}

/// Bounds of a point set.
pub fn points_bounds(points: &[(f32, f32)]) -> Bounds {
    points.iter().fold(
        (
            f32::INFINITY,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NEG_INFINITY,
        ),
        |(x0, y0, x1, y1), &(x, y)| (x0.min(x), y0.min(y), x1.max(x), y1.max(y)),
    )
}

/// Corners of a regular polygon (`sides` corners, first one pointing along `angle`).
pub fn regular_polygon(cx: f32, cy: f32, r: f32, sides: usize, angle: f32) -> Vec<(f32, f32)> {
    (0..sides)
        .map(|i| {
            let a = angle + i as f32 * std::f32::consts::TAU / sides as f32;
            (cx + r * a.cos(), cy + r * a.sin())
        })
        .collect()
}

/// Corners of a star with `points` tips, outer radius `r` and inner radius `inner`.
pub fn star_polygon(
    cx: f32,
    cy: f32,
    r: f32,
    inner: f32,
    points: usize,
    angle: f32,
) -> Vec<(f32, f32)> {
    (0..points * 2)
        .map(|i| {
            let a = angle + i as f32 * std::f32::consts::PI / points as f32;
            let radius = if i % 2 == 0 { r } else { inner };
            (cx + radius * a.cos(), cy + radius * a.sin())
        })
        .collect()
}

/// Corners of a rotated rectangle of half-sizes `hw` × `hh`.
pub fn rect_polygon(cx: f32, cy: f32, hw: f32, hh: f32, angle: f32) -> Vec<(f32, f32)> {
    let (sin, cos) = angle.sin_cos();
    [(-hw, -hh), (hw, -hh), (hw, hh), (-hw, hh)]
        .iter()
        .map(|&(u, v)| (cx + u * cos - v * sin, cy + u * sin + v * cos))
        .collect()
}

/// Fills a disc.
pub fn fill_circle(image: &mut RgbImage, cx: f32, cy: f32, r: f32, color: Color, alpha: f32) {
    fill_sdf(image, disc_bounds(cx, cy, r), color, alpha, |x, y| {
        sd_circle(x, y, cx, cy, r)
    });
}

/// Fills a ring (annulus) between radii `inner` and `outer`.
pub fn fill_ring(
    image: &mut RgbImage,
    cx: f32,
    cy: f32,
    outer: f32,
    inner: f32,
    color: Color,
    alpha: f32,
) {
    fill_sdf(image, disc_bounds(cx, cy, outer), color, alpha, |x, y| {
        let d = len(x - cx, y - cy);
        (d - outer).max(inner - d)
    });
}

/// Outlines a circle with a stroke of `width` pixels centred on radius `r`.
pub fn stroke_circle(
    image: &mut RgbImage,
    cx: f32,
    cy: f32,
    r: f32,
    width: f32,
    color: Color,
    alpha: f32,
) {
    fill_ring(
        image,
        cx,
        cy,
        r + width / 2.0,
        r - width / 2.0,
        color,
        alpha,
    );
}

/// Fills a rotated ellipse.
#[allow(clippy::too_many_arguments)]
pub fn fill_ellipse(
    image: &mut RgbImage,
    cx: f32,
    cy: f32,
    rx: f32,
    ry: f32,
    angle: f32,
    color: Color,
    alpha: f32,
) {
    let r = rx.max(ry);
    let (sin, cos) = angle.sin_cos();
    fill_sdf(image, disc_bounds(cx, cy, r), color, alpha, |x, y| {
        sd_ellipse_sc(x, y, cx, cy, rx, ry, sin, cos)
    });
}

/// Fills a polygon.
pub fn fill_polygon(image: &mut RgbImage, points: &[(f32, f32)], color: Color, alpha: f32) {
    if points.len() < 3 {
        return;
    }
    fill_sdf(image, points_bounds(points), color, alpha, |x, y| {
        sd_polygon(x, y, points)
    });
}

/// Outlines a polygon with a stroke of `width` pixels centred on its edges.
pub fn stroke_polygon(
    image: &mut RgbImage,
    points: &[(f32, f32)],
    width: f32,
    color: Color,
    alpha: f32,
) {
    if points.len() < 2 {
        return;
    }
    let (x0, y0, x1, y1) = points_bounds(points);
    let half = width / 2.0;
    fill_sdf(
        image,
        (x0 - half, y0 - half, x1 + half, y1 + half),
        color,
        alpha,
        |x, y| sd_polygon(x, y, points).abs() - half,
    );
}

/// Draws a thick segment with round caps.
#[allow(clippy::too_many_arguments)]
pub fn stroke_line(
    image: &mut RgbImage,
    ax: f32,
    ay: f32,
    bx: f32,
    by: f32,
    width: f32,
    color: Color,
    alpha: f32,
) {
    let half = width / 2.0;
    let bounds = (
        ax.min(bx) - half,
        ay.min(by) - half,
        ax.max(bx) + half,
        ay.max(by) + half,
    );
    fill_sdf(image, bounds, color, alpha, |x, y| {
        segment_distance(x, y, ax, ay, bx, by) - half
    });
}

/// Draws a thick polyline with round joints (one pass, so overlaps do not darken).
pub fn stroke_polyline(
    image: &mut RgbImage,
    points: &[(f32, f32)],
    width: f32,
    color: Color,
    alpha: f32,
) {
    if points.len() < 2 {
        return;
    }
    let half = width / 2.0;
    let (x0, y0, x1, y1) = points_bounds(points);
    fill_sdf(
        image,
        (x0 - half, y0 - half, x1 + half, y1 + half),
        color,
        alpha,
        |x, y| {
            points
                .windows(2)
                .map(|w| segment_distance(x, y, w[0].0, w[0].1, w[1].0, w[1].1))
                .fold(f32::INFINITY, f32::min)
                - half
        },
    );
}

/// Draws a thick polyline in two tones at once: an outer band of `outer_width` in
/// `outer_color` around a core of `inner_width` in `inner_color` (a strand with an edge).
#[allow(clippy::too_many_arguments)]
pub fn stroke_polyline_two_tone(
    image: &mut RgbImage,
    points: &[(f32, f32)],
    outer_width: f32,
    inner_width: f32,
    outer_color: Color,
    inner_color: Color,
) {
    if points.len() < 2 {
        return;
    }
    let (outer, inner) = (outer_width / 2.0, inner_width / 2.0);
    let (x0, y0, x1, y1) = points_bounds(points);
    paint(
        image,
        (x0 - outer, y0 - outer, x1 + outer, y1 + outer),
        1.0,
        |x, y| {
            let distance = points
                .windows(2)
                .map(|w| segment_distance(x, y, w[0].0, w[0].1, w[1].0, w[1].1))
                .fold(f32::INFINITY, f32::min);
            let color = if distance < inner - 0.5 {
                inner_color
            } else if distance < inner + 0.5 {
                mix(inner_color, outer_color, distance - (inner - 0.5))
            } else {
                outer_color
            };
            (distance - outer, color)
        },
    );
}

/// An irregular closed outline: a circle whose radius wobbles with the angle.
#[derive(Clone, Debug, PartialEq)]
pub struct Blob {
    /// Centre x.
    pub cx: f32,
    /// Centre y.
    pub cy: f32,
    /// Mean radius.
    pub r: f32,
    /// Horizontal stretch (1 = round).
    pub stretch: f32,
    /// Orientation of the stretch, radians.
    pub angle: f32,
    /// Wobble harmonics: `(relative amplitude, phase)` for harmonics 2, 3, 4, ...
    pub harmonics: Vec<(f32, f32)>,
}

impl Blob {
    /// Radius at polar angle `theta` (before the stretch).
    pub fn radius_at(&self, theta: f32) -> f32 {
        let wobble: f32 = self
            .harmonics
            .iter()
            .enumerate()
            .map(|(i, &(amplitude, phase))| amplitude * ((i as f32 + 2.0) * theta + phase).cos())
            .sum();
        self.r * (1.0 + wobble)
    }

    /// Approximate signed distance (prepare once with [`Blob::prepare`] when drawing).
    pub fn sdf(&self, x: f32, y: f32) -> f32 {
        self.prepare().sdf(x, y)
    }

    /// The blob with its trigonometry done, for evaluating many distances.
    pub fn prepare(&self) -> PreparedBlob {
        let (sin, cos) = self.angle.sin_cos();
        let terms = self
            .harmonics
            .iter()
            .map(|&(amplitude, phase)| {
                let (s, c) = phase.sin_cos();
                (amplitude * c, -amplitude * s)
            })
            .collect();
        PreparedBlob {
            cx: self.cx,
            cy: self.cy,
            r: self.r,
            stretch: self.stretch,
            sin,
            cos,
            terms,
        }
    }

    /// A generous bounding box.
    pub fn bounds(&self) -> Bounds {
        let amplitude: f32 = self.harmonics.iter().map(|h| h.0.abs()).sum();
        let reach = self.r * (1.0 + amplitude) * self.stretch.max(1.0);
        disc_bounds(self.cx, self.cy, reach)
    }

    /// Whether a point lies inside.
    pub fn contains(&self, x: f32, y: f32) -> bool {
        self.sdf(x, y) < 0.0
    }
}

/// A [`Blob`] ready for fast distance queries (no trigonometry per query).
#[derive(Clone, Debug, PartialEq)]
pub struct PreparedBlob {
    cx: f32,
    cy: f32,
    r: f32,
    stretch: f32,
    sin: f32,
    cos: f32,
    /// `(a, b)` per harmonic `k = 2, 3, ...`: the wobble is `Σ a cos kθ + b sin kθ`.
    terms: Vec<(f32, f32)>,
}

impl PreparedBlob {
    /// Approximate signed distance.
    #[inline]
    pub fn sdf(&self, x: f32, y: f32) -> f32 {
        let (dx, dy) = (x - self.cx, y - self.cy);
        let u = (dx * self.cos + dy * self.sin) / self.stretch;
        let v = -dx * self.sin + dy * self.cos;
        let rho = len(u, v);
        if self.terms.is_empty() {
            if self.stretch == 1.0 {
                return rho - self.r;
            }
            // A plain stretched circle: an ellipse.
            return sd_ellipse_sc(
                x,
                y,
                self.cx,
                self.cy,
                self.r * self.stretch,
                self.r,
                self.sin,
                self.cos,
            );
        }
        let (c1, s1) = if rho > 1e-6 {
            (u / rho, v / rho)
        } else {
            (1.0, 0.0)
        };
        // cos kθ and sin kθ by the angle-addition recurrence, starting at k = 2.
        let (mut ck, mut sk) = (c1 * c1 - s1 * s1, 2.0 * c1 * s1);
        let mut wobble = 0.0;
        for &(a, b) in &self.terms {
            wobble += a * ck + b * sk;
            (ck, sk) = (ck * c1 - sk * s1, sk * c1 + ck * s1);
        }
        (rho - self.r * (1.0 + wobble)) * self.stretch.min(1.0)
    }
}

/// Fills a blob with one colour.
pub fn fill_blob(image: &mut RgbImage, blob: &Blob, color: Color, alpha: f32) {
    let shape = blob.prepare();
    fill_sdf(image, blob.bounds(), color, alpha, |x, y| shape.sdf(x, y));
}

/// 32-bit integer hash of a lattice point (a PCG-style mix).
#[inline]
pub fn hash2(x: i32, y: i32, seed: u32) -> u32 {
    let mut h = (x as u32)
        .wrapping_mul(0x8da6_b343)
        .wrapping_add((y as u32).wrapping_mul(0xd816_3841))
        .wrapping_add(seed.wrapping_mul(0xcb1a_b31f));
    h ^= h >> 15;
    h = h.wrapping_mul(0x2c1b_3c6d);
    h ^= h >> 12;
    h = h.wrapping_mul(0x297a_2d39);
    h ^= h >> 15;
    h
}

/// Hash of a lattice point as a float in `[0, 1)`.
#[inline]
pub fn hash01(x: i32, y: i32, seed: u32) -> f32 {
    (hash2(x, y, seed) >> 8) as f32 / (1u32 << 24) as f32
}

/// `x.floor() as i32` without the library call.
#[inline]
fn floor(x: f32) -> i32 {
    let i = x as i32;
    if (i as f32) > x { i - 1 } else { i }
}

/// Smooth value noise in `[0, 1)` with unit lattice spacing.
pub fn value_noise(x: f32, y: f32, seed: u32) -> f32 {
    let (ix, iy) = (floor(x), floor(y));
    let (fx, fy) = (x - ix as f32, y - iy as f32);
    let (sx, sy) = (fx * fx * (3.0 - 2.0 * fx), fy * fy * (3.0 - 2.0 * fy));
    let a = hash01(ix, iy, seed);
    let b = hash01(ix + 1, iy, seed);
    let c = hash01(ix, iy + 1, seed);
    let d = hash01(ix + 1, iy + 1, seed);
    let top = a + (b - a) * sx;
    let bottom = c + (d - c) * sx;
    top + (bottom - top) * sy
}

/// Fractal (octave) value noise in `[0, 1)`: `scale` is the size of the coarsest feature
/// in pixels.
pub fn fbm(x: f32, y: f32, scale: f32, octaves: u32, seed: u32) -> f32 {
    let mut sum = 0.0;
    let mut amplitude = 1.0;
    let mut total = 0.0;
    let mut frequency = 1.0 / scale;
    for octave in 0..octaves {
        sum += amplitude
            * value_noise(
                x * frequency,
                y * frequency,
                seed.wrapping_add(octave * 7919),
            );
        total += amplitude;
        amplitude *= 0.5;
        frequency *= 2.0;
    }
    sum / total
}

/// Value noise with its lattice hashed once into a table covering a coordinate range, so a
/// query costs four table reads instead of four hashes.
pub struct NoiseTable {
    u0: i32,
    v0: i32,
    columns: usize,
    rows: usize,
    values: Vec<f32>,
}

impl NoiseTable {
    /// A table for queries with `u` in `u_range` and `v` in `v_range` (lattice units).
    pub fn new(u_range: (f32, f32), v_range: (f32, f32), seed: u32) -> Self {
        let (u0, v0) = (floor(u_range.0) - 1, floor(v_range.0) - 1);
        let columns = (floor(u_range.1) - u0 + 3) as usize;
        let rows = (floor(v_range.1) - v0 + 3) as usize;
        let mut values = Vec::with_capacity(columns * rows);
        for row in 0..rows as i32 {
            for column in 0..columns as i32 {
                values.push(hash01(u0 + column, v0 + row, seed));
            }
        }
        Self {
            u0,
            v0,
            columns,
            rows,
            values,
        }
    }

    /// [`value_noise`] at `(u, v)` (clamped to the table's range).
    #[inline]
    pub fn at(&self, u: f32, v: f32) -> f32 {
        let (iu, iv) = (floor(u), floor(v));
        let (fu, fv) = (u - iu as f32, v - iv as f32);
        let column = ((iu - self.u0).max(0) as usize).min(self.columns - 2);
        let row = ((iv - self.v0).max(0) as usize).min(self.rows - 2);
        let (su, sv) = (fu * fu * (3.0 - 2.0 * fu), fv * fv * (3.0 - 2.0 * fv));
        let index = row * self.columns + column;
        let (a, b) = (self.values[index], self.values[index + 1]);
        let (c, d) = (
            self.values[index + self.columns],
            self.values[index + self.columns + 1],
        );
        let top = a + (b - a) * su;
        let bottom = c + (d - c) * su;
        top + (bottom - top) * sv
    }
}

/// Fractal noise sampled on a coarse lattice and interpolated bilinearly: a cheap stand-in
/// for calling [`fbm`] at every pixel when the features are much larger than a pixel.
pub struct NoiseGrid {
    step: f32,
    columns: usize,
    values: Vec<f32>,
}

impl NoiseGrid {
    /// Samples `fbm(x, y, scale, octaves, seed)` every `step` pixels over `width` × `height`.
    pub fn new(width: u32, height: u32, step: u32, scale: f32, octaves: u32, seed: u32) -> Self {
        let columns = (width / step + 2) as usize;
        let rows = (height / step + 2) as usize;
        let mut values = Vec::with_capacity(columns * rows);
        for row in 0..rows {
            for column in 0..columns {
                values.push(fbm(
                    (column as u32 * step) as f32,
                    (row as u32 * step) as f32,
                    scale,
                    octaves,
                    seed,
                ));
            }
        }
        Self {
            step: step as f32,
            columns,
            values,
        }
    }

    /// The interpolated value at every pixel centre of a `width` × `height` image, row by row.
    pub fn field(&self, width: u32, height: u32) -> Vec<f32> {
        let rows = self.values.len() / self.columns;
        let axis = |n: u32, cells: usize| -> Vec<(usize, f32)> {
            (0..n)
                .map(|i| {
                    let g = (i as f32 + 0.5) / self.step;
                    let index = (g as usize).min(cells - 2);
                    (index, (g - index as f32).min(1.0))
                })
                .collect()
        };
        let columns = axis(width, self.columns);
        let mut field = Vec::with_capacity((width * height) as usize);
        for (iy, fy) in axis(height, rows) {
            let top = &self.values[iy * self.columns..(iy + 1) * self.columns];
            let bottom = &self.values[(iy + 1) * self.columns..(iy + 2) * self.columns];
            for &(ix, fx) in &columns {
                let upper = top[ix] + (top[ix + 1] - top[ix]) * fx;
                let lower = bottom[ix] + (bottom[ix + 1] - bottom[ix]) * fx;
                field.push(upper + (lower - upper) * fy);
            }
        }
        field
    }

    /// The interpolated value at a point inside the sampled area.
    pub fn at(&self, x: f32, y: f32) -> f32 {
        let (gx, gy) = ((x / self.step).max(0.0), (y / self.step).max(0.0));
        let rows = self.values.len() / self.columns;
        let (ix, iy) = (
            (gx as usize).min(self.columns - 2),
            (gy as usize).min(rows - 2),
        );
        let (fx, fy) = ((gx - ix as f32).min(1.0), (gy - iy as f32).min(1.0));
        let v = |c: usize, r: usize| self.values[r * self.columns + c];
        let top = v(ix, iy) + (v(ix + 1, iy) - v(ix, iy)) * fx;
        let bottom = v(ix, iy + 1) + (v(ix + 1, iy + 1) - v(ix, iy + 1)) * fx;
        top + (bottom - top) * fy
    }
}

/// Adds per-pixel grain of up to `±amount` levels (same offset on all channels).
pub fn add_grain(image: &mut RgbImage, amount: f32, seed: u32) {
    let mut state = (seed as u64) << 1 | 1;
    for pixel in image.as_mut().chunks_exact_mut(3) {
        // A 64-bit LCG stream: one multiply per pixel.
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let offset = ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * amount;
        for channel in pixel.iter_mut() {
            *channel = to_byte(*channel as f32 + offset);
        }
    }
}

/// Box blur of radius 1 (3×3), applied `passes` times; softens the look of a scene.
pub fn soften(image: &mut RgbImage, passes: u32) {
    let (width, height) = image.dimensions();
    for _ in 0..passes {
        let source = image.clone();
        for y in 0..height {
            for x in 0..width {
                let mut sum = [0u32; 3];
                let mut count = 0;
                for dy in -1i32..=1 {
                    for dx in -1i32..=1 {
                        let (sx, sy) = (x as i32 + dx, y as i32 + dy);
                        if sx >= 0 && sy >= 0 && sx < width as i32 && sy < height as i32 {
                            let p = source.get_pixel(sx as u32, sy as u32);
                            for (total, &channel) in sum.iter_mut().zip(&p.0) {
                                *total += channel as u32;
                            }
                            count += 1;
                        }
                    }
                }
                image.put_pixel(x, y, Rgb(sum.map(|s| ((s + count / 2) / count) as u8)));
            }
        }
    }
}

/// A content fingerprint of bytes (stable across platforms): FNV-1a over 8-byte words, then
/// the tail bytes, with the length mixed in.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    const PRIME: u64 = 0x0100_0000_01b3;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325 ^ bytes.len() as u64;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let value = u64::from_le_bytes(word.try_into().expect("8 bytes"));
        hash = (hash ^ value).wrapping_mul(PRIME).rotate_left(29);
    }
    for &byte in words.remainder() {
        hash = (hash ^ byte as u64).wrapping_mul(PRIME);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn circle_covers_its_centre_and_not_its_corner() {
        let mut image = RgbImage::new(20, 20);
        fill_circle(&mut image, 10.0, 10.0, 5.0, [255, 0, 0], 1.0);
        assert_eq!(image.get_pixel(10, 10).0, [255, 0, 0]);
        assert_eq!(image.get_pixel(1, 1).0, [0, 0, 0]);
        // The edge is anti-aliased: some pixel is partly covered.
        assert!(image.pixels().any(|p| p.0[0] > 0 && p.0[0] < 255));
    }

    #[test]
    fn polygon_sign_and_ring_hole() {
        let square = rect_polygon(0.0, 0.0, 2.0, 2.0, 0.0);
        assert!(sd_polygon(0.0, 0.0, &square) < 0.0);
        assert!((sd_polygon(3.0, 0.0, &square) - 1.0).abs() < 1e-5);
        let mut image = RgbImage::new(30, 30);
        fill_ring(&mut image, 15.0, 15.0, 10.0, 5.0, [0, 255, 0], 1.0);
        assert_eq!(image.get_pixel(15, 15).0, [0, 0, 0]);
        assert_eq!(image.get_pixel(22, 15).0, [0, 255, 0]);
    }

    #[test]
    fn ellipse_distance_is_close_on_the_axes() {
        let d = sd_ellipse(16.0, 0.0, 0.0, 0.0, 8.0, 2.0, 0.0);
        assert!((d - 8.0).abs() < 1.0, "{d}");
        let inside = sd_ellipse(0.0, 1.0, 0.0, 0.0, 8.0, 2.0, 0.0);
        assert!(inside < 0.0);
    }

    #[test]
    fn noise_is_deterministic_and_bounded() {
        for i in 0..200 {
            let (x, y) = (i as f32 * 0.37, i as f32 * 1.13);
            let value = fbm(x, y, 9.0, 3, 7);
            assert!((0.0..1.0).contains(&value));
            assert_eq!(value, fbm(x, y, 9.0, 3, 7));
        }
    }
}
