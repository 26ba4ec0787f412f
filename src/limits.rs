//! Rate limits (token buckets from `governor`): unknown link tokens and bad
//! API keys per client IP, and requests per API key. A client that exhausts
//! a per-IP bucket is refused everything that bucket guards until it refills,
//! so guessing cannot go on by mixing in valid requests.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::HttpRequest;
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use crate::config::LimitsConfig;

type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock>;

/// A keyed bucket plus who is locked out until when.
struct Bucket<K: Hash + Eq + Clone> {
    limiter: Keyed<K>,
    locked: Mutex<HashMap<K, Instant>>,
}

impl<K: Hash + Eq + Clone> Bucket<K> {
    /// `per_minute` requests a minute with an equal burst; `None` when 0 (off).
    fn new(per_minute: u32) -> Option<Self> {
        let n = NonZeroU32::new(per_minute)?;
        Some(Bucket {
            limiter: RateLimiter::keyed(Quota::per_minute(n).allow_burst(n)),
            locked: Mutex::new(HashMap::new()),
        })
    }

    /// Seconds until `key` may try again, if it is locked out now.
    fn locked_for(&self, key: &K) -> Option<u64> {
        let locked = self.locked.lock().unwrap_or_else(|p| p.into_inner());
        let until = *locked.get(key)?;
        let left = until.checked_duration_since(Instant::now())?;
        Some(secs(left))
    }

    /// Spend one token for `key`; when none is left, lock `key` out until the
    /// bucket has one again and answer the seconds to wait.
    fn spend(&self, key: &K) -> Option<u64> {
        let clock = DefaultClock::default();
        match self.limiter.check_key(key) {
            Ok(()) => None,
            Err(not_until) => {
                let wait = not_until.wait_time_from(clock.now());
                let mut locked = self.locked.lock().unwrap_or_else(|p| p.into_inner());
                locked.insert(key.clone(), Instant::now() + wait);
                Some(secs(wait))
            }
        }
    }

    /// Forget idle keys so memory stays bounded.
    fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        let now = Instant::now();
        let mut locked = self.locked.lock().unwrap_or_else(|p| p.into_inner());
        locked.retain(|_, until| *until > now);
        locked.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.limiter.len()
    }
}

fn secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// All limits of the server.
pub struct Limits {
    bad_token: Option<Bucket<IpAddr>>,
    api: Option<Bucket<String>>,
    bad_api_key: Option<Bucket<IpAddr>>,
    trust_forwarded: bool,
}

impl Limits {
    /// Limits from `[limits]` (0 disables one).
    pub fn new(cfg: &LimitsConfig, trust_forwarded: bool) -> Self {
        Limits {
            bad_token: Bucket::new(cfg.bad_token_per_minute),
            api: Bucket::new(cfg.api_per_minute),
            bad_api_key: Bucket::new(cfg.bad_api_key_per_minute),
            trust_forwarded,
        }
    }

    /// The client's address: the peer, or the last `X-Forwarded-For` hop
    /// when forwarded headers are trusted (the one our proxy added).
    pub fn client_ip(&self, req: &HttpRequest) -> IpAddr {
        let peer = req
            .peer_addr()
            .map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
        if !self.trust_forwarded {
            return peer;
        }
        req.headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(peer)
    }

    /// Seconds to wait if this client is locked out of `/link` and `/_link`.
    pub fn token_locked(&self, ip: IpAddr) -> Option<u64> {
        self.bad_token.as_ref()?.locked_for(&ip)
    }

    /// Count an unknown link token; seconds to wait if that was one too many.
    pub fn unknown_token(&self, ip: IpAddr) -> Option<u64> {
        self.bad_token.as_ref()?.spend(&ip)
    }

    /// Seconds to wait if this client is locked out for bad API keys.
    pub fn api_key_locked(&self, ip: IpAddr) -> Option<u64> {
        self.bad_api_key.as_ref()?.locked_for(&ip)
    }

    /// Count a bad API key; seconds to wait if that was one too many.
    pub fn bad_api_key(&self, ip: IpAddr) -> Option<u64> {
        self.bad_api_key.as_ref()?.spend(&ip)
    }

    /// Count a request by API key `id`; seconds to wait if over the limit.
    pub fn api_request(&self, id: &str) -> Option<u64> {
        let bucket = self.api.as_ref()?;
        let key = id.to_owned();
        bucket.locked_for(&key).or_else(|| bucket.spend(&key))
    }

    /// Drop idle entries (called periodically).
    pub fn prune(&self) {
        for b in [&self.bad_token, &self.bad_api_key].into_iter().flatten() {
            b.prune();
        }
        if let Some(b) = &self.api {
            b.prune();
        }
    }

    /// How many clients and keys are tracked (for tests and diagnostics).
    pub fn tracked(&self) -> usize {
        [&self.bad_token, &self.bad_api_key]
            .into_iter()
            .flatten()
            .map(Bucket::len)
            .sum::<usize>()
            + self.api.as_ref().map_or(0, Bucket::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_out_after_the_burst_and_reports_a_wait() {
        let b: Bucket<u8> = Bucket::new(10).expect("on");
        for _ in 0..10 {
            assert_eq!(b.spend(&1), None);
        }
        let wait = b.spend(&1).expect("over");
        assert!((1..=7).contains(&wait), "{wait}");
        assert!(b.locked_for(&1).is_some());
        assert_eq!(b.locked_for(&2), None, "other clients are not affected");
        assert!(Bucket::<u8>::new(0).is_none(), "0 disables");
    }

    #[test]
    fn pruning_forgets_idle_clients() {
        // 60,000 a minute: a spent token is back within a millisecond.
        let b: Bucket<u32> = Bucket::new(60_000).expect("on");
        for client in 0..5_000 {
            assert_eq!(b.spend(&client), None);
        }
        assert_eq!(b.len(), 5_000);
        std::thread::sleep(Duration::from_millis(20));
        b.prune();
        assert_eq!(
            b.len(),
            0,
            "memory does not grow with every client ever seen"
        );
    }
}
