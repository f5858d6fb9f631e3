//! `[limits]` and `[rate_limits]`, with the address ranges `trusted_proxies` takes.

use super::*;

/// `[limits]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest request body as sent (compressed), in bytes. Default 65536 (64 KiB).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Largest request body after decompression, in bytes; decoding stops there. Default 524288.
    #[serde(default = "default_max_decoded")]
    pub max_decoded_bytes: usize,
    /// Time allowed for a request's headers to arrive, in ms. Default 10000.
    #[serde(default = "default_header_timeout")]
    pub header_read_timeout_ms: Millis,
    /// Time allowed for a request's body to arrive, in ms. Default 10000.
    #[serde(default = "default_body_timeout")]
    pub body_timeout_ms: Millis,
    /// Time allowed to make a batch durable before answering 503, in ms. Default 5000.
    #[serde(default = "default_store_deadline")]
    pub store_deadline_ms: Millis,
    /// Time allowed for the scorer before a fallback decision, in ms. Default 50. A reader in
    /// memory that nothing holds is scored on the request's thread without it (no IO, no
    /// waiting); the deadline bounds the others.
    #[serde(default = "default_decision_deadline")]
    pub decision_deadline_ms: Millis,
}

fn default_max_body() -> usize {
    pulse_protocol::DEFAULT_MAX_BODY_BYTES
}
fn default_max_decoded() -> usize {
    pulse_protocol::DEFAULT_MAX_DECODED_BYTES
}
fn default_header_timeout() -> Millis {
    Millis::from_ms(10_000)
}
fn default_body_timeout() -> Millis {
    Millis::from_ms(10_000)
}
fn default_store_deadline() -> Millis {
    Millis::from_ms(5_000)
}
fn default_decision_deadline() -> Millis {
    Millis::from_ms(50)
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: default_max_body(),
            max_decoded_bytes: default_max_decoded(),
            header_read_timeout_ms: default_header_timeout(),
            body_timeout_ms: default_body_timeout(),
            store_deadline_ms: default_store_deadline(),
            decision_deadline_ms: default_decision_deadline(),
        }
    }
}

/// An address block (`10.0.0.0/8`, `::1/128`), or one address.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Whether `ip` lies in this block (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl TryFrom<String> for IpNet {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        let (addr, prefix) = text
            .split_once('/')
            .map_or((text.as_str(), None), |(a, p)| (a, Some(p)));
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an address or CIDR block"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?} has a bad prefix length"))?,
        };
        Ok(Self { addr, prefix })
    }
}

impl From<IpNet> for String {
    fn from(net: IpNet) -> Self {
        format!("{}/{}", net.addr, net.prefix)
    }
}

/// A token bucket: `per_second` sustained, up to `burst` at once. `per_second = 0` turns the
/// limit off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Sustained rate, per second; 0 means unlimited.
    pub per_second: u32,
    /// Largest burst; at least `per_second` when the limit is on.
    pub burst: u32,
}

impl Rate {
    /// A rate of `per_second` with bursts of `burst`.
    pub const fn new(per_second: u32, burst: u32) -> Self {
        Self { per_second, burst }
    }

    /// No limit.
    pub const OFF: Self = Self::new(0, 0);

    /// Whether the limit applies.
    pub fn is_on(&self) -> bool {
        self.per_second > 0
    }
}

/// `[rate_limits]`: operators change these while the gateway runs (admin API, SIGHUP).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimits {
    /// Requests per second from one client address. Default 100/s, bursts of 500.
    pub ip_requests: Rate,
    /// Events per second for one site. Default 20000/s, bursts of 40000.
    pub site_events: Rate,
    /// Body bytes (as sent) per second for one site. Default 20 MiB/s, bursts of 40 MiB.
    pub site_bytes: Rate,
    /// Requests per second to the whole gateway. Default 0 (off).
    pub global_requests: Rate,
    /// Distinct client addresses (and sites) tracked at once; past it the least recently seen
    /// are forgotten and newcomers share one bucket until room frees. Default 100000.
    pub max_keys: usize,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            ip_requests: Rate::new(100, 500),
            site_events: Rate::new(20_000, 40_000),
            site_bytes: Rate::new(20 << 20, 40 << 20),
            global_requests: Rate::OFF,
            max_keys: 100_000,
        }
    }
}

/// The most keys the rate limiter may be asked to track (and what the config file can hold).
pub const MAX_RATE_LIMIT_KEYS: usize = 100_000_000;

impl RateLimits {
    /// The rate of one limit.
    pub fn rate(&self, limit: RateLimit) -> Rate {
        match limit {
            RateLimit::IpRequests => self.ip_requests,
            RateLimit::SiteEvents => self.site_events,
            RateLimit::SiteBytes => self.site_bytes,
            RateLimit::GlobalRequests => self.global_requests,
        }
    }

    /// This gateway's share when `gateways` enforce these limits together (Kafka mode counts
    /// the live ones on the control topic): every rate and burst divided by `gateways`, rounded
    /// up, so that with an even spread of traffic the cluster admits what one gateway would.
    /// Bursts stay at least what one request needs (a full batch of events, the largest body):
    /// a share never refuses a request that one gateway would pass. `max_keys` is per gateway.
    pub fn share(&self, gateways: u32, max_body_bytes: usize) -> Self {
        let n = gateways.max(1);
        let part = |r: Rate, floor: u32| {
            if !r.is_on() || n == 1 {
                return r;
            }
            let per_second = r.per_second.div_ceil(n);
            Rate::new(per_second, r.burst.div_ceil(n).max(per_second).max(floor))
        };
        let events = pulse_protocol::MAX_EVENTS_PER_BATCH as u32;
        let body = u32::try_from(max_body_bytes).unwrap_or(u32::MAX);
        Self {
            ip_requests: part(self.ip_requests, 1),
            site_events: part(self.site_events, events),
            site_bytes: part(self.site_bytes, body),
            global_requests: part(self.global_requests, 1),
            max_keys: self.max_keys,
        }
    }

    /// Every problem with these limits, given the largest body a request may have.
    pub fn problems(&self, max_body_bytes: usize) -> Vec<String> {
        let mut problems = Vec::new();
        let events = pulse_protocol::MAX_EVENTS_PER_BATCH as u32;
        if self.site_events.is_on()
            && self.site_events.burst.max(self.site_events.per_second) < events
        {
            problems.push(format!(
                "rate_limits.site_events.burst must be at least {events} (a full batch), or the limit off"
            ));
        }
        let body = u32::try_from(max_body_bytes).unwrap_or(u32::MAX);
        if self.site_bytes.is_on() && self.site_bytes.burst.max(self.site_bytes.per_second) < body {
            problems.push(format!(
                "rate_limits.site_bytes.burst must be at least limits.max_body_bytes ({body}), or the limit off"
            ));
        }
        for limit in RateLimit::ALL {
            let rate = self.rate(limit);
            if rate.is_on() && rate.burst < rate.per_second {
                problems.push(format!(
                    "rate_limits.{}.burst ({}) must be at least per_second ({})",
                    limit.as_str(),
                    rate.burst,
                    rate.per_second
                ));
            }
        }
        if self.max_keys == 0 || self.max_keys > MAX_RATE_LIMIT_KEYS {
            problems.push(format!(
                "rate_limits.max_keys must be 1 to {MAX_RATE_LIMIT_KEYS}, not {}",
                self.max_keys
            ));
        }
        problems
    }
}
