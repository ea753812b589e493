//! When a forwarding thread sleeps (`vswitch daemon --poll`). Waking a thread costs tens of
//! microseconds here, more than forwarding a frame: a thread that sleeps between the frames of
//! a request stream pays that on every request, and so does the request. Spinning costs a
//! core. So the default learns the gaps between bursts: while bursts keep coming closer
//! together than `MAX_GAP`, the thread spins through the gap (a 200 Hz or 1 kHz request
//! stream finds it awake); traffic sparser than that, or none, lets it sleep after
//! `BASE_SPIN`. Only gaps longer than `BASE_SPIN` are learned: a reply right after its
//! request is inside the base spin anyway, and would make a stream's gaps look shorter.

use std::time::Duration;

/// Spin this long after the last frame whatever the traffic: a reply to what was just
/// forwarded usually comes within it.
pub const BASE_SPIN: Duration = Duration::from_micros(200);
/// Gaps longer than this are not spun through: the thread sleeps (idle CPU stays ~0).
pub const MAX_GAP: Duration = Duration::from_millis(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PollMode {
    /// Spin through the gaps the traffic has shown to be short, sleep otherwise.
    #[default]
    Adaptive,
    /// Never sleep: a core per worker, always (lowest latency).
    Busy,
    /// Sleep as soon as there is nothing to do (least CPU, a wake-up per burst).
    Interrupt,
}

/// A thread's idle policy: how long to keep looking for work before sleeping.
#[derive(Debug)]
pub struct Idle {
    mode: PollMode,
    /// The recent gap between bursts (an average over the last few), in nanoseconds; none
    /// seen yet: sparse.
    gap_ns: Option<u64>,
}

impl Idle {
    pub fn new(mode: PollMode) -> Idle {
        Idle { mode, gap_ns: None }
    }

    /// Work came after `idle` without any (spun or slept).
    pub fn burst_after(&mut self, idle: Duration) {
        if idle < BASE_SPIN {
            return;
        }
        let g = idle.as_nanos().min(u64::MAX as u128 / 4) as u64;
        self.gap_ns = Some(self.gap_ns.map_or(g, |old| old / 4 * 3 + g / 4));
    }

    /// How long to spin from the last work before sleeping.
    pub fn spin(&self) -> Duration {
        match self.mode {
            PollMode::Busy => Duration::MAX,
            PollMode::Interrupt => Duration::ZERO,
            PollMode::Adaptive => {
                // Twice the recent gap catches the next burst of a steady stream; a gap
                // beyond reach is not worth a core.
                let Some(gap) = self.gap_ns.map(Duration::from_nanos) else { return BASE_SPIN };
                if gap <= MAX_GAP {
                    (gap * 2).max(BASE_SPIN)
                } else {
                    BASE_SPIN
                }
            }
        }
    }
}

/// `--cpus`: CPU numbers, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct CpuList(pub Vec<usize>);

pub fn parse_cpu_list(s: &str) -> Result<CpuList, String> {
    parse_cpus(s).map(CpuList)
}

/// A CPU list as `taskset -c` takes it: `0,2`, `0-3`, `0-1,3`.
pub fn parse_cpus(s: &str) -> Result<Vec<usize>, String> {
    let mut out = vec![];
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let num = |x: &str| x.trim().parse::<usize>().map_err(|_| format!("'{x}' is not a CPU number"));
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(format!("'{part}': a range goes up"));
                }
                out.extend(a..=b);
            }
            None => out.push(num(part)?),
        }
    }
    if out.is_empty() {
        return Err("an empty CPU list".into());
    }
    Ok(out)
}

/// Keep the calling thread on `cpu`.
pub fn pin_to(cpu: usize) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it; sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The CPUs this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: as in pin_to, reading the set the kernel wrote.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return vec![];
        }
        (0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &set)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_stream_is_spun_through_and_sparse_traffic_is_not() {
        let mut i = Idle::new(PollMode::Adaptive);
        assert_eq!(i.spin(), BASE_SPIN, "nothing learned yet");
        for _ in 0..8 {
            i.burst_after(Duration::from_millis(1)); // 1 kHz
        }
        assert!(i.spin() >= Duration::from_micros(1900) && i.spin() <= Duration::from_micros(2100), "{:?}", i.spin());
        for _ in 0..8 {
            i.burst_after(Duration::from_micros(20)); // the replies: not gaps
            i.burst_after(Duration::from_millis(5)); // 200 Hz
        }
        assert!(i.spin() >= Duration::from_micros(9000), "{:?}", i.spin());
        for _ in 0..8 {
            i.burst_after(Duration::from_millis(200)); // 5 Hz
        }
        assert_eq!(i.spin(), BASE_SPIN);
        assert_eq!(Idle::new(PollMode::Interrupt).spin(), Duration::ZERO);
        assert_eq!(Idle::new(PollMode::Busy).spin(), Duration::MAX);
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpus("0-2,5").unwrap(), vec![0, 1, 2, 5]);
        assert_eq!(parse_cpus("1").unwrap(), vec![1]);
        assert!(parse_cpus("3-1").is_err() && parse_cpus("x").is_err() && parse_cpus("").is_err());
    }
}
