//! Fail points at the named steps of the exactly-once protocol, so the
//! fault tests can crash siphon (or fail a Kafka commit) at exactly that
//! step and prove that nothing is lost or duplicated
//! (tests/faults.rs, scripts/faults-long.sh, docs/reliability.md).
//!
//! Compiled in only with the `failpoints` cargo feature (the `fail`
//! crate); release builds and the Docker image have none, and every
//! function here is then an empty inline function. Tests arm them through
//! the `FAILPOINTS` environment variable of the siphon process, in the
//! `fail` crate's syntax, e.g. `FAILPOINTS="after_commit=3*off->return"`
//! crashes at the fourth commit.
//!
//! A crash is `std::process::abort()`: no unwinding, no destructors, no
//! final Kafka abort or status update — what SIGKILL does, but pinned to a
//! step.

/// A new Kafka transaction was begun; nothing of it is produced yet.
pub const BEFORE_PRODUCE: &str = "before_produce";
/// An event of the open transaction was queued for sending.
pub const MID_BATCH: &str = "mid_batch";
/// The offset record is produced, the commit not yet asked for.
pub const BEFORE_COMMIT: &str = "before_commit";
/// Crashes `return(<ms>)` milliseconds after the commit was asked for
/// (default 1 ms), while librdkafka is committing.
pub const DURING_COMMIT: &str = "during_commit";
/// The Kafka commit succeeded; the reader does not know the new flush LSN yet.
pub const AFTER_COMMIT: &str = "after_commit";
/// A standby status update acked a new flush LSN to PostgreSQL.
pub const AFTER_ACK: &str = "after_ack";
/// The Kafka commit reports a failure: with `return` before committing
/// (the transaction stays open), with `return(after)` after committing
/// (the worst case of an unknown outcome: committed, reported failed).
pub const COMMIT_FAILS: &str = "commit_fails";
/// The check that the replication slot is not in use by another instance
/// finds it free although it is not: a second instance that starts in the
/// very moment the first lets go of the slot, then fences it.
pub const SLOT_LOOKS_FREE: &str = "slot_looks_free";

/// A snapshot window waits `return(<ms>)` milliseconds after its low
/// watermark, before reading its chunk: tests signal a snapshot that is
/// certainly still in watermark windows.
pub const SLOW_WINDOW: &str = "slow_window";
/// The reader panics on a captured change (a bug's stand-in): the
/// supervisor must report the connector not ready and restart it.
pub const READER_PANICS: &str = "reader_panics";

/// Holds the configuration read from `FAILPOINTS` for the process's life.
pub struct Scenario {
    #[cfg(feature = "failpoints")]
    _inner: fail::FailScenario<'static>,
}

/// Arms the fail points named in `FAILPOINTS` (nothing without the feature).
pub fn setup() -> Scenario {
    Scenario {
        #[cfg(feature = "failpoints")]
        _inner: fail::FailScenario::setup(),
    }
}

/// Aborts the process here when fail point `name` fires.
#[inline]
pub fn crash(name: &str) {
    #[cfg(feature = "failpoints")]
    fail::eval(name, |_| abort(name));
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

/// When fail point `name` fires, aborts the process from another thread
/// `return(<ms>)` milliseconds later, while this one goes on.
#[inline]
pub fn crash_soon(name: &str) {
    #[cfg(feature = "failpoints")]
    fail::eval(name, |arg| {
        let ms = arg.and_then(|a| a.parse().ok()).unwrap_or(1);
        let name = name.to_owned();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(ms));
            abort(&name);
        });
    });
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

/// `Some(argument)` when fail point `name` fires: the caller injects the
/// failure the point is named after.
#[inline]
pub fn fires(name: &str) -> Option<String> {
    #[cfg(feature = "failpoints")]
    {
        fail::eval(name, |arg| arg.unwrap_or_default())
    }
    #[cfg(not(feature = "failpoints"))]
    {
        let _ = name;
        None
    }
}

#[cfg(feature = "failpoints")]
fn abort(name: &str) -> ! {
    eprintln!("fail point {name}: aborting");
    std::process::abort()
}
