//! Payment card numbers: the Luhn checksum every card number carries, and the issuer prefixes
//! (IIN) and lengths of the card brands that exist.
//!
//! Luhn alone lets one in ten random digit strings through, and 13–19-digit integers are
//! everywhere in ordinary data: millisecond and nanosecond timestamps, snowflake ids, order
//! numbers. A number counts as a card only when its leading digits and its length match a real
//! brand ([`ISSUERS`]) *and* it passes Luhn. Timestamps and snowflake ids of this era start
//! with `1`, which no brand in the table uses (UATP's airline cards, prefix `1`, length 15, are
//! left out on purpose: they are rare, and including them would withhold every 15-digit id
//! starting with `1`).

/// Payment card numbers have 13 to 19 digits (ISO/IEC 7812).
pub(crate) const CARD_DIGITS_MIN: usize = 13;
pub(crate) const CARD_DIGITS_MAX: usize = 19;

/// One brand's issuer range: numbers whose first `digits` digits lie in `low..=high`, with a
/// length in `lengths` (a bit per digit count).
struct IssuerRange {
    digits: u32,
    low: u32,
    high: u32,
    lengths: u32,
}

const fn lengths(list: &[u32]) -> u32 {
    let mut bits = 0;
    let mut i = 0;
    while i < list.len() {
        bits |= 1 << list[i];
        i += 1;
    }
    bits
}

const fn range(digits: u32, low: u32, high: u32, lengths: u32) -> IssuerRange {
    IssuerRange {
        digits,
        low,
        high,
        lengths,
    }
}

const SIXTEEN_TO_NINETEEN: u32 = lengths(&[16, 17, 18, 19]);

/// Issuer ranges and lengths of the brands in use (ISO/IEC 7812 registrations as the brands
/// publish them). Maestro's ranges (`50`, `56`–`69`, 12–19 digits) subsume Discover (`6011`,
/// `644`–`649`, `65`), UnionPay (`62`), RuPay (`60`, `65`) and Maestro's own named BINs.
const ISSUERS: &[IssuerRange] = &[
    // Visa (and Visa Electron).
    range(1, 4, 4, lengths(&[13, 16, 19])),
    // Mastercard, including the 2-series.
    range(2, 51, 55, lengths(&[16])),
    range(4, 2221, 2720, lengths(&[16])),
    // Mir.
    range(4, 2200, 2204, SIXTEEN_TO_NINETEEN),
    // American Express.
    range(2, 34, 34, lengths(&[15])),
    range(2, 37, 37, lengths(&[15])),
    // Diners Club.
    range(3, 300, 305, lengths(&[14, 15, 16, 17, 18, 19])),
    range(4, 3095, 3095, lengths(&[14, 15, 16, 17, 18, 19])),
    range(2, 36, 36, lengths(&[14, 15, 16, 17, 18, 19])),
    range(2, 38, 39, lengths(&[14, 15, 16, 17, 18, 19])),
    // JCB.
    range(4, 3528, 3589, SIXTEEN_TO_NINETEEN),
    // Maestro, Discover, UnionPay, RuPay, Troy (`9792`) and the rest of the 6-series.
    range(2, 50, 50, lengths(&[13, 14, 15, 16, 17, 18, 19])),
    range(2, 56, 69, lengths(&[13, 14, 15, 16, 17, 18, 19])),
    // RuPay's 8-series.
    range(2, 81, 82, lengths(&[16])),
    // Troy.
    range(4, 9792, 9792, lengths(&[16])),
];

/// Whether `digits` (ASCII digits only, 13–19 of them) start with a real brand's issuer prefix
/// and have one of its lengths.
pub(crate) fn issuer_accepts(digits: impl Iterator<Item = u8> + Clone) -> bool {
    let len = digits.clone().count() as u32;
    if len > 31 {
        return false;
    }
    let mut head = [0u32; 5];
    for (i, digit) in digits.take(4).enumerate() {
        head[i + 1] = head[i] * 10 + u32::from(digit - b'0');
    }
    ISSUERS.iter().any(|issuer| {
        issuer.lengths & (1 << len) != 0
            && (issuer.low..=issuer.high).contains(&head[issuer.digits as usize])
    })
}

/// Whether the ASCII digits in `text` (separators skipped) form a card number: a real brand's
/// prefix and length, and Luhn-valid.
pub(crate) fn digits_are_card_number(text: &[u8]) -> bool {
    let digits = text.iter().copied().filter(u8::is_ascii_digit);
    issuer_accepts(digits) && digits_pass_luhn(text)
}

/// Luhn check over the ASCII digits in `text`, skipping anything else (the separators of
/// `4111 1111 1111 1111`).
pub(crate) fn digits_pass_luhn(text: &[u8]) -> bool {
    let mut sum = 0u32;
    let mut double = false;
    for &byte in text.iter().rev() {
        if !byte.is_ascii_digit() {
            continue;
        }
        let mut digit = u32::from(byte - b'0');
        if double {
            digit *= 2;
            if digit > 9 {
                digit -= 9;
            }
        }
        sum += digit;
        double = !double;
    }
    sum.is_multiple_of(10)
}

/// Whether `value`, written in decimal, is a card number: a real brand's prefix and length
/// (13–19 digits), and Luhn-valid.
pub(crate) fn is_card_number(value: u64) -> bool {
    // 10^12 is the smallest 13-digit number; every u64 of 10^19 or more has 20 digits.
    const SMALLEST_CARD: u64 = 1_000_000_000_000;
    const TOO_LONG: u64 = 10_000_000_000_000_000_000;
    if !(SMALLEST_CARD..TOO_LONG).contains(&value) {
        return false;
    }
    let mut rest = value;
    let mut sum = 0u64;
    let mut double = false;
    while rest > 0 {
        let mut digit = rest % 10;
        rest /= 10;
        if double {
            digit *= 2;
            if digit > 9 {
                digit -= 9;
            }
        }
        sum += digit;
        double = !double;
    }
    sum.is_multiple_of(10) && {
        let mut buf = [0u8; 20];
        let text = decimal(value, &mut buf);
        issuer_accepts(text.iter().copied())
    }
}

/// `value` in decimal, written at the end of `buf`.
fn decimal(mut value: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            return &buf[at..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_test_cards_pass() {
        for card in [
            "4111111111111111",
            "4242 4242 4242 4242",
            "5555-5555-5555-4444",
            "378282246310005",
            "6011111111111117",
            "4222222222222",
            "6250941006528599",
        ] {
            assert!(digits_pass_luhn(card.as_bytes()), "{card}");
        }
    }

    #[test]
    fn altered_numbers_fail() {
        for number in ["4111111111111112", "1234567890123", "4242424242424241"] {
            assert!(!digits_pass_luhn(number.as_bytes()), "{number}");
        }
    }

    #[test]
    fn every_brand_test_number_is_a_card() {
        for card in [
            "4111111111111111",    // Visa
            "4222222222222",       // Visa, 13 digits
            "4111111111111111110", // Visa, 19 digits (Luhn-valid)
            "5555555555554444",    // Mastercard
            "2223003122003222",    // Mastercard 2-series
            "378282246310005",     // Amex
            "371449635398431",     // Amex
            "30569309025904",      // Diners, 14 digits
            "36227206271667",      // Diners International
            "6011111111111117",    // Discover
            "6445644564456445",    // Discover 644
            "3530111333300000",    // JCB
            "6250941006528599",    // UnionPay
            "6759649826438453",    // Maestro
            "2200000000000004",    // Mir
        ] {
            assert!(digits_are_card_number(card.as_bytes()), "{card}");
            assert!(is_card_number(card.parse().expect("digits")), "{card}");
        }
    }

    #[test]
    fn luhn_valid_numbers_without_a_brand_are_not_cards() {
        // Timestamps in ms, µs and ns, and snowflake ids: all start with `1`.
        for value in [
            1_733_000_000_000u64,
            1_733_000_000_000_000,
            1_733_000_000_000_000_000,
            1_234_567_890_123_456_789,
            1_541_815_603_606_036_480,
        ] {
            let luhn_valid = (0..10)
                .map(|last| value - value % 10 + last)
                .find(|candidate| digits_pass_luhn(candidate.to_string().as_bytes()))
                .expect("one last digit makes it Luhn-valid");
            assert!(!is_card_number(luhn_valid), "{luhn_valid}");
        }
        // A brand's prefix with a length the brand does not issue.
        assert!(!digits_are_card_number(b"41111111111114")); // Visa, 14 digits
        assert!(!digits_are_card_number(b"37828224631003")); // Amex, 14 digits
        assert!(!digits_are_card_number(b"55555555555544440")); // Mastercard, 17 digits
        assert!(!digits_are_card_number(b"7000000000000005")); // no brand starts with 7
    }

    #[test]
    fn integers_need_card_length_and_checksum() {
        assert!(is_card_number(4_111_111_111_111_111));
        assert!(is_card_number(378_282_246_310_005));
        assert!(is_card_number(4_222_222_222_222));
        assert!(!is_card_number(4_111_111_111_111_112));
        // Luhn-valid but too short to be a card.
        assert!(!is_card_number(79_927_398_713));
        assert!(!is_card_number(0));
        assert!(!is_card_number(u64::MAX));
        // 20 digits: no card is that long, whatever the checksum.
        assert!(!is_card_number(10_000_000_000_000_000_009));
    }
}
