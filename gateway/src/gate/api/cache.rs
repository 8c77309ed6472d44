//! A bounded, tenant-scoped cache of GET responses for the api gate, and the
//! pure RFC 9111 rules that decide what may go in it and for how long.
//!
//! The gate uses it like this (GET only; the caller buffers the body up to
//! `max_entry_bytes` and strips hop-by-hop headers before storing):
//!
//! ```ignore
//! let key = store.lookup_key(tenant, route, host, path_and_query, req.headers());
//! if let Some(hit) = store.lookup(&key, req.headers(), Instant::now()) {
//!     // serve hit.status / hit.headers / hit.body, with `Age: age_header(&hit, now)`
//! }
//! // ... forward; on the response:
//! if let Some(fresh_for) = freshness(status, &req_headers, resp.headers(), store.default_ttl()) {
//!     let key = key.for_response(resp.headers(), &req_headers);
//!     store.store(key, CachedResponse { status, headers, body, stored_at: Instant::now(), fresh_for });
//! }
//! ```
//!
//! A shared cache, but never across tenants: the key starts with the tenant
//! (workload or caller label). Stale entries are never served and never
//! revalidated (no conditional requests): a response that needs revalidation
//! is treated as not storable.
use std::{
    collections::{BTreeMap, HashMap},
    sync::{Mutex, PoisonError},
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use hyper::{
    header::{self, HeaderValue},
    HeaderMap, StatusCode,
};

use crate::config::ResponseCache;

/// Cache key: never shared across tenants (the caller passes the workload or
/// caller label as `tenant`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub tenant: String,
    pub route: String,
    pub host: String,
    pub path_and_query: String,
    /// (lower-case name, request value) for each header the response varies
    /// on, sorted by name; see [`CacheKey::new`].
    pub vary: Vec<(String, String)>,
}

impl CacheKey {
    /// The key of a request that varies on the header names `vary` (from
    /// [`vary_names`]). Values are compared exactly: the request's field
    /// lines joined by ", ", each trimmed, non-printable bytes escaped as
    /// `\xNN` (so distinct values never collide). An absent header and an
    /// empty one are the same value.
    pub fn new(
        tenant: &str,
        route: &str,
        host: &str,
        path_and_query: &str,
        vary: &[String],
        request_headers: &HeaderMap,
    ) -> CacheKey {
        let mut names: Vec<String> = vary.iter().map(|n| n.to_ascii_lowercase()).collect();
        names.sort();
        names.dedup();
        CacheKey {
            tenant: tenant.to_owned(),
            route: route.to_owned(),
            host: host.to_owned(),
            path_and_query: path_and_query.to_owned(),
            vary: names
                .into_iter()
                .map(|n| {
                    let v = vary_value(request_headers, &n);
                    (n, v)
                })
                .collect(),
        }
    }

    /// This request's key for storing `response_headers`: same URL, varying
    /// on what the response's Vary names.
    pub fn for_response(
        &self,
        response_headers: &HeaderMap,
        request_headers: &HeaderMap,
    ) -> CacheKey {
        CacheKey::new(
            &self.tenant,
            &self.route,
            &self.host,
            &self.path_and_query,
            &vary_names(response_headers),
            request_headers,
        )
    }

    fn url(&self) -> Url {
        Url {
            tenant: self.tenant.clone(),
            route: self.route.clone(),
            host: self.host.clone(),
            path_and_query: self.path_and_query.clone(),
        }
    }

    fn names(&self) -> Vec<String> {
        self.vary.iter().map(|(n, _)| n.clone()).collect()
    }

    fn approx_bytes(&self) -> usize {
        self.tenant.len()
            + self.route.len()
            + self.host.len()
            + self.path_and_query.len()
            + self
                .vary
                .iter()
                .map(|(n, v)| n.len() + v.len())
                .sum::<usize>()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CachedResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub stored_at: Instant,
    /// From [`freshness`]: fresh while `now - stored_at < fresh_for`.
    pub fresh_for: Duration,
}

/// A route's response cache: LRU, bounded by the total size of its entries
/// (body + approximate header and key bytes) and by the size of one entry.
#[derive(Debug)]
pub struct ResponseCacheStore {
    max_bytes: usize,
    max_entry_bytes: usize,
    default_ttl: Duration,
    inner: Mutex<Inner>,
}

/// The URL part of a key: what Vary names are recorded for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Url {
    tenant: String,
    route: String,
    host: String,
    path_and_query: String,
}

#[derive(Debug, Default)]
struct Inner {
    urls: HashMap<Url, Variants>,
    /// Use order: the smallest tick is the least recently used entry.
    order: BTreeMap<u64, CacheKey>,
    tick: u64,
    bytes: usize,
    len: usize,
}

/// The entries of one URL. All are keyed by the same header names: those of
/// the latest stored response's Vary.
#[derive(Debug)]
struct Variants {
    names: Vec<String>,
    slots: HashMap<Vec<(String, String)>, Slot>,
}

#[derive(Debug)]
struct Slot {
    resp: CachedResponse,
    size: usize,
    tick: u64,
}

impl Inner {
    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    fn remove(&mut self, url: &Url, vary: &[(String, String)]) {
        let Some(variants) = self.urls.get_mut(url) else {
            return;
        };
        if let Some(slot) = variants.slots.remove(vary) {
            self.order.remove(&slot.tick);
            self.bytes -= slot.size;
            self.len -= 1;
        }
        if variants.slots.is_empty() {
            self.urls.remove(url);
        }
    }

    fn remove_url(&mut self, url: &Url) {
        if let Some(variants) = self.urls.remove(url) {
            for slot in variants.slots.into_values() {
                self.order.remove(&slot.tick);
                self.bytes -= slot.size;
                self.len -= 1;
            }
        }
    }

    fn evict_lru(&mut self) -> bool {
        let Some((_, key)) = self.order.pop_first() else {
            return false;
        };
        self.remove(&key.url(), &key.vary);
        true
    }
}

impl ResponseCacheStore {
    pub fn new(cfg: &ResponseCache) -> Self {
        ResponseCacheStore {
            max_bytes: cfg.max_bytes,
            max_entry_bytes: cfg.max_entry_bytes,
            default_ttl: Duration::from_secs(cfg.default_ttl_secs),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The route's `default_ttl_secs`, for [`freshness`].
    pub fn default_ttl(&self) -> Duration {
        self.default_ttl
    }

    /// The key to look a request up with: its URL, varying on the headers
    /// the latest stored response for that URL named in its Vary (none when
    /// nothing is stored).
    pub fn lookup_key(
        &self,
        tenant: &str,
        route: &str,
        host: &str,
        path_and_query: &str,
        request_headers: &HeaderMap,
    ) -> CacheKey {
        let url = Url {
            tenant: tenant.to_owned(),
            route: route.to_owned(),
            host: host.to_owned(),
            path_and_query: path_and_query.to_owned(),
        };
        let names = self
            .lock()
            .urls
            .get(&url)
            .map(|v| v.names.clone())
            .unwrap_or_default();
        CacheKey::new(tenant, route, host, path_and_query, &names, request_headers)
    }

    /// Fresh entry for the request, if any. `None` too when the request does
    /// not allow a cached answer: Cache-Control `no-cache`, `no-store` or
    /// `max-age=0` (or an unreadable Cache-Control), `Pragma: no-cache`, a
    /// `max-age=N` the entry is older than, a `min-fresh=N` it cannot meet.
    /// An expired entry is dropped.
    pub fn lookup(
        &self,
        key: &CacheKey,
        request_headers: &HeaderMap,
        now: Instant,
    ) -> Option<CachedResponse> {
        let wants = request_limits(request_headers)?;
        let url = key.url();
        let mut inner = self.lock();
        let slot = inner.urls.get(&url)?.slots.get(&key.vary)?;
        let (fresh_for, old_tick) = (slot.resp.fresh_for, slot.tick);
        let elapsed = now.saturating_duration_since(slot.resp.stored_at);
        let age = elapsed.saturating_add(original_age(&slot.resp.headers));
        if elapsed >= fresh_for {
            inner.remove(&url, &key.vary);
            return None;
        }
        if wants.max_age.is_some_and(|max| age > max)
            || wants.min_fresh.is_some_and(|min| fresh_for - elapsed < min)
        {
            return None;
        }
        let tick = inner.next_tick();
        inner.order.remove(&old_tick);
        inner.order.insert(tick, key.clone());
        let slot = inner.urls.get_mut(&url)?.slots.get_mut(&key.vary)?;
        slot.tick = tick;
        Some(slot.resp.clone())
    }

    /// Stores a response under `key` (built with [`CacheKey::for_response`]),
    /// replacing what was there, evicting least recently used entries to
    /// make room. Returns whether it was stored: not when it is larger than
    /// `max_entry_bytes` (or the whole cache), has no freshness left, or
    /// varies on `*`. A response whose Vary names other headers than the
    /// URL's earlier entries replaces all of them.
    pub fn store(&self, key: CacheKey, resp: CachedResponse) -> bool {
        if resp.fresh_for.is_zero() || key.vary.iter().any(|(n, _)| n == "*") {
            return false;
        }
        let size = entry_bytes(&key, &resp);
        if size > self.max_entry_bytes || size > self.max_bytes {
            return false;
        }
        let url = key.url();
        let names = key.names();
        let mut inner = self.lock();
        if inner.urls.get(&url).is_some_and(|v| v.names != names) {
            inner.remove_url(&url);
        }
        inner.remove(&url, &key.vary);
        while inner.bytes + size > self.max_bytes && inner.evict_lru() {}
        let tick = inner.next_tick();
        inner.order.insert(tick, key.clone());
        inner.bytes += size;
        inner.len += 1;
        inner
            .urls
            .entry(url)
            .or_insert_with(|| Variants {
                names,
                slots: HashMap::new(),
            })
            .slots
            .insert(key.vary, Slot { resp, size, tick });
        true
    }

    pub fn len(&self) -> usize {
        self.lock().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes accounted to the entries (see [`ResponseCacheStore`]).
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Nothing panics while the lock is held; a poisoned lock still holds
        // consistent data.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What an entry costs: body, header names and values, key.
fn entry_bytes(key: &CacheKey, resp: &CachedResponse) -> usize {
    resp.body.len()
        + resp
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len())
            .sum::<usize>()
        + key.approx_bytes()
}

/// Statuses a cache may store without explicit freshness (RFC 9110 §15.1),
/// minus 206 (partial content needs range handling).
const HEURISTICALLY_CACHEABLE: [u16; 11] = [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501];

/// Pure: how long a response may be served from this shared cache
/// (RFC 9111), or `None` when it must not be stored:
/// - status outside the heuristically cacheable set;
/// - response Cache-Control `no-store`, `private` or `no-cache` (qualified
///   forms included): `no-cache` allows storing but needs revalidation on
///   every use, which this cache does not do, so it is simply not stored;
///   an unreadable Cache-Control counts the same;
/// - `Set-Cookie` in the response, `Vary: *`;
/// - request Cache-Control `no-store`;
/// - request `Authorization`, unless the response says `public`, `s-maxage`
///   or `must-revalidate` (RFC 9111 §3.5).
///
/// Freshness lifetime: `s-maxage`, else `max-age`, else `Expires - Date`,
/// else `default_ttl` (zero: not stored). An invalid value of the one that
/// applies (`max-age=abc`, `Expires: 0`, a bad or missing Date beside
/// Expires) means not fresh; a later one is not tried. Duplicated directives:
/// the first counts. Then the response's `Age` is subtracted; what remains
/// must be positive.
pub fn freshness(
    status: StatusCode,
    request_headers: &HeaderMap,
    response_headers: &HeaderMap,
    default_ttl: Duration,
) -> Option<Duration> {
    if !HEURISTICALLY_CACHEABLE.contains(&status.as_u16()) {
        return None;
    }
    let cc = cache_control(response_headers)?;
    if ["no-store", "private", "no-cache"]
        .iter()
        .any(|d| has(&cc, d))
    {
        return None;
    }
    if response_headers.contains_key(header::SET_COOKIE)
        || vary_names(response_headers).iter().any(|n| n == "*")
    {
        return None;
    }
    let request_cc = cache_control(request_headers)?;
    if has(&request_cc, "no-store") {
        return None;
    }
    if request_headers.contains_key(header::AUTHORIZATION)
        && !["public", "s-maxage", "must-revalidate"]
            .iter()
            .any(|d| has(&cc, d))
    {
        return None;
    }
    let lifetime = if let Some(d) = find(&cc, "s-maxage") {
        delta_seconds(d.value.as_deref()?)?
    } else if let Some(d) = find(&cc, "max-age") {
        delta_seconds(d.value.as_deref()?)?
    } else if response_headers.contains_key(header::EXPIRES) {
        expires_lifetime(response_headers)?
    } else {
        default_ttl
    };
    let fresh = lifetime.checked_sub(original_age(response_headers))?;
    (!fresh.is_zero()).then_some(fresh)
}

/// The request header names the response varies on (from its Vary header),
/// lower-cased, sorted, without duplicates; used to build
/// [`CacheKey::vary`]. Contains `*` for `Vary: *`, and for a Vary line that
/// cannot be read (what it names is unknown).
pub fn vary_names(response_headers: &HeaderMap) -> Vec<String> {
    let mut names = Vec::new();
    for line in response_headers.get_all(header::VARY) {
        let Ok(line) = line.to_str() else {
            names.push("*".to_owned());
            continue;
        };
        names.extend(
            line.split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_ascii_lowercase),
        );
    }
    names.sort();
    names.dedup();
    names
}

/// The `Age` to send with a cached answer: whole seconds since it was
/// stored, plus the Age it arrived with.
pub fn age_header(entry: &CachedResponse, now: Instant) -> HeaderValue {
    let age = now
        .saturating_duration_since(entry.stored_at)
        .saturating_add(original_age(&entry.headers));
    HeaderValue::from(age.as_secs())
}

/// The request's value for a Vary name (see [`CacheKey::new`]).
fn vary_value(request_headers: &HeaderMap, name: &str) -> String {
    let mut out = String::new();
    for (i, line) in request_headers.get_all(name).iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        for &b in line.as_bytes().trim_ascii() {
            if (b.is_ascii_graphic() || b == b' ') && b != b'\\' {
                out.push(b as char);
            } else {
                out.push_str(&format!("\\x{b:02x}"));
            }
        }
    }
    out
}

/// The response's Age (RFC 9111 §5.1): the first member, ignored when not
/// a non-negative integer.
fn original_age(headers: &HeaderMap) -> Duration {
    headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .and_then(|v| delta_seconds(v.trim()))
        .unwrap_or(Duration::ZERO)
}

/// RFC 9111 §1.2.2 delta-seconds; values past 2^31 are taken as 2^31.
fn delta_seconds(s: &str) -> Option<Duration> {
    const CAP: u64 = 1 << 31;
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs = s.parse::<u64>().unwrap_or(CAP).min(CAP);
    Some(Duration::from_secs(secs))
}

/// `Expires - Date`; `None` when either is missing or not an HTTP date, or
/// Expires is not after Date.
fn expires_lifetime(headers: &HeaderMap) -> Option<Duration> {
    let date = |name| -> Option<SystemTime> {
        let v = headers.get(name)?.to_str().ok()?;
        httpdate::parse_http_date(v.trim()).ok()
    };
    let expires = date(header::EXPIRES)?;
    let sent = date(header::DATE)?;
    expires.duration_since(sent).ok()
}

/// What a request's Cache-Control asks of a cached answer.
struct RequestLimits {
    max_age: Option<Duration>,
    min_fresh: Option<Duration>,
}

/// `None` when the request may not be answered from the cache.
fn request_limits(request_headers: &HeaderMap) -> Option<RequestLimits> {
    let pragma_no_cache = request_headers
        .get_all(header::PRAGMA)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| d.trim().eq_ignore_ascii_case("no-cache"));
    if pragma_no_cache {
        return None;
    }
    let cc = cache_control(request_headers)?;
    if has(&cc, "no-cache") || has(&cc, "no-store") {
        return None;
    }
    let limit = |name| -> Option<Option<Duration>> {
        match find(&cc, name) {
            None => Some(None),
            Some(d) => delta_seconds(d.value.as_deref()?).map(Some),
        }
    };
    let max_age = limit("max-age")?;
    if max_age == Some(Duration::ZERO) {
        return None;
    }
    Some(RequestLimits {
        max_age,
        min_fresh: limit("min-fresh")?,
    })
}

/// One Cache-Control directive: lower-case name, unquoted value.
#[derive(Debug, PartialEq)]
struct Directive {
    name: String,
    value: Option<String>,
}

fn has(cc: &[Directive], name: &str) -> bool {
    find(cc, name).is_some()
}

fn find<'a>(cc: &'a [Directive], name: &str) -> Option<&'a Directive> {
    cc.iter().find(|d| d.name == name)
}

/// All Cache-Control lines' directives, in order; `None` when a line cannot
/// be parsed (a caller then assumes the most restrictive reading).
fn cache_control(headers: &HeaderMap) -> Option<Vec<Directive>> {
    let mut out = Vec::new();
    for line in headers.get_all(header::CACHE_CONTROL) {
        parse_directives(line.to_str().ok()?, &mut out)?;
    }
    Some(out)
}

/// `#( token [ "=" ( token / quoted-string ) ] )` (RFC 9111 §5.2).
fn parse_directives(s: &str, out: &mut Vec<Directive>) -> Option<()> {
    let b = s.as_bytes();
    let mut i = 0;
    let skip_ows = |i: &mut usize| {
        while *i < b.len() && matches!(b[*i], b' ' | b'\t') {
            *i += 1;
        }
    };
    let token = |i: &mut usize| -> &str {
        let start = *i;
        while *i < b.len() && is_tchar(b[*i]) {
            *i += 1;
        }
        &s[start..*i]
    };
    loop {
        while i < b.len() && matches!(b[i], b' ' | b'\t' | b',') {
            i += 1;
        }
        if i >= b.len() {
            return Some(());
        }
        let name = token(&mut i);
        if name.is_empty() {
            return None;
        }
        let name = name.to_ascii_lowercase();
        skip_ows(&mut i);
        let mut value = None;
        if i < b.len() && b[i] == b'=' {
            i += 1;
            skip_ows(&mut i);
            if i < b.len() && b[i] == b'"' {
                i += 1;
                let mut v = String::new();
                loop {
                    match *b.get(i)? {
                        b'"' => break,
                        b'\\' => {
                            i += 1;
                            v.push(*b.get(i)? as char);
                        }
                        c => v.push(c as char),
                    }
                    i += 1;
                }
                i += 1;
                value = Some(v);
            } else {
                value = Some(token(&mut i).to_owned());
            }
            skip_ows(&mut i);
        }
        if i < b.len() && b[i] != b',' {
            return None;
        }
        out.push(Directive { name, value });
    }
}

/// RFC 9110 §5.6.2 tchar.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderName;

    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn fresh(resp: &[(&str, &str)]) -> Option<Duration> {
        freshness(
            StatusCode::OK,
            &HeaderMap::new(),
            &headers(resp),
            Duration::ZERO,
        )
    }

    fn secs(s: u64) -> Option<Duration> {
        Some(Duration::from_secs(s))
    }

    // --- freshness: storability ---

    #[test]
    fn only_heuristically_cacheable_statuses() {
        let resp = headers(&[("cache-control", "max-age=60")]);
        let none = HeaderMap::new();
        for code in [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501] {
            let status = StatusCode::from_u16(code).unwrap();
            assert_eq!(
                freshness(status, &none, &resp, MINUTE),
                Some(MINUTE),
                "{code}"
            );
        }
        for code in [
            201, 202, 206, 302, 303, 304, 307, 400, 401, 403, 429, 500, 502, 503,
        ] {
            let status = StatusCode::from_u16(code).unwrap();
            assert_eq!(freshness(status, &none, &resp, MINUTE), None, "{code}");
        }
    }

    #[test]
    fn restrictive_response_directives_are_not_stored() {
        for cc in [
            "no-store",
            "max-age=60, no-store",
            "private",
            "private=\"set-cookie\", max-age=60",
            "no-cache",
            "no-cache=\"set-cookie, x-a\", max-age=60",
            "public, NO-STORE",
            "s-maxage=60, Private",
        ] {
            assert_eq!(fresh(&[("cache-control", cc)]), None, "{cc}");
        }
        // Over two lines too.
        assert_eq!(
            fresh(&[
                ("cache-control", "max-age=60"),
                ("cache-control", "no-store")
            ]),
            None
        );
    }

    #[test]
    fn unreadable_cache_control_is_not_stored() {
        for cc in [
            "max-age=60, foo=\"unterminated",
            "max-age=60 junk",
            "=60",
            "max-age=60; x",
        ] {
            assert_eq!(fresh(&[("cache-control", cc)]), None, "{cc}");
        }
    }

    #[test]
    fn set_cookie_is_not_stored() {
        assert_eq!(
            fresh(&[
                ("cache-control", "public, max-age=60"),
                ("set-cookie", "a=b")
            ]),
            None
        );
    }

    #[test]
    fn vary_star_is_not_stored() {
        let cc = ("cache-control", "max-age=60");
        assert_eq!(fresh(&[cc, ("vary", "*")]), None);
        assert_eq!(fresh(&[cc, ("vary", "accept, *")]), None);
        assert_eq!(fresh(&[cc, ("vary", "accept"), ("vary", "*")]), None);
        assert_eq!(fresh(&[cc, ("vary", "accept-encoding")]), Some(MINUTE));
    }

    #[test]
    fn request_no_store_is_not_stored() {
        let req = headers(&[("cache-control", "no-store")]);
        let resp = headers(&[("cache-control", "max-age=60")]);
        assert_eq!(freshness(StatusCode::OK, &req, &resp, MINUTE), None);
        // Request no-cache only stops the lookup, not the store.
        let req = headers(&[("cache-control", "no-cache")]);
        assert_eq!(freshness(StatusCode::OK, &req, &resp, MINUTE), Some(MINUTE));
    }

    #[test]
    fn authorization_needs_an_explicit_shared_permission() {
        let req = headers(&[("authorization", "Bearer t")]);
        let check = |cc: &str| {
            freshness(
                StatusCode::OK,
                &req,
                &headers(&[("cache-control", cc)]),
                MINUTE,
            )
        };
        assert_eq!(check("max-age=60"), None);
        assert_eq!(check(""), None);
        assert_eq!(check("public, max-age=30"), secs(30));
        assert_eq!(check("s-maxage=30"), secs(30));
        assert_eq!(check("must-revalidate, max-age=30"), secs(30));
        // public alone: default ttl.
        assert_eq!(check("public"), Some(MINUTE));
        // Without Authorization, max-age alone is enough.
        assert_eq!(fresh(&[("cache-control", "max-age=30")]), secs(30));
    }

    // --- freshness: lifetime ---

    #[test]
    fn s_maxage_beats_max_age() {
        assert_eq!(
            fresh(&[("cache-control", "max-age=100, s-maxage=10")]),
            secs(10)
        );
        assert_eq!(
            fresh(&[("cache-control", "s-maxage=100, max-age=10")]),
            secs(100)
        );
        assert_eq!(fresh(&[("cache-control", "s-maxage=0, max-age=60")]), None);
    }

    #[test]
    fn max_age_beats_expires_even_an_invalid_one() {
        let date = ("date", "Sun, 06 Nov 1994 08:49:37 GMT");
        let expires = ("expires", "Sun, 06 Nov 1994 09:49:37 GMT");
        assert_eq!(
            fresh(&[("cache-control", "max-age=5"), date, expires]),
            secs(5)
        );
        assert_eq!(
            fresh(&[("cache-control", "max-age=5"), ("expires", "0")]),
            secs(5)
        );
    }

    #[test]
    fn expires_minus_date() {
        let date = ("date", "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(
            fresh(&[date, ("expires", "Sun, 06 Nov 1994 09:49:37 GMT")]),
            secs(3600)
        );
        // RFC 850 and asctime forms are HTTP dates too.
        assert_eq!(
            fresh(&[date, ("expires", "Sunday, 06-Nov-94 08:50:37 GMT")]),
            secs(60)
        );
        assert_eq!(
            fresh(&[date, ("expires", "Sun Nov  6 08:51:37 1994")]),
            secs(120)
        );
        // Expires beats the default ttl.
        let resp = headers(&[date, ("expires", "Sun, 06 Nov 1994 08:49:47 GMT")]);
        assert_eq!(
            freshness(StatusCode::OK, &HeaderMap::new(), &resp, MINUTE),
            secs(10)
        );
    }

    #[test]
    fn expired_or_invalid_dates_are_not_fresh() {
        let date = ("date", "Sun, 06 Nov 1994 08:49:37 GMT");
        let check = |resp: &[(&str, &str)]| {
            freshness(StatusCode::OK, &HeaderMap::new(), &headers(resp), MINUTE)
        };
        // Not falling back to the default ttl in any of these.
        assert_eq!(
            check(&[date, ("expires", "Sun, 06 Nov 1994 07:49:37 GMT")]),
            None
        );
        assert_eq!(
            check(&[date, ("expires", "Sun, 06 Nov 1994 08:49:37 GMT")]),
            None
        );
        assert_eq!(check(&[date, ("expires", "0")]), None);
        assert_eq!(check(&[date, ("expires", "tomorrow")]), None);
        assert_eq!(check(&[date, ("expires", "")]), None);
        assert_eq!(
            check(&[
                ("date", "yesterday"),
                ("expires", "Sun, 06 Nov 1994 09:49:37 GMT")
            ]),
            None
        );
        // No Date to measure from.
        assert_eq!(check(&[("expires", "Sun, 06 Nov 2094 09:49:37 GMT")]), None);
    }

    #[test]
    fn default_ttl_when_nothing_explicit() {
        let check = |cc: &[(&str, &str)], ttl| {
            freshness(StatusCode::OK, &HeaderMap::new(), &headers(cc), ttl)
        };
        assert_eq!(check(&[], MINUTE), Some(MINUTE));
        assert_eq!(check(&[("cache-control", "public")], MINUTE), Some(MINUTE));
        assert_eq!(check(&[], Duration::ZERO), None);
        assert_eq!(
            freshness(
                StatusCode::NO_CONTENT,
                &HeaderMap::new(),
                &HeaderMap::new(),
                MINUTE
            ),
            Some(MINUTE)
        );
    }

    #[test]
    fn age_is_subtracted() {
        let cc = ("cache-control", "max-age=60");
        assert_eq!(fresh(&[cc, ("age", "20")]), secs(40));
        assert_eq!(fresh(&[cc, ("age", "60")]), None);
        assert_eq!(fresh(&[cc, ("age", "600")]), None);
        // First member of a list; invalid values are ignored.
        assert_eq!(fresh(&[cc, ("age", "5, 50")]), secs(55));
        assert_eq!(fresh(&[cc, ("age", "-5")]), secs(60));
        assert_eq!(fresh(&[cc, ("age", "abc")]), secs(60));
        // Applies to the default ttl as well.
        let resp = headers(&[("age", "45")]);
        assert_eq!(
            freshness(StatusCode::OK, &HeaderMap::new(), &resp, MINUTE),
            secs(15)
        );
    }

    #[test]
    fn max_age_values() {
        assert_eq!(fresh(&[("cache-control", "max-age=0")]), None);
        assert_eq!(fresh(&[("cache-control", "max-age=\"60\"")]), secs(60));
        assert_eq!(fresh(&[("cache-control", "MAX-AGE = 60")]), secs(60));
        assert_eq!(
            fresh(&[("cache-control", "max-age=99999999999999999999999")]),
            secs(1 << 31)
        );
        for bad in [
            "max-age",
            "max-age=",
            "max-age=abc",
            "max-age=-1",
            "max-age=1.5",
        ] {
            let resp = headers(&[("cache-control", bad)]);
            // Invalid: not fresh, even with a default ttl.
            assert_eq!(
                freshness(StatusCode::OK, &HeaderMap::new(), &resp, MINUTE),
                None,
                "{bad}"
            );
        }
    }

    #[test]
    fn first_duplicate_directive_counts() {
        assert_eq!(
            fresh(&[("cache-control", "max-age=10, max-age=99")]),
            secs(10)
        );
        assert_eq!(
            fresh(&[
                ("cache-control", "max-age=10"),
                ("cache-control", "max-age=99")
            ]),
            secs(10)
        );
    }

    #[test]
    fn quoted_strings_may_hold_commas_and_escapes() {
        assert_eq!(
            fresh(&[("cache-control", r#"ext="a, max-age=5, \"q\"", max-age=60"#)]),
            secs(60)
        );
        assert_eq!(
            fresh(&[("cache-control", "immutable, public, max-age=60")]),
            secs(60)
        );
    }

    #[test]
    fn directive_parser() {
        let mut out = Vec::new();
        parse_directives(r#" a, B=1 ,c="x,\"y", ,d=tok"#, &mut out).unwrap();
        let d = |n: &str, v: Option<&str>| Directive {
            name: n.into(),
            value: v.map(Into::into),
        };
        assert_eq!(
            out,
            [
                d("a", None),
                d("b", Some("1")),
                d("c", Some("x,\"y")),
                d("d", Some("tok"))
            ]
        );
    }

    // --- vary_names, age_header ---

    #[test]
    fn vary_names_are_lower_cased_sorted_and_unique() {
        let h = headers(&[
            ("vary", "Accept-Encoding, Accept"),
            ("vary", "accept ,, X-A"),
        ]);
        assert_eq!(vary_names(&h), ["accept", "accept-encoding", "x-a"]);
        assert!(vary_names(&HeaderMap::new()).is_empty());
        assert_eq!(vary_names(&headers(&[("vary", "*")])), ["*"]);
    }

    #[test]
    fn age_header_adds_the_original_age() {
        let t0 = Instant::now();
        let mut e = entry(t0, 60, b"x");
        assert_eq!(age_header(&e, t0 + Duration::from_millis(12_700)), "12");
        e.headers.insert(header::AGE, HeaderValue::from_static("5"));
        assert_eq!(age_header(&e, t0 + Duration::from_millis(12_700)), "17");
        // A clock that has not moved on.
        assert_eq!(age_header(&e, t0), "5");
    }

    // --- store / lookup ---

    fn cfg(max_bytes: usize, max_entry_bytes: usize) -> ResponseCache {
        ResponseCache {
            max_bytes,
            max_entry_bytes,
            default_ttl_secs: 0,
        }
    }

    fn entry(stored_at: Instant, fresh_secs: u64, body: &'static [u8]) -> CachedResponse {
        CachedResponse {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from_static(body),
            stored_at,
            fresh_for: Duration::from_secs(fresh_secs),
        }
    }

    fn key(tenant: &str, path: &str) -> CacheKey {
        CacheKey::new(tenant, "r", "api.example.com", path, &[], &HeaderMap::new())
    }

    fn no_headers() -> HeaderMap {
        HeaderMap::new()
    }

    #[test]
    fn store_then_hit() {
        let store = ResponseCacheStore::new(&cfg(10_000, 1_000));
        assert!(store.is_empty());
        let t0 = Instant::now();
        assert!(store.store(key("a", "/x"), entry(t0, 60, b"hello")));
        let hit = store.lookup(&key("a", "/x"), &no_headers(), t0 + Duration::from_secs(1));
        assert_eq!(hit.map(|h| h.body), Some(Bytes::from_static(b"hello")));
        assert_eq!(store.len(), 1);
        assert!(!store.is_empty());
        assert_eq!(
            store.bytes(),
            entry_bytes(&key("a", "/x"), &entry(t0, 60, b"hello"))
        );
    }

    #[test]
    fn tenants_are_isolated() {
        let store = ResponseCacheStore::new(&cfg(10_000, 1_000));
        let t0 = Instant::now();
        assert!(store.store(key("tenant-a", "/x"), entry(t0, 60, b"for a")));
        assert_eq!(
            store.lookup(&key("tenant-b", "/x"), &no_headers(), t0),
            None
        );
        assert!(store.store(key("tenant-b", "/x"), entry(t0, 60, b"for b")));
        assert_eq!(store.len(), 2);
        let body = |t| store.lookup(&key(t, "/x"), &no_headers(), t0).unwrap().body;
        assert_eq!(body("tenant-a"), "for a");
        assert_eq!(body("tenant-b"), "for b");
    }

    #[test]
    fn route_host_and_path_are_part_of_the_key() {
        let store = ResponseCacheStore::new(&cfg(10_000, 1_000));
        let t0 = Instant::now();
        let h = HeaderMap::new();
        assert!(store.store(
            CacheKey::new("t", "r", "h", "/p?q=1", &[], &h),
            entry(t0, 60, b"x")
        ));
        for other in [
            CacheKey::new("t", "r2", "h", "/p?q=1", &[], &h),
            CacheKey::new("t", "r", "h2", "/p?q=1", &[], &h),
            CacheKey::new("t", "r", "h", "/p?q=2", &[], &h),
            CacheKey::new("t", "r", "h", "/p", &[], &h),
        ] {
            assert_eq!(store.lookup(&other, &h, t0), None, "{other:?}");
        }
    }

    #[test]
    fn vary_keeps_variants_apart() {
        let store = ResponseCacheStore::new(&cfg(10_000, 1_000));
        let t0 = Instant::now();
        let resp_headers = headers(&[("vary", "Accept-Encoding")]);
        let gzip = headers(&[("accept-encoding", "gzip")]);
        let br = headers(&[("accept-encoding", "br")]);
        let lookup_key = |req: &HeaderMap| store.lookup_key("t", "r", "h", "/x", req);

        // Nothing stored yet: the lookup key varies on nothing.
        assert!(lookup_key(&gzip).vary.is_empty());
        let k = lookup_key(&gzip).for_response(&resp_headers, &gzip);
        assert_eq!(k.vary, [("accept-encoding".to_owned(), "gzip".to_owned())]);
        let mut e = entry(t0, 60, b"gzipped");
        e.headers = resp_headers.clone();
        assert!(store.store(k, e));

        // Now lookups vary on accept-encoding.
        assert_eq!(
            store.lookup(&lookup_key(&gzip), &gzip, t0).unwrap().body,
            "gzipped"
        );
        assert_eq!(store.lookup(&lookup_key(&br), &br, t0), None);
        assert_eq!(
            store.lookup(&lookup_key(&no_headers()), &no_headers(), t0),
            None
        );

        let mut e = entry(t0, 60, b"brotli");
        e.headers = resp_headers.clone();
        assert!(store.store(lookup_key(&br).for_response(&resp_headers, &br), e));
        assert_eq!(store.len(), 2);
        assert_eq!(
            store.lookup(&lookup_key(&br), &br, t0).unwrap().body,
            "brotli"
        );
        assert_eq!(
            store.lookup(&lookup_key(&gzip), &gzip, t0).unwrap().body,
            "gzipped"
        );
    }

    #[test]
    fn vary_values_are_exact_and_escaped() {
        let names = vec!["accept".to_owned()];
        let k = |req: &HeaderMap| {
            CacheKey::new("t", "r", "h", "/", &names, req).vary[0]
                .1
                .clone()
        };
        assert_eq!(k(&headers(&[("accept", " a/b ")])), "a/b");
        assert_eq!(k(&headers(&[("accept", "a"), ("accept", "b")])), "a, b");
        assert_eq!(k(&HeaderMap::new()), "");
        let raw = HeaderValue::from_bytes(b"caf\xc3\xa9\\").unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, raw);
        assert_eq!(k(&h), "caf\\xc3\\xa9\\x5c");
    }

    #[test]
    fn a_new_vary_replaces_the_urls_variants() {
        let store = ResponseCacheStore::new(&cfg(10_000, 1_000));
        let t0 = Instant::now();
        let req = headers(&[("accept", "json"), ("accept-language", "en")]);
        let by_accept = headers(&[("vary", "accept")]);
        let by_lang = headers(&[("vary", "accept-language")]);
        let base = store.lookup_key("t", "r", "h", "/x", &req);
        assert!(store.store(base.for_response(&by_accept, &req), entry(t0, 60, b"1")));
        assert!(store.store(base.for_response(&by_lang, &req), entry(t0, 60, b"2")));
        assert_eq!(store.len(), 1);
        let k = store.lookup_key("t", "r", "h", "/x", &req);
        assert_eq!(k.vary[0].0, "accept-language");
        assert_eq!(store.lookup(&k, &req, t0).unwrap().body, "2");
        // The old variant is gone, not merely unreachable.
        assert_eq!(
            store.lookup(&base.for_response(&by_accept, &req), &req, t0),
            None
        );
    }

    #[test]
    fn expiry() {
        let store = ResponseCacheStore::new(&cfg(10_000, 1_000));
        let t0 = Instant::now();
        assert!(store.store(key("t", "/x"), entry(t0, 10, b"x")));
        let at = |s: u64| {
            store.lookup(
                &key("t", "/x"),
                &no_headers(),
                t0 + Duration::from_millis(s),
            )
        };
        assert!(at(9_999).is_some());
        assert_eq!(at(10_000), None);
        // The expired entry was dropped.
        assert!(store.is_empty());
        assert_eq!(store.bytes(), 0);
    }

    #[test]
    fn lru_eviction_by_bytes() {
        let t0 = Instant::now();
        let size = entry_bytes(&key("t", "/1"), &entry(t0, 60, &[0; 100]));
        // Room for two entries, not three.
        let store = ResponseCacheStore::new(&cfg(size * 2 + size / 2, size));
        assert!(store.store(key("t", "/1"), entry(t0, 60, &[0; 100])));
        assert!(store.store(key("t", "/2"), entry(t0, 60, &[0; 100])));
        // Using /1 makes /2 the least recently used.
        assert!(store.lookup(&key("t", "/1"), &no_headers(), t0).is_some());
        assert!(store.store(key("t", "/3"), entry(t0, 60, &[0; 100])));
        assert_eq!(store.len(), 2);
        assert!(store.bytes() <= size * 2 + size / 2);
        assert!(store.lookup(&key("t", "/1"), &no_headers(), t0).is_some());
        assert_eq!(store.lookup(&key("t", "/2"), &no_headers(), t0), None);
        assert!(store.lookup(&key("t", "/3"), &no_headers(), t0).is_some());
    }

    #[test]
    fn a_large_entry_evicts_several() {
        let t0 = Instant::now();
        let small = entry_bytes(&key("t", "/1"), &entry(t0, 60, &[0; 10]));
        let store = ResponseCacheStore::new(&cfg(small * 3, small * 3));
        for p in ["/1", "/2", "/3"] {
            assert!(store.store(key("t", p), entry(t0, 60, &[0; 10])));
        }
        assert_eq!(store.len(), 3);
        assert!(store.store(key("t", "/4"), entry(t0, 60, &[0; 60])));
        assert_eq!(store.len(), 1);
        assert!(store.lookup(&key("t", "/4"), &no_headers(), t0).is_some());
    }

    #[test]
    fn replacing_an_entry_keeps_the_accounting() {
        let store = ResponseCacheStore::new(&cfg(10_000, 1_000));
        let t0 = Instant::now();
        assert!(store.store(key("t", "/x"), entry(t0, 60, b"0123456789")));
        assert!(store.store(key("t", "/x"), entry(t0, 60, b"01")));
        assert_eq!(store.len(), 1);
        assert_eq!(
            store.bytes(),
            entry_bytes(&key("t", "/x"), &entry(t0, 60, b"01"))
        );
        assert_eq!(
            store
                .lookup(&key("t", "/x"), &no_headers(), t0)
                .unwrap()
                .body,
            "01"
        );
    }

    #[test]
    fn oversize_entries_are_refused() {
        let t0 = Instant::now();
        let store = ResponseCacheStore::new(&cfg(10_000, 100));
        assert!(store.store(key("t", "/small"), entry(t0, 60, b"ok")));
        assert!(!store.store(key("t", "/big"), entry(t0, 60, &[0; 100])));
        // Headers count towards the size.
        let mut e = entry(t0, 60, b"x");
        e.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(
            "application/vnd.something-long+json; charset=utf-8; profile=\"https://example.com/p\"",
        ));
        assert!(!store.store(key("t", "/headers"), e));
        // A refused store leaves what was cached alone.
        assert_eq!(store.len(), 1);

        // An entry larger than the whole cache, even if max_entry_bytes allows it.
        let store = ResponseCacheStore::new(&cfg(50, 1_000));
        assert!(!store.store(key("t", "/x"), entry(t0, 60, &[0; 60])));
        assert!(store.is_empty());
    }

    #[test]
    fn no_freshness_or_vary_star_is_refused() {
        let store = ResponseCacheStore::new(&cfg(10_000, 1_000));
        let t0 = Instant::now();
        assert!(!store.store(key("t", "/x"), entry(t0, 0, b"x")));
        let star = key("t", "/x").for_response(&headers(&[("vary", "*")]), &no_headers());
        assert!(!store.store(star, entry(t0, 60, b"x")));
        assert!(store.is_empty());
    }

    #[test]
    fn request_directives_bypass_the_cache() {
        let store = ResponseCacheStore::new(&cfg(10_000, 1_000));
        let t0 = Instant::now();
        assert!(store.store(key("t", "/x"), entry(t0, 60, b"x")));
        for req in [
            &[("cache-control", "no-cache")][..],
            &[("cache-control", "no-store")],
            &[("cache-control", "max-age=0")],
            &[("cache-control", "Max-Age=0, foo")],
            &[("cache-control", "max-age=abc")],
            &[("cache-control", "max-age=\"unterminated")],
            &[("pragma", "no-cache")],
            &[("pragma", "foo, No-Cache")],
        ] {
            assert_eq!(
                store.lookup(&key("t", "/x"), &headers(req), t0),
                None,
                "{req:?}"
            );
        }
        // Bypassing does not drop the entry.
        assert_eq!(store.len(), 1);
        for req in [
            &[("cache-control", "max-age=5")][..],
            &[("cache-control", "max-stale")],
            &[("pragma", "foo")],
        ] {
            assert!(
                store.lookup(&key("t", "/x"), &headers(req), t0).is_some(),
                "{req:?}"
            );
        }
    }

    #[test]
    fn request_max_age_and_min_fresh() {
        let store = ResponseCacheStore::new(&cfg(10_000, 1_000));
        let t0 = Instant::now();
        let mut e = entry(t0, 60, b"x");
        e.headers
            .insert(header::AGE, HeaderValue::from_static("10"));
        assert!(store.store(key("t", "/x"), e));
        let at = |s, cc| {
            store
                .lookup(
                    &key("t", "/x"),
                    &headers(&[("cache-control", cc)]),
                    t0 + Duration::from_secs(s),
                )
                .is_some()
        };
        // Age counts the Age the response came with: 10 + 20 = 30.
        assert!(at(20, "max-age=30"));
        assert!(!at(21, "max-age=30"));
        // 60 - 20 = 40 seconds of freshness left.
        assert!(at(20, "min-fresh=40"));
        assert!(!at(21, "min-fresh=40"));
    }

    #[test]
    fn store_is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<ResponseCacheStore>();
    }
}
