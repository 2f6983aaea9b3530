//! The food-like target domain: plates of food seen from above.
//!
//! Nineteen ingredients are drawn by shape, colour and texture (tomato slices with seeds,
//! rice grains, broccoli florets, fried or scrambled egg, noodle strands, carrot sticks or
//! dice, toast, cheese, lettuce leaves, sausages, shrimp, mushroom slices, peas, potato
//! chunks, a salmon fillet, corn kernels, grilled chicken, cucumber slices, olives). Fourteen
//! dishes are made of required and optional ingredients, laid out either in separate piles
//! or mixed over a base. Captions read like recipe notes (dish, ingredients, a how-to line);
//! benchmark rows follow Food101 (dish name), FoodSeg103 (ingredients on the plate) and
//! Recipe1M (the recipe text).

use image::RgbImage;
use serde_json::json;

use super::draw::{self, Blob};
use super::text::{article, capitalize, join_and};
use super::{Dice, Generated, IMAGE_SIDE, TASK_KEY};

/// Food101-style task (dish name; multiple choice over the dish vocabulary).
pub const TASK_DISH: &str = "food_dish";
/// FoodSeg103-style task (ingredients on the plate; multi-label F1).
pub const TASK_INGREDIENTS: &str = "food_ingredients";
/// Recipe1M-style task (recipe text; ROUGE-L).
pub const TASK_RECIPE: &str = "food_recipe";

/// An ingredient.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ingredient {
    /// Red slices with seeds.
    Tomato,
    /// White grains.
    Rice,
    /// Green florets.
    Broccoli,
    /// Fried (white and yolk) or scrambled.
    Egg,
    /// Yellow wavy strands.
    Noodles,
    /// Orange sticks or dice.
    Carrot,
    /// Toast slices.
    Bread,
    /// Yellow wedges or cubes.
    Cheese,
    /// Green leaves.
    Lettuce,
    /// Brown links.
    Sausage,
    /// Pink curls.
    Shrimp,
    /// Tan slices.
    Mushroom,
    /// Small green balls.
    Peas,
    /// Golden roast chunks.
    Potato,
    /// An orange fillet with white lines.
    Salmon,
    /// Yellow kernels.
    Corn,
    /// Grilled chunks with char marks.
    Chicken,
    /// Pale green slices with a dark rim.
    Cucumber,
    /// Black rings.
    Olive,
}

impl Ingredient {
    /// Every ingredient, in vocabulary order.
    pub const ALL: [Self; 19] = [
        Self::Tomato,
        Self::Rice,
        Self::Broccoli,
        Self::Egg,
        Self::Noodles,
        Self::Carrot,
        Self::Bread,
        Self::Cheese,
        Self::Lettuce,
        Self::Sausage,
        Self::Shrimp,
        Self::Mushroom,
        Self::Peas,
        Self::Potato,
        Self::Salmon,
        Self::Corn,
        Self::Chicken,
        Self::Cucumber,
        Self::Olive,
    ];

    /// The class name (vocabulary entry).
    pub fn name(self) -> &'static str {
        match self {
            Self::Tomato => "tomato",
            Self::Rice => "rice",
            Self::Broccoli => "broccoli",
            Self::Egg => "egg",
            Self::Noodles => "noodles",
            Self::Carrot => "carrot",
            Self::Bread => "bread",
            Self::Cheese => "cheese",
            Self::Lettuce => "lettuce",
            Self::Sausage => "sausage",
            Self::Shrimp => "shrimp",
            Self::Mushroom => "mushroom",
            Self::Peas => "peas",
            Self::Potato => "potato",
            Self::Salmon => "salmon",
            Self::Corn => "corn",
            Self::Chicken => "chicken",
            Self::Cucumber => "cucumber",
            Self::Olive => "olive",
        }
    }

    /// How a caption names it (always containing [`Ingredient::name`]).
    fn caption_name(self, mixed: bool) -> &'static str {
        match self {
            Self::Tomato => "tomato slices",
            Self::Rice => "rice",
            Self::Broccoli => "broccoli florets",
            Self::Egg if mixed => "scrambled egg",
            Self::Egg => "a fried egg",
            Self::Noodles => "noodles",
            Self::Carrot if mixed => "diced carrot",
            Self::Carrot => "carrot sticks",
            Self::Bread => "toasted bread",
            Self::Cheese if mixed => "cheese cubes",
            Self::Cheese => "cheese wedges",
            Self::Lettuce => "lettuce leaves",
            Self::Sausage => "sausages",
            Self::Shrimp => "shrimp",
            Self::Mushroom => "mushroom slices",
            Self::Peas => "green peas",
            Self::Potato => "roast potato",
            Self::Salmon => "a salmon fillet",
            Self::Corn => "sweet corn",
            Self::Chicken => "grilled chicken",
            Self::Cucumber => "cucumber slices",
            Self::Olive => "black olives",
        }
    }
}

/// The ingredient vocabulary (class names of the ingredient task), in id order.
pub fn ingredient_vocabulary() -> Vec<String> {
    Ingredient::ALL
        .iter()
        .map(|i| i.name().to_owned())
        .collect()
}

/// How a dish is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Style {
    /// Toppings scattered over a base (or over the plate when there is no base).
    Mixed(Option<Ingredient>),
    /// Each ingredient in its own pile.
    Sectioned,
}

/// A dish class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dish {
    /// Class name.
    pub name: &'static str,
    /// Always on the plate.
    pub required: &'static [Ingredient],
    /// Sometimes on the plate.
    pub optional: &'static [Ingredient],
    style: Style,
}

use Ingredient as I;

/// The dishes, in vocabulary order.
pub const DISHES: [Dish; 14] = [
    Dish {
        name: "fried rice",
        required: &[I::Rice, I::Egg, I::Peas, I::Carrot],
        optional: &[I::Corn, I::Shrimp],
        style: Style::Mixed(Some(I::Rice)),
    },
    Dish {
        name: "shrimp noodles",
        required: &[I::Noodles, I::Shrimp, I::Broccoli],
        optional: &[I::Carrot, I::Mushroom],
        style: Style::Mixed(Some(I::Noodles)),
    },
    Dish {
        name: "tomato salad",
        required: &[I::Tomato, I::Cucumber, I::Lettuce],
        optional: &[I::Olive, I::Cheese],
        style: Style::Mixed(Some(I::Lettuce)),
    },
    Dish {
        name: "full breakfast",
        required: &[I::Egg, I::Sausage, I::Bread],
        optional: &[I::Tomato, I::Mushroom],
        style: Style::Sectioned,
    },
    Dish {
        name: "grilled salmon",
        required: &[I::Salmon, I::Potato, I::Broccoli],
        optional: &[I::Lettuce],
        style: Style::Sectioned,
    },
    Dish {
        name: "cheese toast",
        required: &[I::Bread, I::Cheese],
        optional: &[I::Tomato],
        style: Style::Sectioned,
    },
    Dish {
        name: "chicken rice",
        required: &[I::Chicken, I::Rice],
        optional: &[I::Cucumber, I::Carrot],
        style: Style::Sectioned,
    },
    Dish {
        name: "vegetable platter",
        required: &[I::Carrot, I::Cucumber, I::Broccoli],
        optional: &[I::Tomato],
        style: Style::Sectioned,
    },
    Dish {
        name: "corn salad",
        required: &[I::Corn, I::Peas, I::Tomato],
        optional: &[I::Cucumber],
        style: Style::Mixed(None),
    },
    Dish {
        name: "mushroom omelette",
        required: &[I::Egg, I::Mushroom],
        optional: &[I::Cheese],
        style: Style::Sectioned,
    },
    Dish {
        name: "bangers and mash",
        required: &[I::Sausage, I::Potato, I::Peas],
        optional: &[],
        style: Style::Sectioned,
    },
    Dish {
        name: "chicken salad",
        required: &[I::Chicken, I::Lettuce, I::Tomato],
        optional: &[I::Cucumber, I::Corn],
        style: Style::Mixed(Some(I::Lettuce)),
    },
    Dish {
        name: "salmon rice bowl",
        required: &[I::Salmon, I::Rice, I::Cucumber],
        optional: &[],
        style: Style::Sectioned,
    },
    Dish {
        name: "tomato pasta",
        required: &[I::Noodles, I::Tomato, I::Cheese],
        optional: &[I::Olive],
        style: Style::Mixed(Some(I::Noodles)),
    },
];

/// The dish vocabulary (class names of the dish task), in id order.
pub fn dish_vocabulary() -> Vec<String> {
    DISHES.iter().map(|d| d.name.to_owned()).collect()
}

/// Tables the plate stands on.
const TABLES: [&str; 3] = ["wooden", "blue cloth", "stone"];

/// The ground truth of one plate.
#[derive(Clone, Debug, PartialEq)]
pub struct Plate {
    /// Index into [`DISHES`].
    pub dish: usize,
    /// Ingredients on the plate, in vocabulary order.
    pub ingredients: Vec<Ingredient>,
    /// Index into the table kinds.
    pub table: usize,
    /// Every drawn piece: (ingredient, x, y).
    pub pieces: Vec<(Ingredient, f32, f32)>,
}

impl Plate {
    fn dish(&self) -> &'static Dish {
        &DISHES[self.dish]
    }

    fn mixed(&self) -> bool {
        matches!(self.dish().style, Style::Mixed(_))
    }
}

/// Plate geometry.
const PLATE_X: f32 = IMAGE_SIDE as f32 / 2.0;
const PLATE_Y: f32 = IMAGE_SIDE as f32 / 2.0 + 1.0;
const PLATE_R: f32 = 52.0;
const WELL_R: f32 = 42.0;

/// A small deterministic generator for drawing details (so ground truth and pixels come from
/// one stream).
fn piece_dice(dice: &mut Dice) -> Dice {
    Dice::new(dice.u64())
}

fn draw_table(image: &mut RgbImage, table: usize, seed: u32) {
    let grid = draw::NoiseGrid::new(IMAGE_SIDE, IMAGE_SIDE, 4, 14.0, 2, seed)
        .field(IMAGE_SIDE, IMAGE_SIDE);
    let side = IMAGE_SIDE as f32;
    let wood = draw::NoiseTable::new((0.0, side / 30.0), (0.0, side / 2.2), seed ^ 7);
    match table {
        0 => draw::fill_with(image, |x, y, i| {
            // Wood: stretched noise gives the grain.
            let grain = wood.at(x / 30.0, y / 2.2);
            let t = grain * 0.7 + grid[i] * 0.3;
            draw::mix([150, 100, 58], [196, 146, 96], t)
        }),
        1 => draw::fill_with(image, |x, y, i| {
            let check = ((x / 14.0).floor() as i32 + (y / 14.0).floor() as i32).rem_euclid(2) == 0;
            let base = if check {
                [70, 110, 175]
            } else {
                [225, 232, 240]
            };
            draw::shift(base, (grid[i] - 0.5) * 20.0)
        }),
        _ => draw::fill_with(image, |x, y, i| {
            let t = grid[i];
            let speck = draw::hash01(x as i32, y as i32, seed) * 16.0;
            draw::shift(draw::mix([120, 122, 126], [175, 176, 180], t), speck - 8.0)
        }),
    }
}

fn draw_plate(image: &mut RgbImage) {
    // Shadow, rim, well.
    draw::fill_circle(
        image,
        PLATE_X + 2.5,
        PLATE_Y + 3.0,
        PLATE_R,
        [0, 0, 0],
        0.25,
    );
    draw::paint(
        image,
        draw::disc_bounds(PLATE_X, PLATE_Y, PLATE_R),
        1.0,
        |x, y| {
            let d = draw::len(x - PLATE_X, y - PLATE_Y);
            let light = 1.0 - ((x - PLATE_X) + (y - PLATE_Y)) / (PLATE_R * 12.0);
            let base = if d > WELL_R + 1.5 {
                draw::scale([236, 236, 232], light)
            } else if d > WELL_R - 1.0 {
                [214, 214, 210]
            } else {
                [246, 246, 243]
            };
            (d - PLATE_R, base)
        },
    );
}

/// Draws one piece of an ingredient at `(x, y)`; `mixed` selects the small, chopped form.
fn draw_piece(
    image: &mut RgbImage,
    ingredient: Ingredient,
    x: f32,
    y: f32,
    mixed: bool,
    dice: &mut Dice,
) {
    let angle = dice.angle();
    match ingredient {
        I::Tomato => {
            let r = if mixed {
                dice.range(4.5, 5.5)
            } else {
                dice.range(6.0, 7.0)
            };
            draw::fill_circle(image, x, y, r, [196, 32, 28], 1.0);
            draw::fill_circle(image, x, y, r * 0.78, [228, 70, 56], 1.0);
            for i in 0..5 {
                let a = angle + i as f32 * std::f32::consts::TAU / 5.0;
                let (sx, sy) = (x + r * 0.48 * a.cos(), y + r * 0.48 * a.sin());
                draw::fill_ellipse(image, sx, sy, r * 0.2, r * 0.12, a, [244, 196, 120], 1.0);
            }
            draw::fill_circle(image, x, y, r * 0.2, [240, 130, 110], 1.0);
        }
        I::Rice => {
            draw::fill_ellipse(
                image,
                x + 0.4,
                y + 0.5,
                1.9,
                1.05,
                angle,
                [190, 186, 170],
                0.8,
            );
            draw::fill_ellipse(image, x, y, 1.8, 0.95, angle, [250, 249, 240], 1.0);
        }
        I::Broccoli => {
            let s = if mixed { 0.8 } else { 1.0 };
            let (sin, cos) = angle.sin_cos();
            draw::stroke_line(
                image,
                x,
                y,
                x + 5.0 * s * cos,
                y + 5.0 * s * sin,
                2.6 * s,
                [150, 192, 96],
                1.0,
            );
            for i in 0..7 {
                let a = i as f32 * 0.9 + angle;
                let d = if i == 0 { 0.0 } else { 2.6 * s };
                let (fx, fy) = (
                    x - 1.5 * s * cos + d * a.cos(),
                    y - 1.5 * s * sin + d * a.sin(),
                );
                draw::fill_circle(image, fx, fy, 2.1 * s, [40, 112, 42], 1.0);
                draw::fill_circle(image, fx - 0.5, fy - 0.5, 0.8 * s, [96, 160, 72], 1.0);
            }
        }
        I::Egg if mixed => {
            let blob = Blob {
                cx: x,
                cy: y,
                r: dice.range(2.0, 2.8),
                stretch: 1.3,
                angle,
                harmonics: vec![(0.2, angle)],
            };
            draw::fill_blob(image, &blob, [248, 220, 104], 1.0);
        }
        I::Egg => {
            let white = Blob {
                cx: x,
                cy: y,
                r: dice.range(11.0, 12.5),
                stretch: 1.1,
                angle,
                harmonics: vec![(0.08, dice.angle()), (0.05, dice.angle())],
            };
            draw::fill_blob(
                image,
                &Blob {
                    cx: x + 1.0,
                    cy: y + 1.2,
                    ..white.clone()
                },
                [170, 170, 160],
                0.35,
            );
            draw::fill_blob(image, &white, [252, 252, 247], 1.0);
            let (yx, yy) = (x + dice.range(-2.0, 2.0), y + dice.range(-2.0, 2.0));
            draw::fill_circle(image, yx, yy, 4.8, [246, 168, 22], 1.0);
            draw::fill_circle(image, yx - 1.2, yy - 1.3, 1.3, [255, 226, 150], 0.9);
        }
        I::Noodles => {
            let length = dice.range(14.0, 22.0);
            let (sin, cos) = angle.sin_cos();
            let phase = dice.angle();
            let points: Vec<(f32, f32)> = (0..=7)
                .map(|i| {
                    let t = (i as f32 / 7.0 - 0.5) * length;
                    let wobble = 1.6 * (t * 0.55 + phase).sin();
                    (x + t * cos - wobble * sin, y + t * sin + wobble * cos)
                })
                .collect();
            draw::stroke_polyline_two_tone(
                image,
                &points,
                2.6,
                1.5,
                [196, 150, 62],
                [242, 208, 112],
            );
        }
        I::Carrot if mixed => {
            let square = draw::rect_polygon(x, y, 1.7, 1.7, angle);
            draw::fill_polygon(image, &square, [240, 122, 26], 1.0);
        }
        I::Carrot => {
            let length = dice.range(10.0, 13.0);
            let (sin, cos) = angle.sin_cos();
            let (ax, ay, bx, by) = (
                x - length / 2.0 * cos,
                y - length / 2.0 * sin,
                x + length / 2.0 * cos,
                y + length / 2.0 * sin,
            );
            draw::stroke_line(image, ax, ay, bx, by, 3.4, [226, 106, 20], 1.0);
            draw::stroke_line(
                image,
                ax - 0.6 * sin,
                ay + 0.6 * cos,
                bx - 0.6 * sin,
                by + 0.6 * cos,
                1.0,
                [252, 160, 80],
                0.9,
            );
        }
        I::Bread => {
            let half = dice.range(9.0, 10.5);
            let square = draw::rect_polygon(x, y, half - 2.0, half - 2.0, angle * 0.2);
            draw::fill_sdf(
                image,
                draw::disc_bounds(x, y, half * 1.5),
                [160, 96, 42],
                1.0,
                |px, py| draw::sd_polygon(px, py, &square) - 2.0,
            );
            let seed = dice.seed32();
            draw::paint(image, draw::disc_bounds(x, y, half * 1.5), 1.0, |px, py| {
                let d = draw::sd_polygon(px, py, &square) + 0.3;
                let speck = draw::hash01(px as i32, py as i32, seed);
                (
                    d,
                    if speck > 0.85 {
                        [210, 160, 92]
                    } else {
                        [234, 196, 128]
                    },
                )
            });
        }
        I::Cheese if mixed => {
            let square = draw::rect_polygon(x, y, 2.3, 2.3, angle);
            draw::fill_polygon(image, &square, [250, 222, 110], 1.0);
            draw::stroke_polygon(image, &square, 0.7, [214, 178, 60], 1.0);
        }
        I::Cheese => {
            let triangle = draw::regular_polygon(x, y, dice.range(7.0, 8.5), 3, angle);
            draw::fill_polygon(image, &triangle, [250, 212, 72], 1.0);
            draw::stroke_polygon(image, &triangle, 0.9, [210, 168, 40], 1.0);
            for i in 0..3 {
                let a = angle + i as f32 * 2.1 + 0.5;
                draw::fill_circle(
                    image,
                    x + 2.2 * a.cos(),
                    y + 2.2 * a.sin(),
                    1.0,
                    [226, 180, 44],
                    1.0,
                );
            }
        }
        I::Lettuce => {
            let leaf = Blob {
                cx: x,
                cy: y,
                r: dice.range(7.5, 9.5),
                stretch: 1.3,
                angle,
                harmonics: vec![
                    (0.05, dice.angle()),
                    (0.06, dice.angle()),
                    (0.05, dice.angle()),
                    (0.04, dice.angle()),
                    (0.06, dice.angle()),
                ],
            };
            let light = if dice.chance(0.5) {
                [128, 194, 70]
            } else {
                [150, 206, 88]
            };
            let shape = leaf.prepare();
            draw::paint(image, leaf.bounds(), 1.0, |px, py| {
                let d = shape.sdf(px, py);
                (
                    d,
                    if d > -1.2 {
                        draw::scale(light, 0.78)
                    } else {
                        light
                    },
                )
            });
            let (sin, cos) = angle.sin_cos();
            let reach = leaf.r * 1.1;
            draw::stroke_line(
                image,
                x - reach * cos,
                y - reach * sin,
                x + reach * cos,
                y + reach * sin,
                1.0,
                [200, 232, 150],
                0.9,
            );
        }
        I::Sausage => {
            let length = dice.range(18.0, 21.0);
            let (sin, cos) = angle.sin_cos();
            let (ax, ay, bx, by) = (
                x - length / 2.0 * cos,
                y - length / 2.0 * sin,
                x + length / 2.0 * cos,
                y + length / 2.0 * sin,
            );
            draw::stroke_line(image, ax, ay, bx, by, 7.0, [138, 62, 36], 1.0);
            draw::stroke_line(
                image,
                ax - 1.5 * sin,
                ay + 1.5 * cos,
                bx - 1.5 * sin,
                by + 1.5 * cos,
                1.4,
                [192, 112, 72],
                0.9,
            );
            for i in 0..3 {
                let t = (i as f32 - 1.0) * length * 0.25;
                let (mx, my) = (x + t * cos, y + t * sin);
                draw::stroke_line(
                    image,
                    mx - 2.0 * sin + cos,
                    my + 2.0 * cos + sin,
                    mx + 2.0 * sin - cos,
                    my - 2.0 * cos - sin,
                    0.9,
                    [80, 36, 24],
                    0.8,
                );
            }
        }
        I::Shrimp => {
            let r = dice.range(3.8, 4.6);
            let points: Vec<(f32, f32)> = (0..=8)
                .map(|i| {
                    let a = angle + i as f32 * std::f32::consts::PI * 1.2 / 8.0;
                    (x + r * a.cos(), y + r * a.sin())
                })
                .collect();
            draw::stroke_polyline_two_tone(
                image,
                &points,
                4.4,
                2.0,
                [236, 118, 84],
                [250, 170, 140],
            );
            for p in points.iter().step_by(2) {
                draw::fill_circle(image, p.0, p.1, 0.55, [255, 225, 210], 1.0);
            }
            let tail = points[8];
            draw::fill_polygon(
                image,
                &draw::regular_polygon(tail.0, tail.1, 2.2, 3, angle),
                [214, 80, 50],
                1.0,
            );
        }
        I::Mushroom => {
            let r = if mixed {
                dice.range(3.5, 4.2)
            } else {
                dice.range(4.5, 5.5)
            };
            let (sin, cos) = angle.sin_cos();
            let stem = draw::rect_polygon(
                x + r * 0.55 * sin,
                y - r * 0.55 * cos,
                r * 0.3,
                r * 0.55,
                angle,
            );
            draw::fill_polygon(image, &stem, [226, 208, 172], 1.0);
            // The cap: the half disc on the far side of the stem.
            draw::fill_sdf(
                image,
                draw::disc_bounds(x, y, r),
                [196, 164, 122],
                1.0,
                |px, py| {
                    let along = (px - x) * sin - (py - y) * cos;
                    (draw::sd_circle(px, py, x, y, r)).max(along)
                },
            );
            draw::stroke_line(
                image,
                x - r * 0.8 * cos,
                y - r * 0.8 * sin,
                x + r * 0.8 * cos,
                y + r * 0.8 * sin,
                0.8,
                [140, 110, 80],
                0.8,
            );
        }
        I::Peas => {
            draw::fill_circle(image, x, y, 2.2, [84, 160, 48], 1.0);
            draw::fill_circle(image, x - 0.6, y - 0.6, 0.8, [170, 218, 128], 0.9);
        }
        I::Potato => {
            let blob = Blob {
                cx: x,
                cy: y,
                r: dice.range(4.5, 5.5),
                stretch: 1.2,
                angle,
                harmonics: vec![(0.1, dice.angle()), (0.06, dice.angle())],
            };
            let seed = dice.seed32();
            let shape = blob.prepare();
            draw::paint(image, blob.bounds(), 1.0, |px, py| {
                let brown = draw::value_noise(px / 1.7, py / 1.7, seed);
                (
                    shape.sdf(px, py),
                    draw::mix(
                        [234, 192, 96],
                        [180, 118, 44],
                        (brown - 0.45).max(0.0) * 1.6,
                    ),
                )
            });
        }
        I::Salmon => {
            let (hw, hh) = (dice.range(14.0, 16.0), dice.range(7.5, 8.5));
            let body = draw::rect_polygon(x, y, hw - 2.5, hh - 2.5, angle * 0.3);
            let (sin, cos) = (angle * 0.3).sin_cos();
            draw::paint(image, draw::disc_bounds(x, y, hw + 2.0), 1.0, |px, py| {
                let d = draw::sd_polygon(px, py, &body) - 2.5;
                let (dx, dy) = (px - x, py - y);
                let u = dx * cos + dy * sin;
                let v = -dx * sin + dy * cos;
                let stripe = ((u + v * 0.8) / 3.2).rem_euclid(1.0) < 0.2;
                let skin = v > hh - 2.2;
                let color = if skin {
                    [150, 86, 78]
                } else if stripe {
                    [252, 196, 170]
                } else {
                    [244, 124, 82]
                };
                (d, color)
            });
        }
        I::Corn => {
            let square = draw::rect_polygon(x, y, 1.2, 1.2, angle);
            draw::fill_sdf(
                image,
                draw::disc_bounds(x, y, 2.5),
                [250, 204, 36],
                1.0,
                |px, py| draw::sd_polygon(px, py, &square) - 0.6,
            );
        }
        I::Chicken => {
            let blob = Blob {
                cx: x,
                cy: y,
                r: dice.range(4.5, 5.5),
                stretch: 1.4,
                angle,
                harmonics: vec![(0.08, dice.angle())],
            };
            let (sin, cos) = (angle + 0.8).sin_cos();
            let shape = blob.prepare();
            draw::paint(image, blob.bounds(), 1.0, |px, py| {
                let across = (px - x) * cos + (py - y) * sin;
                let mark = (across / 3.5).rem_euclid(1.0) < 0.26;
                (
                    shape.sdf(px, py),
                    if mark { [122, 78, 40] } else { [222, 176, 116] },
                )
            });
        }
        I::Cucumber => {
            let r = if mixed {
                dice.range(4.0, 4.6)
            } else {
                dice.range(5.0, 5.8)
            };
            draw::fill_circle(image, x, y, r, [40, 104, 42], 1.0);
            draw::fill_circle(image, x, y, r * 0.8, [196, 228, 150], 1.0);
            for i in 0..6 {
                let a = angle + i as f32 * std::f32::consts::TAU / 6.0;
                draw::fill_circle(
                    image,
                    x + r * 0.38 * a.cos(),
                    y + r * 0.38 * a.sin(),
                    0.6,
                    [236, 246, 206],
                    1.0,
                );
            }
        }
        I::Olive => {
            draw::fill_ring(image, x, y, 2.8, 1.0, [36, 30, 38], 1.0);
            draw::fill_circle(image, x - 1.0, y - 1.2, 0.6, [140, 132, 140], 0.8);
        }
    }
}

/// Points in a disc, roughly evenly spread (rejection with a minimum spacing).
fn spread(
    dice: &mut Dice,
    cx: f32,
    cy: f32,
    radius: f32,
    count: usize,
    spacing: f32,
) -> Vec<(f32, f32)> {
    let mut points: Vec<(f32, f32)> = Vec::with_capacity(count);
    let mut spacing = spacing;
    let mut tries = 0;
    while points.len() < count {
        let (a, d) = (dice.angle(), radius * dice.unit().sqrt());
        let (x, y) = (cx + d * a.cos(), cy + d * a.sin());
        if points
            .iter()
            .all(|&(px, py)| draw::len(px - x, py - y) >= spacing)
        {
            points.push((x, y));
        }
        tries += 1;
        if tries % 50 == 0 {
            spacing *= 0.85; // crowded: accept closer pieces rather than fewer
        }
        if tries > 2000 {
            spacing = 0.0;
        }
    }
    points
}

/// Points on a jittered square grid of `step` covering a disc (for grains and kernels).
fn grid_points(dice: &mut Dice, cx: f32, cy: f32, radius: f32, step: f32) -> Vec<(f32, f32)> {
    let cells = (radius / step).ceil() as i32;
    let mut points = Vec::new();
    for j in -cells..=cells {
        for i in -cells..=cells {
            let x = cx + i as f32 * step + dice.range(-0.35, 0.35) * step;
            let y = cy + j as f32 * step + dice.range(-0.35, 0.35) * step;
            if draw::len(x - cx, y - cy) <= radius {
                points.push((x, y));
            }
        }
    }
    if points.is_empty() {
        points.push((cx, cy));
    }
    points
}

/// Grain-like ingredients are laid on a grid; the rest are spread with a spacing.
fn grain_step(ingredient: Ingredient) -> Option<f32> {
    match ingredient {
        I::Rice => Some(2.5),
        I::Peas => Some(4.4),
        I::Corn => Some(3.3),
        _ => None,
    }
}

/// How many pieces a pile of an ingredient has, and their spacing, for a pile of `radius`.
fn pile_pieces(ingredient: Ingredient, radius: f32, dice: &mut Dice) -> (usize, f32) {
    let area = std::f32::consts::PI * radius * radius;
    match ingredient {
        I::Noodles => (dice.int(8, 11), 2.0),
        I::Egg | I::Salmon => (1, 0.0),
        I::Bread => (if radius > 15.0 { 2 } else { 1 }, 8.0),
        I::Sausage => (if radius > 15.0 { 3 } else { 2 }, 6.0),
        I::Lettuce => (dice.int(4, 5), 6.0),
        I::Olive => (dice.int(5, 7), 6.0),
        _ => ((area / 55.0).clamp(3.0, 7.0) as usize, 7.0),
    }
}

/// Pieces of a topping scattered over a mixed dish.
fn topping_pieces(ingredient: Ingredient, dice: &mut Dice) -> usize {
    match ingredient {
        I::Peas | I::Corn => dice.int(10, 14),
        I::Carrot | I::Egg | I::Cheese => dice.int(6, 9),
        I::Olive => dice.int(4, 6),
        _ => dice.int(3, 5),
    }
}

/// A pale mound under grains, so white rice stands out from the white plate.
fn draw_mound(image: &mut RgbImage, cx: f32, cy: f32, radius: f32, seed: u32) {
    let mound = Blob {
        cx,
        cy,
        r: radius,
        stretch: 1.0,
        angle: 0.0,
        harmonics: vec![(0.05, seed as f32), (0.04, seed as f32 * 0.37)],
    };
    draw::fill_blob(
        image,
        &Blob {
            cx: cx + 1.5,
            cy: cy + 2.0,
            ..mound.clone()
        },
        [150, 146, 136],
        0.35,
    );
    draw::fill_blob(image, &mound, [226, 222, 208], 1.0);
}

fn compose_and_draw(plate: &mut Plate, image: &mut RgbImage, dice: &mut Dice) {
    let dish = *plate.dish();
    let ingredients = plate.ingredients.clone();
    let mut pieces: Vec<(Ingredient, f32, f32)> = Vec::new();
    let mut put = |image: &mut RgbImage,
                   ingredient: Ingredient,
                   x: f32,
                   y: f32,
                   mixed: bool,
                   dice: &mut Dice| {
        draw_piece(image, ingredient, x, y, mixed, dice);
        pieces.push((ingredient, x, y));
    };
    match dish.style {
        Style::Mixed(base) => {
            let (cx, cy) = (
                PLATE_X + dice.range(-2.0, 2.0),
                PLATE_Y + dice.range(-2.0, 2.0),
            );
            if let Some(base) = base {
                let radius = dice.range(31.0, 34.0);
                if base == I::Rice {
                    draw_mound(image, cx, cy, radius + 1.0, dice.seed32());
                }
                let points = match base {
                    I::Rice => grid_points(dice, cx, cy, radius, 2.5),
                    I::Noodles => spread(dice, cx, cy, radius - 6.0, 46, 1.5),
                    _ => spread(dice, cx, cy, radius - 5.0, 16, 6.0),
                };
                for (x, y) in points {
                    put(image, base, x, y, true, dice);
                }
            }
            let mut toppings: Vec<Ingredient> = ingredients
                .iter()
                .copied()
                .filter(|&i| Some(i) != base)
                .collect();
            dice.shuffle(&mut toppings);
            for topping in toppings {
                // Without a base the toppings are the whole dish: more of each.
                let count = topping_pieces(topping, dice) * if base.is_none() { 2 } else { 1 };
                let spacing = if matches!(topping, I::Peas | I::Corn) {
                    4.0
                } else {
                    9.0
                };
                for (x, y) in spread(dice, cx, cy, 27.0, count, spacing) {
                    put(image, topping, x, y, true, dice);
                }
            }
        }
        Style::Sectioned => {
            let n = ingredients.len();
            let (pile_r, distance) = match n {
                1 => (24.0, 0.0),
                2 => (19.0, 19.5),
                3 => (16.5, 22.0),
                4 => (14.5, 24.0),
                _ => (12.5, 26.0),
            };
            let mut order = ingredients.clone();
            dice.shuffle(&mut order);
            let turn = dice.angle();
            for (i, &ingredient) in order.iter().enumerate() {
                let a = turn + i as f32 * std::f32::consts::TAU / n as f32;
                let (cx, cy) = (PLATE_X + distance * a.cos(), PLATE_Y + distance * a.sin());
                // Big pieces keep to the middle of their pile so they stay on the plate.
                let inner = match ingredient {
                    I::Egg | I::Salmon => 0.0,
                    I::Bread | I::Sausage | I::Noodles | I::Lettuce => pile_r * 0.45,
                    _ => pile_r * 0.75,
                };
                if ingredient == I::Rice {
                    draw_mound(image, cx, cy, pile_r * 0.85 + 1.5, dice.seed32());
                }
                let points = match grain_step(ingredient) {
                    Some(step) => grid_points(dice, cx, cy, pile_r * 0.85, step),
                    None => {
                        let (count, spacing) = pile_pieces(ingredient, pile_r, dice);
                        spread(dice, cx, cy, inner, count, spacing)
                    }
                };
                for (x, y) in points {
                    put(image, ingredient, x, y, false, dice);
                }
            }
        }
    }
    plate.pieces = pieces;
}

/// Renders a plate and records its pieces.
fn render(plate: &mut Plate, dice: &mut Dice) -> RgbImage {
    let mut image = RgbImage::new(IMAGE_SIDE, IMAGE_SIDE);
    draw_table(&mut image, plate.table, dice.seed32());
    draw_plate(&mut image);
    let mut details = piece_dice(dice);
    compose_and_draw(plate, &mut image, &mut details);
    draw::add_grain(&mut image, 2.5, dice.seed32());
    image
}

fn random_plate(dice: &mut Dice) -> Plate {
    let dish_index = dice.below(DISHES.len());
    let dish = &DISHES[dish_index];
    let mut ingredients: Vec<Ingredient> = dish.required.to_vec();
    for &extra in dish.optional {
        if dice.chance(0.45) {
            ingredients.push(extra);
        }
    }
    ingredients.sort();
    Plate {
        dish: dish_index,
        ingredients,
        table: dice.below(TABLES.len()),
        pieces: Vec::new(),
    }
}

/// How the dish is made, as one clause (mentions only ingredients on the plate).
fn how_to(plate: &Plate) -> String {
    let has = |i: Ingredient| plate.ingredients.contains(&i);
    let others = |skip: &[Ingredient]| -> String {
        let rest: Vec<String> = plate
            .ingredients
            .iter()
            .filter(|i| !skip.contains(i))
            .map(|i| i.name().to_owned())
            .collect();
        join_and(&rest)
    };
    let with_extra = |skip: &[Ingredient], lead: &str| -> String {
        let rest = others(skip);
        if rest.is_empty() {
            String::new()
        } else {
            format!("{lead}{rest}")
        }
    };
    match plate.dish().name {
        "fried rice" => format!(
            "stir-fry cold cooked rice with {} in a hot pan and season with soy sauce",
            others(&[I::Rice])
        ),
        "shrimp noodles" => format!(
            "boil the noodles, then toss them in a wok with {}",
            others(&[I::Noodles])
        ),
        "tomato salad" => format!(
            "lay {} over the lettuce and dress with oil and vinegar",
            others(&[I::Lettuce])
        ),
        "full breakfast" => format!(
            "fry the egg and the sausage, toast the bread{}",
            with_extra(&[I::Egg, I::Sausage, I::Bread], " and warm the ")
        ),
        "grilled salmon" => format!(
            "grill the salmon and serve it with {}",
            others(&[I::Salmon])
        ),
        "cheese toast" => format!(
            "top toasted bread with cheese{} and grill until it bubbles",
            with_extra(&[I::Bread, I::Cheese], " and ")
        ),
        "chicken rice" => format!(
            "poach the chicken and serve it sliced next to {}",
            others(&[I::Chicken])
        ),
        "vegetable platter" => format!(
            "cut {} into bite-sized pieces and arrange them in groups",
            others(&[])
        ),
        "corn salad" => format!("mix {} with lime juice and a pinch of salt", others(&[])),
        "mushroom omelette" => {
            format!(
                "fry the mushroom, pour beaten egg over it{} and fold",
                if has(I::Cheese) {
                    ", add the cheese"
                } else {
                    ""
                }
            )
        }
        "bangers and mash" => {
            "fry the sausage, boil and crush the potato and serve with peas".to_owned()
        }
        "chicken salad" => format!(
            "grill the chicken, slice it and toss it with {}",
            others(&[I::Chicken])
        ),
        "salmon rice bowl" => "lay raw salmon and cucumber over seasoned rice".to_owned(),
        "tomato pasta" => format!(
            "cook the noodles and toss them with {}",
            others(&[I::Noodles])
        ),
        other => unreachable!("dish {other} has no method"),
    }
}

/// The Recipe1M-style reference: title, ingredients and instructions, fixed by the plate.
fn recipe(plate: &Plate) -> String {
    let names: Vec<&str> = plate.ingredients.iter().map(|i| i.name()).collect();
    format!(
        "Title: {}\nIngredients: {}\nInstructions: {}. Serve at once.",
        capitalize(plate.dish().name),
        names.join(", "),
        capitalize(&how_to(plate))
    )
}

/// The recipe-style caption.
fn caption(plate: &Plate, dice: &mut Dice) -> String {
    let dish = plate.dish().name;
    let mixed = plate.mixed();
    let mut parts: Vec<String> = plate
        .ingredients
        .iter()
        .map(|i| i.caption_name(mixed).to_owned())
        .collect();
    dice.shuffle(&mut parts);
    let list = join_and(&parts);
    let method = how_to(plate);
    let table = TABLES[plate.table];
    match dice.below(4) {
        0 => format!(
            "{} {dish} on a {table} table, with {list}. {}.",
            capitalize(article(dish)),
            capitalize(&method)
        ),
        1 => format!("A plate of {dish} made with {list}. To make it, {method}."),
        2 => format!(
            "{}, served on a white plate. Ingredients: {list}. Method: {method}.",
            capitalize(dish)
        ),
        _ => format!("This dish is {dish}: {list}. {}.", capitalize(&method)),
    }
}

/// The prompt of the dish task (fixed, listing the vocabulary as a closed-set benchmark does).
pub fn dish_prompt() -> String {
    format!(
        "What is the name of this dish? Answer with one of: {}.",
        dish_vocabulary().join(", ")
    )
}

/// The prompt of the ingredient task.
pub const INGREDIENTS_PROMPT: &str = "Which ingredients can you see in this dish? List them.";
/// The prompt of the recipe task.
pub const RECIPE_PROMPT: &str =
    "Write the recipe for the dish in this image: its title, ingredients and instructions.";

#[cfg_attr(not(test), allow(dead_code))]
struct Built {
    plate: Plate,
    generated: Generated,
}

fn build(dice: &mut Dice) -> Built {
    let mut plate = random_plate(dice);
    let image = render(&mut plate, dice);
    let caption = caption(&plate, dice);
    let rows = vec![
        json!({TASK_KEY: TASK_DISH, "input": dish_prompt(), "label": plate.dish().name}),
        json!({
            TASK_KEY: TASK_INGREDIENTS,
            "input": INGREDIENTS_PROMPT,
            "label": plate.ingredients.iter().map(|i| i.name()).collect::<Vec<_>>(),
        }),
        json!({TASK_KEY: TASK_RECIPE, "input": RECIPE_PROMPT, "label": recipe(&plate)}),
    ];
    Built {
        plate,
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
    use std::collections::BTreeSet;

    fn plates(n: usize) -> Vec<Built> {
        (0..n as u64)
            .map(|seed| build(&mut Dice::new(seed * 31 + 3)))
            .collect()
    }

    #[test]
    fn vocabulary_names_do_not_contain_each_other() {
        for vocabulary in [dish_vocabulary(), ingredient_vocabulary()] {
            for (i, a) in vocabulary.iter().enumerate() {
                for (j, b) in vocabulary.iter().enumerate() {
                    assert!(i == j || !a.contains(b.as_str()), "{a} contains {b}");
                }
            }
        }
    }

    #[test]
    fn every_dish_is_told_apart_by_its_ingredients() {
        // Two dishes could share a plate only if each one's required set fits in the
        // other's possible set.
        let possible = |d: &Dish| -> BTreeSet<Ingredient> {
            d.required.iter().chain(d.optional).copied().collect()
        };
        for (i, a) in DISHES.iter().enumerate() {
            for b in &DISHES[i + 1..] {
                let a_fits_b = a.required.iter().all(|x| possible(b).contains(x));
                let b_fits_a = b.required.iter().all(|x| possible(a).contains(x));
                assert!(
                    !(a_fits_b && b_fits_a),
                    "{} and {} can look the same",
                    a.name,
                    b.name
                );
            }
        }
    }

    #[test]
    fn drawn_ingredients_are_the_labelled_ones() {
        for built in plates(200) {
            let plate = &built.plate;
            let drawn: BTreeSet<Ingredient> = plate.pieces.iter().map(|p| p.0).collect();
            let labelled: BTreeSet<Ingredient> = plate.ingredients.iter().copied().collect();
            assert_eq!(drawn, labelled);
            let dish = plate.dish();
            assert!(dish.required.iter().all(|i| labelled.contains(i)));
            assert!(
                labelled
                    .iter()
                    .all(|i| dish.required.contains(i) || dish.optional.contains(i))
            );
            // Every piece lies in the plate's well.
            for &(ingredient, x, y) in &plate.pieces {
                assert!(
                    draw::len(x - PLATE_X, y - PLATE_Y) < WELL_R,
                    "{ingredient:?} at {x},{y}"
                );
            }
            let rows = &built.generated.benchmark_rows;
            assert_eq!(rows[0]["label"], dish.name);
            let names: Vec<&str> = rows[1]["label"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            assert_eq!(
                names,
                plate
                    .ingredients
                    .iter()
                    .map(|i| i.name())
                    .collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn texts_name_exactly_the_ingredients_on_the_plate() {
        for built in plates(200) {
            let plate = &built.plate;
            let caption = built.generated.caption.to_lowercase();
            let recipe = built.generated.benchmark_rows[2]["label"]
                .as_str()
                .unwrap()
                .to_lowercase();
            assert!(caption.contains(plate.dish().name), "{caption}");
            assert!(recipe.starts_with(&format!("title: {}\n", plate.dish().name)));
            for ingredient in Ingredient::ALL {
                let on_plate = plate.ingredients.contains(&ingredient);
                assert_eq!(
                    caption.contains(ingredient.name()),
                    on_plate,
                    "{ingredient:?}: {caption}"
                );
                assert_eq!(
                    recipe.contains(ingredient.name()),
                    on_plate,
                    "{ingredient:?}: {recipe}"
                );
            }
            // No other dish's name appears.
            for other in DISHES.iter().filter(|d| d.name != plate.dish().name) {
                assert!(!caption.contains(other.name), "{caption}");
            }
        }
    }

    #[test]
    fn dishes_are_roughly_balanced() {
        let mut counts = [0usize; DISHES.len()];
        for built in plates(700) {
            counts[built.plate.dish] += 1;
        }
        assert!(counts.iter().all(|&c| (28..=75).contains(&c)), "{counts:?}");
    }
}
