//! Secrets inside base64: a credentials document or key encoded whole, as a Kubernetes
//! Secret's `data`, a CI variable holding a service account's JSON key or a kubeconfig, or a
//! Docker config carries it. In its encoded form no pattern or label sees what it holds.
//!
//! Only runs that begin as the base64 of a document that carries credentials are decoded:
//! JSON (`{"` is `eyJ`, `{ "` `eyAi`, `{` and a line break `ewo` or `ew0K`, `{` and a tab
//! `ewki`, `[{` `W3s`), a PEM block (`-----BEGIN` is `LS0tLS1CRUdJTi`) and a kubeconfig
//! (`apiVersion` is `YXBpVmVyc2lvbj`). Each run is judged once, from its first such start:
//! `+ / - _` are base64 letters that end a word, so one run can hold many word starts. Decoding every long
//! run of base64 letters would make every hex digest and random id pay for a decode; these
//! prefixes cost a comparison at the words that begin with them (the pattern scan's word
//! starts, `patterns.rs`).
//!
//! At most [`MAX_DECODED`] bytes of a run are decoded, onto the stack, and only if they read
//! as text; the caller judges them (the built-in patterns and names, decoding nothing further).
//! A longer run is judged as cut, so a candidate secret running into the decoded end withholds
//! the run. A run that holds a secret is withheld whole: its parts are not worth showing.

/// Most bytes of one run decoded and judged.
pub(crate) const MAX_DECODED: usize = 1536;

/// The beginnings of encoded documents that carry credentials (see the module docs): JSON
/// (`{"`, `{ "`, `{` and a tab or line break, `[{`), a PEM block, a kubeconfig.
const DOCUMENT_PREFIXES: [&[u8]; 8] = [
    b"eyJ",
    b"eyAi",
    b"ewo",
    b"ewki",
    b"ew0K",
    b"W3s",
    b"LS0tLS1CRUdJTi",
    b"YXBpVmVyc2lvbj",
];

/// Runs shorter than this encode too little to hold a document with a secret in it.
const SHORTEST_RUN: usize = 16;

/// What [`encoded_secret_at`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Judged {
    /// No document begins here.
    NotADocument,
    /// A document that holds a secret, ending at `end`.
    Secret { end: usize },
    /// A run judged to hold none (or too short, or not text), ending at `run_end`: nothing
    /// inside it is judged again.
    Clean { run_end: usize },
}

/// Judges the encoded document that may start at `start`: `holds_secret` is given its decoded
/// text, whether that is whole, and `work`. `complete` is false when `text` is only a prefix
/// of a longer value. Adds to `work` the run's letters read and the bytes decoded (bytes'
/// worth, `super::Work`).
pub(crate) fn encoded_secret_at(
    text: &[u8],
    start: usize,
    complete: bool,
    work: &mut super::Work,
    holds_secret: impl FnOnce(&[u8], bool, &mut super::Work) -> bool,
) -> Judged {
    let rest = &text[start..];
    if !DOCUMENT_PREFIXES
        .iter()
        .any(|prefix| rest.starts_with(prefix))
    {
        return Judged::NotADocument;
    }
    let letters_end = start + rest.iter().take_while(|&&b| sextet(b).is_some()).count();
    let end = letters_end
        + text[letters_end..]
            .iter()
            .take(2)
            .take_while(|&&b| b == b'=')
            .count();
    work.add((letters_end - start) as u64);
    let clean = Judged::Clean { run_end: end };
    if end - start < SHORTEST_RUN {
        return clean;
    }
    let mut buffer = [0u8; MAX_DECODED];
    let (decoded_len, whole) = decode(&text[start..letters_end], &mut buffer);
    work.add(decoded_len as u64);
    let decoded = &buffer[..decoded_len];
    if !reads_as_text(decoded) {
        return clean;
    }
    let cut_here = end == text.len() && !complete;
    if holds_secret(decoded, whole && !cut_here, work) {
        Judged::Secret { end }
    } else {
        clean
    }
}

/// The value of a base64 letter, standard or URL-safe.
fn sextet(byte: u8) -> Option<u32> {
    Some(match byte {
        b'A'..=b'Z' => byte - b'A',
        b'a'..=b'z' => byte - b'a' + 26,
        b'0'..=b'9' => byte - b'0' + 52,
        b'+' | b'-' => 62,
        b'/' | b'_' => 63,
        _ => return None,
    } as u32)
}

/// Decodes `letters` (base64 letters, no padding) into `into` as far as it holds; the number
/// of bytes written, and whether all of `letters` fit.
fn decode(letters: &[u8], into: &mut [u8]) -> (usize, bool) {
    let mut written = 0;
    for group in letters.chunks(4) {
        let bytes = group.len() * 3 / 4;
        if written + bytes > into.len() {
            return (written, false);
        }
        let mut bits = 0u32;
        for &letter in group {
            // Every byte of `letters` is a letter: the caller stopped at the first that is not.
            bits = (bits << 6) | sextet(letter).unwrap_or(0);
        }
        bits <<= 6 * (4 - group.len() as u32);
        let decoded = [(bits >> 16) as u8, (bits >> 8) as u8, bits as u8];
        into[written..written + bytes].copy_from_slice(&decoded[..bytes]);
        written += bytes;
    }
    (written, true)
}

/// Whether `decoded` reads as text: no control bytes but tabs and line breaks (bytes above
/// ASCII are let through, as UTF-8 text has them).
fn reads_as_text(decoded: &[u8]) -> bool {
    decoded
        .iter()
        .all(|&b| b >= 0x20 && b != 0x7f || matches!(b, b'\t' | b'\n' | b'\r'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base64(text: &[u8]) -> String {
        const LETTERS: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in text.chunks(3) {
            let mut bits = 0u32;
            for (i, &b) in chunk.iter().enumerate() {
                bits |= u32::from(b) << (16 - 8 * i);
            }
            for i in 0..=chunk.len() {
                out.push(LETTERS[(bits >> (18 - 6 * i) & 63) as usize] as char);
            }
            for _ in chunk.len()..3 {
                out.push('=');
            }
        }
        out
    }

    #[test]
    fn decodes_what_was_encoded_at_every_length() {
        let text = b"{\"auths\":{\"r\":{\"auth\":\"x\"}}} and more";
        for len in 0..text.len() {
            let encoded = base64(&text[..len]);
            let letters = encoded.trim_end_matches('=');
            let mut buffer = [0u8; MAX_DECODED];
            let (written, whole) = decode(letters.as_bytes(), &mut buffer);
            assert!(whole);
            assert_eq!(&buffer[..written], &text[..len]);
        }
    }

    #[test]
    fn a_run_longer_than_the_buffer_is_decoded_in_part() {
        let encoded = base64(&[b'a'; MAX_DECODED + 30]);
        let mut buffer = [0u8; MAX_DECODED];
        let (written, whole) = decode(encoded.trim_end_matches('=').as_bytes(), &mut buffer);
        assert!(!whole);
        assert_eq!(written, MAX_DECODED);
    }

    #[test]
    fn only_document_prefixes_that_read_as_text_are_judged() {
        let judged = |text: &str| {
            let mut asked = false;
            encoded_secret_at(
                text.as_bytes(),
                0,
                true,
                &mut super::super::Work::unlimited(),
                |_, _, _| {
                    asked = true;
                    true
                },
            );
            asked
        };
        assert!(judged(&base64(b"{\"user\":\"ada\",\"page\":2}")));
        assert!(judged(&base64(b"-----BEGIN CERTIFICATE-----")));
        assert!(judged(&base64(b"apiVersion: v1\nkind: Config\n")));
        // Not a document's start, too short, or not text.
        assert!(!judged(&base64(b"user:password-for-the-db")));
        assert!(!judged("eyJhbGci"));
        assert!(!judged(&base64(
            b"{\"a\x00\x01\x02\x03\x04\x05\x06\x07\x08\x0b\x0c"
        )));
        assert!(!judged("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822c"));
    }

    #[test]
    fn a_run_that_reaches_the_end_of_a_cut_text_is_judged_as_cut() {
        let encoded = base64(b"{\"user\":\"ada\",\"page\":2}");
        let mut whole = None;
        encoded_secret_at(
            encoded.as_bytes(),
            0,
            false,
            &mut super::super::Work::unlimited(),
            |_, is_whole, _| {
                whole = Some(is_whole);
                false
            },
        );
        assert_eq!(whole, Some(false));
    }

    #[test]
    fn a_judged_run_reports_its_end_and_its_work() {
        let encoded = base64(b"{\"user\":\"ada\",\"page\":2}");
        let mut work = super::super::Work::unlimited();
        let judged = encoded_secret_at(encoded.as_bytes(), 0, true, &mut work, |_, _, _| false);
        assert_eq!(
            judged,
            Judged::Clean {
                run_end: encoded.len()
            }
        );
        let done = work.done();
        assert!(
            done >= encoded.trim_end_matches('=').len() as u64 + 23,
            "{done}"
        );
    }
}
