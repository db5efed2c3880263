//! The agent thread's warm pass over the hit path (`capture::warm`) runs while a capture is
//! armed and stops once nothing is: an idle agent must cost the host nothing. Its own test
//! binary, so that no other test arms a capture meanwhile.

use std::time::{Duration, Instant};

use loupe_agent::capture::warm;
use loupe_agent::{CaptureSpec, EndReason, Engine};

fn checkout(total: u64) {
    loupe_agent::snapshot!("warm.checkout", total);
}

/// Far longer than the agent thread's slowest tick (20 ms).
const SEVERAL_TICKS: Duration = Duration::from_millis(200);

/// Waits until the pass count moves past `after`, or `SEVERAL_TICKS` ran out.
fn passes_after(after: u64) -> u64 {
    let start = Instant::now();
    while warm::passes() <= after && start.elapsed() < SEVERAL_TICKS {
        std::thread::sleep(Duration::from_millis(5));
    }
    warm::passes()
}

#[test]
fn the_hit_path_is_warmed_while_armed_and_not_while_idle() {
    let idle_before = warm::passes();
    std::thread::sleep(SEVERAL_TICKS);
    assert_eq!(
        warm::passes(),
        idle_before,
        "no pass before anything is armed"
    );

    let stream = loupe_agent::arm(CaptureSpec::new("s-warm", "warm.checkout")).expect("arms");
    checkout(1);
    let armed_at = warm::passes();
    assert!(
        passes_after(armed_at) > armed_at,
        "the agent thread warms the hit path on its ticks while a capture is armed"
    );

    Engine::global().disarm(&stream.capture_id(), EndReason::Disarmed);
    drop(stream);
    // The tick under way when the capture was disarmed may still make its pass.
    std::thread::sleep(SEVERAL_TICKS);
    let settled = warm::passes();
    std::thread::sleep(SEVERAL_TICKS);
    assert_eq!(warm::passes(), settled, "no pass once nothing is armed");
}
