//! The agent thread's warm pass is made on the cores hits ran on (`capture::warm`): it moves
//! onto them, and gets every CPU it was allowed back after each pass, so that it is never left
//! on one of the host's cores. Its own test binary, so that no other test arms a capture or
//! hits a point meanwhile.
#![cfg(target_os = "linux")]
#![allow(unsafe_code)]

use std::time::{Duration, Instant};

use loupe_agent::capture::warm;
use loupe_agent::{CaptureSpec, EndReason, Engine};

fn checkout(total: u64) {
    loupe_agent::snapshot!("warm_cores.checkout", total);
}

/// The CPUs a thread may run on, as `/proc` lists them (`0-1`, `0,2-3`).
fn allowed_cpus(task: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/self/task/{task}/status"))
        .expect("reads the thread's status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .expect("the status lists allowed CPUs")
        .trim()
        .to_owned()
}

/// The agent's thread, by its name.
fn agent_thread() -> Option<String> {
    std::fs::read_dir("/proc/self/task")
        .expect("lists this process's threads")
        .filter_map(Result::ok)
        .map(|task| task.file_name().to_string_lossy().into_owned())
        .find(|task| {
            std::fs::read_to_string(format!("/proc/self/task/{task}/comm"))
                .is_ok_and(|name| name.trim() == "loupe-capture")
        })
}

/// Restricts the calling thread to `cpu`.
fn run_on(cpu: usize) {
    // SAFETY: the set is a plain value the kernel reads; `CPU_SET` is given a CPU below
    // `CPU_SETSIZE` (the test takes CPUs the process may run on).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0,
            "moves the test's thread to CPU {cpu}"
        );
    }
}

/// The CPUs the calling thread may run on.
fn own_cpus() -> Vec<usize> {
    // SAFETY: the kernel writes at most the set's size into it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set),
            0
        );
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}

#[test]
fn the_agent_thread_warms_the_cores_hits_ran_on_and_gets_its_cpus_back() {
    let cpus = own_cpus();
    if cpus.len() < 2 {
        // One core: the pass is always made where the hits run, and there is nothing to move to.
        assert!(
            std::env::var("LOUPE_REQUIRE_PRIVILEGED_TESTS").as_deref() != Ok("1"),
            "moving between cores needs two CPUs, and LOUPE_REQUIRE_PRIVILEGED_TESTS=1 requires \
             this test to run: give the process at least two"
        );
        eprintln!("skipped: this process may run on one CPU only");
        return;
    }
    let process_allowed = allowed_cpus(&std::process::id().to_string());

    let stream = loupe_agent::arm(
        CaptureSpec::new("s-warm-cores", "warm_cores.checkout").max_snapshots(1_000),
    )
    .expect("arms");
    let moves_before = warm::moves();
    hit_on_two_cores(&cpus, move || warm::moves() > moves_before);
    assert!(
        warm::moves() > moves_before,
        "the agent thread moved onto a core a hit ran on"
    );
    Engine::global().disarm(&stream.capture_id(), EndReason::Disarmed);
    drop(stream);
    settle_passes();
    let agent = agent_thread().expect("the agent's thread is running");
    assert_eq!(
        allowed_cpus(&agent),
        process_allowed,
        "after its passes the agent's thread may run on every CPU the process may"
    );

    // A service that keeps its cores to itself turns the moves off: passes, and no move.
    warm::allow_core_moves(false);
    let stream = loupe_agent::arm(
        CaptureSpec::new("s-warm-cores-2", "warm_cores.checkout").max_snapshots(1_000),
    )
    .expect("arms");
    let (moves_before, passes_before) = (warm::moves(), warm::passes());
    hit_on_two_cores(&cpus, move || warm::passes() > passes_before + 5);
    assert!(warm::passes() > passes_before + 5, "the passes go on");
    assert_eq!(warm::moves(), moves_before, "no move once moves are off");
    Engine::global().disarm(&stream.capture_id(), EndReason::Disarmed);
    drop(stream);
    warm::allow_core_moves(true);

    a_real_time_threads_hits_move_nothing(&cpus);
}

/// A real-time thread may keep its core to itself: the agent's thread, an ordinary one, would
/// wait there until it yields. Its hits note no core.
fn a_real_time_threads_hits_move_nothing(cpus: &[usize]) {
    let stream = loupe_agent::arm(
        CaptureSpec::new("s-warm-cores-3", "warm_cores.checkout").max_snapshots(1_000),
    )
    .expect("arms");
    // The cores noted above stay warmed for up to two generations of a second each.
    std::thread::sleep(Duration::from_millis(2_500));
    let (moves_before, passes_before) = (warm::moves(), warm::passes());
    let cpus = [cpus[0], cpus[1]];
    let hitter = std::thread::spawn(move || {
        let priority = libc::sched_param { sched_priority: 1 };
        // SAFETY: sets the calling thread's own policy from a valid parameter.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &priority) } != 0 {
            return false;
        }
        let start = Instant::now();
        while warm::passes() < passes_before + 10 && start.elapsed() < Duration::from_secs(5) {
            for cpu in cpus {
                run_on(cpu);
                checkout(1);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    });
    let ran = hitter.join().expect("the hitting thread finishes");
    Engine::global().disarm(&stream.capture_id(), EndReason::Disarmed);
    drop(stream);
    if !ran {
        assert!(
            std::env::var("LOUPE_REQUIRE_PRIVILEGED_TESTS").as_deref() != Ok("1"),
            "a real-time thread needs CAP_SYS_NICE, and LOUPE_REQUIRE_PRIVILEGED_TESTS=1 \
             requires this test to run"
        );
        eprintln!("skipped the real-time part: no CAP_SYS_NICE");
        return;
    }
    assert!(warm::passes() >= passes_before + 10, "the passes go on");
    assert_eq!(
        warm::moves(),
        moves_before,
        "no move onto a core for a real-time thread's hits"
    );
}

/// Hits the point from a thread that alternates between the first two CPUs (wherever the
/// agent's thread runs, one of them is elsewhere) until `done` or five seconds.
fn hit_on_two_cores(cpus: &[usize], done: impl Fn() -> bool + Send + 'static) {
    let cpus = [cpus[0], cpus[1]];
    let hitter = std::thread::spawn(move || {
        let start = Instant::now();
        while !done() && start.elapsed() < Duration::from_secs(5) {
            for cpu in cpus {
                run_on(cpu);
                checkout(1);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    hitter.join().expect("the hitting thread finishes");
}

/// Waits until the agent's thread stops making passes, once nothing is armed.
fn settle_passes() {
    // Once nothing is armed the thread parks, after the pass under way.
    let settled = Instant::now();
    let mut passes = warm::passes();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = warm::passes();
        if now == passes || settled.elapsed() > Duration::from_secs(5) {
            break;
        }
        passes = now;
    }
}
