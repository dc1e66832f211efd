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

const fn weight(class: Class) -> u64 {
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

const fn ascii_class(b: u8) -> Class {
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

/// Per ASCII byte: its weight, with [`LETTER_BIT`] set for letters. Built from the classes
/// above, so the table and the character-by-character path cannot disagree.
const ASCII: [u16; 128] = ascii_table();
const LETTER_BIT: u16 = 1 << 15;

const fn ascii_table() -> [u16; 128] {
    let mut table = [0u16; 128];
    let mut b = 0;
    while b < 128 {
        let class = ascii_class(b as u8);
        let letter = if matches!(class, Class::Letter) {
            LETTER_BIT
        } else {
            0
        };
        table[b] = weight(class) as u16 | letter;
        b += 1;
    }
    table
}

/// Estimated tokens in `text` (UTF-8, typically JSON).
///
/// Plain ASCII (the bulk of most prompts) is counted eight bytes at a time ([`Lanes`]), its
/// last few bytes through [`ASCII`]; escapes and multi-byte characters are read one at a time.
pub fn estimate(text: &[u8]) -> u64 {
    let mut milli: u64 = 0;
    let mut in_word = false;
    let mut i = 0;
    loop {
        // Eight plain ASCII bytes at a time, up to [`Lanes::FULL`] words a round, then byte by
        // byte up to the next special one.
        loop {
            let (lanes, read) = Lanes::count(text.get(i..).unwrap_or_default(), &mut in_word);
            milli += lanes.milli();
            i += read;
            if lanes.words < Lanes::FULL {
                break;
            }
        }
        for &b in text.get(i..).unwrap_or_default() {
            if b >= 0x80 || b == b'\\' {
                break;
            }
            let entry = ASCII[usize::from(b)];
            let letter = entry & LETTER_BIT != 0;
            milli += u64::from(entry & !LETTER_BIT) + WORD * u64::from(letter && !in_word);
            in_word = letter;
            i += 1;
        }
        if i >= text.len() {
            break;
        }
        let (class, len) = special(text, i);
        milli += count(class, &mut in_word);
        i += len;
    }
    milli.div_ceil(1_000)
}

/// Bytes of one `u64` word, each lane's high bit.
const HIGH: u64 = 0x8080_8080_8080_8080;
const LANES: u64 = 0x0101_0101_0101_0101;

/// The high bit of each byte of `word` (plain ASCII) that equals `c`.
const fn lanes_equal(word: u64, c: u8) -> u64 {
    let y = word ^ (LANES * c as u64);
    !(((y & !HIGH) + !HIGH) | y | !HIGH)
}

/// The high bit of each byte of `word` (plain ASCII) under `n`.
const fn lanes_below(word: u64, n: u8) -> u64 {
    !((word | HIGH) - LANES * n as u64) & HIGH
}

/// The high bit of each byte of `word` (plain ASCII) in `lo..=hi`.
const fn lanes_within(word: u64, lo: u8, hi: u8) -> u64 {
    ((word | HIGH) - LANES * lo as u64) & ((LANES * (hi as u64 | 0x80)) - word) & HIGH
}

/// The classes of plain words, counted lane by lane (a lane's count stays under 256: at most
/// [`Lanes::FULL`] words are added before the counts are read).
#[derive(Default)]
struct Lanes {
    letters: u64,
    starts: u64,
    digits: u64,
    newlines: u64,
    /// Bytes in any class but punctuation.
    classed: u64,
    words: u64,
}

impl Lanes {
    const FULL: u64 = 255;

    /// Whether every byte of `word` is plain ASCII, not a backslash (an escape's start).
    fn plain(word: u64) -> bool {
        word & HIGH == 0 && lanes_equal(word, b'\\') == 0
    }

    /// Counts the plain words at the start of `text`, at most [`Lanes::FULL`] of them: their
    /// counts and how many bytes they are. Its own loop, so that the counts stay in registers.
    fn count(text: &[u8], in_word: &mut bool) -> (Lanes, usize) {
        let mut lanes = Lanes::default();
        let mut carry = *in_word;
        for word in text.chunks_exact(8).take(Lanes::FULL as usize) {
            let word = word.try_into().map_or(u64::MAX, u64::from_le_bytes);
            if !Lanes::plain(word) {
                break;
            }
            carry = lanes.add(word, carry);
        }
        *in_word = carry;
        let read = 8 * lanes.words as usize;
        (lanes, read)
    }

    /// Counts eight plain bytes ([`Lanes::plain`]) read as a little-endian word; returns whether
    /// they end in a word.
    fn add(&mut self, word: u64, in_word: bool) -> bool {
        let letters = lanes_within(word | (LANES * 0x20), b'a', b'z');
        let digits = lanes_within(word, b'0', b'9');
        // Control bytes (tabs, line breaks) are rare in a body: only a word that has one pays
        // for telling them apart.
        let (spaces, newlines) = if lanes_below(word, 0x20) == 0 {
            // No control byte: the bytes under 0x21 are the spaces.
            (lanes_below(word, 0x21), 0)
        } else {
            (
                lanes_equal(word, b' ') | lanes_equal(word, b'\t'),
                lanes_equal(word, b'\n') | lanes_equal(word, b'\r'),
            )
        };
        // A letter whose previous byte (the lane below, or the word before) is not one starts a
        // word.
        let before = (letters << 8) | if in_word { 0x80 } else { 0 };
        self.letters += letters >> 7;
        self.starts += (letters & !before) >> 7;
        self.digits += digits >> 7;
        self.newlines += newlines >> 7;
        self.classed += (letters | digits | spaces | newlines) >> 7;
        self.words += 1;
        letters >> 63 != 0
    }

    /// The weight of the words counted.
    fn milli(&self) -> u64 {
        LETTER * lanes_sum(self.letters)
            + WORD * lanes_sum(self.starts)
            + DIGIT * lanes_sum(self.digits)
            + NEWLINE * lanes_sum(self.newlines)
            + PUNCT * (8 * self.words - lanes_sum(self.classed))
    }
}

/// The sum of a word's eight byte lanes.
const fn lanes_sum(acc: u64) -> u64 {
    const EVEN: u64 = 0x00FF_00FF_00FF_00FF;
    let pairs = (acc & EVEN) + ((acc >> 8) & EVEN);
    pairs.wrapping_mul(0x0001_0001_0001_0001) >> 48
}

/// The weight of one character of `class`, with the word bonus when it starts a word (after
/// a character that is not a letter: `in_word`, which it updates).
fn count(class: Class, in_word: &mut bool) -> u64 {
    let letter = class == Class::Letter;
    let start = if letter && !*in_word { WORD } else { 0 };
    *in_word = letter;
    weight(class) + start
}

/// The class and length of the character at `i`: an escape or a multi-byte character (or
/// any byte, which is what the reference in the tests reads with it).
fn special(text: &[u8], i: usize) -> (Class, usize) {
    let Some(&b) = text.get(i) else {
        return (Class::Space, 1);
    };
    if b < 0x80 {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The estimate as it was written first, a character at a time: the table-driven one must
    /// give the same count for any bytes.
    fn reference(text: &[u8]) -> u64 {
        let mut milli: u64 = 0;
        let mut in_word = false;
        let mut i = 0;
        while i < text.len() {
            let (class, len) = special(text, i);
            milli += count(class, &mut in_word);
            i += len;
        }
        milli.div_ceil(1_000)
    }

    #[test]
    fn the_fast_path_counts_as_the_reference_does() {
        let samples: [&[u8]; 8] = [
            b"Hello, world! 123 \\n\\t done",
            "h\u{e9}llo w\u{f6}rld \\u4f60\\u597d caf\u{e9}".as_bytes(),
            br"\ud83d\ude00abc\ud83dx\\\u12",
            b"\xE4\xBD\x80abc\xF0\x9F",
            b"",
            b"word",
            b"{\"role\":\"user\",\"content\":\"What is 2+2?\\nThanks\"}",
            "日本語 and English, mixed: Ωμέγα".as_bytes(),
        ];
        for sample in samples {
            assert_eq!(estimate(sample), reference(sample), "{sample:?}");
        }
        // Random texts, mostly plain ASCII with escapes and multi-byte characters mixed in.
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let alphabet: &[&[u8]] = &[
            b"a",
            b"Z",
            b"q",
            b"7",
            b" ",
            b"\t",
            b"\n",
            b"\r",
            b"{",
            b"\"",
            b"-",
            b"\x01",
            b"\x7f",
            b"\\n",
            b"\\u00e9",
            br"\ud83d\ude00",
            "é".as_bytes(),
            "漢".as_bytes(),
            "😀".as_bytes(),
            b"\\",
            b"\xC3",
        ];
        for _ in 0..5_000 {
            let mut text = Vec::new();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = seed % 40;
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                // Plain letters most of the time, so that whole words take the fast path.
                let pick = (seed >> 32) as usize % (alphabet.len() * 2);
                text.extend_from_slice(alphabet.get(pick).copied().unwrap_or(b"x"));
            }
            assert_eq!(estimate(&text), reference(&text), "{text:?}");
        }
        // Plain runs longer than one round of words (Lanes::FULL, 2,040 bytes), ending at and
        // around a round's end, with tabs and line breaks in them.
        let prose = b"Churn rose 4 %\tin March;\nwas it pricing?\r\n".repeat(200);
        for len in [2_039, 2_040, 2_041, 2_048, 4_080, 4_083, prose.len()] {
            let text = &prose[..len];
            assert_eq!(estimate(text), reference(text), "{len} bytes");
            let escaped = [text, b"\\n"].concat();
            assert_eq!(
                estimate(&escaped),
                reference(&escaped),
                "{len} bytes and an escape"
            );
        }
        // Every byte value, in every position of a short window.
        for b in 0..=255u8 {
            let text = [b'a', b, b'b', b'\\', b, b'u', b'0', b'0', b, b'1'];
            assert_eq!(estimate(&text), reference(&text), "{text:?}");
        }
    }

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
