//! ISO 4217 currency codes, checked by a table lookup.
//!
//! Invariant: [`is_iso_4217`] answers exactly as `iso_currency::Currency::from_code` does (a test
//! compares the two over every three-letter string). `from_code` compares the text with each of
//! its ~180 codes in turn, which costs ~5% of the worker's CPU in a backlog drain; every code is
//! three capital letters, so one bit per such string (2 KiB) answers instead.

use std::sync::LazyLock;

use iso_currency::{Currency, IntoEnumIterator};

const LETTERS: usize = 26;
const STRINGS: usize = LETTERS * LETTERS * LETTERS;

static CODES: LazyLock<[u64; STRINGS.div_ceil(64)]> = LazyLock::new(|| {
    let mut codes = [0; STRINGS.div_ceil(64)];
    for currency in Currency::iter() {
        if let Some(i) = index(currency.code()) {
            codes[i / 64] |= 1 << (i % 64);
        }
    }
    codes
});

/// The position of a string of three capital letters among all of them.
fn index(code: &str) -> Option<usize> {
    let &[a, b, c] = code.as_bytes() else {
        return None;
    };
    let letter = |x: u8| x.is_ascii_uppercase().then(|| usize::from(x - b'A'));
    Some((letter(a)? * LETTERS + letter(b)?) * LETTERS + letter(c)?)
}

/// Whether `code` is an ISO 4217 currency code (capital letters, as the standard spells them).
pub fn is_iso_4217(code: &str) -> bool {
    index(code).is_some_and(|i| CODES[i / 64] & (1 << (i % 64)) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_iso_currency_knows_is_a_currency() {
        for currency in Currency::iter() {
            assert!(is_iso_4217(currency.code()), "{}", currency.code());
        }
    }

    #[test]
    fn it_answers_as_iso_currency_for_every_three_letter_string() {
        let letters = (b'A'..=b'Z').chain(b'a'..=b'z');
        for a in letters.clone() {
            for b in letters.clone() {
                for c in letters.clone() {
                    let code = String::from_utf8(vec![a, b, c]).unwrap();
                    assert_eq!(
                        is_iso_4217(&code),
                        Currency::from_code(&code).is_some(),
                        "{code}"
                    );
                }
            }
        }
    }

    #[test]
    fn other_lengths_and_characters_are_not_currencies() {
        for code in ["", "E", "EU", "EURO", "EU€", "€UR", "EU1", " EUR", "EUR "] {
            assert_eq!(
                is_iso_4217(code),
                Currency::from_code(code).is_some(),
                "{code:?}"
            );
            assert!(!is_iso_4217(code), "{code:?}");
        }
    }
}
