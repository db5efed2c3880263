//! Pages of the list calls (`ListServices`, `ListPoints`, `ListSessions`), so that no answer
//! can pass the response cap however much is registered or stored.
//!
//! A page holds at most `page_size` entries (default and maximum in [`crate::bounds`]) and
//! stops early before its encoding passes [`bounds::MAX_PAGE_BYTES`]. Entries are listed in the
//! order of a key (service and instance, point name, request time and session id), and the
//! page token is the last key returned, hex-encoded: a position, not a snapshot, as Google's
//! AIP-158 allows. It is not secret and needs no signature — every page is filtered by what
//! the caller may see when it is read, so a forged token shows nothing a real one would not.
//! (`QueryAudit` needs none of this: it streams one event per message.)

use tonic::Status;

use crate::bounds;

/// Where a page starts: after this key (`None`: from the beginning).
pub fn start(token: &str) -> Result<Option<String>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || {
        Status::invalid_argument(
            "page_token is not one this control plane handed out; pass the previous page's next_page_token, or none for the first page",
        )
    };
    if !token.len().is_multiple_of(2) {
        return Err(bad());
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| {
            token
                .get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(bad)?;
    String::from_utf8(bytes).map(Some).map_err(|_| bad())
}

/// The token of a page that ended at `key`.
pub fn token(key: &str) -> String {
    key.bytes().map(|b| format!("{b:02x}")).collect()
}

/// One page of `entries` (sorted by key) after `after`: at most `page_size` entries and about
/// [`bounds::MAX_PAGE_BYTES`], with the next page's token when more remain. `size` is an
/// entry's encoded size.
pub fn page<T>(
    entries: impl IntoIterator<Item = (String, T)>,
    after: Option<&str>,
    page_size: usize,
    size: impl Fn(&T) -> usize,
) -> (Vec<T>, String) {
    let mut taken = Vec::new();
    let mut bytes = 0usize;
    let mut last: Option<String> = None;
    for (key, entry) in entries {
        if after.is_some_and(|after| key.as_str() <= after) {
            continue;
        }
        // Field tag and length prefix of a repeated message: a few bytes each.
        let cost = size(&entry).saturating_add(8);
        let full = taken.len() >= page_size
            || (!taken.is_empty() && bytes.saturating_add(cost) > bounds::MAX_PAGE_BYTES);
        if full {
            return (taken, last.as_deref().map(token).unwrap_or_default());
        }
        bytes = bytes.saturating_add(cost);
        last = Some(key);
        taken.push(entry);
    }
    (taken, String::new())
}

/// The key of a session in listing order: request time, then id.
pub fn session_key(requested_at: u64, id: &str) -> String {
    format!("{requested_at:020}\u{0}{id}")
}

/// The key of an instance in listing order: service, then instance id (neither contains NUL).
pub fn instance_key(service: &str, instance: &str) -> String {
    format!("{service}\u{0}{instance}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(n: usize) -> Vec<(String, usize)> {
        (0..n).map(|i| (format!("k{i:04}"), i)).collect()
    }

    #[test]
    fn pages_follow_each_other_without_gaps_or_repeats() {
        let all = entries(25);
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let (page, next) = page(all.clone(), after.as_deref(), 10, |_| 1);
            assert!(page.len() <= 10);
            seen.extend(page);
            if next.is_empty() {
                break;
            }
            after = start(&next).expect("our token");
        }
        assert_eq!(seen, (0..25).collect::<Vec<_>>());
    }

    #[test]
    fn a_page_stops_before_the_byte_budget_but_holds_at_least_one() {
        let huge = bounds::MAX_PAGE_BYTES;
        let (first, next) = page(entries(3), None, 100, |_| huge);
        assert_eq!(first, vec![0]);
        assert_eq!(start(&next).expect("token").as_deref(), Some("k0000"));
        let (some, _) = page(entries(100), None, 100, |_| huge / 10);
        assert!(some.len() < 10, "{}", some.len());
    }

    #[test]
    fn forged_tokens_are_clear_errors() {
        for bad in ["zz", "abc", "ff"] {
            let status = start(bad).expect_err(bad);
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
        }
        assert_eq!(start("").expect("empty"), None);
        assert_eq!(
            start(&token("svc\u{0}i-1")).expect("ours").as_deref(),
            Some("svc\u{0}i-1")
        );
    }
}
