//! Cutting UTF-8 text at a byte budget: the one rule every limit on text uses, so that a cut
//! never splits a character and never reads past the end; and where a run of bytes of one kind
//! ends, which the scanners of text ask at every turn.

/// The largest index `<= max` that is a char boundary of `text` (its length if `max` is past
/// the end).
pub(crate) fn floor_char_boundary(text: &str, max: usize) -> usize {
    let mut cut = max.min(text.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    cut
}

/// The smallest index `>= at` that is a char boundary of `text` (its length if `at` is past
/// the end).
pub(crate) fn ceil_char_boundary(text: &str, at: usize) -> usize {
    let mut cut = at.min(text.len());
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    cut
}

/// End of the run of bytes satisfying `accept` starting at `from` (`from` itself when none
/// does, or when `from` is past the end).
pub(crate) fn run_end(text: &[u8], from: usize, accept: impl Fn(u8) -> bool) -> usize {
    let mut end = from;
    while text.get(end).is_some_and(|&byte| accept(byte)) {
        end += 1;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_land_on_character_boundaries() {
        let text = "aé€😀";
        assert_eq!(floor_char_boundary(text, 2), 1);
        assert_eq!(ceil_char_boundary(text, 2), 3);
        assert_eq!(floor_char_boundary(text, 100), text.len());
        assert_eq!(ceil_char_boundary(text, 100), text.len());
        assert_eq!(floor_char_boundary(text, 0), 0);
    }
}
