//! Connections counted in all and per client address: the WebSocket
//! connections (`--max-connections`, `--max-connections-per-ip`) and each
//! HTTP listener's (`--max-http-connections`, `--max-http-connections-per-ip`)
//! use the same counter. A slot is held from the moment a connection is
//! accepted (or a handshake starts) and given back when it is dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The counter; [`ConnLimits::reserve`] hands out slots.
pub struct ConnLimits {
    max_total: usize,
    max_per_ip: usize,
    /// All slots held, and per address (`None`: a peer whose address is
    /// not known, counted as one address).
    counts: Mutex<(usize, HashMap<Option<IpAddr>, usize>)>,
}

/// A reserved connection slot; released when dropped. Every connection
/// holds one for its life: the address inline (not a `String`: one heap
/// chunk less per idle connection).
pub struct Slot {
    limits: Arc<ConnLimits>,
    ip: Option<IpAddr>,
}

/// Why a slot was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Full {
    Total(usize),
    PerIp(usize),
}

impl ConnLimits {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(ConnLimits { max_total, max_per_ip, counts: Mutex::new((0, HashMap::new())) })
    }

    /// A slot for a connection from `ip` (`None` when the peer's address
    /// is not known).
    pub fn reserve(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<Slot, Full> {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if c.0 >= self.max_total {
            return Err(Full::Total(self.max_total));
        }
        let n = c.1.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return Err(Full::PerIp(self.max_per_ip));
        }
        *n += 1;
        c.0 += 1;
        Ok(Slot { limits: self.clone(), ip })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.limits.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.0 -= 1;
        if let Some(n) = c.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.1.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_and_per_ip() {
        let ip = |s: &str| s.parse::<IpAddr>().ok();
        let l = ConnLimits::new(3, 2);
        let a = l.reserve(ip("1.1.1.1")).expect("first");
        let _b = l.reserve(ip("1.1.1.1")).expect("second");
        assert_eq!(l.reserve(ip("1.1.1.1")).err(), Some(Full::PerIp(2)));
        let _c = l.reserve(ip("2.2.2.2")).expect("other ip");
        assert_eq!(l.reserve(ip("3.3.3.3")).err(), Some(Full::Total(3)));
        drop(a);
        assert!(l.reserve(ip("1.1.1.1")).is_ok());
        assert_eq!(l.counts.lock().expect("lock").1.len(), 2, "an address with no slot left is forgotten");
    }

    #[test]
    fn unknown_addresses_count_as_one() {
        let l = ConnLimits::new(10, 1);
        let _a = l.reserve(None).expect("first");
        assert_eq!(l.reserve(None).err(), Some(Full::PerIp(1)));
    }
}
