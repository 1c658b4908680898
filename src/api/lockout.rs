//! Failed-token rate limiting: a client address that presents a wrong or missing token
//! [`MAX_FAILURES`] times within [`WINDOW`] is refused (429) for [`LOCKOUT`], whatever it
//! presents next, so tokens cannot be guessed at line rate. Bounded: at most [`MAX_CLIENTS`]
//! addresses are tracked; beyond that the oldest entry is dropped (counted).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed in a window.
pub const MAX_FAILURES: u32 = 10;
/// The window failures are counted in.
pub const WINDOW: Duration = Duration::from_secs(60);
/// How long a client is refused after too many failures.
pub const LOCKOUT: Duration = Duration::from_secs(60);
/// Client addresses tracked at most.
pub const MAX_CLIENTS: usize = 10_000;

/// One client's state: (window start, failures in it, locked until).
type Client = (Instant, u32, Option<Instant>);

/// Per-address failure counts.
#[derive(Debug, Default)]
pub struct Lockout {
    clients: Mutex<HashMap<IpAddr, Client>>,
}

impl Lockout {
    /// Whether `ip` is locked out at `now`.
    pub fn locked(&self, ip: IpAddr, now: Instant) -> bool {
        let clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients
            .get(&ip)
            .and_then(|(_, _, until)| *until)
            .is_some_and(|until| now < until)
    }

    /// Records a failure of `ip`; true when it is now locked out.
    pub fn fail(&self, ip: IpAddr, now: Instant) -> bool {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if !clients.contains_key(&ip) && clients.len() >= MAX_CLIENTS {
            if let Some(oldest) = clients.iter().min_by_key(|(_, v)| v.0).map(|(k, _)| *k) {
                clients.remove(&oldest);
            }
        }
        let entry = clients.entry(ip).or_insert((now, 0, None));
        if now.duration_since(entry.0) > WINDOW {
            *entry = (now, 0, None);
        }
        entry.1 += 1;
        if entry.1 >= MAX_FAILURES {
            entry.2 = Some(now + LOCKOUT);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_failures_lock_a_client_out_for_a_minute() {
        let l = Lockout::default();
        let ip: IpAddr = [203, 0, 113, 5].into();
        let other: IpAddr = [203, 0, 113, 6].into();
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES - 1 {
            assert!(!l.fail(ip, t0));
        }
        assert!(!l.locked(ip, t0));
        assert!(l.fail(ip, t0));
        assert!(l.locked(ip, t0 + Duration::from_secs(30)));
        assert!(!l.locked(other, t0));
        assert!(!l.locked(ip, t0 + LOCKOUT + Duration::from_secs(1)));
    }
}
