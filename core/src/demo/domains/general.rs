//! The general seed domain: scenes of coloured shapes on a plain background.
//!
//! A scene puts one to six shapes (circle, square, triangle, star, ring) in distinct cells of
//! a 3 × 3 grid (top left … bottom right), each in one of seven colours and two sizes. The
//! caption lists every shape; the question-answer pairs ask for counts, colours, places,
//! sizes, presence and comparisons. Each question has a short precise answer and an
//! informative answer that reasons first and ends with the same answer.

use image::RgbImage;
use serde_json::Value;

use super::draw::{self, Color};
use super::text::{article, capitalize, join_and, number_word};
use super::{Dice, Generated, IMAGE_SIDE, vqa_row};

/// The general domain's benchmark task (VQA-RAD layout).
pub const TASK_VQA: &str = "general_vqa";

/// A shape kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ShapeKind {
    /// A filled disc.
    Circle,
    /// A filled square (slightly rotated).
    Square,
    /// A filled triangle pointing up.
    Triangle,
    /// A five-pointed star.
    Star,
    /// A disc with a hole.
    Ring,
}

impl ShapeKind {
    /// Every kind.
    pub const ALL: [Self; 5] = [
        Self::Circle,
        Self::Square,
        Self::Triangle,
        Self::Star,
        Self::Ring,
    ];

    /// Singular name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Circle => "circle",
            Self::Square => "square",
            Self::Triangle => "triangle",
            Self::Star => "star",
            Self::Ring => "ring",
        }
    }

    /// Plural name.
    pub fn plural(self) -> &'static str {
        match self {
            Self::Circle => "circles",
            Self::Square => "squares",
            Self::Triangle => "triangles",
            Self::Star => "stars",
            Self::Ring => "rings",
        }
    }

    /// What tells the kind apart, for reasoning answers.
    fn feature(self) -> &'static str {
        match self {
            Self::Circle => "a round outline and no corners",
            Self::Square => "four equal sides and four corners",
            Self::Triangle => "three straight sides and three corners",
            Self::Star => "five pointed tips",
            Self::Ring => "a round outline with a hole in the middle",
        }
    }
}

/// The named colours shapes are painted in.
pub const COLORS: [(&str, Color); 7] = [
    ("red", [214, 39, 40]),
    ("green", [44, 160, 60]),
    ("blue", [40, 90, 210]),
    ("yellow", [242, 205, 30]),
    ("orange", [245, 130, 20]),
    ("purple", [128, 60, 170]),
    ("black", [30, 30, 34]),
];

/// Backgrounds (name, colour).
pub const BACKGROUNDS: [(&str, Color); 3] = [
    ("white", [248, 248, 246]),
    ("light gray", [212, 213, 215]),
    ("cream", [243, 233, 207]),
];

/// Grid cells in reading order.
pub const CELLS: [&str; 9] = [
    "top left",
    "top",
    "top right",
    "left",
    "center",
    "right",
    "bottom left",
    "bottom",
    "bottom right",
];

/// "at the top left", "in the center", ...
fn at(cell: usize) -> &'static str {
    [
        "at the top left",
        "at the top",
        "at the top right",
        "on the left",
        "in the center",
        "on the right",
        "at the bottom left",
        "at the bottom",
        "at the bottom right",
    ][cell]
}

/// One shape of a scene.
#[derive(Clone, Debug, PartialEq)]
pub struct Shape {
    /// Kind.
    pub kind: ShapeKind,
    /// Index into [`COLORS`].
    pub color: usize,
    /// Large or small.
    pub large: bool,
    /// Index into [`CELLS`].
    pub cell: usize,
    /// Centre x in pixels.
    pub cx: f32,
    /// Centre y in pixels.
    pub cy: f32,
    /// Radius in pixels.
    pub r: f32,
    /// Rotation in radians.
    pub angle: f32,
}

impl Shape {
    fn color_name(&self) -> &'static str {
        COLORS[self.color].0
    }

    fn size_name(&self) -> &'static str {
        if self.large { "large" } else { "small" }
    }

    /// "a small red circle at the top left".
    fn describe(&self) -> String {
        format!(
            "a {} {} {} {}",
            self.size_name(),
            self.color_name(),
            self.kind.name(),
            at(self.cell)
        )
    }
}

/// The ground truth of one image.
#[derive(Clone, Debug, PartialEq)]
pub struct Scene {
    /// Index into [`BACKGROUNDS`].
    pub background: usize,
    /// Shapes in reading order of their cells.
    pub shapes: Vec<Shape>,
}

impl Scene {
    fn random(dice: &mut Dice) -> Self {
        let count = *dice.pick(&[1, 2, 2, 3, 3, 4, 4, 5, 5, 6]);
        let mut cells: Vec<usize> = (0..9).collect();
        dice.shuffle(&mut cells);
        cells.truncate(count);
        cells.sort_unstable();
        // Half the scenes draw from a few kinds and colours so that repeats (and counting) are common.
        let kinds: Vec<ShapeKind> = if dice.chance(0.5) {
            let mut all = ShapeKind::ALL.to_vec();
            dice.shuffle(&mut all);
            all.truncate(dice.int(1, 2));
            all
        } else {
            ShapeKind::ALL.to_vec()
        };
        let colors: Vec<usize> = if dice.chance(0.4) {
            let mut all: Vec<usize> = (0..COLORS.len()).collect();
            dice.shuffle(&mut all);
            all.truncate(dice.int(1, 2));
            all
        } else {
            (0..COLORS.len()).collect()
        };
        let cell_size = IMAGE_SIDE as f32 / 3.0;
        let shapes = cells
            .into_iter()
            .map(|cell| {
                let large = dice.chance(0.5);
                let r = if large {
                    dice.range(11.5, 13.5)
                } else {
                    dice.range(6.5, 8.0)
                };
                let slack = (cell_size / 2.0 - r * 1.12 - 1.5).max(0.0);
                let cx =
                    (cell % 3) as f32 * cell_size + cell_size / 2.0 + dice.range(-slack, slack);
                let cy =
                    (cell / 3) as f32 * cell_size + cell_size / 2.0 + dice.range(-slack, slack);
                Shape {
                    kind: *dice.pick(&kinds),
                    color: *dice.pick(&colors),
                    large,
                    cell,
                    cx,
                    cy,
                    r,
                    angle: dice.range(-0.25, 0.25),
                }
            })
            .collect();
        Self {
            background: dice.below(BACKGROUNDS.len()),
            shapes,
        }
    }

    fn of_kind(&self, kind: ShapeKind) -> Vec<&Shape> {
        self.shapes.iter().filter(|s| s.kind == kind).collect()
    }

    fn of_color(&self, color: usize) -> Vec<&Shape> {
        self.shapes.iter().filter(|s| s.color == color).collect()
    }

    fn matching(&self, color: usize, kind: ShapeKind) -> Vec<&Shape> {
        self.shapes
            .iter()
            .filter(|s| s.color == color && s.kind == kind)
            .collect()
    }

    fn at_cell(&self, cell: usize) -> Option<&Shape> {
        self.shapes.iter().find(|s| s.cell == cell)
    }
}

/// Draws a scene.
pub fn render(scene: &Scene, texture_seed: u32) -> RgbImage {
    let mut image = RgbImage::new(IMAGE_SIDE, IMAGE_SIDE);
    let background = BACKGROUNDS[scene.background].1;
    let side = IMAGE_SIDE as f32;
    let paper = draw::NoiseGrid::new(IMAGE_SIDE, IMAGE_SIDE, 8, 24.0, 2, texture_seed)
        .field(IMAGE_SIDE, IMAGE_SIDE);
    draw::fill_with(&mut image, |x, y, i| {
        // A faint paper texture and vignette so the background is not perfectly flat.
        let paper = paper[i] - 0.5;
        let (dx, dy) = (x / side - 0.5, y / side - 0.5);
        draw::shift(background, paper * 8.0 - (dx * dx + dy * dy) * 18.0)
    });
    for shape in &scene.shapes {
        let color = COLORS[shape.color].1;
        let edge = draw::scale(color, 0.7);
        let (cx, cy, r, angle) = (shape.cx, shape.cy, shape.r, shape.angle);
        let reach = r * 1.2 + 1.0;
        let bounds = draw::disc_bounds(cx, cy, reach);
        let polygon = match shape.kind {
            ShapeKind::Square => draw::rect_polygon(cx, cy, r * 0.86, r * 0.86, angle),
            ShapeKind::Triangle => draw::regular_polygon(
                cx,
                cy + r * 0.15,
                r * 1.12,
                3,
                -std::f32::consts::FRAC_PI_2 + angle,
            ),
            ShapeKind::Star => draw::star_polygon(
                cx,
                cy,
                r * 1.12,
                r * 0.5,
                5,
                -std::f32::consts::FRAC_PI_2 + angle,
            ),
            ShapeKind::Circle | ShapeKind::Ring => Vec::new(),
        };
        let sdf = |x: f32, y: f32| -> f32 {
            match shape.kind {
                ShapeKind::Circle => draw::sd_circle(x, y, cx, cy, r),
                ShapeKind::Ring => {
                    let d = draw::len(x - cx, y - cy);
                    (d - r).max(r * 0.55 - d)
                }
                _ => draw::sd_polygon(x, y, &polygon),
            }
        };
        // A soft shadow, then the shape with a darker rim.
        draw::fill_sdf(
            &mut image,
            (bounds.0, bounds.1, bounds.2 + 2.0, bounds.3 + 2.0),
            [0, 0, 0],
            0.12,
            |x, y| sdf(x - 1.5, y - 1.5) - 0.5,
        );
        draw::paint(&mut image, bounds, 1.0, |x, y| {
            let d = sdf(x, y);
            (d, if d > -1.1 { edge } else { color })
        });
    }
    draw::add_grain(&mut image, 2.0, texture_seed ^ 0x5a5a);
    image
}

/// A question about a scene.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Query {
    CountKind(ShapeKind),
    CountAll,
    CountColor(usize),
    ColorOf(ShapeKind),
    WhereIs(usize, ShapeKind),
    Exists(usize, ShapeKind),
    ShapeAt(usize),
    SizeOf(usize, ShapeKind),
    MoreThan(ShapeKind, ShapeKind),
}

impl Query {
    fn is_yes_no(self) -> bool {
        matches!(self, Self::Exists(..) | Self::MoreThan(..))
    }
}

/// A question with both kinds of answer.
#[derive(Clone, Debug, PartialEq)]
struct Qa {
    query: Query,
    question: String,
    precise: String,
    informative: String,
}

/// "no circles", "one circle", "three circles".
fn count_phrase(n: usize, kind: ShapeKind) -> String {
    match n {
        0 => format!("no {}", kind.plural()),
        1 => format!("one {}", kind.name()),
        _ => format!("{} {}", number_word(n), kind.plural()),
    }
}

/// The short answer, computed from the scene.
fn precise_answer(scene: &Scene, query: Query) -> String {
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_owned();
    match query {
        Query::CountKind(kind) => scene.of_kind(kind).len().to_string(),
        Query::CountAll => scene.shapes.len().to_string(),
        Query::CountColor(color) => scene.of_color(color).len().to_string(),
        Query::ColorOf(kind) => scene.of_kind(kind)[0].color_name().to_owned(),
        Query::WhereIs(color, kind) => CELLS[scene.matching(color, kind)[0].cell].to_owned(),
        Query::Exists(color, kind) => yes_no(!scene.matching(color, kind).is_empty()),
        Query::ShapeAt(cell) => scene
            .at_cell(cell)
            .expect("occupied cell")
            .kind
            .name()
            .to_owned(),
        Query::SizeOf(color, kind) => scene.matching(color, kind)[0].size_name().to_owned(),
        Query::MoreThan(a, b) => yes_no(scene.of_kind(a).len() > scene.of_kind(b).len()),
    }
}

fn question_text(query: Query, dice: &mut Dice) -> String {
    match query {
        Query::CountKind(kind) => {
            let p = kind.plural();
            dice.pick(&[
                format!("How many {p} are there?"),
                format!("How many {p} are in the picture?"),
                format!("How many {p} can you see?"),
                format!("Count the {p} in the image."),
            ])
            .clone()
        }
        Query::CountAll => dice
            .pick(&[
                "How many shapes are there?",
                "How many shapes does the picture contain?",
                "How many shapes are in the image?",
            ])
            .to_string(),
        Query::CountColor(color) => {
            let c = COLORS[color].0;
            dice.pick(&[
                format!("How many {c} shapes are there?"),
                format!("How many shapes are {c}?"),
            ])
            .clone()
        }
        Query::ColorOf(kind) => {
            let k = kind.name();
            dice.pick(&[
                format!("What color is the {k}?"),
                format!("Which color does the {k} have?"),
            ])
            .clone()
        }
        Query::WhereIs(color, kind) => {
            let (c, k) = (COLORS[color].0, kind.name());
            dice.pick(&[
                format!("Where is the {c} {k}?"),
                format!("Where is the {c} {k} located?"),
                format!("In which part of the picture is the {c} {k}?"),
            ])
            .clone()
        }
        Query::Exists(color, kind) => {
            let (c, k) = (COLORS[color].0, kind.name());
            let a = article(c);
            dice.pick(&[
                format!("Is there {a} {c} {k}?"),
                format!("Is there {a} {c} {k} in the picture?"),
                format!("Does the image contain {a} {c} {k}?"),
            ])
            .clone()
        }
        Query::ShapeAt(cell) => {
            let place = at(cell);
            dice.pick(&[
                format!("What shape is {place}?"),
                format!("Which shape can be seen {place}?"),
            ])
            .clone()
        }
        Query::SizeOf(color, kind) => {
            let (c, k) = (COLORS[color].0, kind.name());
            dice.pick(&[
                format!("Is the {c} {k} large or small?"),
                format!("What size is the {c} {k}, large or small?"),
            ])
            .clone()
        }
        Query::MoreThan(a, b) => format!("Are there more {} than {}?", a.plural(), b.plural()),
    }
}

/// The reasoning answer; it always ends with (or states) the precise answer.
fn informative_answer(scene: &Scene, query: Query, dice: &mut Dice) -> String {
    let answer = precise_answer(scene, query);
    let style = dice.below(3);
    match query {
        Query::CountKind(kind) => {
            let found = scene.of_kind(kind);
            let (k, p) = (kind.name(), kind.plural());
            match found.len() {
                0 => {
                    let present: Vec<String> = ShapeKind::ALL
                        .iter()
                        .map(|&other| (other, scene.of_kind(other).len()))
                        .filter(|&(_, n)| n > 0)
                        .map(|(other, n)| count_phrase(n, other))
                        .collect();
                    if style == 0 {
                        format!(
                            "The picture has {} but no {p}. There are 0 {p}.",
                            join_and(&present)
                        )
                    } else {
                        format!(
                            "I look at every shape in the picture and none of them is a {k}, so the answer is 0."
                        )
                    }
                }
                1 => {
                    let s = found[0];
                    if style == 0 {
                        format!(
                            "Only one shape is a {k}: the {} one {}. That makes 1 {k}.",
                            s.color_name(),
                            at(s.cell)
                        )
                    } else {
                        format!(
                            "There is just one {k}, the {} one {}, so the count is 1.",
                            s.color_name(),
                            at(s.cell)
                        )
                    }
                }
                n => {
                    let items: Vec<String> = found
                        .iter()
                        .map(|s| {
                            format!(
                                "{} {} one {}",
                                article(s.color_name()),
                                s.color_name(),
                                at(s.cell)
                            )
                        })
                        .collect();
                    match style {
                        0 => format!("The {p} are {}, {n} in total.", join_and(&items)),
                        1 => format!(
                            "Counting the {p}: {}. Therefore there are {n}.",
                            join_and(&items)
                        ),
                        _ => format!(
                            "I count the {p} one by one: {}. That gives {n} {p}, so the answer is {n}.",
                            join_and(&items)
                        ),
                    }
                }
            }
        }
        Query::CountAll => {
            let items: Vec<String> = scene.shapes.iter().map(Shape::describe).collect();
            let n = scene.shapes.len();
            let noun = if n == 1 { "shape" } else { "shapes" };
            if style == 0 {
                format!(
                    "The picture contains {}, which is {n} {noun} in all.",
                    join_and(&items)
                )
            } else {
                format!(
                    "Going through the picture I find {}. That is {n} {noun}, so the answer is {n}.",
                    join_and(&items)
                )
            }
        }
        Query::CountColor(color) => {
            let c = COLORS[color].0;
            let found = scene.of_color(color);
            if found.is_empty() {
                let mut present: Vec<String> = scene
                    .shapes
                    .iter()
                    .map(|s| s.color_name().to_owned())
                    .collect();
                present.dedup();
                present.sort();
                present.dedup();
                format!(
                    "The colors in the picture are {}; none of the shapes is {c}. So the answer is 0.",
                    join_and(&present)
                )
            } else {
                let items: Vec<String> = found
                    .iter()
                    .map(|s| format!("the {} {}", s.kind.name(), at(s.cell)))
                    .collect();
                let n = found.len();
                if style == 0 {
                    format!("The {c} shapes are {}, {n} in all.", join_and(&items))
                } else {
                    format!(
                        "Looking for {c}, I find {}. So there {} {n}.",
                        join_and(&items),
                        if n == 1 { "is" } else { "are" }
                    )
                }
            }
        }
        Query::ColorOf(kind) => {
            let s = scene.of_kind(kind)[0];
            if style == 0 {
                format!(
                    "The only {} sits {} and is painted {answer}.",
                    kind.name(),
                    at(s.cell)
                )
            } else {
                format!(
                    "There is one {} in the picture, {}, and it is filled with {answer}. So its color is {answer}.",
                    kind.name(),
                    at(s.cell)
                )
            }
        }
        Query::WhereIs(color, kind) => {
            let s = scene.matching(color, kind)[0];
            let (c, k) = (COLORS[color].0, kind.name());
            if s.cell == 4 {
                return format!(
                    "The {c} {k} is in the middle of the picture both across and down, so it is in the center."
                );
            }
            let vertical = ["upper part", "middle band", "lower part"][s.cell / 3];
            let horizontal = [
                "close to the left edge",
                "halfway across",
                "close to the right edge",
            ][s.cell % 3];
            let suffix = if style == 0 {
                format!("Its place is therefore the {answer}.")
            } else {
                format!("So it is {}.", at(s.cell))
            };
            format!("The {c} {k} is in the {vertical} of the picture, {horizontal}. {suffix}")
        }
        Query::Exists(color, kind) => {
            let (c, k) = (COLORS[color].0, kind.name());
            let matches = scene.matching(color, kind);
            if let Some(s) = matches.first() {
                if style == 0 {
                    format!("Yes. There is {} {c} {k} {}.", article(c), at(s.cell))
                } else {
                    format!(
                        "I can see {} {c} {k} {}, so the answer is yes.",
                        article(c),
                        at(s.cell)
                    )
                }
            } else {
                let same_kind = scene.of_kind(kind);
                if same_kind.is_empty() {
                    format!("There is no {k} of any color in the picture, so the answer is no.")
                } else if same_kind.len() == 1 {
                    format!(
                        "The only {k} in the picture is {}, not {c}, so the answer is no.",
                        same_kind[0].color_name()
                    )
                } else {
                    let mut colors: Vec<String> = same_kind
                        .iter()
                        .map(|s| s.color_name().to_owned())
                        .collect();
                    colors.sort();
                    colors.dedup();
                    format!(
                        "The {} in the picture are {}, and none of them is {c}. So the answer is no.",
                        kind.plural(),
                        join_and(&colors)
                    )
                }
            }
        }
        Query::ShapeAt(cell) => {
            let s = scene.at_cell(cell).expect("occupied cell");
            if style == 0 {
                format!(
                    "The {} shape {} has {}; it is a {answer}.",
                    s.color_name(),
                    at(cell),
                    s.kind.feature()
                )
            } else {
                format!(
                    "The shape {} has {}, so it is a {answer}.",
                    at(cell),
                    s.kind.feature()
                )
            }
        }
        Query::SizeOf(color, kind) => {
            let (c, k) = (COLORS[color].0, kind.name());
            if answer == "large" {
                format!("The {c} {k} fills most of its part of the picture, so it is large.")
            } else {
                format!("The {c} {k} covers only a little of the space around it, so it is small.")
            }
        }
        Query::MoreThan(a, b) => {
            let (na, nb) = (scene.of_kind(a).len(), scene.of_kind(b).len());
            let relation = if na > nb {
                "more than"
            } else if na == nb {
                "the same as"
            } else {
                "fewer than"
            };
            format!(
                "There are {} and {}. {} is {relation} {}, so the answer is {answer}.",
                count_phrase(na, a),
                count_phrase(nb, b),
                capitalize(&number_word(na)),
                number_word(nb)
            )
        }
    }
}

fn make_qa(scene: &Scene, query: Query, dice: &mut Dice) -> Qa {
    Qa {
        query,
        question: question_text(query, dice),
        precise: precise_answer(scene, query),
        informative: informative_answer(scene, query, dice),
    }
}

/// A yes/no presence question whose answer is `want_yes`.
fn presence_query(scene: &Scene, want_yes: bool, dice: &mut Dice) -> Query {
    if want_yes {
        let s = dice.pick(&scene.shapes);
        return Query::Exists(s.color, s.kind);
    }
    // Prefer a near miss (a kind or colour that is present) half of the time.
    loop {
        let kind = if dice.chance(0.5) {
            dice.pick(&scene.shapes).kind
        } else {
            *dice.pick(&ShapeKind::ALL)
        };
        let color = if dice.chance(0.5) {
            dice.pick(&scene.shapes).color
        } else {
            dice.below(COLORS.len())
        };
        if scene.matching(color, kind).is_empty() {
            return Query::Exists(color, kind);
        }
    }
}

/// Every question worth asking about a scene (without duplicates), in random order.
fn candidate_queries(scene: &Scene, dice: &mut Dice) -> Vec<Query> {
    let mut queries = vec![Query::CountAll];
    let present: Vec<ShapeKind> = ShapeKind::ALL
        .into_iter()
        .filter(|&k| !scene.of_kind(k).is_empty())
        .collect();
    let absent: Vec<ShapeKind> = ShapeKind::ALL
        .into_iter()
        .filter(|&k| scene.of_kind(k).is_empty())
        .collect();
    for &kind in &present {
        queries.push(Query::CountKind(kind));
        if scene.of_kind(kind).len() == 1 {
            queries.push(Query::ColorOf(kind));
        }
    }
    if !absent.is_empty() && dice.chance(0.3) {
        queries.push(Query::CountKind(*dice.pick(&absent)));
    }
    let mut colors: Vec<usize> = scene.shapes.iter().map(|s| s.color).collect();
    colors.sort_unstable();
    colors.dedup();
    for &color in &colors {
        queries.push(Query::CountColor(color));
    }
    for shape in &scene.shapes {
        queries.push(Query::ShapeAt(shape.cell));
        if scene.matching(shape.color, shape.kind).len() == 1 {
            queries.push(Query::WhereIs(shape.color, shape.kind));
            if dice.chance(0.4) {
                queries.push(Query::SizeOf(shape.color, shape.kind));
            }
        }
    }
    let want_yes = dice.chance(0.5);
    queries.push(presence_query(scene, want_yes, dice));
    if present.len() >= 2 || (present.len() == 1 && dice.chance(0.5)) {
        let a = *dice.pick(&present);
        let others: Vec<ShapeKind> = ShapeKind::ALL.into_iter().filter(|&k| k != a).collect();
        let b = *dice.pick(&others);
        queries.push(if dice.chance(0.5) {
            Query::MoreThan(a, b)
        } else {
            Query::MoreThan(b, a)
        });
    }
    dice.shuffle(&mut queries);
    let mut seen = std::collections::HashSet::new();
    queries.retain(|q| seen.insert(*q));
    queries
}

/// Splits a question pool into precise and informative lists that share one or two questions.
/// Question-answer pairs as the sample holds them.
type Pairs = Vec<(String, String)>;

fn split_pool(pool: Vec<Qa>, dice: &mut Dice) -> (Pairs, Pairs) {
    let shared = if pool.len() >= 5 { 2 } else { 1 };
    let mut precise: Pairs = Vec::new();
    let mut informative: Pairs = Vec::new();
    for (i, qa) in pool.into_iter().enumerate() {
        if i < shared || (i - shared) % 2 == 0 {
            precise.push((qa.question.clone(), qa.precise.clone()));
        }
        if i < shared || (i - shared) % 2 == 1 {
            informative.push((qa.question, qa.informative));
        }
    }
    dice.shuffle(&mut precise);
    dice.shuffle(&mut informative);
    (precise, informative)
}

/// The caption: every shape, plus sometimes one summary sentence.
fn caption(scene: &Scene, dice: &mut Dice) -> String {
    let items: Vec<String> = scene.shapes.iter().map(Shape::describe).collect();
    let list = join_and(&items);
    let n = scene.shapes.len();
    let background = BACKGROUNDS[scene.background].0;
    let noun = if n == 1 { "shape" } else { "shapes" };
    let first = match dice.below(4) {
        0 => format!(
            "{} {noun} on a {background} background: {list}.",
            capitalize(&number_word(n))
        ),
        1 => format!("The picture shows {list} on a {background} background."),
        2 => format!(
            "On a {background} background there {} {} {noun}: {list}.",
            if n == 1 { "is" } else { "are" },
            number_word(n)
        ),
        _ => format!(
            "A {background} image with {} {noun}. It contains {list}.",
            number_word(n)
        ),
    };
    let mut extras: Vec<String> = Vec::new();
    let counts: Vec<(ShapeKind, usize)> = ShapeKind::ALL
        .iter()
        .map(|&k| (k, scene.of_kind(k).len()))
        .collect();
    let max = counts.iter().map(|c| c.1).max().unwrap_or(0);
    let leaders: Vec<&(ShapeKind, usize)> = counts.iter().filter(|c| c.1 == max).collect();
    if max >= 2 && leaders.len() == 1 {
        extras.push(format!(
            "The {} are the most common shape.",
            leaders[0].0.plural()
        ));
    }
    for (color, (name, _)) in COLORS.iter().enumerate() {
        let k = scene.of_color(color).len();
        if k >= 2 && k < n {
            extras.push(format!(
                "{} of the shapes are {name}.",
                capitalize(&number_word(k))
            ));
        }
    }
    if n >= 2
        && scene
            .shapes
            .iter()
            .all(|s| s.large == scene.shapes[0].large)
    {
        extras.push(format!("All of them are {}.", scene.shapes[0].size_name()));
    }
    if n >= 2
        && scene
            .shapes
            .iter()
            .all(|s| s.color == scene.shapes[0].color)
    {
        extras.push(format!("Every shape is {}.", scene.shapes[0].color_name()));
    }
    if !extras.is_empty() && dice.chance(0.6) {
        format!("{first} {}", dice.pick(&extras))
    } else {
        first
    }
}

/// Benchmark rows: one closed (yes/no, balanced) and one open question.
fn benchmark_rows(scene: &Scene, dice: &mut Dice) -> Vec<(Query, Value)> {
    let want_yes = dice.chance(0.5);
    let closed = presence_query(scene, want_yes, dice);
    let open_queries: Vec<Query> = candidate_queries(scene, dice)
        .into_iter()
        .filter(|q| !q.is_yes_no())
        .collect();
    let open = *dice.pick(&open_queries);
    let mut rows = Vec::with_capacity(2);
    for (query, is_closed) in [(closed, true), (open, false)] {
        let question = question_text(query, dice);
        rows.push((
            query,
            vqa_row(
                TASK_VQA,
                &question,
                &precise_answer(scene, query),
                is_closed,
            ),
        ));
    }
    rows
}

/// Everything generated for one image, with the ground truth (for tests).
#[cfg_attr(not(test), allow(dead_code))]
struct Built {
    scene: Scene,
    pool: Vec<Qa>,
    row_queries: Vec<Query>,
    generated: Generated,
}

fn build(dice: &mut Dice) -> Built {
    let scene = Scene::random(dice);
    let image = render(&scene, dice.seed32());
    let caption = caption(&scene, dice);
    let queries = candidate_queries(&scene, dice);
    let pool: Vec<Qa> = queries
        .into_iter()
        .take(7)
        .map(|q| make_qa(&scene, q, dice))
        .collect();
    let (precise_qa, informative_qa) = split_pool(pool.clone(), dice);
    let (row_queries, benchmark_rows): (Vec<Query>, Vec<Value>) =
        benchmark_rows(&scene, dice).into_iter().unzip();
    Built {
        scene,
        pool,
        row_queries,
        generated: Generated {
            image,
            caption,
            precise_qa,
            informative_qa,
            benchmark_rows,
        },
    }
}

pub(crate) fn generate(dice: &mut Dice) -> Generated {
    build(dice).generated
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn scenes(n: usize) -> Vec<Built> {
        (0..n as u64)
            .map(|seed| build(&mut Dice::new(seed * 7 + 1)))
            .collect()
    }

    /// The answer a person would give, computed here independently of the generator.
    fn expected(scene: &Scene, query: Query) -> String {
        let count = |f: &dyn Fn(&Shape) -> bool| scene.shapes.iter().filter(|s| f(s)).count();
        match query {
            Query::CountKind(k) => count(&|s| s.kind == k).to_string(),
            Query::CountAll => scene.shapes.len().to_string(),
            Query::CountColor(c) => count(&|s| s.color == c).to_string(),
            Query::ColorOf(k) => {
                assert_eq!(count(&|s| s.kind == k), 1);
                COLORS[scene.shapes.iter().find(|s| s.kind == k).unwrap().color]
                    .0
                    .to_owned()
            }
            Query::WhereIs(c, k) => {
                assert_eq!(count(&|s| s.kind == k && s.color == c), 1);
                CELLS[scene
                    .shapes
                    .iter()
                    .find(|s| s.kind == k && s.color == c)
                    .unwrap()
                    .cell]
                    .to_owned()
            }
            Query::Exists(c, k) => if count(&|s| s.kind == k && s.color == c) > 0 {
                "yes"
            } else {
                "no"
            }
            .to_owned(),
            Query::ShapeAt(cell) => scene
                .shapes
                .iter()
                .find(|s| s.cell == cell)
                .unwrap()
                .kind
                .name()
                .to_owned(),
            Query::SizeOf(c, k) => {
                let s = scene
                    .shapes
                    .iter()
                    .find(|s| s.kind == k && s.color == c)
                    .unwrap();
                if s.r > 10.0 { "large" } else { "small" }.to_owned()
            }
            Query::MoreThan(a, b) => if count(&|s| s.kind == a) > count(&|s| s.kind == b) {
                "yes"
            } else {
                "no"
            }
            .to_owned(),
        }
    }

    #[test]
    fn answers_agree_with_the_scene() {
        for built in scenes(250) {
            for qa in &built.pool {
                let truth = expected(&built.scene, qa.query);
                assert_eq!(qa.precise, truth, "{:?} {:?}", qa.query, built.scene);
                assert!(
                    qa.informative.to_lowercase().contains(&truth),
                    "informative answer misses {truth:?}: {}",
                    qa.informative
                );
            }
        }
    }

    #[test]
    fn shapes_are_drawn_where_the_text_says() {
        let cell = IMAGE_SIDE as f32 / 3.0;
        for built in scenes(200) {
            let image = &built.generated.image;
            for shape in &built.scene.shapes {
                // The centre lies in the named cell, and the whole shape stays inside it.
                assert_eq!(
                    (shape.cy / cell) as usize * 3 + (shape.cx / cell) as usize,
                    shape.cell
                );
                let reach = shape.r * 1.12;
                let (col, row) = ((shape.cell % 3) as f32, (shape.cell / 3) as f32);
                assert!(shape.cx - reach >= col * cell && shape.cx + reach <= (col + 1.0) * cell);
                assert!(shape.cy - reach >= row * cell && shape.cy + reach <= (row + 1.0) * cell);
                // The body (for a ring: its band) has the shape's colour or rim colour (up to
                // grain); a ring's hole shows the background.
                let color = COLORS[shape.color].1;
                let close = |pixel: [u8; 3], color: [u8; 3]| {
                    (0..3).all(|c| (pixel[c] as i32 - color[c] as i32).abs() <= 3)
                };
                let centre = image.get_pixel(shape.cx as u32, shape.cy as u32).0;
                if shape.kind == ShapeKind::Ring {
                    let band = image
                        .get_pixel((shape.cx + shape.r * 0.78) as u32, shape.cy as u32)
                        .0;
                    assert!(
                        close(band, color) || close(band, draw::scale(color, 0.7)),
                        "{band:?} vs {color:?}"
                    );
                    assert!(!close(centre, color));
                } else {
                    assert!(close(centre, color), "{centre:?} vs {color:?}");
                }
            }
        }
    }

    #[test]
    fn caption_mentions_every_shape_and_the_count() {
        for built in scenes(200) {
            let caption = &built.generated.caption;
            for shape in &built.scene.shapes {
                assert!(caption.contains(&shape.describe()), "{caption}");
            }
            // No shape is mentioned that is not drawn.
            let mut mentioned = 0;
            for size in ["large", "small"] {
                for (color, _) in COLORS {
                    for kind in ShapeKind::ALL {
                        mentioned += caption
                            .matches(&format!("{size} {color} {}", kind.name()))
                            .count();
                    }
                }
            }
            assert_eq!(mentioned, built.scene.shapes.len(), "{caption}");
            assert!(caption.contains(BACKGROUNDS[built.scene.background].0));
        }
    }

    #[test]
    fn precise_and_informative_share_a_question() {
        for built in scenes(200) {
            let g = &built.generated;
            let precise: HashSet<&str> = g.precise_qa.iter().map(|p| p.0.as_str()).collect();
            assert!(
                g.informative_qa
                    .iter()
                    .any(|p| precise.contains(p.0.as_str()))
            );
            assert!(
                g.precise_qa.len() >= 2 && !g.informative_qa.is_empty(),
                "{:?}",
                g.precise_qa
            );
            // Precise answers are short.
            assert!(
                g.precise_qa
                    .iter()
                    .all(|p| p.1.split_whitespace().count() <= 2)
            );
            // Questions are unique within a list, so pairing by text is unambiguous.
            assert_eq!(precise.len(), g.precise_qa.len());
        }
    }

    #[test]
    fn benchmark_answers_agree() {
        for built in scenes(200) {
            for (row, &query) in built
                .generated
                .benchmark_rows
                .iter()
                .zip(&built.row_queries)
            {
                let label = row["label"].as_str().unwrap();
                assert_eq!(label, expected(&built.scene, query));
                assert_eq!(row["answer_type"] == "CLOSED", query.is_yes_no());
            }
        }
    }
}
