//! Rate limits (governor's GCRA): per client address, per site (events and bytes) and global.
//! Operators swap the limits while the gateway runs; a swap is atomic for new requests and keeps
//! the buckets of every limit whose rate did not change. Keyed limits hold at most
//! `max_keys` keys: stale keys are dropped by `retain_recent`, and while the table is full every
//! newcomer shares one overflow bucket, so memory stays bounded whatever arrives.
//!
//! Also here: which address a request is from, given the trusted proxies.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter as Governor};
use pulse_protocol::RateLimit;

use crate::config::{IpNet, Rate, RateLimits};

/// A request refused by a limit: which one, and when to retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limited {
    /// The limit.
    pub limit: RateLimit,
    /// When the same request would pass.
    pub retry_after: Duration,
}

fn quota(rate: Rate) -> Option<Quota> {
    let per_second = NonZeroU32::new(rate.per_second)?;
    let burst = NonZeroU32::new(rate.burst.max(rate.per_second))?;
    Some(Quota::per_second(per_second).allow_burst(burst))
}

type DirectLimiter<C> = Governor<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;
type KeyedLimiter<K, C> =
    Governor<K, DashMapStateStore<K>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// The outcome of a governor check, as the time to wait.
fn outcome<C: Clock, E>(
    clock: &C,
    checked: Result<Result<(), governor::NotUntil<C::Instant>>, E>,
) -> Result<(), Duration> {
    match checked {
        Ok(Ok(())) => Ok(()),
        Ok(Err(not_until)) => Err(not_until
            .earliest_possible()
            .duration_since(clock.now())
            .into()),
        // More than a whole burst: never conforms. Config checks keep bursts above the
        // largest request, so this is a misconfiguration; answer with a full period.
        Err(_) => Err(Duration::from_secs(1)),
    }
}

/// One unkeyed limit.
#[derive(Debug)]
struct Direct<C: Clock> {
    rate: Rate,
    limiter: DirectLimiter<C>,
}

impl<C: Clock + Clone> Direct<C> {
    fn new(rate: Rate, clock: &C) -> Option<Self> {
        Some(Self {
            rate,
            limiter: Governor::direct_with_clock(quota(rate)?, clock.clone()),
        })
    }

    fn check(&self, n: u32, clock: &C) -> Result<(), Duration> {
        let Some(n) = NonZeroU32::new(n) else {
            return Ok(());
        };
        outcome(clock, self.limiter.check_n(n))
    }
}

/// One limit per key, with a bounded key table and a shared overflow bucket.
#[derive(Debug)]
struct Keyed<K: Hash + Eq + Clone, C: Clock> {
    rate: Rate,
    limiter: KeyedLimiter<K, C>,
    overflow: DirectLimiter<C>,
    max_keys: usize,
    /// When `retain_recent` last ran because the table was full (ns since `started`).
    last_sweep_ns: AtomicU64,
    started: C::Instant,
}

impl<K: Hash + Eq + Clone, C: Clock + Clone> Keyed<K, C> {
    fn new(rate: Rate, max_keys: usize, clock: &C) -> Option<Self> {
        let q = quota(rate)?;
        Some(Self {
            rate,
            limiter: Governor::dashmap_with_clock(q, clock.clone()),
            overflow: Governor::direct_with_clock(q, clock.clone()),
            max_keys,
            last_sweep_ns: AtomicU64::new(0),
            started: clock.now(),
        })
    }

    fn check(&self, key: &K, n: u32, clock: &C) -> Result<(), Duration> {
        let Some(n) = NonZeroU32::new(n) else {
            return Ok(());
        };
        if self.limiter.len() >= self.max_keys {
            // Full: sweep stale keys, at most every 100 ms (the sweep walks the table).
            let now_ns = u64::from(clock.now().duration_since(self.started));
            let last = self.last_sweep_ns.load(Relaxed);
            if now_ns >= last + 100_000_000
                && self
                    .last_sweep_ns
                    .compare_exchange(last, now_ns, Relaxed, Relaxed)
                    .is_ok()
            {
                self.limiter.retain_recent();
            }
        }
        if self.limiter.len() < self.max_keys {
            outcome(clock, self.limiter.check_key_n(key, n))
        } else {
            outcome(clock, self.overflow.check_n(n))
        }
    }

    fn sweep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// Reuses `old` when it has the same rate (its buckets carry over), else builds anew.
fn reuse<T>(
    old: Option<&Arc<T>>,
    rate: Rate,
    rate_of: impl Fn(&T) -> Rate,
    make: impl FnOnce() -> Option<T>,
) -> Option<Arc<T>> {
    match old {
        Some(o) if rate_of(o) == rate => Some(Arc::clone(o)),
        _ => make().map(Arc::new),
    }
}

/// One generation of limits; swapped whole.
#[derive(Debug)]
struct Set<C: Clock> {
    /// The limits as configured (for the whole cluster).
    limits: RateLimits,
    /// Gateways sharing them (1 alone); the buckets hold this gateway's share.
    share: u32,
    ip: Option<Arc<Keyed<IpAddr, C>>>,
    site_events: Option<Arc<Keyed<Arc<str>, C>>>,
    site_bytes: Option<Arc<Keyed<Arc<str>, C>>>,
    global: Option<Arc<Direct<C>>>,
}

impl<C: Clock + Clone> Set<C> {
    fn build(
        configured: &RateLimits,
        share: u32,
        max_body_bytes: usize,
        old: Option<&Self>,
        clock: &C,
    ) -> Self {
        let limits = &configured.share(share, max_body_bytes);
        let max = limits.max_keys;
        let same_max = old.is_some_and(|o| o.limits.max_keys == max);
        let old = old.filter(|_| same_max);
        Self {
            share,
            ip: reuse(
                old.and_then(|o| o.ip.as_ref()),
                limits.ip_requests,
                |k| k.rate,
                || Keyed::new(limits.ip_requests, max, clock),
            ),
            site_events: reuse(
                old.and_then(|o| o.site_events.as_ref()),
                limits.site_events,
                |k| k.rate,
                || Keyed::new(limits.site_events, max, clock),
            ),
            site_bytes: reuse(
                old.and_then(|o| o.site_bytes.as_ref()),
                limits.site_bytes,
                |k| k.rate,
                || Keyed::new(limits.site_bytes, max, clock),
            ),
            global: reuse(
                old.and_then(|o| o.global.as_ref()),
                limits.global_requests,
                |d| d.rate,
                || Direct::new(limits.global_requests, clock),
            ),
            limits: configured.clone(),
        }
    }
}

/// The gateway's rate limits, on clock `C` (the real one but in tests).
#[derive(Debug)]
pub struct RateLimiter<C: Clock = DefaultClock> {
    current: RwLock<Arc<Set<C>>>,
    clock: C,
    /// `limits.max_body_bytes`: a share's byte burst never drops below it.
    max_body_bytes: usize,
}

impl RateLimiter {
    /// Limits as configured, on the real clock, for requests of at most `max_body_bytes`.
    pub fn new(limits: &RateLimits, max_body_bytes: usize) -> Self {
        Self::with_clock(limits, max_body_bytes, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RateLimiter<C> {
    /// Limits as configured, on `clock`.
    pub fn with_clock(limits: &RateLimits, max_body_bytes: usize, clock: C) -> Self {
        Self {
            current: RwLock::new(Arc::new(Set::build(
                limits,
                1,
                max_body_bytes,
                None,
                &clock,
            ))),
            clock,
            max_body_bytes,
        }
    }

    /// Gateways sharing the limits (1 when alone).
    pub fn share(&self) -> u32 {
        self.set().share
    }

    /// Enforces this gateway's share of the limits among `gateways` (Kafka mode, from the
    /// live gateways on the control topic); limits whose share did not change keep their
    /// buckets.
    pub fn set_share(&self, gateways: u32) {
        let mut current = match self.current.write() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        let gateways = gateways.max(1);
        if current.share != gateways {
            let limits = current.limits.clone();
            let next = Set::build(
                &limits,
                gateways,
                self.max_body_bytes,
                Some(&current),
                &self.clock,
            );
            *current = Arc::new(next);
        }
    }

    fn set(&self) -> Arc<Set<C>> {
        match self.current.read() {
            Ok(set) => Arc::clone(&set),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> RateLimits {
        self.set().limits.clone()
    }

    /// Replaces the limits for every request from now on (checked by the caller).
    pub fn replace(&self, limits: &RateLimits) {
        let mut current = match self.current.write() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        let next = Set::build(
            limits,
            current.share,
            self.max_body_bytes,
            Some(&current),
            &self.clock,
        );
        *current = Arc::new(next);
    }

    /// Checks one request from `ip` against the global and per-address limits.
    pub fn check_request(&self, ip: IpAddr) -> Result<(), Limited> {
        let set = self.set();
        let refused = |limit| move |retry_after| Limited { limit, retry_after };
        if let Some(global) = &set.global {
            global
                .check(1, &self.clock)
                .map_err(refused(RateLimit::GlobalRequests))?;
        }
        if let Some(per_ip) = &set.ip {
            per_ip
                .check(&ip, 1, &self.clock)
                .map_err(refused(RateLimit::IpRequests))?;
        }
        Ok(())
    }

    /// Checks `bytes` for `site`: a body as sent, or what its dead letters take in the store.
    pub fn check_bytes(&self, site: &Arc<str>, bytes: usize) -> Result<(), Limited> {
        self.check_site(site, RateLimit::SiteBytes, bytes)
    }

    /// Checks `events` events for `site`.
    pub fn check_events(&self, site: &Arc<str>, events: usize) -> Result<(), Limited> {
        self.check_site(site, RateLimit::SiteEvents, events)
    }

    fn check_site(&self, site: &Arc<str>, limit: RateLimit, n: usize) -> Result<(), Limited> {
        let set = self.set();
        let keyed = match limit {
            RateLimit::SiteEvents => &set.site_events,
            _ => &set.site_bytes,
        };
        let Some(keyed) = keyed else {
            return Ok(());
        };
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        keyed
            .check(site, n, &self.clock)
            .map_err(|retry_after| Limited { limit, retry_after })
    }

    /// Drops keys whose buckets are full again (they are indistinguishable from new ones).
    /// The gateway calls it periodically.
    pub fn sweep(&self) {
        let set = self.set();
        if let Some(k) = &set.ip {
            k.sweep();
        }
        if let Some(k) = &set.site_events {
            k.sweep();
        }
        if let Some(k) = &set.site_bytes {
            k.sweep();
        }
    }

    /// Client addresses tracked now (for tests and metrics).
    pub fn tracked_addresses(&self) -> usize {
        self.set().ip.as_ref().map_or(0, |k| k.limiter.len())
    }
}

/// The client's address: the socket peer, unless the peer is a trusted proxy; then the
/// `Forwarded` (RFC 7239) or else `X-Forwarded-For` chain is walked from the nearest hop back,
/// skipping trusted proxies, and the first untrusted address is the client. Headers from an
/// untrusted peer are ignored; an unparseable hop ends the walk at the last trusted address.
pub fn client_ip(
    peer: IpAddr,
    forwarded: Option<&str>,
    x_forwarded_for: Option<&str>,
    trusted: &[IpNet],
) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let hops: Vec<&str> = if let Some(fwd) = forwarded {
        fwd.split(',')
            .flat_map(|element| element.split(';'))
            .filter_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                k.trim().eq_ignore_ascii_case("for").then_some(v.trim())
            })
            .collect()
    } else if let Some(xff) = x_forwarded_for {
        xff.split(',').map(str::trim).collect()
    } else {
        return peer;
    };
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Some(ip) = parse_hop(hop) else {
            return client;
        };
        client = ip;
        if !is_trusted(ip) {
            return ip;
        }
    }
    client
}

/// `192.0.2.1`, `192.0.2.1:443`, `"[2001:db8::1]:443"`, `2001:db8::1`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim().trim_matches('"');
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Some(rest) = hop.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    let (host, port) = hop.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn limiter(limits: &RateLimits) -> (RateLimiter<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (
            RateLimiter::with_clock(limits, 65_536, clock.clone()),
            clock,
        )
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter()
            .map(|s| IpNet::try_from((*s).to_owned()).unwrap())
            .collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peers_cannot_spoof() {
        let trusted = nets(&["10.0.0.0/8"]);
        let got = client_ip(
            ip("203.0.113.9"),
            Some("for=1.2.3.4"),
            Some("5.6.7.8"),
            &trusted,
        );
        assert_eq!(got, ip("203.0.113.9"));
    }

    #[test]
    fn trusted_proxies_are_walked_from_the_nearest_hop() {
        let trusted = nets(&["10.0.0.0/8", "192.168.1.1"]);
        // client, then a trusted proxy; the spoofed first entry is beyond the client.
        let xff = "6.6.6.6, 198.51.100.7, 10.1.1.1";
        assert_eq!(
            client_ip(ip("10.0.0.2"), None, Some(xff), &trusted),
            ip("198.51.100.7")
        );
        let fwd = r#"for=6.6.6.6, for="[2001:db8::7]:4711";proto=https, for=192.168.1.1:80"#;
        assert_eq!(
            client_ip(ip("10.0.0.2"), Some(fwd), Some("9.9.9.9"), &trusted),
            ip("2001:db8::7")
        );
        // No header: the proxy itself.
        assert_eq!(
            client_ip(ip("10.0.0.2"), None, None, &trusted),
            ip("10.0.0.2")
        );
        // Garbage ends the walk at the last trusted hop.
        assert_eq!(
            client_ip(ip("10.0.0.2"), Some("for=unknown"), None, &trusted),
            ip("10.0.0.2")
        );
        // Every hop trusted: the farthest.
        assert_eq!(
            client_ip(ip("10.0.0.2"), None, Some("10.9.9.9"), &trusted),
            ip("10.9.9.9")
        );
    }

    #[test]
    fn per_ip_limit_refuses_past_the_burst_and_names_itself() {
        let limits = RateLimits {
            ip_requests: Rate::new(1, 3),
            ..RateLimits::default()
        };
        let (rl, clock) = limiter(&limits);
        for _ in 0..3 {
            rl.check_request(ip("192.0.2.1")).unwrap();
        }
        let refused = rl.check_request(ip("192.0.2.1")).unwrap_err();
        assert_eq!(refused.limit, RateLimit::IpRequests);
        assert_eq!(refused.retry_after, Duration::from_secs(1));
        // Another address has its own bucket.
        rl.check_request(ip("192.0.2.2")).unwrap();
        // A second later the bucket holds one request again.
        clock.advance(Duration::from_millis(999));
        assert!(rl.check_request(ip("192.0.2.1")).is_err());
        clock.advance(Duration::from_millis(1));
        rl.check_request(ip("192.0.2.1")).unwrap();
    }

    #[test]
    fn site_limits_count_events_and_bytes() {
        let limits = RateLimits {
            site_events: Rate::new(100, 150),
            site_bytes: Rate::new(1000, 1000),
            ..RateLimits::default()
        };
        let (rl, _) = limiter(&limits);
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        rl.check_events(&a, 100).unwrap();
        assert_eq!(
            rl.check_events(&a, 100).unwrap_err().limit,
            RateLimit::SiteEvents
        );
        rl.check_events(&b, 100).unwrap();
        rl.check_bytes(&a, 600).unwrap();
        assert_eq!(
            rl.check_bytes(&a, 600).unwrap_err().limit,
            RateLimit::SiteBytes
        );
    }

    #[test]
    fn global_limit_and_off() {
        let limits = RateLimits {
            ip_requests: Rate::OFF,
            global_requests: Rate::new(2, 2),
            ..RateLimits::default()
        };
        let (rl, _) = limiter(&limits);
        rl.check_request(ip("192.0.2.1")).unwrap();
        rl.check_request(ip("192.0.2.2")).unwrap();
        assert_eq!(
            rl.check_request(ip("192.0.2.3")).unwrap_err().limit,
            RateLimit::GlobalRequests
        );
        assert_eq!(rl.tracked_addresses(), 0);
    }

    #[test]
    fn three_gateways_each_enforce_a_third() {
        let limits = RateLimits {
            ip_requests: Rate::OFF,
            global_requests: Rate::new(30, 30),
            site_events: Rate::new(300, 600),
            ..RateLimits::default()
        };
        let (rl, clock) = limiter(&limits);
        rl.set_share(3);
        assert_eq!(rl.share(), 3);
        // The configured limits are what operators see and change; the buckets hold a third.
        assert_eq!(rl.limits(), limits);
        for _ in 0..10 {
            rl.check_request(ip("192.0.2.1")).unwrap();
        }
        assert_eq!(
            rl.check_request(ip("192.0.2.1")).unwrap_err().limit,
            RateLimit::GlobalRequests
        );
        // A third of a 600-event burst is 200; a full batch still fits a share.
        let a: Arc<str> = "a".into();
        rl.check_events(&a, 200).unwrap();
        assert!(rl.check_events(&a, 1).is_err());
        // Alone again: the whole limit, from a fresh bucket.
        rl.set_share(1);
        clock.advance(Duration::from_secs(1));
        for _ in 0..30 {
            rl.check_request(ip("192.0.2.1")).unwrap();
        }
        assert!(rl.check_request(ip("192.0.2.1")).is_err());
        // A share never drops a burst below one request's needs.
        let tiny = RateLimits {
            site_events: Rate::new(100, 100),
            site_bytes: Rate::new(65_536, 65_536),
            ..RateLimits::default()
        }
        .share(8, 65_536);
        assert_eq!(tiny.site_events, Rate::new(13, 100));
        assert_eq!(tiny.site_bytes, Rate::new(8_192, 65_536));
        assert_eq!(tiny.ip_requests, Rate::new(13, 63));
    }

    #[test]
    fn replacing_keeps_unchanged_buckets() {
        let limits = RateLimits {
            ip_requests: Rate::new(1, 1),
            site_events: Rate::new(10, 10),
            ..RateLimits::default()
        };
        let (rl, _) = limiter(&limits);
        let a: Arc<str> = "a".into();
        rl.check_request(ip("192.0.2.1")).unwrap();
        rl.check_events(&a, 10).unwrap();
        rl.replace(&RateLimits {
            site_events: Rate::new(20, 20),
            ..limits.clone()
        });
        // The per-address bucket carried over (still empty); the site bucket is new.
        assert!(rl.check_request(ip("192.0.2.1")).is_err());
        rl.check_events(&a, 20).unwrap();
        assert_eq!(rl.limits().site_events, Rate::new(20, 20));
    }

    #[test]
    fn the_key_table_is_bounded() {
        let limits = RateLimits {
            ip_requests: Rate::new(1000, 1000),
            max_keys: 1000,
            ..RateLimits::default()
        };
        let (rl, clock) = limiter(&limits);
        for i in 0..100_000u32 {
            let addr = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = rl.check_request(addr);
        }
        assert!(rl.tracked_addresses() <= 1000, "{}", rl.tracked_addresses());
        // Once their buckets refill, the sweep forgets them.
        clock.advance(Duration::from_millis(1100));
        rl.sweep();
        assert_eq!(rl.tracked_addresses(), 0);
    }
}
