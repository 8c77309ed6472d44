//! Spend budgets: micro-USD spent per (scope, name, key) within a calendar
//! window (a UTC day or month), and the window arithmetic.
//!
//! Unlike a bucket, a budget does not refill over time: it starts from zero
//! when the next window begins. The window is read from the caller's wall
//! clock (`SystemTime`), not the Redis server's: nodes whose clocks disagree
//! by a second switch windows a second apart, which is harmless for a daily
//! or monthly budget.
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Decision, Failure};

/// The calendar period a spend budget covers, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BudgetWindow {
    /// From 00:00 UTC to the next 00:00 UTC.
    Day,
    /// From the 1st, 00:00 UTC, to the 1st of the next month, 00:00 UTC.
    Month,
}

impl BudgetWindow {
    /// `day` or `month`, for keys and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetWindow::Day => "day",
            BudgetWindow::Month => "month",
        }
    }
}

const SECS_PER_DAY: i64 = 86_400;

/// The window `now` falls in: its id (`2025-03-14` for a day, `2025-03`
/// for a month; proleptic Gregorian, years before 1 as astronomical years
/// such as `-0001`) and the instant it ends, which is the first instant of
/// the next window.
///
/// Pure: the same `now` always gives the same window. Instants before 1970
/// are handled like any other. An end that `SystemTime` cannot represent
/// (hundreds of billions of years out) is reported as `now`.
pub fn window_bounds(window: BudgetWindow, now: SystemTime) -> (String, SystemTime) {
    let secs = unix_secs(now);
    let days = secs.div_euclid(SECS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    let (id, end_days) = match window {
        BudgetWindow::Day => (format!("{year:04}-{month:02}-{day:02}"), days + 1),
        BudgetWindow::Month => {
            let (y, m) = if month == 12 {
                (year + 1, 1)
            } else {
                (year, month + 1)
            };
            (format!("{year:04}-{month:02}"), days_from_civil(y, m, 1))
        }
    };
    let ends_at = end_days
        .checked_mul(SECS_PER_DAY)
        .and_then(at_unix_secs)
        .unwrap_or(now);
    (id, ends_at)
}

/// Whole seconds since 1970 (floored, so 1969-12-31T23:59:59.5 is -1).
fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => {
            let before = e.duration();
            let whole = i64::try_from(before.as_secs()).unwrap_or(i64::MAX);
            if before.subsec_nanos() > 0 {
                whole.saturating_neg().saturating_sub(1)
            } else {
                whole.saturating_neg()
            }
        }
    }
}

fn at_unix_secs(secs: i64) -> Option<SystemTime> {
    let d = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        UNIX_EPOCH.checked_add(d)
    } else {
        UNIX_EPOCH.checked_sub(d)
    }
}

/// (year, month 1–12, day 1–31) of a day counted from 1970-01-01, in the
/// proleptic Gregorian calendar: Howard Hinnant's `civil_from_days`
/// (<https://howardhinnant.github.io/date_algorithms.html>), which counts
/// in 400-year eras that start on 1 March so that the leap day is last.
pub(super) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Far beyond any SystemTime, and keeps the shift below from overflowing.
    let z = days.clamp(-(1 << 50), 1 << 50) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days from 1970-01-01 to (year, month 1–12, day), the inverse of
/// [`civil_from_days`]; a day past the month's end counts on into the next.
pub(super) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let month = i64::from(month.clamp(1, 12));
    let year = year.clamp(-(1 << 40), 1 << 40) - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400); // [0, 399]
    let mp = (month + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Budgets kept at most by the local backend. An entry is a 16-byte id,
/// the amount and the window's end; a month's entries live a month, so the
/// cap is what bounds a flood of client-chosen keys.
pub(super) const MAX_BUDGETS: usize = 1 << 17;

/// The local backend's budgets: this node's spend only.
pub(super) struct LocalBudgets {
    inner: Mutex<Table>,
    max: usize,
    /// As in `LocalBuckets`: entries are found by a keyed 128-bit hash, so
    /// their size does not depend on the key's length.
    seeds: [RandomState; 2],
    warned_full: Mutex<Option<Instant>>,
}

struct Table {
    spent: HashMap<u128, Spent>,
    /// Drop ended windows when a new entry would make the table this big.
    sweep_at: usize,
    last_sweep: Option<SystemTime>,
}

impl Table {
    /// Drops ended windows when the table has grown enough to be worth a
    /// pass; says whether a new entry fits under `max`.
    fn make_room(&mut self, now: SystemTime, max: usize) -> bool {
        let len = self.spent.len();
        // At the cap, a flood of new keys must not pay a pass each that
        // frees nothing: one pass per FULL_SWEEP_GAP of the callers' clock
        // (a clock that went back counts as a gap).
        let swept_lately = self.last_sweep.is_some_and(|t| {
            now.duration_since(t)
                .is_ok_and(|since| since < FULL_SWEEP_GAP)
        });
        if len >= self.sweep_at && !(len >= max && swept_lately) {
            self.spent.retain(|_, s| s.ends_at > now);
            self.last_sweep = Some(now);
            // Doubling keeps the sweeps' cost constant per new entry.
            self.sweep_at = (self.spent.len() * 2).clamp(SWEEP_FLOOR.min(max), max);
        }
        self.spent.len() < max
    }
}

struct Spent {
    micros: u64,
    ends_at: SystemTime,
}

/// Smallest table worth a sweep.
const SWEEP_FLOOR: usize = 1024;

/// At the cap, the table is swept at most this often.
const FULL_SWEEP_GAP: Duration = Duration::from_millis(100);

impl LocalBudgets {
    pub(super) fn new(max: usize) -> LocalBudgets {
        LocalBudgets {
            inner: Mutex::new(Table {
                spent: HashMap::new(),
                sweep_at: SWEEP_FLOOR.min(max),
                last_sweep: None,
            }),
            max,
            seeds: [RandomState::new(), RandomState::new()],
            warned_full: Mutex::new(None),
        }
    }

    fn id(&self, scope: &str, name: &str, key: &str, window: BudgetWindow, id: &str) -> u128 {
        let parts = (scope, name, key, window, id);
        (u128::from(self.seeds[0].hash_one(parts)) << 64)
            | u128::from(self.seeds[1].hash_one(parts))
    }

    pub(super) fn check(
        &self,
        scope: &str,
        name: &str,
        key: &str,
        window: BudgetWindow,
        limit_micros: u64,
        now: SystemTime,
    ) -> Result<Decision, Failure> {
        let (window_id, ends_at) = window_bounds(window, now);
        let id = self.id(scope, name, key, window, &window_id);
        let mut table = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let spent = table.spent.get(&id).map(|s| s.micros);
        // A key the table has no room for could not record its spend:
        // admitting it would make the budget no limit at all.
        if spent.is_none() && table.spent.len() >= self.max && !table.make_room(now, self.max) {
            drop(table);
            return Err(self.full());
        }
        let spent = spent.unwrap_or(0);
        drop(table);
        Ok(decide(spent, limit_micros, ends_at, now))
    }

    pub(super) fn spend(
        &self,
        scope: &str,
        name: &str,
        key: &str,
        window: BudgetWindow,
        micros: u64,
        now: SystemTime,
    ) -> Result<(), Failure> {
        let (window_id, ends_at) = window_bounds(window, now);
        let id = self.id(scope, name, key, window, &window_id);
        let mut table = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if !table.spent.contains_key(&id) && !table.make_room(now, self.max) {
            drop(table);
            return Err(self.full());
        }
        let entry = table
            .spent
            .entry(id)
            .or_insert(Spent { micros: 0, ends_at });
        entry.micros = entry.micros.saturating_add(micros);
        Ok(())
    }

    fn full(&self) -> Failure {
        let now = Instant::now();
        let mut last = self
            .warned_full
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !last.is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(60)) {
            *last = Some(now);
            tracing::warn!(
                backend = "local",
                cap = self.max,
                "spend budget table full: budgets of keys not seen in this window are decided \
                 by rate_limits.fail_mode until the window ends; this means many distinct keys \
                 (a client-chosen header:?) within one day or month"
            );
        }
        Failure {
            reason: "local budget table full",
            detail: String::new(),
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .spent
            .len()
    }
}

/// Admitted while `spent < limit`; otherwise refused until the window ends.
pub(super) fn decide(spent: u64, limit: u64, ends_at: SystemTime, now: SystemTime) -> Decision {
    // The end is in the future unless the clock moved between reading the
    // window and now; a second is the least a client is told to wait.
    let until_end = ends_at.duration_since(now).unwrap_or(Duration::ZERO);
    if spent < limit {
        Decision::Allowed {
            remaining: limit - spent,
            reset_after: until_end,
        }
    } else {
        Decision::Limited {
            retry_after: until_end.max(Duration::from_secs(1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A UTC instant from its civil parts, through the naive oracle below.
    fn utc(y: i64, mo: u32, d: u32, h: u64, mi: u64, s: u64) -> SystemTime {
        let days = naive_days(y, mo, d);
        at_unix_secs(days * SECS_PER_DAY).unwrap() + Duration::from_secs(h * 3600 + mi * 60 + s)
    }

    fn is_leap(y: i64) -> bool {
        (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
    }

    fn month_len(y: i64, m: u32) -> u32 {
        match m {
            2 if is_leap(y) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        }
    }

    /// Days since 1970 by counting years and months one by one: slow and
    /// obviously right, the oracle for the closed forms.
    fn naive_days(y: i64, m: u32, d: u32) -> i64 {
        let mut days = 0i64;
        if y >= 1970 {
            for yy in 1970..y {
                days += if is_leap(yy) { 366 } else { 365 };
            }
        } else {
            for yy in y..1970 {
                days -= if is_leap(yy) { 366 } else { 365 };
            }
        }
        for mm in 1..m {
            days += i64::from(month_len(y, mm));
        }
        days + i64::from(d) - 1
    }

    #[test]
    fn civil_dates_agree_with_counting_day_by_day() {
        // Every day from 1600-01-01 to 2500-12-31: three non-leap centuries,
        // two leap ones (1600, 2000, 2400).
        let mut days = naive_days(1600, 1, 1);
        for y in 1600..=2500 {
            for m in 1..=12 {
                for d in 1..=month_len(y, m) {
                    assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
                    assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
                    days += 1;
                }
            }
        }
    }

    #[test]
    fn known_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
        // 2038-01-19, where 32-bit time_t ends.
        assert_eq!(civil_from_days(2_147_483_647 / 86_400), (2038, 1, 19));
        assert_eq!(civil_from_days(days_from_civil(0, 3, 1) - 1), (0, 2, 29));
        assert_eq!(civil_from_days(days_from_civil(-1, 12, 31)), (-1, 12, 31));
        // A day past the month's end counts on.
        assert_eq!(days_from_civil(2023, 2, 29), days_from_civil(2023, 3, 1));
    }

    #[test]
    fn day_windows_end_at_the_next_utc_midnight() {
        let cases = [
            (
                utc(2025, 3, 14, 12, 30, 0),
                "2025-03-14",
                utc(2025, 3, 15, 0, 0, 0),
            ),
            (
                utc(2025, 3, 14, 0, 0, 0),
                "2025-03-14",
                utc(2025, 3, 15, 0, 0, 0),
            ),
            (
                utc(2025, 3, 14, 23, 59, 59),
                "2025-03-14",
                utc(2025, 3, 15, 0, 0, 0),
            ),
            (
                utc(2025, 1, 31, 8, 0, 0),
                "2025-01-31",
                utc(2025, 2, 1, 0, 0, 0),
            ),
            (
                utc(2024, 2, 28, 8, 0, 0),
                "2024-02-28",
                utc(2024, 2, 29, 0, 0, 0),
            ),
            (
                utc(2024, 2, 29, 8, 0, 0),
                "2024-02-29",
                utc(2024, 3, 1, 0, 0, 0),
            ),
            (
                utc(2023, 2, 28, 8, 0, 0),
                "2023-02-28",
                utc(2023, 3, 1, 0, 0, 0),
            ),
            (
                utc(2100, 2, 28, 8, 0, 0),
                "2100-02-28",
                utc(2100, 3, 1, 0, 0, 0),
            ),
            (
                utc(2025, 12, 31, 23, 0, 0),
                "2025-12-31",
                utc(2026, 1, 1, 0, 0, 0),
            ),
            (
                utc(1970, 1, 1, 0, 0, 0),
                "1970-01-01",
                utc(1970, 1, 2, 0, 0, 0),
            ),
            (
                utc(1969, 12, 31, 18, 0, 0),
                "1969-12-31",
                utc(1970, 1, 1, 0, 0, 0),
            ),
        ];
        for (now, id, end) in cases {
            assert_eq!(
                window_bounds(BudgetWindow::Day, now),
                (id.to_string(), end),
                "{now:?}"
            );
        }
    }

    #[test]
    fn month_windows_end_on_the_first_of_the_next_month() {
        let cases = [
            (
                utc(2025, 1, 15, 0, 0, 0),
                "2025-01",
                utc(2025, 2, 1, 0, 0, 0),
            ),
            (
                utc(2025, 1, 31, 23, 59, 59),
                "2025-01",
                utc(2025, 2, 1, 0, 0, 0),
            ),
            (
                utc(2025, 2, 1, 0, 0, 0),
                "2025-02",
                utc(2025, 3, 1, 0, 0, 0),
            ),
            (
                utc(2024, 2, 29, 12, 0, 0),
                "2024-02",
                utc(2024, 3, 1, 0, 0, 0),
            ),
            (
                utc(2000, 2, 29, 12, 0, 0),
                "2000-02",
                utc(2000, 3, 1, 0, 0, 0),
            ),
            (
                utc(2025, 4, 30, 12, 0, 0),
                "2025-04",
                utc(2025, 5, 1, 0, 0, 0),
            ),
            (
                utc(2025, 12, 1, 0, 0, 0),
                "2025-12",
                utc(2026, 1, 1, 0, 0, 0),
            ),
            (
                utc(2025, 12, 31, 23, 59, 59),
                "2025-12",
                utc(2026, 1, 1, 0, 0, 0),
            ),
            (
                utc(1999, 12, 31, 23, 59, 59),
                "1999-12",
                utc(2000, 1, 1, 0, 0, 0),
            ),
            (
                utc(1969, 12, 31, 23, 59, 59),
                "1969-12",
                utc(1970, 1, 1, 0, 0, 0),
            ),
            (
                utc(9999, 12, 31, 0, 0, 0),
                "9999-12",
                utc(10000, 1, 1, 0, 0, 0),
            ),
        ];
        for (now, id, end) in cases {
            assert_eq!(
                window_bounds(BudgetWindow::Month, now),
                (id.to_string(), end),
                "{now:?}"
            );
        }
    }

    #[test]
    fn every_hour_of_a_leap_year_and_the_next_lands_in_its_own_window() {
        let start = utc(2024, 1, 1, 0, 0, 0);
        for hour in 0..(366 + 365) * 24 {
            let now = start + Duration::from_secs(hour * 3600 + 1799);
            let secs = unix_secs(now);
            let (y, m, d) = civil_from_days(secs.div_euclid(SECS_PER_DAY));
            let (day_id, day_end) = window_bounds(BudgetWindow::Day, now);
            assert_eq!(day_id, format!("{y:04}-{m:02}-{d:02}"));
            assert!(
                day_end > now
                    && day_end.duration_since(now).unwrap() <= Duration::from_secs(86_400)
            );
            assert_eq!(unix_secs(day_end) % SECS_PER_DAY, 0);
            let (month_id, month_end) = window_bounds(BudgetWindow::Month, now);
            assert_eq!(month_id, format!("{y:04}-{m:02}"));
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            assert_eq!(month_end, utc(ny, nm, 1, 0, 0, 0));
            // The first instant of the next window is in the next window.
            assert_ne!(window_bounds(BudgetWindow::Day, day_end).0, day_id);
            assert_ne!(window_bounds(BudgetWindow::Month, month_end).0, month_id);
            assert_eq!(
                window_bounds(BudgetWindow::Month, month_end - Duration::from_nanos(1)).0,
                month_id
            );
        }
    }

    #[test]
    fn sub_second_instants_before_1970_floor() {
        let t = UNIX_EPOCH - Duration::from_millis(500);
        assert_eq!(unix_secs(t), -1);
        assert_eq!(
            window_bounds(BudgetWindow::Day, t),
            ("1969-12-31".to_string(), UNIX_EPOCH)
        );
        assert_eq!(unix_secs(UNIX_EPOCH - Duration::from_secs(1)), -1);
        assert_eq!(unix_secs(UNIX_EPOCH + Duration::from_millis(999)), 0);
    }

    #[test]
    fn extreme_instants_do_not_panic() {
        for t in [
            UNIX_EPOCH + Duration::from_secs(i64::MAX as u64),
            UNIX_EPOCH - Duration::from_secs(i64::MAX as u64),
            UNIX_EPOCH + Duration::from_secs(1 << 50),
        ] {
            for w in [BudgetWindow::Day, BudgetWindow::Month] {
                let (_, end) = window_bounds(w, t);
                let _ = decide(0, 1, end, t);
            }
        }
    }

    #[test]
    fn decide_admits_below_the_limit_and_refuses_until_the_window_ends() {
        let now = utc(2025, 6, 30, 23, 0, 0);
        let (_, end) = window_bounds(BudgetWindow::Day, now);
        assert_eq!(
            decide(999, 1000, end, now),
            Decision::Allowed {
                remaining: 1,
                reset_after: Duration::from_secs(3600)
            }
        );
        assert_eq!(
            decide(1000, 1000, end, now),
            Decision::Limited {
                retry_after: Duration::from_secs(3600)
            }
        );
        // A zero budget admits nothing; an end already past still waits 1 s.
        assert!(!decide(0, 0, end, now).admitted());
        assert_eq!(
            decide(5, 1, now, end),
            Decision::Limited {
                retry_after: Duration::from_secs(1)
            }
        );
    }

    #[test]
    fn local_budgets_add_up_per_key_and_window() {
        let b = LocalBudgets::new(MAX_BUDGETS);
        let now = utc(2025, 3, 14, 10, 0, 0);
        let day = BudgetWindow::Day;
        assert!(b
            .check("r", "daily", "k", day, 100, now)
            .unwrap()
            .admitted());
        b.spend("r", "daily", "k", day, 60, now).unwrap();
        assert_eq!(
            b.check("r", "daily", "k", day, 100, now).unwrap(),
            Decision::Allowed {
                remaining: 40,
                reset_after: Duration::from_secs(14 * 3600)
            }
        );
        b.spend("r", "daily", "k", day, 40, now).unwrap();
        assert_eq!(
            b.check("r", "daily", "k", day, 100, now).unwrap(),
            Decision::Limited {
                retry_after: Duration::from_secs(14 * 3600)
            }
        );
        // Other keys, names, scopes and windows are untouched.
        for (scope, name, key, w) in [
            ("r", "daily", "k2", day),
            ("r", "daily2", "k", day),
            ("r2", "daily", "k", day),
            ("r", "daily", "k", BudgetWindow::Month),
        ] {
            assert!(b.check(scope, name, key, w, 100, now).unwrap().admitted());
        }
        // The next day starts from zero.
        let tomorrow = utc(2025, 3, 15, 0, 0, 0);
        assert_eq!(
            b.check("r", "daily", "k", day, 100, tomorrow).unwrap(),
            Decision::Allowed {
                remaining: 100,
                reset_after: Duration::from_secs(86_400)
            }
        );
        // Spend saturates rather than wrapping.
        b.spend("r", "daily", "k", day, u64::MAX, now).unwrap();
        assert!(!b
            .check("r", "daily", "k", day, u64::MAX, now)
            .unwrap()
            .admitted());
    }

    #[test]
    fn ended_windows_are_dropped_and_the_table_is_capped() {
        let b = LocalBudgets::new(2048);
        let day1 = utc(2025, 3, 14, 10, 0, 0);
        for i in 0..2048 {
            b.spend("r", "n", &format!("k{i}"), BudgetWindow::Day, 1, day1)
                .unwrap();
        }
        assert_eq!(b.len(), 2048);
        // Full: a new key can neither spend nor be admitted blindly; a key
        // with an entry still can.
        let f = b
            .spend("r", "n", "new", BudgetWindow::Day, 1, day1)
            .unwrap_err();
        assert_eq!(f.reason, "local budget table full");
        assert!(b
            .check("r", "n", "new", BudgetWindow::Day, 10, day1)
            .is_err());
        assert!(b.check("r", "n", "k1", BudgetWindow::Day, 10, day1).is_ok());
        b.spend("r", "n", "k1", BudgetWindow::Day, 1, day1).unwrap();
        // The next day, yesterday's entries go to make room.
        let day2 = utc(2025, 3, 15, 10, 0, 0);
        for i in 0..100 {
            b.spend("r", "n", &format!("d2-{i}"), BudgetWindow::Day, 1, day2)
                .unwrap();
        }
        assert_eq!(b.len(), 100);
    }
}
