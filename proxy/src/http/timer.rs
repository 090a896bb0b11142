//! The timer hyper's HTTP/2 connections run on: tokio's sleeps, and a coarse clock.
//!
//! With keep-alive pings on, hyper reads `Timer::now()` on every poll of the
//! connection and on every frame received, only to know when the peer was last
//! heard from. That is about four clock reads per proxied HTTP/2 request, at ~24 ns
//! each on the benchmark machine (vDSO, TSC clocksource). A keep-alive measured in
//! seconds needs no such precision, so `now()` returns a reading that a clock thread
//! refreshes every `TICK`, the way HAProxy and nginx read the time once per turn of
//! their event loop. Request latencies are still timed with the precise clock
//! (`state::now_nanos`).

use std::pin::Pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};
use hyper_util::rt::TokioTimer;

/// How stale `CoarseTimer::now()` may be; a keep-alive timeout fires at most this
/// much early.
const TICK: Duration = Duration::from_millis(100);

/// tokio's sleeps, with a `now()` at most `TICK` (plus scheduling delay) behind.
#[derive(Debug, Clone, Default)]
pub struct CoarseTimer(TokioTimer);

impl CoarseTimer {
    pub fn new() -> Self {
        Self(TokioTimer::new())
    }
}

impl Timer for CoarseTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.0.sleep(duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        self.0.sleep_until(deadline)
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        self.0.reset(sleep, new_deadline)
    }

    fn now(&self) -> Instant {
        coarse_now()
    }
}

/// The clock's zero; readings are nanoseconds from it, to fit an atomic.
static EPOCH: OnceLock<Instant> = OnceLock::new();
/// `EPOCH` to the clock thread's last tick.
static TICKED: AtomicU64 = AtomicU64::new(0);
/// False if the clock thread could not be started: then every read is precise.
static TICKING: OnceLock<bool> = OnceLock::new();

/// The time as of the clock thread's last tick.
pub fn coarse_now() -> Instant {
    let epoch = *EPOCH.get_or_init(Instant::now);
    if !*TICKING.get_or_init(start_ticking) {
        return Instant::now();
    }
    epoch + Duration::from_nanos(TICKED.load(Ordering::Relaxed))
}

fn start_ticking() -> bool {
    let spawned = std::thread::Builder::new()
        .name("weft-clock".into())
        .stack_size(64 * 1024)
        .spawn(|| {
            let epoch = *EPOCH.get_or_init(Instant::now);
            loop {
                let nanos = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
                TICKED.store(nanos, Ordering::Relaxed);
                std::thread::sleep(TICK);
            }
        });
    match spawned {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(error = %e, "no clock thread; HTTP/2 keep-alive reads the precise clock");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_coarse_clock_follows_the_precise_one_within_a_tick() {
        let first = coarse_now();
        assert!(first <= Instant::now());
        // Bounded: the clock thread must tick within a few periods.
        let give_up = Instant::now() + 20 * TICK;
        let mut later = coarse_now();
        while later <= first && Instant::now() < give_up {
            std::thread::sleep(TICK / 4);
            later = coarse_now();
        }
        assert!(later > first, "the coarse clock never advanced");
        let now = Instant::now();
        assert!(later <= now);
        // Generous slack for a loaded test machine; the point is that it is not stuck.
        assert!(
            now.duration_since(later) < 10 * TICK,
            "{:?} behind",
            now.duration_since(later)
        );
    }
}
