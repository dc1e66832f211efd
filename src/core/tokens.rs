//! A token estimate without a tokenizer: one pass over the request body's bytes.
//!
//! Each byte class has a weight, fitted on 344 varied prompts (prose, code, JSON, twenty
//! languages) against two real BPE vocabularies (cl100k_base and o200k_base, the larger count of
//! the two) so that the estimate is at or above the real count for ~97 % of prompts: the router
//! would rather send a request to the slow path needlessly than have Groq refuse it. The
//! measured error distribution is in `docs/token-estimate.md`; `tests/token_estimate.rs` keeps it
//! from regressing.
//!
//! The scan reads JSON text: the escapes `\n`, `\"`, `\uXXXX` (as Python's `json.dumps` writes
//! non-ASCII text) count as the characters they stand for.

/// Weights in thousandths of a token.
const LETTER: u64 = 290;
/// Added once per run of ASCII letters (a word).
const WORD: u64 = 285;
const DIGIT: u64 = 1_395;
const PUNCT: u64 = 992;
const NEWLINE: u64 = 666;
/// A character of two UTF-8 bytes (Latin with diacritics, Greek, Cyrillic, Hebrew, Arabic).
const TWO_BYTE: u64 = 1_042;
/// A three-byte character in the CJK, kana and Hangul ranges (U+3000 to U+DFFF, U+F000 up).
const CJK: u64 = 1_173;
/// Any other three-byte character (Indic scripts, Thai, symbols).
const THREE_BYTE: u64 = 1_555;
/// A four-byte character (emoji, rare CJK).
const FOUR_BYTE: u64 = 2_000;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Letter,
    Digit,
    Space,
    Newline,
    Punct,
    TwoByte,
    Cjk,
    ThreeByte,
    FourByte,
}

fn weight(class: Class) -> u64 {
    match class {
        Class::Letter => LETTER,
        Class::Digit => DIGIT,
        Class::Space => 0,
        Class::Newline => NEWLINE,
        Class::Punct => PUNCT,
        Class::TwoByte => TWO_BYTE,
        Class::Cjk => CJK,
        Class::ThreeByte => THREE_BYTE,
        Class::FourByte => FOUR_BYTE,
    }
}

fn ascii_class(b: u8) -> Class {
    match b {
        b'a'..=b'z' | b'A'..=b'Z' => Class::Letter,
        b'0'..=b'9' => Class::Digit,
        b' ' | b'\t' => Class::Space,
        b'\n' | b'\r' => Class::Newline,
        _ => Class::Punct,
    }
}

fn code_point_class(cp: u32) -> Class {
    match cp {
        0..=0x7F => ascii_class(cp as u8),
        0x80..=0x7FF => Class::TwoByte,
        0x3000..=0xDFFF | 0xF000..=0xFFFF => Class::Cjk,
        0x800..=0xFFFF => Class::ThreeByte,
        _ => Class::FourByte,
    }
}

fn hex4(bytes: &[u8]) -> Option<u32> {
    let s = bytes.get(..4)?;
    s.iter()
        .try_fold(0u32, |acc, b| Some(acc * 16 + (*b as char).to_digit(16)?))
}

/// Estimated tokens in `text` (UTF-8, typically JSON).
pub fn estimate(text: &[u8]) -> u64 {
    let mut milli: u64 = 0;
    let mut in_word = false;
    let mut i = 0;
    while let Some(&b) = text.get(i) {
        let (class, len) = if b < 0x80 {
            if b == b'\\' {
                match text.get(i + 1) {
                    Some(b'n') | Some(b'r') => (Class::Newline, 2),
                    Some(b't') => (Class::Space, 2),
                    Some(b'u') => match text.get(i + 2..).and_then(hex4) {
                        // A surrogate pair (`\ud83d\ude00`) is one four-byte character.
                        Some(0xD800..=0xDBFF)
                            if text.get(i + 6..i + 8) == Some(b"\\u".as_slice())
                                && text
                                    .get(i + 8..)
                                    .and_then(hex4)
                                    .is_some_and(|lo| (0xDC00..=0xDFFF).contains(&lo)) =>
                        {
                            (Class::FourByte, 12)
                        }
                        Some(cp) => (code_point_class(cp), 6),
                        None => (Class::Punct, 1),
                    },
                    Some(b'"') | Some(b'\\') | Some(b'/') => (Class::Punct, 2),
                    _ => (Class::Punct, 1),
                }
            } else {
                (ascii_class(b), 1)
            }
        } else if b >= 0xF0 {
            (Class::FourByte, 4)
        } else if b >= 0xE0 {
            if (0xE3..=0xED).contains(&b) || b == 0xEF {
                (Class::Cjk, 3)
            } else {
                (Class::ThreeByte, 3)
            }
        } else if b >= 0xC0 {
            (Class::TwoByte, 2)
        } else {
            // A stray continuation byte: the body is not UTF-8 (refused before this), skip it.
            (Class::Space, 1)
        };
        if class == Class::Letter && !in_word {
            milli += WORD;
        }
        in_word = class == Class::Letter;
        milli += weight(class);
        i += len;
    }
    milli.div_ceil(1_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_is_zero_and_short_texts_are_small() {
        assert_eq!(estimate(b""), 0);
        assert_eq!(estimate(b"hi"), 1);
        let hello = estimate(b"Hello, how are you today?");
        assert!((6..=12).contains(&hello), "{hello}");
    }

    #[test]
    fn escapes_count_as_what_they_stand_for() {
        // "你好" written raw and as Python's ensure_ascii escapes.
        let raw = estimate("\"你好\"".as_bytes());
        let escaped = estimate(br#""\u4f60\u597d""#);
        assert_eq!(raw, escaped);
        assert_eq!(estimate(b"a\\nb"), estimate(b"a\nb"));
        assert_eq!(estimate(br#"\"q\""#), estimate(br#""q""#));
    }

    #[test]
    fn classes_by_script() {
        let latin = estimate("abcd ".repeat(20).as_bytes());
        let cjk = estimate("漢".repeat(100).as_bytes());
        let thai = estimate("ก".repeat(100).as_bytes());
        let cyrillic = estimate("ж".repeat(100).as_bytes());
        assert!(
            latin < cyrillic && cyrillic < cjk && cjk < thai,
            "{latin} {cyrillic} {cjk} {thai}"
        );
        assert_eq!(estimate("😀".as_bytes()), 2);
    }

    #[test]
    fn escaped_emoji_count_like_raw_ones() {
        assert_eq!(
            estimate(br"\ud83d\ude00\ud83d\ude01"),
            estimate("😀😁".as_bytes())
        );
        // A lone high surrogate is not a pair.
        assert_eq!(estimate(br"\ud83dx"), 2);
    }

    #[test]
    fn never_panics_and_stays_bounded_on_foreign_bytes() {
        for bytes in [
            &b"\\"[..],
            b"\\u12",
            b"\\uZZZZ",
            b"\xE4\xBD",
            b"\xF0",
            b"\x80\x80",
            b"\\u",
            br"\ud83d\u",
            br"\ud83d\udc",
        ] {
            // At most two tokens a byte, whatever the input.
            assert!(estimate(bytes) <= bytes.len() as u64 * 2 + 1, "{bytes:?}");
        }
    }
}
