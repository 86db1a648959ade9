//! A per-client rate limit for the connect pages a person's browser opens without a bearer token
//! (`authorize`, `redirect`, `choose`), and the rule for which address a request comes from.
//!
//! The limit is a GCRA (a token bucket kept as one "theoretical arrival time" per client): a
//! client may send `burst` requests at once, then one every `60 / per_minute` seconds. An entry
//! whose arrival time has passed is the same as no entry, so idle entries are dropped freely and
//! the table stays small; it never holds more than [`MAX_CLIENTS`] addresses.
//!
//! The client is the TCP peer. Only when the peer is a configured trusted proxy is
//! `X-Forwarded-For` read, right to left, skipping further trusted proxies: the first address not
//! trusted is the client. Entries to its left were written by the client itself and are ignored.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use model::SharedClock;

use crate::error::ApiError;

/// At most this many client addresses are tracked. When every one of them is inside its window,
/// a new address is let through untracked rather than shut out (and a warning is logged).
pub const MAX_CLIENTS: usize = 100_000;

/// Idle entries are swept at most this often (microseconds of the app's clock).
const SWEEP_EVERY_US: i64 = 60_000_000;

const US_PER_MINUTE: u64 = 60_000_000;

/// How many requests one client address may make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained rate.
    pub per_minute: u32,
    /// Requests allowed at once (the bucket's size).
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self { per_minute: 30, burst: 20 }
    }
}

/// An IP network (`10.0.0.0/8`, `fd00::/8`; a bare address is a /32 or /128; host bits are
/// cleared), on the `ipnet` crate reqwest already brings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet(ipnet::IpNet);

/// A `trusted_proxies` entry that is neither an IP address nor a CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IP address or CIDR (such as 10.0.0.0/8)")]
pub struct InvalidNet(pub String);

impl FromStr for IpNet {
    type Err = InvalidNet;
    fn from_str(s: &str) -> Result<Self, InvalidNet> {
        let t = s.trim();
        let net = match t.split_once('/') {
            // ipnet reads the prefix leniently (`/+8`): only digits are a prefix here.
            Some((_, p)) if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) => None,
            Some(_) => t.parse::<ipnet::IpNet>().ok(),
            None => t.parse::<IpAddr>().ok().map(ipnet::IpNet::from),
        };
        net.map(|n| Self(n.trunc())).ok_or_else(|| InvalidNet(s.to_owned()))
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl IpNet {
    /// Whether `ip` is in the network (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip.to_canonical())
    }
}

/// The proxies allowed to say, in `X-Forwarded-For`, whom they forward for. Empty by default:
/// then the TCP peer is the client and the header is ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self(nets)
    }

    /// Parse a list of addresses and CIDRs.
    pub fn parse<S: AsRef<str>>(entries: impl IntoIterator<Item = S>) -> Result<Self, InvalidNet> {
        entries.into_iter().map(|e| e.as_ref().parse()).collect::<Result<Vec<_>, _>>().map(Self)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The client a request comes from: the peer, unless the peer is trusted; then the
    /// right-most `X-Forwarded-For` entry that is not a trusted proxy. An entry that is not an
    /// address stops the walk at the trusted hop that passed it on; when every entry is trusted,
    /// the left-most one is the client.
    pub fn client_addr(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.contains(client) {
            return client;
        }
        // A line that is not text cannot be parsed: it stops the walk like any other bad entry.
        let values: Vec<&str> = headers.get_all("x-forwarded-for").iter().map(|v| v.to_str().unwrap_or("?")).collect();
        let joined = values.join(",");
        for entry in joined.rsplit(',').map(str::trim).filter(|e| !e.is_empty()) {
            let Some(hop) = parse_forwarded(entry) else { return client };
            client = hop;
            if !self.contains(hop) {
                break;
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an address, optionally with a port (`1.2.3.4:5`, `[::1]:5`) or
/// in brackets.
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    let ip = entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| entry.strip_prefix('[')?.strip_suffix(']')?.parse().ok())?;
    Some(ip.to_canonical())
}

/// What one request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Over the limit: the next request is allowed after this many seconds (at least 1).
    Deny {
        retry_after_secs: u64,
    },
}

#[derive(Debug)]
struct Table {
    /// Theoretical arrival time per client (microseconds of the app's clock).
    tats: HashMap<IpAddr, i64>,
    next_sweep: i64,
    /// When the table was last found full (so a full table is swept at most once a second).
    last_full_sweep: Option<i64>,
}

/// The GCRA state of every client seen recently.
#[derive(Debug)]
pub struct Limiter {
    /// Time between two requests at the sustained rate.
    interval_us: i64,
    /// `burst` intervals: how far ahead of now a client's arrival time may run.
    window_us: i64,
    capacity: usize,
    table: Mutex<Table>,
}

impl Limiter {
    pub fn new(limit: RateLimit) -> Self {
        Self::with_capacity(limit, MAX_CLIENTS)
    }

    pub fn with_capacity(limit: RateLimit, capacity: usize) -> Self {
        let interval = (US_PER_MINUTE / u64::from(limit.per_minute.max(1))).max(1);
        let interval_us = i64::try_from(interval).unwrap_or(i64::MAX);
        let window_us = interval_us.saturating_mul(i64::from(limit.burst.max(1)));
        Self {
            interval_us,
            window_us,
            capacity: capacity.max(1),
            table: Mutex::new(Table { tats: HashMap::new(), next_sweep: i64::MIN, last_full_sweep: None }),
        }
    }

    /// The bucket key of an address: IPv6 clients usually hold a whole /64, so they share one.
    pub fn key(ip: IpAddr) -> IpAddr {
        match ip.to_canonical() {
            v4 @ IpAddr::V4(_) => v4,
            IpAddr::V6(v6) => ipnet::Ipv6Net::new(v6, 64).map(|n| IpAddr::V6(n.network())).unwrap_or(IpAddr::V6(v6)),
        }
    }

    /// Count one request from `client` at `now_us` (microseconds; any epoch, the same each call).
    pub fn check(&self, client: IpAddr, now_us: i64) -> Decision {
        let key = Self::key(client);
        let mut t = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if now_us >= t.next_sweep {
            t.tats.retain(|_, tat| *tat > now_us);
            t.next_sweep = now_us.saturating_add(SWEEP_EVERY_US);
        }
        let known = t.tats.get(&key).copied();
        // A clock stepped backwards must not shut anyone out for longer than one window.
        let tat = known.map_or(now_us, |tat| tat.clamp(now_us, now_us.saturating_add(self.window_us)));
        let next = tat.saturating_add(self.interval_us);
        let ahead = next - now_us;
        if ahead > self.window_us {
            let wait_us = u64::try_from(ahead - self.window_us).unwrap_or(0);
            return Decision::Deny { retry_after_secs: wait_us.div_ceil(1_000_000).max(1) };
        }
        if known.is_none() && t.tats.len() >= self.capacity {
            let swept_recently = t.last_full_sweep.is_some_and(|at| now_us - at < 1_000_000);
            if !swept_recently {
                t.tats.retain(|_, tat| *tat > now_us);
                t.last_full_sweep = Some(now_us);
            }
            if t.tats.len() >= self.capacity {
                tracing::warn!(
                    tracked = t.tats.len(),
                    "rate-limit table full of active clients; letting a new client through untracked"
                );
                return Decision::Allow;
            }
        }
        t.tats.insert(key, next);
        Decision::Allow
    }

    /// How many clients are tracked (tests, diagnostics).
    pub fn tracked(&self) -> usize {
        self.table.lock().unwrap_or_else(PoisonError::into_inner).tats.len()
    }
}

/// What the connect-page limit needs: the shared table, the proxy rule and the app's clock.
#[derive(Debug, Clone)]
pub struct ConnectGuard {
    pub limiter: Arc<Limiter>,
    pub proxies: Arc<TrustedProxies>,
    pub clock: SharedClock,
}

/// Middleware: count the request against its client's bucket; over the limit, answer 429 with
/// `Retry-After` — an HTML page for a browser (its `Accept` names `text/html`), else
/// problem+json.
pub async fn limit_connect(State(guard): State<ConnectGuard>, req: Request, next: Next) -> Response {
    // Served without connect info (a wiring mistake): every client shares one bucket.
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    let client = guard.proxies.client_addr(peer, req.headers());
    let now_us = guard.clock.now().timestamp_micros();
    match guard.limiter.check(client, now_us) {
        Decision::Allow => next.run(req).await,
        Decision::Deny { retry_after_secs } => {
            let route =
                req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
            metrics::counter!("tidegate_rate_limited_total", "route" => route.clone()).increment(1);
            tracing::debug!(%client, route, retry_after_secs, "connect request over the rate limit");
            too_many(req.headers(), retry_after_secs)
        }
    }
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|m| m.trim().to_ascii_lowercase().starts_with("text/html")))
}

/// The 429 answer: a page for people, problem+json for programs; `Retry-After` on both.
pub fn too_many(headers: &HeaderMap, retry_after_secs: u64) -> Response {
    if !wants_html(headers) {
        return ApiError::RateLimited { retry_after_secs }.into_response();
    }
    let wait = if retry_after_secs == 1 { "a second".to_owned() } else { format!("{retry_after_secs} seconds") };
    let mut resp = crate::pages::problem(
        StatusCode::TOO_MANY_REQUESTS,
        "Please wait a moment",
        "There were too many attempts to connect from your network in a short time.",
        &format!("Nothing was changed. Wait {wait}, then go back and try again."),
    );
    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: i64 = 1_000_000;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn burst_then_one_per_interval() {
        // 60 a minute: one a second once the burst of 3 is spent.
        let l = Limiter::new(RateLimit { per_minute: 60, burst: 3 });
        let a = ip("192.0.2.1");
        let t0 = 1_000 * SEC;
        for _ in 0..3 {
            assert_eq!(l.check(a, t0), Decision::Allow);
        }
        assert_eq!(l.check(a, t0), Decision::Deny { retry_after_secs: 1 });
        assert_eq!(l.check(a, t0 + SEC / 2), Decision::Deny { retry_after_secs: 1 }, "half a token is not enough");
        assert_eq!(l.check(a, t0 + SEC), Decision::Allow, "one token back after the interval");
        assert_eq!(l.check(a, t0 + SEC), Decision::Deny { retry_after_secs: 1 });
        // Idle long enough: the whole burst is back, and no more.
        let later = t0 + 60 * SEC;
        for _ in 0..3 {
            assert_eq!(l.check(a, later), Decision::Allow);
        }
        assert!(matches!(l.check(a, later), Decision::Deny { .. }));
    }

    #[test]
    fn denied_requests_do_not_use_up_tokens_and_retry_after_rounds_up() {
        // 30 a minute: a token every 2 seconds.
        let l = Limiter::new(RateLimit { per_minute: 30, burst: 1 });
        let a = ip("192.0.2.1");
        assert_eq!(l.check(a, 0), Decision::Allow);
        for _ in 0..10 {
            assert_eq!(l.check(a, SEC / 2), Decision::Deny { retry_after_secs: 2 }, "1.5 s rounds up to 2");
        }
        assert_eq!(l.check(a, 2 * SEC), Decision::Allow, "hammering while refused does not push the wait back");
    }

    #[test]
    fn clients_are_counted_apart_and_ipv6_by_slash_64() {
        let l = Limiter::new(RateLimit { per_minute: 60, burst: 1 });
        assert_eq!(l.check(ip("192.0.2.1"), 0), Decision::Allow);
        assert_eq!(l.check(ip("192.0.2.2"), 0), Decision::Allow);
        assert!(matches!(l.check(ip("192.0.2.1"), 0), Decision::Deny { .. }));
        // An IPv4-mapped IPv6 peer is the IPv4 client.
        assert!(matches!(l.check(ip("::ffff:192.0.2.2"), 0), Decision::Deny { .. }));
        assert_eq!(l.check(ip("2001:db8:1:2::1"), 0), Decision::Allow);
        assert!(matches!(l.check(ip("2001:db8:1:2:ffff::9"), 0), Decision::Deny { .. }), "same /64");
        assert_eq!(l.check(ip("2001:db8:1:3::1"), 0), Decision::Allow, "another /64");
    }

    #[test]
    fn idle_entries_are_evicted_and_the_table_is_bounded() {
        let l = Limiter::with_capacity(RateLimit { per_minute: 60, burst: 2 }, 3);
        for i in 1..=3 {
            assert_eq!(l.check(ip(&format!("192.0.2.{i}")), 0), Decision::Allow);
        }
        assert_eq!(l.tracked(), 3);
        // Full of active clients: a newcomer is let through without being tracked.
        assert_eq!(l.check(ip("192.0.2.9"), 0), Decision::Allow);
        assert_eq!(l.tracked(), 3);
        // Once the others are idle (their arrival times passed) they make room.
        assert_eq!(l.check(ip("192.0.2.9"), 2 * SEC), Decision::Allow);
        assert_eq!(l.tracked(), 1, "idle entries were swept");
        // The periodic sweep drops idle entries even when the table is not full.
        assert_eq!(l.check(ip("192.0.2.10"), 100 * SEC), Decision::Allow);
        assert_eq!(l.tracked(), 1);
    }

    #[test]
    fn a_clock_stepped_back_locks_nobody_out_for_longer_than_a_window() {
        let l = Limiter::new(RateLimit { per_minute: 60, burst: 2 });
        let a = ip("192.0.2.1");
        let t = 10_000 * SEC;
        assert_eq!(l.check(a, t), Decision::Allow);
        assert_eq!(l.check(a, t), Decision::Allow);
        // The clock goes back an hour: the wait is one interval, not an hour.
        assert_eq!(l.check(a, t - 3600 * SEC), Decision::Deny { retry_after_secs: 1 });
    }

    #[test]
    fn networks_parse_and_match() {
        let n: IpNet = "10.0.0.0/8".parse().unwrap();
        assert!(n.contains(ip("10.1.2.3")) && !n.contains(ip("11.0.0.1")));
        assert!(n.contains(ip("::ffff:10.9.9.9")), "IPv4-mapped addresses match IPv4 networks");
        let host: IpNet = "192.168.1.10".parse().unwrap();
        assert!(host.contains(ip("192.168.1.10")) && !host.contains(ip("192.168.1.11")));
        let v6: IpNet = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")) && !v6.contains(ip("10.0.0.1")));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")));
        assert_eq!("10.1.2.3/8".parse::<IpNet>().unwrap().to_string(), "10.0.0.0/8", "host bits are cleared");
        for bad in ["", "10.0.0.0/33", "::/129", "10.0.0/8", "10.0.0.0/", "10.0.0.0/+8", "example.org", "10.0.0.0/8/8"]
        {
            assert!(bad.parse::<IpNet>().is_err(), "{bad:?} should be refused");
        }
        assert!(TrustedProxies::parse(["10.0.0.0/8", "::1"]).is_ok());
        assert_eq!(TrustedProxies::parse(["10.0.0.0/8", "nope"]).unwrap_err(), InvalidNet("nope".into()));
    }

    #[test]
    fn forwarded_for_is_ignored_from_an_untrusted_peer() {
        let none = TrustedProxies::default();
        let peer = ip("198.51.100.7");
        assert_eq!(none.client_addr(peer, &xff(&["203.0.113.1"])), peer);
        let proxies = TrustedProxies::parse(["10.0.0.0/8"]).unwrap();
        assert_eq!(proxies.client_addr(peer, &xff(&["203.0.113.1"])), peer, "the peer is not a trusted proxy");
    }

    #[test]
    fn a_trusted_proxy_names_the_client() {
        let proxies = TrustedProxies::parse(["10.0.0.0/8", "192.168.0.1"]).unwrap();
        let proxy = ip("10.0.0.5");
        assert_eq!(proxies.client_addr(proxy, &xff(&["203.0.113.1"])), ip("203.0.113.1"));
        // A chain of trusted proxies: the right-most untrusted entry is the client.
        assert_eq!(proxies.client_addr(proxy, &xff(&["203.0.113.1, 192.168.0.1, 10.1.1.1"])), ip("203.0.113.1"));
        // Several header lines are one list, in order.
        assert_eq!(proxies.client_addr(proxy, &xff(&["203.0.113.1", "10.1.1.1"])), ip("203.0.113.1"));
        // Ports and brackets are tolerated; IPv4-mapped addresses are IPv4.
        assert_eq!(proxies.client_addr(proxy, &xff(&["203.0.113.1:4711"])), ip("203.0.113.1"));
        assert_eq!(proxies.client_addr(proxy, &xff(&["[2001:db8::1]:443"])), ip("2001:db8::1"));
        assert_eq!(proxies.client_addr(proxy, &xff(&["::ffff:203.0.113.1"])), ip("203.0.113.1"));
        // No header: the proxy itself is the client.
        assert_eq!(proxies.client_addr(proxy, &HeaderMap::new()), proxy);
        // Every entry trusted: the left-most one.
        assert_eq!(proxies.client_addr(proxy, &xff(&["10.2.2.2, 10.3.3.3"])), ip("10.2.2.2"));
    }

    #[test]
    fn spoofed_leftmost_entries_are_ignored() {
        let proxies = TrustedProxies::parse(["10.0.0.0/8"]).unwrap();
        let proxy = ip("10.0.0.5");
        // The client sent "X-Forwarded-For: 1.1.1.1, 10.9.9.9"; the proxy appended the real peer.
        let h = xff(&["1.1.1.1, 10.9.9.9, 203.0.113.50"]);
        assert_eq!(proxies.client_addr(proxy, &h), ip("203.0.113.50"));
        // Garbage appended by a trusted hop: the hop that passed it on is the client.
        assert_eq!(proxies.client_addr(proxy, &xff(&["1.1.1.1, unknown, 10.7.7.7"])), ip("10.7.7.7"));
        assert_eq!(proxies.client_addr(proxy, &xff(&["1.1.1.1, unknown"])), proxy);
    }

    #[test]
    fn browsers_get_a_page_and_programs_get_a_problem() {
        let mut h = HeaderMap::new();
        let json = too_many(&h, 7);
        assert_eq!(json.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(json.headers()[header::RETRY_AFTER], "7");
        assert_eq!(json.headers()[header::CONTENT_TYPE], crate::error::PROBLEM_JSON);
        h.insert(header::ACCEPT, HeaderValue::from_static("text/html,application/xhtml+xml,*/*;q=0.8"));
        let page = too_many(&h, 1);
        assert_eq!(page.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(page.headers()[header::RETRY_AFTER], "1");
        assert!(page.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
        assert!(page.headers().contains_key(header::CONTENT_SECURITY_POLICY));
    }
}
