//! The Luhn checksum that every payment card number carries. Checking it is what keeps order
//! ids, timestamps and other long numbers visible: only one in ten random digit strings passes.

/// Payment card numbers have 13 to 19 digits (ISO/IEC 7812).
pub(crate) const CARD_DIGITS_MIN: usize = 13;
pub(crate) const CARD_DIGITS_MAX: usize = 19;

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

/// Whether `value`, written in decimal, is a card number: 13–19 digits and Luhn-valid.
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
    sum.is_multiple_of(10)
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
