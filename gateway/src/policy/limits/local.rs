//! The `local` backend: buckets in this process's memory, so each node
//! enforces its own budget.
//!
//! A full bucket that nobody touches is the same as no bucket, so buckets
//! are dropped once they have refilled; that keeps the table as large as the
//! set of keys active within one refill horizon, not every key ever seen. A
//! hard cap bounds it against a flood of distinct keys (a client choosing
//! its own `header:` values): at the cap a request for a key without a
//! bucket is a backend failure, decided by `fail_mode` like a Redis outage,
//! while keys that already have a bucket are limited as usual.
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::bucket::{self, Bucket};
use super::{Decision, Failure, Shape};

/// Lock shards: requests for different keys rarely wait on each other.
const SHARDS: usize = 16;

/// Buckets kept at most, all routes, limits and keys together. An entry is
/// a 16-byte id and 40 bytes of state; with the map's slack that is at most
/// ~32 MiB.
pub(super) const MAX_BUCKETS: usize = 1 << 18;

/// Shards smaller than this are not swept: sweeping costs a pass over the
/// shard, which is only worth it once the shard is big.
const SWEEP_FLOOR: usize = 256;

/// The table-full warning is repeated at most this often.
const FULL_WARNING_GAP: Duration = Duration::from_secs(60);

/// At the cap, a shard is swept at most this often: otherwise every request
/// of a flood of new keys would pay for a pass that frees nothing.
const FULL_SWEEP_GAP: Duration = Duration::from_millis(100);

pub(super) struct LocalBuckets {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    /// Buckets are found by a 128-bit keyed hash of (route, limit, key)
    /// rather than by the strings: an entry's size does not depend on how
    /// long a client's header value is, so the cap bounds memory. The seeds
    /// are random per process, so a client cannot aim for a collision.
    seeds: [RandomState; 2],
    warned_full: Mutex<Option<Instant>>,
}

struct Shard {
    buckets: HashMap<u128, Entry>,
    /// Sweep when a new bucket would make the shard this big.
    sweep_at: usize,
    last_sweep: Option<Instant>,
}

struct Entry {
    bucket: Bucket,
    /// From then on the bucket is full again and can be dropped.
    full_at: Instant,
}

impl LocalBuckets {
    pub(super) fn new(max_buckets: usize) -> LocalBuckets {
        let per_shard = (max_buckets / SHARDS).max(1);
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    buckets: HashMap::new(),
                    sweep_at: SWEEP_FLOOR.min(per_shard),
                    last_sweep: None,
                })
            })
            .collect();
        LocalBuckets {
            shards,
            per_shard,
            seeds: [RandomState::new(), RandomState::new()],
            warned_full: Mutex::new(None),
        }
    }

    /// Takes `cost` tokens from the bucket of (route, limit, key) at `now`.
    pub(super) fn take(
        &self,
        route: &str,
        limit: &str,
        key: &str,
        shape: Shape,
        cost: u64,
        now: Instant,
    ) -> Result<Decision, Failure> {
        let (shard, id) = self.shard(route, limit, key);
        let mut shard = self.lock_with_room(shard, id, now)?;
        let entry = shard.buckets.entry(id).or_insert_with(|| Entry {
            bucket: Bucket::full(shape.capacity, now),
            full_at: now,
        });
        let result = bucket::take_cost(
            &mut entry.bucket,
            shape.capacity,
            shape.refill_per_sec,
            cost as f64,
            now,
        );
        let reset_after = entry.settle(shape, now);
        Ok(match result {
            Ok(remaining) => Decision::Allowed {
                // `as` saturates: a capacity beyond u64 reports u64::MAX.
                remaining: remaining.floor() as u64,
                reset_after,
            },
            Err(retry_after) => Decision::Limited { retry_after },
        })
    }

    /// Charges `delta` more tokens to the bucket of (route, limit, key), or
    /// refunds them when negative; see [`bucket::adjust`].
    pub(super) fn adjust(
        &self,
        route: &str,
        limit: &str,
        key: &str,
        shape: Shape,
        delta: i64,
        now: Instant,
    ) -> Result<(), Failure> {
        let (shard, id) = self.shard(route, limit, key);
        if delta <= 0 {
            // A dropped bucket is a full one: refunding it changes nothing,
            // and a refund must not need room in a full table.
            let mut shard = self.lock(shard);
            if let Some(entry) = shard.buckets.get_mut(&id) {
                bucket::adjust(
                    &mut entry.bucket,
                    shape.capacity,
                    shape.refill_per_sec,
                    delta as f64,
                    now,
                );
                entry.settle(shape, now);
            }
            return Ok(());
        }
        let mut shard = self.lock_with_room(shard, id, now)?;
        let entry = shard.buckets.entry(id).or_insert_with(|| Entry {
            bucket: Bucket::full(shape.capacity, now),
            full_at: now,
        });
        bucket::adjust(
            &mut entry.bucket,
            shape.capacity,
            shape.refill_per_sec,
            delta as f64,
            now,
        );
        entry.settle(shape, now);
        Ok(())
    }

    /// The shard and id of (route, limit, key).
    fn shard(&self, route: &str, limit: &str, key: &str) -> (usize, u128) {
        let parts = (route, limit, key);
        let hi = self.seeds[0].hash_one(parts);
        let lo = self.seeds[1].hash_one(parts);
        let id = (u128::from(hi) << 64) | u128::from(lo);
        ((hi % SHARDS as u64) as usize, id)
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, Shard> {
        self.shards[shard]
            .lock()
            // The critical section cannot panic halfway through an update;
            // a poisoned lock still guards consistent buckets.
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The shard, locked, once there is room in it for bucket `id` (or it
    /// has one already); a failure when the table is full.
    fn lock_with_room(
        &self,
        shard: usize,
        id: u128,
        now: Instant,
    ) -> Result<MutexGuard<'_, Shard>, Failure> {
        let mut guard = self.lock(shard);
        if !guard.buckets.contains_key(&id) && !guard.make_room(now, self.per_shard) {
            drop(guard);
            self.warn_full(now);
            return Err(Failure {
                reason: "local bucket table full",
                detail: String::new(),
            });
        }
        Ok(guard)
    }

    /// At most once a minute: a flood of new keys must not flood the log.
    fn warn_full(&self, now: Instant) {
        let mut last = self
            .warned_full
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last.is_some_and(|t| now.saturating_duration_since(t) < FULL_WARNING_GAP) {
            return;
        }
        *last = Some(now);
        tracing::warn!(
            backend = "local",
            cap = self.per_shard * SHARDS,
            "rate-limit bucket table full: requests with keys that have no bucket yet are \
             decided by rate_limits.fail_mode; buckets are freed as they refill, so this \
             means many distinct keys (a client-chosen header:?) within one per_secs window"
        );
    }

    /// Buckets held, all shards together.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .buckets
                    .len()
            })
            .sum()
    }

    #[cfg(test)]
    pub(super) fn per_shard(&self) -> usize {
        self.per_shard
    }

    #[cfg(test)]
    pub(super) fn largest_shard(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .buckets
                    .len()
            })
            .max()
            .unwrap_or(0)
    }
}

impl Entry {
    /// Notes when the bucket is full again after a change; returns how long
    /// that is from `now`.
    fn settle(&mut self, shape: Shape, now: Instant) -> Duration {
        let reset_after =
            bucket::time_to_refill(shape.capacity - self.bucket.tokens(), shape.refill_per_sec);
        self.full_at = now.max(self.bucket.updated()) + reset_after;
        reset_after
    }
}

impl Shard {
    /// Drops refilled buckets when the shard has grown enough to be worth a
    /// pass; says whether a new bucket fits under `cap`.
    fn make_room(&mut self, now: Instant, cap: usize) -> bool {
        let len = self.buckets.len();
        let at_cap = len >= cap;
        let swept_lately = self
            .last_sweep
            .is_some_and(|t| now.saturating_duration_since(t) < FULL_SWEEP_GAP);
        if len >= self.sweep_at && !(at_cap && swept_lately) {
            self.buckets.retain(|_, e| e.full_at > now);
            self.last_sweep = Some(now);
            // Doubling keeps the sweeps' cost constant per new bucket.
            self.sweep_at = (self.buckets.len() * 2).max(SWEEP_FLOOR).min(cap);
        }
        self.buckets.len() < cap
    }
}
