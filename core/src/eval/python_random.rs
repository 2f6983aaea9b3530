//! A bit-exact stand-in for CPython's `random.Random(seed)` seeded with an integer.
//!
//! The multiple-choice scorer falls back to `random.Random(syn_id).choice(choices)` when it
//! cannot parse an answer, so a reproduction must draw the same numbers CPython draws:
//!
//! * seeding: the absolute value of the integer seed is cut into 32-bit words, least
//!   significant first (zero gives the single word `0`), and fed to MT19937's
//!   `init_by_array`;
//! * `getrandbits(k)`: for `k <= 32` the top `k` bits of one 32-bit output; for larger `k`,
//!   successive outputs fill 32-bit words from the least significant end, the last word
//!   keeping only its top bits;
//! * `choice(seq)`: `seq[randbelow(len(seq))]`, where `randbelow(n)` draws
//!   `getrandbits(n.bit_length())` until the value is below `n`.

use rand_mt::Mt;

/// CPython-compatible Mersenne Twister generator (the subset of `random.Random` the
/// scorers use).
#[derive(Clone, Debug)]
pub struct PythonRandom {
    generator: Mt,
}

impl PythonRandom {
    /// Equivalent of `random.Random(seed)` for an integer `seed` (negative seeds use their
    /// absolute value, as CPython does).
    pub fn from_int_seed(seed: i128) -> Self {
        let key = seed_key_words(seed.unsigned_abs());
        Self {
            generator: Mt::new_with_key(key),
        }
    }

    /// Equivalent of `getrandbits(k)` for `k <= 64`; larger `k` is clamped to 64.
    pub fn getrandbits(&mut self, bits: u32) -> u64 {
        let bits = bits.min(64);
        if bits == 0 {
            return 0;
        }
        if bits <= 32 {
            return u64::from(self.generator.next_u32() >> (32 - bits));
        }
        // Two words, least significant first; the second keeps its top `bits - 32` bits.
        let low = u64::from(self.generator.next_u32());
        let high = u64::from(self.generator.next_u32() >> (64 - bits));
        (high << 32) | low
    }

    /// Equivalent of `_randbelow(n)` (`_randbelow_with_getrandbits`): a uniform value in
    /// `0..n`. Returns 0 for `n == 0` without drawing.
    pub fn randbelow(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let bits = u64::BITS - n.leading_zeros();
        loop {
            let candidate = self.getrandbits(bits);
            if candidate < n {
                return candidate;
            }
        }
    }

    /// Equivalent of `choice(items)`; `None` for an empty slice (CPython raises
    /// `IndexError`).
    pub fn choice<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            return None;
        }
        let length = u64::try_from(items.len()).ok()?;
        let index = usize::try_from(self.randbelow(length)).ok()?;
        items.get(index)
    }
}

impl PythonRandom {
    /// Equivalent of `random()`: a float in `[0, 1)` with 53 random bits (two 32-bit
    /// outputs, the first keeping 27 bits and the second 26).
    pub fn random(&mut self) -> f64 {
        let a = self.generator.next_u32() >> 5;
        let b = self.generator.next_u32() >> 6;
        (f64::from(a) * 67_108_864.0 + f64::from(b)) / 9_007_199_254_740_992.0
    }

    /// Equivalent of `shuffle(items)` (Fisher–Yates from the end, `randbelow(i + 1)`).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.randbelow(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }

    /// Equivalent of `choices([True, False], weights=(percent, 100 - percent))[0]`: true
    /// with probability `percent / 100`, drawing one `random()`.
    pub fn chance_percent(&mut self, percent: f64) -> bool {
        // choices() bisects the cumulative weights [p, 100] at random() * 100.
        self.random() * 100.0 < percent
    }
}

/// The `init_by_array` key CPython derives from a non-negative integer seed.
fn seed_key_words(magnitude: u128) -> Vec<u32> {
    let mut words = Vec::with_capacity(4);
    let mut rest = magnitude;
    loop {
        // Truncation to the low 32 bits is the point here.
        words.push((rest & u128::from(u32::MAX)) as u32);
        rest >>= 32;
        if rest == 0 {
            break;
        }
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(seed, Random(seed).choice(range(4)), [Random(seed).choice(range(101)) x 6],
    /// Random(seed).getrandbits(32), Random(seed).getrandbits(64))`, computed with
    /// CPython 3.11.
    #[allow(clippy::type_complexity)]
    const CPYTHON_DRAWS: [(i128, usize, [usize; 6], u64, u64); 13] = [
        (
            0,
            3,
            [49, 97, 53, 5, 33, 65],
            3626764237,
            7106521602475165645,
        ),
        (
            1,
            1,
            [17, 72, 97, 8, 32, 15],
            577090037,
            10499958131665514997,
        ),
        (
            2,
            0,
            [7, 11, 10, 46, 21, 94],
            4106135923,
            15921556852572072307,
        ),
        (
            7,
            2,
            [41, 19, 50, 83, 6, 9],
            1390851128,
            17485029721327973432,
        ),
        (
            42,
            0,
            [81, 14, 3, 94, 35, 31],
            2746317213,
            2053695854357871005,
        ),
        (
            999,
            0,
            [100, 86, 10, 72, 73, 68],
            3355859300,
            12521832792403106148,
        ),
        (
            1 << 31,
            2,
            [43, 48, 64, 20, 81, 14],
            1455117090,
            6960223821516985122,
        ),
        (
            (1 << 32) - 1,
            1,
            [81, 79, 26, 27, 77, 66],
            2728839433,
            11429015403106846985,
        ),
        (
            1 << 32,
            0,
            [14, 44, 53, 2, 2, 78],
            485306839,
            6480552028864852439,
        ),
        (
            (1 << 32) + 5,
            1,
            [20, 62, 36, 77, 1, 45],
            675479763,
            8955819811489906899,
        ),
        (
            i64::MAX as i128,
            2,
            [40, 84, 80, 16, 62, 58],
            1359979423,
            12111187411003745183,
        ),
        (
            u64::MAX as i128,
            0,
            [2, 31, 43, 79, 27, 58],
            93740670,
            4589153898531806846,
        ),
        (
            -7,
            2,
            [41, 19, 50, 83, 6, 9],
            1390851128,
            17485029721327973432,
        ),
    ];

    #[test]
    fn choice_matches_cpython() {
        let four: Vec<usize> = (0..4).collect();
        let hundred_and_one: Vec<usize> = (0..101).collect();
        for (seed, from_four, from_101, _, _) in CPYTHON_DRAWS {
            let picked = PythonRandom::from_int_seed(seed).choice(&four).copied();
            assert_eq!(picked, Some(from_four), "seed {seed}, 4 choices");
            let mut generator = PythonRandom::from_int_seed(seed);
            for (draw, expected) in from_101.iter().enumerate() {
                let picked = generator.choice(&hundred_and_one).copied();
                assert_eq!(
                    picked,
                    Some(*expected),
                    "seed {seed}, 101 choices, draw {draw}"
                );
            }
        }
    }

    #[test]
    fn getrandbits_matches_cpython() {
        for (seed, _, _, bits32, bits64) in CPYTHON_DRAWS {
            assert_eq!(
                PythonRandom::from_int_seed(seed).getrandbits(32),
                bits32,
                "seed {seed}"
            );
            assert_eq!(
                PythonRandom::from_int_seed(seed).getrandbits(64),
                bits64,
                "seed {seed}"
            );
        }
    }

    #[test]
    fn seed_words_are_little_endian_and_never_empty() {
        assert_eq!(seed_key_words(0), [0]);
        assert_eq!(seed_key_words(7), [7]);
        assert_eq!(seed_key_words((1 << 32) + 5), [5, 1]);
        assert_eq!(seed_key_words(u128::from(u64::MAX)), [u32::MAX, u32::MAX]);
    }

    #[test]
    fn choice_of_nothing_is_none() {
        let empty: [u8; 0] = [];
        assert_eq!(PythonRandom::from_int_seed(3).choice(&empty), None);
    }

    /// `Random(7).random()` twice, `Random(3).shuffle(list(range(10)))`, and the seeds
    /// below 200 for which `Random(i).choices([True, False], weights=(10, 90))[0]` is true
    /// (CPython 3.11).
    #[test]
    fn random_shuffle_and_choices_match_cpython() {
        let mut r = PythonRandom::from_int_seed(7);
        assert_eq!(r.random(), 0.32383276483316237);
        assert_eq!(r.random(), 0.15084917392450192);
        let mut items: Vec<u32> = (0..10).collect();
        PythonRandom::from_int_seed(3).shuffle(&mut items);
        assert_eq!(items, [1, 5, 6, 0, 9, 4, 7, 2, 8, 3]);
        let blank: Vec<i128> = (0..200)
            .filter(|&i| PythonRandom::from_int_seed(i).chance_percent(10.0))
            .collect();
        assert_eq!(
            blank,
            [
                31, 32, 43, 49, 55, 57, 66, 67, 72, 89, 91, 113, 121, 123, 127, 137, 139, 149, 162,
                164, 165, 176, 190, 198
            ]
        );
    }
}
