//! The biomedicine-like target domain: stained-tissue micrographs.
//!
//! A field of pink stroma holds scattered normal nuclei and, by chance, a cluster of 1–5
//! enlarged atypical nuclei with irregular outlines, a dense lymphocytic infiltrate or a
//! few scattered lymphocytes, aligned spindle-shaped nuclei, and a pale necrotic focus with
//! nuclear debris. Clusters sit in one of five regions (upper left, upper right, lower left,
//! lower right, center), never two in the same region. Captions read like short pathology
//! reports; benchmark rows follow VQA-RAD (closed yes/no and open questions) and PMC-VQA
//! (four lettered options).

use image::RgbImage;

use super::draw::{self, Blob, Color};
use super::text::{capitalize, number_word};
use super::{Dice, Generated, IMAGE_SIDE, multiple_choice_row, vqa_row};

/// VQA-RAD-style task (closed and open questions).
pub const TASK_VQA: &str = "biomed_vqa";
/// PMC-VQA-style task (four options).
pub const TASK_MCQ: &str = "biomed_mcq";

/// A region of the field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Region {
    /// Upper left quadrant.
    UpperLeft,
    /// Upper right quadrant.
    UpperRight,
    /// Lower left quadrant.
    LowerLeft,
    /// Lower right quadrant.
    LowerRight,
    /// The middle of the field.
    Center,
}

impl Region {
    /// Every region.
    pub const ALL: [Self; 5] = [
        Self::UpperLeft,
        Self::UpperRight,
        Self::LowerLeft,
        Self::LowerRight,
        Self::Center,
    ];

    /// Name as written in captions and answers.
    pub fn name(self) -> &'static str {
        match self {
            Self::UpperLeft => "upper left",
            Self::UpperRight => "upper right",
            Self::LowerLeft => "lower left",
            Self::LowerRight => "lower right",
            Self::Center => "center",
        }
    }

    /// Centre of the region in pixels.
    pub fn centre(self) -> (f32, f32) {
        let (near, far, mid) = (29.0, IMAGE_SIDE as f32 - 29.0, IMAGE_SIDE as f32 / 2.0);
        match self {
            Self::UpperLeft => (near, near),
            Self::UpperRight => (far, near),
            Self::LowerLeft => (near, far),
            Self::LowerRight => (far, far),
            Self::Center => (mid, mid),
        }
    }

    /// The region whose centre is nearest a point.
    pub fn nearest(x: f32, y: f32) -> Self {
        Self::ALL
            .into_iter()
            .min_by(|a, b| {
                let da = draw::len(a.centre().0 - x, a.centre().1 - y);
                let db = draw::len(b.centre().0 - x, b.centre().1 - y);
                da.total_cmp(&db)
            })
            .expect("regions")
    }
}

/// Radius of the disc a regional finding occupies.
const FINDING_RADIUS: f32 = 17.0;

/// Kinds of nuclei.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NucleusKind {
    /// Round, small, evenly stained.
    Normal,
    /// Enlarged, dark, irregular outline, with a nucleolus.
    Atypical,
    /// Elongated, aligned with the stroma.
    Spindle,
    /// Small, round, very dark.
    Lymphocyte,
}

/// One drawn nucleus.
#[derive(Clone, Debug, PartialEq)]
pub struct Nucleus {
    /// Kind.
    pub kind: NucleusKind,
    /// Outline (mean radius `r`; stretch and wobble give the shape).
    pub outline: Blob,
}

/// Direction spindle cells run in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Orientation {
    /// Left to right.
    Horizontal,
    /// Top to bottom.
    Vertical,
    /// Lower left to upper right.
    Diagonal,
}

impl Orientation {
    const ALL: [Self; 3] = [Self::Horizontal, Self::Vertical, Self::Diagonal];

    /// Answer word.
    pub fn name(self) -> &'static str {
        match self {
            Self::Horizontal => "horizontal",
            Self::Vertical => "vertical",
            Self::Diagonal => "diagonal",
        }
    }

    fn adverb(self) -> &'static str {
        match self {
            Self::Horizontal => "horizontally",
            Self::Vertical => "vertically",
            Self::Diagonal => "diagonally",
        }
    }

    /// Angle of the long axis (image y points down).
    fn angle(self) -> f32 {
        match self {
            Self::Horizontal => 0.0,
            Self::Vertical => std::f32::consts::FRAC_PI_2,
            Self::Diagonal => -std::f32::consts::FRAC_PI_4,
        }
    }
}

/// Lymphocytes in the field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lymphocytes {
    /// None.
    Absent,
    /// A few scattered through the field.
    Scattered,
    /// A dense cluster in one region.
    Infiltrate(Region),
}

/// The ground truth of one micrograph.
#[derive(Clone, Debug, PartialEq)]
pub struct Micrograph {
    /// Stain palette index.
    pub palette: usize,
    /// Where the atypical cluster is (`None` when there are no atypical nuclei).
    pub atypical_region: Option<Region>,
    /// Lymphocytes.
    pub lymphocytes: Lymphocytes,
    /// Spindle cells and their direction.
    pub spindle: Option<Orientation>,
    /// The necrotic focus.
    pub necrosis: Option<Region>,
    /// Outline of the necrotic focus.
    pub necrosis_outline: Option<Blob>,
    /// Every nucleus drawn, in drawing order.
    pub nuclei: Vec<Nucleus>,
}

impl Micrograph {
    /// Number of drawn nuclei of a kind.
    pub fn count(&self, kind: NucleusKind) -> usize {
        self.nuclei.iter().filter(|n| n.kind == kind).count()
    }

    /// The finding a report would lead with.
    pub fn main_finding(&self) -> Finding {
        if self.atypical_region.is_some() {
            Finding::Atypia
        } else if self.necrosis.is_some() {
            Finding::Necrosis
        } else if matches!(self.lymphocytes, Lymphocytes::Infiltrate(_)) {
            Finding::Infiltrate
        } else if self.spindle.is_some() {
            Finding::Spindle
        } else {
            Finding::Normal
        }
    }

    fn infiltrate_region(&self) -> Option<Region> {
        match self.lymphocytes {
            Lymphocytes::Infiltrate(region) => Some(region),
            _ => None,
        }
    }

    /// Randomly composes a field (regions of findings are distinct).
    fn random(dice: &mut Dice) -> Self {
        let mut regions = Region::ALL.to_vec();
        dice.shuffle(&mut regions);
        let atypical = if dice.chance(0.4) { 0 } else { dice.int(1, 5) };
        let atypical_region = (atypical > 0).then(|| regions[0]);
        let lymphocytes = match dice.below(20) {
            0..=6 => Lymphocytes::Absent,
            7..=12 => Lymphocytes::Scattered,
            _ => Lymphocytes::Infiltrate(regions[1]),
        };
        let spindle = dice.chance(0.4).then(|| *dice.pick(&Orientation::ALL));
        let necrosis = dice.chance(0.35).then(|| regions[2]);
        let mut micrograph = Self {
            palette: dice.below(PALETTES.len()),
            atypical_region,
            lymphocytes,
            spindle,
            necrosis,
            necrosis_outline: None,
            nuclei: Vec::new(),
        };
        micrograph.place_nuclei(atypical, dice);
        micrograph
    }

    fn place_nuclei(&mut self, atypical: usize, dice: &mut Dice) {
        let side = IMAGE_SIDE as f32;
        let mut taken: Vec<(f32, f32, f32)> = Vec::new(); // discs kept free of scattered nuclei
        let mut nuclei = Vec::new();

        if let Some(region) = self.necrosis {
            let (cx, cy) = region.centre();
            let r = dice.range(14.0, 16.5);
            let outline = random_blob(dice, cx, cy, r, 0.12, 1.15);
            taken.push((cx, cy, FINDING_RADIUS + 2.0));
            self.necrosis_outline = Some(outline);
        }
        if let Some(region) = self.atypical_region {
            let (cx, cy) = region.centre();
            taken.push((cx, cy, FINDING_RADIUS + 5.0));
            // A fixed arrangement per count keeps the cluster's nuclei apart; it is rotated
            // and jittered so clusters differ.
            let layout: &[(f32, f32)] = match atypical {
                1 => &[(0.0, 0.0)],
                2 => &[(-7.5, 0.0), (7.5, 0.0)],
                3 => &[(0.0, -9.0), (-8.0, 5.0), (8.0, 5.0)],
                4 => &[(-8.0, -8.0), (8.0, -8.0), (-8.0, 8.0), (8.0, 8.0)],
                _ => &[
                    (0.0, 0.0),
                    (-10.0, -10.0),
                    (10.0, -10.0),
                    (-10.0, 10.0),
                    (10.0, 10.0),
                ],
            };
            let turn = dice.angle();
            let (sin, cos) = turn.sin_cos();
            for &(u, v) in layout {
                let x = cx + u * cos - v * sin + dice.range(-1.0, 1.0);
                let y = cy + u * sin + v * cos + dice.range(-1.0, 1.0);
                let r = dice.range(4.6, 5.4);
                nuclei.push(Nucleus {
                    kind: NucleusKind::Atypical,
                    outline: random_blob(dice, x, y, r, 0.13, 1.15),
                });
            }
        }
        if let Lymphocytes::Infiltrate(region) = self.lymphocytes {
            let (cx, cy) = region.centre();
            taken.push((cx, cy, FINDING_RADIUS + 2.0));
            let target = dice.int(22, 32);
            let mut placed: Vec<(f32, f32)> = Vec::new();
            for _ in 0..400 {
                if placed.len() == target {
                    break;
                }
                let (a, d) = (dice.angle(), FINDING_RADIUS * dice.unit().sqrt());
                let (x, y) = (cx + d * a.cos(), cy + d * a.sin());
                if placed
                    .iter()
                    .all(|&(px, py)| draw::len(px - x, py - y) > 4.6)
                {
                    placed.push((x, y));
                }
            }
            for (x, y) in placed {
                let r = dice.range(1.8, 2.2);
                nuclei.push(Nucleus {
                    kind: NucleusKind::Lymphocyte,
                    outline: random_blob(dice, x, y, r, 0.03, 1.05),
                });
            }
        }

        // Scattered nuclei avoid the findings and each other.
        let mut scattered: Vec<(f32, f32, f32)> = Vec::new();
        let try_place = |dice: &mut Dice,
                         spacing: f32,
                         scattered: &mut Vec<(f32, f32, f32)>|
         -> Option<(f32, f32)> {
            for _ in 0..60 {
                let (x, y) = (dice.range(4.0, side - 4.0), dice.range(4.0, side - 4.0));
                let free = taken
                    .iter()
                    .all(|&(tx, ty, tr)| draw::len(tx - x, ty - y) > tr + spacing * 0.5)
                    && scattered
                        .iter()
                        .all(|&(sx, sy, sr)| draw::len(sx - x, sy - y) > sr + spacing);
                if free {
                    scattered.push((x, y, spacing));
                    return Some((x, y));
                }
            }
            None
        };
        if let Some(orientation) = self.spindle {
            for _ in 0..dice.int(7, 10) {
                if let Some((x, y)) = try_place(dice, 7.0, &mut scattered) {
                    let outline = Blob {
                        cx: x,
                        cy: y,
                        r: dice.range(1.5, 1.8),
                        stretch: dice.range(3.4, 4.2),
                        angle: orientation.angle() + dice.range(-0.15, 0.15),
                        harmonics: vec![],
                    };
                    nuclei.push(Nucleus {
                        kind: NucleusKind::Spindle,
                        outline,
                    });
                }
            }
        }
        for _ in 0..dice.int(11, 18) {
            if let Some((x, y)) = try_place(dice, 5.5, &mut scattered) {
                let r = dice.range(2.8, 3.4);
                let outline = random_blob(dice, x, y, r, 0.04, 1.2);
                nuclei.push(Nucleus {
                    kind: NucleusKind::Normal,
                    outline,
                });
            }
        }
        if self.lymphocytes == Lymphocytes::Scattered {
            for _ in 0..dice.int(5, 8) {
                if let Some((x, y)) = try_place(dice, 4.0, &mut scattered) {
                    let r = dice.range(1.8, 2.2);
                    nuclei.push(Nucleus {
                        kind: NucleusKind::Lymphocyte,
                        outline: random_blob(dice, x, y, r, 0.03, 1.05),
                    });
                }
            }
        }
        self.nuclei = nuclei;
    }
}

/// A blob with wobble up to `irregularity` and stretch up to `max_stretch`.
fn random_blob(
    dice: &mut Dice,
    cx: f32,
    cy: f32,
    r: f32,
    irregularity: f32,
    max_stretch: f32,
) -> Blob {
    let harmonics = (0..3)
        .map(|i| {
            (
                dice.range(0.0, irregularity) / (i as f32 + 1.0),
                dice.angle(),
            )
        })
        .collect();
    Blob {
        cx,
        cy,
        r,
        stretch: dice.range(1.0, max_stretch),
        angle: dice.angle(),
        harmonics,
    }
}

/// Stain palettes: (stroma, darker stroma, light spaces).
const PALETTES: [(Color, Color, Color); 3] = [
    ([238, 176, 206], [212, 120, 172], [250, 230, 240]),
    ([232, 160, 196], [200, 104, 160], [248, 222, 236]),
    ([236, 184, 214], [196, 128, 186], [246, 232, 244]),
];

/// Draws a micrograph.
pub fn render(m: &Micrograph, seed: u32) -> RgbImage {
    let (stroma, dense, light) = PALETTES[m.palette];
    let mut image = RgbImage::new(IMAGE_SIDE, IMAGE_SIDE);
    let fiber_angle = m.spindle.map_or(seed as f32 * 1e-3, Orientation::angle);
    let fiber_strength = if m.spindle.is_some() { 0.55 } else { 0.3 };
    let (sin, cos) = fiber_angle.sin_cos();
    let clouds = draw::NoiseGrid::new(IMAGE_SIDE, IMAGE_SIDE, 6, 18.0, 3, seed)
        .field(IMAGE_SIDE, IMAGE_SIDE);
    let spaces = draw::NoiseGrid::new(IMAGE_SIDE, IMAGE_SIDE, 4, 11.0, 2, seed ^ 0x22)
        .field(IMAGE_SIDE, IMAGE_SIDE);
    // Fibres: noise stretched along the fibre direction (lattice 15 px along, 1.9 px across).
    let side = IMAGE_SIDE as f32;
    let reach = side * (sin.abs() + cos.abs());
    let fiber_noise = draw::NoiseTable::new(
        (-reach / 15.0, reach / 15.0),
        (-reach / 1.9, reach / 1.9),
        seed ^ 0x11,
    );
    draw::fill_with(&mut image, |x, y, i| {
        let along = x * cos + y * sin;
        let across = -x * sin + y * cos;
        let fibers = fiber_noise.at(along / 15.0, across / 1.9);
        let cloud = clouds[i];
        let t = 0.25 + (cloud - 0.5) * 0.8 + (fibers - 0.5) * fiber_strength * 1.6;
        let mut color = draw::mix(stroma, dense, t);
        // Clear spaces between fibre bundles.
        let gaps = spaces[i];
        if gaps > 0.72 {
            color = draw::mix(color, light, ((gaps - 0.72) * 9.0).min(0.85));
        }
        color
    });
    if let Some(outline) = &m.necrosis_outline {
        // Pale, granular, with a slightly darker rim and nuclear dust.
        let pale = [236, 206, 218];
        let shape = outline.prepare();
        draw::paint(&mut image, outline.bounds(), 0.92, |x, y| {
            let d = shape.sdf(x, y);
            let grain = draw::fbm(x, y, 2.5, 2, seed ^ 0x33);
            let base = if d > -1.5 {
                draw::scale(pale, 0.9)
            } else {
                pale
            };
            (d, draw::shift(base, (grain - 0.5) * 30.0))
        });
        let mut debris_seed = seed;
        for i in 0..14u32 {
            debris_seed = debris_seed
                .wrapping_mul(1_664_525)
                .wrapping_add(1_013_904_223 + i);
            let a = (debris_seed >> 8) as f32 / (1u32 << 24) as f32 * std::f32::consts::TAU;
            let d = ((debris_seed & 0xff) as f32 / 255.0).sqrt() * outline.r * 0.8;
            draw::fill_circle(
                &mut image,
                outline.cx + d * a.cos(),
                outline.cy + d * a.sin(),
                0.9,
                [96, 52, 120],
                0.9,
            );
        }
    }
    for (index, nucleus) in m.nuclei.iter().enumerate() {
        draw_nucleus(&mut image, nucleus, seed.wrapping_add(index as u32 * 101));
    }
    draw::add_grain(&mut image, 3.0, seed ^ 0x44);
    image
}

fn draw_nucleus(image: &mut RgbImage, nucleus: &Nucleus, seed: u32) {
    let outline = &nucleus.outline;
    let (base, dark, texture_scale): (Color, Color, f32) = match nucleus.kind {
        NucleusKind::Normal => ([112, 72, 156], [84, 48, 132], 1.6),
        NucleusKind::Atypical => ([74, 34, 112], [44, 16, 80], 1.3),
        NucleusKind::Spindle => ([104, 64, 150], [80, 44, 128], 1.8),
        NucleusKind::Lymphocyte => ([58, 30, 98], [40, 18, 80], 1.0),
    };
    // A faint cytoplasm halo around the cells that have one.
    if matches!(nucleus.kind, NucleusKind::Normal | NucleusKind::Atypical) {
        let halo = Blob {
            r: outline.r * 1.9,
            harmonics: vec![],
            ..outline.clone()
        };
        let halo_shape = halo.prepare();
        draw::fill_sdf(image, halo.bounds(), [214, 130, 190], 0.35, |x, y| {
            halo_shape.sdf(x, y) + 1.0
        });
    }
    let shape = outline.prepare();
    draw::paint(image, outline.bounds(), 1.0, |x, y| {
        let d = shape.sdf(x, y);
        // Granular chromatin: a hash per pixel (coarser for larger scales).
        let chromatin = draw::hash01((x / texture_scale) as i32, (y / texture_scale) as i32, seed);
        let mut color = draw::mix(base, dark, chromatin * 0.8);
        if nucleus.kind == NucleusKind::Atypical && d > -1.0 {
            color = dark; // thick nuclear membrane
        }
        (d, color)
    });
    if nucleus.kind == NucleusKind::Atypical {
        let offset = outline.r * 0.3;
        let a = (seed % 628) as f32 / 100.0;
        draw::fill_circle(
            image,
            outline.cx + offset * a.cos(),
            outline.cy + offset * a.sin(),
            1.2,
            [150, 40, 90],
            0.95,
        );
    }
}

/// What a report leads with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Finding {
    /// Atypical nuclei.
    Atypia,
    /// Necrosis.
    Necrosis,
    /// A dense lymphocytic infiltrate.
    Infiltrate,
    /// Spindle cells.
    Spindle,
    /// Nothing abnormal.
    Normal,
}

impl Finding {
    const ALL: [Self; 5] = [
        Self::Atypia,
        Self::Necrosis,
        Self::Infiltrate,
        Self::Spindle,
        Self::Normal,
    ];

    /// Short answer phrase.
    pub fn name(self) -> &'static str {
        match self {
            Self::Atypia => "atypical nuclei",
            Self::Necrosis => "necrosis",
            Self::Infiltrate => "lymphocytic infiltrate",
            Self::Spindle => "spindle cells",
            Self::Normal => "normal tissue",
        }
    }
}

/// A question about a micrograph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Query {
    // Closed (yes/no).
    AtypicalPresent,
    NecrosisPresent,
    InfiltratePresent,
    SpindlePresent,
    NormalPresent,
    AtypicalIn(Region),
    NecrosisIn(Region),
    InfiltrateIn(Region),
    MoreAtypicalThan(usize),
    // Open.
    AtypicalCount,
    AtypicalWhere,
    NecrosisWhere,
    InfiltrateWhere,
    InfiltrateCells,
    SpindleShape,
    SpindleDirection,
    MainFinding,
}

fn answer(m: &Micrograph, query: Query) -> String {
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_owned();
    let region = |r: Option<Region>| r.expect("asked only when present").name().to_owned();
    let atypical = m.count(NucleusKind::Atypical);
    match query {
        Query::AtypicalPresent => yes_no(atypical > 0),
        Query::NecrosisPresent => yes_no(m.necrosis.is_some()),
        Query::InfiltratePresent => yes_no(m.infiltrate_region().is_some()),
        Query::SpindlePresent => yes_no(m.spindle.is_some()),
        Query::NormalPresent => yes_no(m.count(NucleusKind::Normal) > 0),
        Query::AtypicalIn(r) => yes_no(m.atypical_region == Some(r)),
        Query::NecrosisIn(r) => yes_no(m.necrosis == Some(r)),
        Query::InfiltrateIn(r) => yes_no(m.infiltrate_region() == Some(r)),
        Query::MoreAtypicalThan(n) => yes_no(atypical > n),
        Query::AtypicalCount => atypical.to_string(),
        Query::AtypicalWhere => region(m.atypical_region),
        Query::NecrosisWhere => region(m.necrosis),
        Query::InfiltrateWhere => region(m.infiltrate_region()),
        Query::InfiltrateCells => "lymphocytes".to_owned(),
        Query::SpindleShape => "spindle".to_owned(),
        Query::SpindleDirection => m
            .spindle
            .expect("asked only when present")
            .name()
            .to_owned(),
        Query::MainFinding => m.main_finding().name().to_owned(),
    }
}

fn question(query: Query, dice: &mut Dice) -> String {
    let pick = |dice: &mut Dice, options: &[String]| dice.pick(options).clone();
    let s = |text: &str| text.to_owned();
    match query {
        Query::AtypicalPresent => pick(
            dice,
            &[
                s("Are atypical nuclei present?"),
                s("Are there atypical enlarged nuclei in this image?"),
                s("Is nuclear atypia seen?"),
            ],
        ),
        Query::NecrosisPresent => pick(
            dice,
            &[
                s("Is there necrosis?"),
                s("Is a necrotic area present in this image?"),
            ],
        ),
        Query::InfiltratePresent => pick(
            dice,
            &[
                s("Is there a dense lymphocytic infiltrate?"),
                s("Is a dense cluster of lymphocytes present?"),
            ],
        ),
        Query::SpindlePresent => pick(
            dice,
            &[
                s("Are spindle-shaped nuclei present?"),
                s("Are elongated spindle cells seen?"),
            ],
        ),
        Query::NormalPresent => pick(
            dice,
            &[
                s("Are normal round nuclei present?"),
                s("Are there nuclei of normal size?"),
            ],
        ),
        Query::AtypicalIn(r) => pick(
            dice,
            &[
                format!("Are the atypical nuclei in the {}?", r.name()),
                format!(
                    "Is the cluster of atypical nuclei located in the {}?",
                    r.name()
                ),
            ],
        ),
        Query::NecrosisIn(r) => pick(
            dice,
            &[
                format!("Is the necrotic area in the {}?", r.name()),
                format!("Is there necrosis in the {}?", r.name()),
            ],
        ),
        Query::InfiltrateIn(r) => format!("Is the lymphocytic infiltrate in the {}?", r.name()),
        Query::MoreAtypicalThan(n) => format!("Are there more than {n} atypical nuclei?"),
        Query::AtypicalCount => pick(
            dice,
            &[
                s("How many atypical nuclei are present?"),
                s("How many enlarged atypical nuclei can be counted?"),
            ],
        ),
        Query::AtypicalWhere => pick(
            dice,
            &[
                s("Where are the atypical nuclei located?"),
                s("Where is the cluster of atypical nuclei?"),
            ],
        ),
        Query::NecrosisWhere => pick(
            dice,
            &[
                s("Where is the necrotic area?"),
                s("In which region is the necrosis?"),
            ],
        ),
        Query::InfiltrateWhere => pick(
            dice,
            &[
                s("Where is the lymphocytic infiltrate?"),
                s("Where are the lymphocytes densely packed?"),
            ],
        ),
        Query::InfiltrateCells => pick(
            dice,
            &[
                s("What type of cells form the dense cluster?"),
                s("Which cells make up the dense infiltrate?"),
            ],
        ),
        Query::SpindleShape => pick(
            dice,
            &[
                s("What is the shape of the elongated nuclei?"),
                s("How would you describe the shape of the elongated nuclei?"),
            ],
        ),
        Query::SpindleDirection => s("In which direction do the spindle nuclei run?"),
        Query::MainFinding => pick(
            dice,
            &[
                s("What is the main finding?"),
                s("What is the most important finding in this image?"),
            ],
        ),
    }
}

/// Closed questions that make sense for this field (none presupposes an absent finding).
fn closed_queries(m: &Micrograph) -> Vec<Query> {
    let mut queries = vec![
        Query::AtypicalPresent,
        Query::NecrosisPresent,
        Query::InfiltratePresent,
        Query::SpindlePresent,
        Query::NormalPresent,
    ];
    if m.atypical_region.is_some() {
        queries.extend(Region::ALL.map(Query::AtypicalIn));
        queries.extend((1..=4).map(Query::MoreAtypicalThan));
    }
    if m.necrosis.is_some() {
        queries.extend(Region::ALL.map(Query::NecrosisIn));
    }
    if m.infiltrate_region().is_some() {
        queries.extend(Region::ALL.map(Query::InfiltrateIn));
    }
    queries
}

fn open_queries(m: &Micrograph) -> Vec<Query> {
    let mut queries = vec![Query::AtypicalCount, Query::MainFinding];
    if m.atypical_region.is_some() {
        queries.extend([Query::AtypicalWhere, Query::AtypicalCount]);
    }
    if m.necrosis.is_some() {
        queries.push(Query::NecrosisWhere);
    }
    if m.infiltrate_region().is_some() {
        queries.extend([Query::InfiltrateWhere, Query::InfiltrateCells]);
    }
    if m.spindle.is_some() {
        queries.extend([Query::SpindleShape, Query::SpindleDirection]);
    }
    queries
}

/// A multiple-choice question: the question, the right answer and three distractors.
fn multiple_choice(m: &Micrograph, dice: &mut Dice) -> (String, String, Vec<String>) {
    let mut kinds = vec![0, 1];
    if m.atypical_region.is_some() {
        kinds.extend([2, 2]);
    }
    if m.necrosis.is_some() {
        kinds.push(3);
    }
    if m.infiltrate_region().is_some() {
        kinds.extend([4, 5]);
    }
    if m.spindle.is_some() {
        kinds.push(6);
    }
    let distractors = |dice: &mut Dice, right: &str, pool: Vec<String>| -> Vec<String> {
        let mut others: Vec<String> = pool.into_iter().filter(|o| o != right).collect();
        dice.shuffle(&mut others);
        others.truncate(3);
        others
    };
    let regions = || {
        Region::ALL
            .iter()
            .map(|r| r.name().to_owned())
            .collect::<Vec<_>>()
    };
    match *dice.pick(&kinds) {
        0 => {
            let right = m.count(NucleusKind::Atypical);
            let mut pool: Vec<usize> = (0..=7)
                .filter(|&n| n != right && n.abs_diff(right) <= 3)
                .collect();
            dice.shuffle(&mut pool);
            pool.truncate(3);
            let q = dice.pick(&[
                "How many atypical enlarged nuclei are visible?",
                "How many atypical nuclei are there in the image?",
            ]);
            (
                q.to_string(),
                right.to_string(),
                pool.iter().map(usize::to_string).collect(),
            )
        }
        1 => {
            let right = m.main_finding().name();
            let pool = Finding::ALL.iter().map(|f| f.name().to_owned()).collect();
            let q = dice.pick(&[
                "What is the main finding in this micrograph?",
                "Which finding best describes this image?",
            ]);
            (
                q.to_string(),
                right.to_owned(),
                distractors(dice, right, pool),
            )
        }
        2 => {
            let right = m.atypical_region.expect("present").name();
            (
                "Where are the atypical nuclei located?".to_owned(),
                right.to_owned(),
                distractors(dice, right, regions()),
            )
        }
        3 => {
            let right = m.necrosis.expect("present").name();
            (
                "Where is the necrotic area?".to_owned(),
                right.to_owned(),
                distractors(dice, right, regions()),
            )
        }
        4 => {
            let right = m.infiltrate_region().expect("present").name();
            (
                "Where is the dense lymphocytic infiltrate?".to_owned(),
                right.to_owned(),
                distractors(dice, right, regions()),
            )
        }
        5 => {
            let region = m.infiltrate_region().expect("present").name();
            let pool = [
                "lymphocytes",
                "atypical cells",
                "spindle cells",
                "red blood cells",
            ]
            .map(str::to_owned)
            .to_vec();
            (
                format!("Which cells form the dense cluster in the {region}?"),
                "lymphocytes".to_owned(),
                distractors(dice, "lymphocytes", pool),
            )
        }
        _ => {
            let right = m.spindle.expect("present").name();
            let pool = ["horizontal", "vertical", "diagonal", "circular"]
                .map(str::to_owned)
                .to_vec();
            (
                "In which direction are the spindle nuclei aligned?".to_owned(),
                right.to_owned(),
                distractors(dice, right, pool),
            )
        }
    }
}

/// The report-style caption.
fn caption(m: &Micrograph, dice: &mut Dice) -> String {
    let mut findings: Vec<String> = Vec::new();
    let atypical = m.count(NucleusKind::Atypical);
    let count_text = |dice: &mut Dice, n: usize| {
        if dice.chance(0.5) {
            number_word(n)
        } else {
            n.to_string()
        }
    };
    if let Some(region) = m.atypical_region {
        let r = region.name();
        findings.push(if atypical == 1 {
            dice.pick(&[
                format!("A single enlarged atypical nucleus with an irregular outline is seen in the {r}."),
                format!("One atypical nucleus, large and dark with an irregular contour, lies in the {r}."),
            ])
            .clone()
        } else {
            let n = count_text(dice, atypical);
            match dice.below(3) {
                0 => format!("{} atypical enlarged nuclei with irregular outlines are clustered in the {r}.", capitalize(&n)),
                1 => format!("There is a cluster of {n} enlarged, dark nuclei with irregular contours in the {r}."),
                _ => format!("In the {r}, {n} atypical nuclei form a small group; they are larger and darker than the surrounding nuclei."),
            }
        });
    } else if dice.chance(0.7) {
        findings.push(
            dice.pick(&[
                "No atypical nuclei are identified.",
                "The nuclei show no atypia.",
            ])
            .to_string(),
        );
    }
    match m.lymphocytes {
        Lymphocytes::Infiltrate(region) => findings.push(
            dice.pick(&[
                format!(
                    "A dense infiltrate of small, dark, round lymphocytes occupies the {}.",
                    region.name()
                ),
                format!("Lymphocytes are densely packed in the {}.", region.name()),
            ])
            .clone(),
        ),
        Lymphocytes::Scattered => findings.push(
            dice.pick(&[
                "A few scattered lymphocytes are present.",
                "Occasional small dark lymphocytes are scattered through the field.",
            ])
            .to_string(),
        ),
        Lymphocytes::Absent => {
            if dice.chance(0.5) {
                findings.push("No inflammatory infiltrate is seen.".to_owned());
            }
        }
    }
    match m.spindle {
        Some(o) => findings.push(
            dice.pick(&[
                format!(
                    "Spindle-shaped nuclei run {} through the stroma.",
                    o.adverb()
                ),
                format!("Elongated spindle cells are aligned {}.", o.adverb()),
            ])
            .clone(),
        ),
        None => {
            if dice.chance(0.3) {
                findings.push("No spindle cells are seen.".to_owned());
            }
        }
    }
    match m.necrosis {
        Some(region) => findings.push(
            dice.pick(&[
                format!(
                    "A pale focus of necrosis with nuclear debris is present in the {}.",
                    region.name()
                ),
                format!("There is an area of necrosis in the {}.", region.name()),
            ])
            .clone(),
        ),
        None => {
            if dice.chance(0.5) {
                findings.push("There is no necrosis.".to_owned());
            }
        }
    }
    dice.shuffle(&mut findings);
    let opening = dice
        .pick(&[
            "Micrograph of a stained tissue section showing pink stroma with scattered round nuclei of normal size.",
            "H&E-stained section with eosinophilic stroma and evenly spaced small round nuclei.",
            "Stained tissue at high power: a pink fibrous background with scattered normal-looking nuclei.",
        ])
        .to_string();
    let main = m.main_finding().name();
    let closing = match dice.below(3) {
        0 => format!("Impression: {main}."),
        1 => format!("Main finding: {main}."),
        _ => format!("Overall, the key finding is {main}."),
    };
    let mut sentences = vec![opening];
    sentences.extend(findings);
    sentences.push(closing);
    sentences.join(" ")
}

#[cfg_attr(not(test), allow(dead_code))]
struct Built {
    micrograph: Micrograph,
    queries: Vec<Option<Query>>, // per benchmark row; None for the multiple-choice row
    mcq: (String, String, Vec<String>),
    generated: Generated,
}

fn build(dice: &mut Dice) -> Built {
    let micrograph = Micrograph::random(dice);
    let image = render(&micrograph, dice.seed32());
    let caption = caption(&micrograph, dice);

    let want_yes = dice.chance(0.5);
    let closed: Vec<Query> = closed_queries(&micrograph)
        .into_iter()
        .filter(|&q| (answer(&micrograph, q) == "yes") == want_yes)
        .collect();
    let closed = *dice.pick(&closed);
    let open = *dice.pick(&open_queries(&micrograph));
    let mut rows = Vec::with_capacity(3);
    for (query, is_closed) in [(closed, true), (open, false)] {
        let text = question(query, dice);
        rows.push(vqa_row(
            TASK_VQA,
            &text,
            &answer(&micrograph, query),
            is_closed,
        ));
    }
    let mcq = multiple_choice(&micrograph, dice);
    let slot = dice.below(4);
    rows.push(multiple_choice_row(TASK_MCQ, &mcq.0, &mcq.1, &mcq.2, slot));
    Built {
        micrograph,
        queries: vec![Some(closed), Some(open), None],
        mcq,
        generated: Generated {
            image,
            caption,
            precise_qa: Vec::new(),
            informative_qa: Vec::new(),
            benchmark_rows: rows,
        },
    }
}

pub(crate) fn generate(dice: &mut Dice) -> Generated {
    build(dice).generated
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(n: usize) -> Vec<Built> {
        (0..n as u64)
            .map(|seed| build(&mut Dice::new(seed * 13 + 5)))
            .collect()
    }

    #[test]
    fn drawn_nuclei_match_the_ground_truth() {
        for built in fields(200) {
            let m = &built.micrograph;
            let atypical: Vec<&Nucleus> = m
                .nuclei
                .iter()
                .filter(|n| n.kind == NucleusKind::Atypical)
                .collect();
            assert_eq!(atypical.is_empty(), m.atypical_region.is_none());
            assert!(atypical.len() <= 5);
            if let Some(region) = m.atypical_region {
                for n in &atypical {
                    assert_eq!(Region::nearest(n.outline.cx, n.outline.cy), region);
                }
                // Atypical nuclei do not overlap, so each can be counted.
                for (i, a) in atypical.iter().enumerate() {
                    for b in &atypical[i + 1..] {
                        let reach = a.outline.bounds().2 - a.outline.cx + b.outline.bounds().2
                            - b.outline.cx;
                        let gap =
                            draw::len(a.outline.cx - b.outline.cx, a.outline.cy - b.outline.cy);
                        assert!(gap > reach * 0.75, "{gap} vs {reach}");
                    }
                }
            }
            assert!(
                m.count(NucleusKind::Normal) >= 5,
                "normal nuclei are always present"
            );
            assert_eq!(m.count(NucleusKind::Spindle) > 0, m.spindle.is_some());
            match m.lymphocytes {
                Lymphocytes::Absent => assert_eq!(m.count(NucleusKind::Lymphocyte), 0),
                Lymphocytes::Scattered => {
                    assert!((1..=8).contains(&m.count(NucleusKind::Lymphocyte)))
                }
                Lymphocytes::Infiltrate(region) => {
                    assert!(m.count(NucleusKind::Lymphocyte) >= 15);
                    for n in m
                        .nuclei
                        .iter()
                        .filter(|n| n.kind == NucleusKind::Lymphocyte)
                    {
                        assert_eq!(Region::nearest(n.outline.cx, n.outline.cy), region);
                    }
                }
            }
            // Regional findings never share a region.
            let regions: Vec<Region> = [m.atypical_region, m.necrosis, m.infiltrate_region()]
                .into_iter()
                .flatten()
                .collect();
            let unique: std::collections::HashSet<_> = regions.iter().collect();
            assert_eq!(unique.len(), regions.len());
            // Scattered nuclei stay out of the findings' discs.
            for n in m
                .nuclei
                .iter()
                .filter(|n| matches!(n.kind, NucleusKind::Normal | NucleusKind::Spindle))
            {
                for region in &regions {
                    let (cx, cy) = region.centre();
                    assert!(draw::len(n.outline.cx - cx, n.outline.cy - cy) > FINDING_RADIUS);
                }
            }
        }
    }

    #[test]
    fn atypical_nuclei_are_dark_in_the_image() {
        for built in fields(100) {
            for n in built
                .micrograph
                .nuclei
                .iter()
                .filter(|n| n.kind == NucleusKind::Atypical)
            {
                let p = built
                    .generated
                    .image
                    .get_pixel(n.outline.cx as u32, n.outline.cy as u32)
                    .0;
                let brightness = p.iter().map(|&c| c as u32).sum::<u32>();
                assert!(brightness < 420, "{p:?}");
            }
        }
    }

    #[test]
    fn caption_states_the_ground_truth() {
        for built in fields(200) {
            let m = &built.micrograph;
            let caption = &built.generated.caption;
            let n = m.count(NucleusKind::Atypical);
            if let Some(region) = m.atypical_region {
                assert!(
                    caption
                        .to_lowercase()
                        .contains(&format!("in the {}", region.name())),
                    "{caption}"
                );
                if n > 1 {
                    assert!(
                        caption.contains(&format!(" {n} "))
                            || caption
                                .to_lowercase()
                                .contains(&format!("{} ", number_word(n))),
                        "{caption}"
                    );
                } else {
                    assert!(
                        caption.contains("single") || caption.contains("One atypical"),
                        "{caption}"
                    );
                }
            } else {
                assert!(
                    !caption.contains("atypical nuclei are clustered")
                        && !caption.contains("cluster of")
                );
            }
            if let Some(region) = m.necrosis {
                assert!(
                    caption.contains(&format!("necrosis in the {}", region.name()))
                        || caption.contains(&format!("present in the {}", region.name())),
                    "{caption}"
                );
            } else {
                assert!(
                    !caption.contains("focus of necrosis") && !caption.contains("area of necrosis")
                );
            }
            if let Some(o) = m.spindle {
                assert!(caption.contains(o.adverb()), "{caption}");
            }
            assert!(caption.contains(m.main_finding().name()), "{caption}");
        }
    }

    #[test]
    fn benchmark_answers_agree() {
        for built in fields(200) {
            let m = &built.micrograph;
            let rows = &built.generated.benchmark_rows;
            for (row, query) in rows.iter().zip(&built.queries) {
                match query {
                    Some(query) => {
                        let label = row["label"].as_str().unwrap();
                        assert_eq!(label, answer(m, *query));
                        // Independent checks of the facts the answers rest on.
                        match query {
                            Query::AtypicalCount => {
                                let drawn = m
                                    .nuclei
                                    .iter()
                                    .filter(|n| n.kind == NucleusKind::Atypical)
                                    .count();
                                assert_eq!(label, drawn.to_string());
                            }
                            Query::AtypicalPresent => {
                                assert_eq!(
                                    label == "yes",
                                    m.nuclei.iter().any(|n| n.kind == NucleusKind::Atypical)
                                );
                            }
                            _ => {}
                        }
                    }
                    None => {
                        let letter = row["label"].as_str().unwrap();
                        assert_eq!(row[letter].as_str().unwrap(), built.mcq.1);
                        assert!(!built.mcq.2.contains(&built.mcq.1));
                    }
                }
            }
        }
    }
}
