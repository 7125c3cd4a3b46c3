//! Fixed UTC quota windows and their ids: second (burst limits), minute, hour, day,
//! calendar month. The `Window` type itself is what the operator writes
//! (`per = "day"`, `config::quota`); this module says where a window starts and ends.

use std::time::{Duration, SystemTime};

use crate::config::Window;

impl Window {
    /// The id of the window containing `now` (Unix seconds) and the time left in it.
    pub(crate) fn current(self, now: u64) -> (u64, Duration) {
        let fixed = |len: u64| (now / len, Duration::from_secs(len - now % len));
        match self {
            Window::Second => fixed(1),
            Window::Minute => fixed(60),
            Window::Hour => fixed(3600),
            Window::Day => fixed(86_400),
            Window::Month => {
                let (y, m) = year_month(now / 86_400);
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                let next = days_from_civil(ny, nm) * 86_400;
                (
                    (y as u64) * 12 + m as u64 - 1,
                    Duration::from_secs(next.saturating_sub(now)),
                )
            }
        }
    }
}

pub(super) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// (year, month 1-12) of a day number since 1970-01-01 (Howard Hinnant's civil_from_days).
fn year_month(days: u64) -> (i64, u32) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m)
}

/// Day number of the first day of (year, month).
fn days_from_civil(y: i64, m: u32) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 } as i64;
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe - 719_468) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_windows() {
        assert_eq!(Window::Minute.current(125), (2, Duration::from_secs(55)));
        assert_eq!(Window::Hour.current(3600), (1, Duration::from_secs(3600)));
        assert_eq!(Window::Day.current(86_399), (0, Duration::from_secs(1)));
    }

    #[test]
    fn calendar_months() {
        // 2026-11-22T00:00:00Z = 1795305600; December starts 1796083200.
        let (id, left) = Window::Month.current(1_795_305_600);
        assert_eq!(id, 2026 * 12 + 10);
        assert_eq!(left, Duration::from_secs(1_796_083_200 - 1_795_305_600));
        // 2024-02-29 is in February 2024; March 2024 starts at 1709251200.
        let (id, left) = Window::Month.current(1_709_164_800);
        assert_eq!(id, 2024 * 12 + 1);
        assert_eq!(left, Duration::from_secs(86_400));
        // December rolls over to January.
        let (id, _) = Window::Month.current(1_798_761_600 - 1); // 2026-12-31T23:59:59Z
        assert_eq!(id, 2026 * 12 + 11);
        assert_eq!(days_from_civil(1970, 1), 0);
    }
}
