//! The few pieces of CPython `str` and `re` behaviour the reference scorers depend on.
//!
//! The benchmark scorers we reproduce are Python programs. Where Python and Rust disagree
//! on the meaning of "whitespace" or "digit", the Python meaning is what decides a score,
//! so those definitions live here.

/// Whether `c` is whitespace for Python's `str.split()` / `str.strip()` (i.e. `str.isspace`).
///
/// That is Unicode `White_Space` (what [`char::is_whitespace`] tests) plus the four ASCII
/// information separators U+001C..U+001F, which Python also treats as whitespace.
pub fn is_python_whitespace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `s.split()` with no argument: split on runs of whitespace, drop empty pieces.
pub fn split_python_whitespace(s: &str) -> impl Iterator<Item = &str> {
    s.split(is_python_whitespace)
        .filter(|piece| !piece.is_empty())
}

/// Python's `s.strip()` with no argument.
pub fn strip_python_whitespace(s: &str) -> &str {
    s.trim_matches(is_python_whitespace)
}

/// Python's `s.lower()`: full Unicode lower-casing (Rust's `to_lowercase` applies the same
/// mappings, including the final-sigma rule).
pub fn python_lower(s: &str) -> String {
    s.to_lowercase()
}

/// First code points of the runs of Unicode general category `Nd` (decimal digits), as of
/// Unicode 14.0 (CPython 3.11). Each run is ten code points long, except the mathematical
/// digits block listed in [`LONG_DECIMAL_DIGIT_RUNS`].
const DECIMAL_DIGIT_RUN_STARTS: [u32; 61] = [
    0x30, 0x660, 0x6F0, 0x7C0, 0x966, 0x9E6, 0xA66, 0xAE6, 0xB66, 0xBE6, 0xC66, 0xCE6, 0xD66,
    0xDE6, 0xE50, 0xED0, 0xF20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90,
    0x1B50, 0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0, 0xFF10,
    0x104A0, 0x10D30, 0x11066, 0x110F0, 0x11136, 0x111D0, 0x112F0, 0x11450, 0x114D0, 0x11650,
    0x116C0, 0x11730, 0x118E0, 0x11950, 0x11C50, 0x11D50, 0x11DA0, 0x16A60, 0x16AC0, 0x16B50,
    0x1E140, 0x1E2F0, 0x1E950, 0x1FBF0,
];

/// Category `Nd` runs that are not ten code points long (inclusive bounds).
const LONG_DECIMAL_DIGIT_RUNS: [(u32, u32); 1] = [(0x1D7CE, 0x1D7FF)];

/// Whether `c` matches `\d` in a Python 3 `str` regular expression (Unicode category `Nd`).
pub fn is_python_regex_digit(c: char) -> bool {
    let code = u32::from(c);
    if c.is_ascii() {
        return c.is_ascii_digit();
    }
    DECIMAL_DIGIT_RUN_STARTS
        .iter()
        .any(|&start| (start..start + 10).contains(&code))
        || LONG_DECIMAL_DIGIT_RUNS
            .iter()
            .any(|&(start, end)| (start..=end).contains(&code))
}

/// Number of Unicode code points in `s` (Python's `len(s)`).
pub fn python_len(s: &str) -> usize {
    s.chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_matches_python_isspace() {
        for c in [
            '\t', '\n', '\u{b}', '\u{c}', '\r', ' ', '\u{85}', '\u{a0}', '\u{3000}',
        ] {
            assert!(is_python_whitespace(c), "{c:?}");
        }
        for c in ['\u{1c}', '\u{1d}', '\u{1e}', '\u{1f}'] {
            assert!(is_python_whitespace(c), "information separator {c:?}");
        }
        for c in ['a', '\u{200b}', '\u{feff}', '_'] {
            assert!(!is_python_whitespace(c), "{c:?}");
        }
    }

    #[test]
    fn split_drops_empty_pieces() {
        let pieces: Vec<&str> = split_python_whitespace("  a\u{1f}b \t c  ").collect();
        assert_eq!(pieces, ["a", "b", "c"]);
        assert_eq!(split_python_whitespace("   ").count(), 0);
    }

    #[test]
    fn regex_digit_is_unicode_nd() {
        assert!(is_python_regex_digit('0'));
        assert!(is_python_regex_digit('9'));
        assert!(is_python_regex_digit('\u{663}')); // ARABIC-INDIC DIGIT THREE
        assert!(is_python_regex_digit('\u{ff15}')); // FULLWIDTH DIGIT FIVE
        assert!(is_python_regex_digit('\u{1d7ff}')); // MATHEMATICAL MONOSPACE DIGIT NINE
        assert!(!is_python_regex_digit('\u{b2}')); // SUPERSCRIPT TWO is No, not Nd
        assert!(!is_python_regex_digit('\u{2167}')); // ROMAN NUMERAL EIGHT is Nl
        assert!(!is_python_regex_digit('a'));
        // CPython 3.11 (Unicode 14.0) has 660 code points in category Nd.
        let total = (0..=0x10FFFF_u32)
            .filter_map(char::from_u32)
            .filter(|&c| is_python_regex_digit(c))
            .count();
        assert_eq!(total, 660);
    }
}
