//! A coarse clock for MAC ages: whole seconds since the process started.

use std::sync::OnceLock;
use std::time::Instant;

static START: OnceLock<Instant> = OnceLock::new();

pub fn now() -> u32 {
    START.get_or_init(Instant::now).elapsed().as_secs() as u32
}
