//! Time text for the audit log: RFC 3339 timestamps (UTC, milliseconds) for rows and
//! output, and the `--since` forms of `portcullis audit query` (RFC 3339, Unix
//! milliseconds, or a duration such as `1h` or `1h30m` before now).
//!
//! Hand-written (days from the civil calendar, after H. Hinnant) to avoid a date crate
//! for two small conversions.

use std::time::Duration;

/// `2025-01-31T23:59:59.123Z` for Unix milliseconds. Fixed width for years 0000-9999,
/// so the text sorts in time order (the SQLite sink relies on that).
pub(crate) fn format_ms(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Parses an RFC 3339 timestamp (`2025-01-31T23:59:59Z`, with optional fraction and a
/// `Z` or `+hh:mm` offset; a space may replace the `T`) or a bare date (`2025-01-31`,
/// midnight UTC) into Unix milliseconds.
pub(crate) fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.trim().as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&mo) || !(1..=days_in_month(y, mo)).contains(&d) {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    if b.len() == 10 {
        return Some(days * 86_400_000);
    }
    if !matches!(b[10], b'T' | b't' | b' ') || b.len() < 19 || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
        let digits = &s.trim()[start..i.min(start + 3)];
        millis = digits.parse::<i64>().ok()? * 10_i64.pow(3 - digits.len() as u32);
    }
    let offset_min = match b.get(i) {
        Some(b'Z' | b'z') if b.len() == i + 1 => 0,
        Some(sign @ (b'+' | b'-')) if b.len() == i + 6 && b[i + 3] == b':' => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let m = oh * 60 + om;
            if *sign == b'-' { -m } else { m }
        }
        _ => return None,
    };
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60;
    Some(secs * 1000 + millis)
}

/// Parses a duration: one or more `<number><unit>` with units `ms`, `s`, `m`, `h`,
/// `d`, `w` (`90s`, `15m`, `1h30m`, `7d`).
pub(crate) fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit_ms: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total = total.checked_add(n.checked_mul(unit_ms)?)?;
    }
    Some(Duration::from_millis(total))
}

/// The `--since` argument as Unix milliseconds: all digits is Unix milliseconds, a
/// duration is that long before `now_ms`, anything else must be RFC 3339.
pub(crate) fn parse_since(s: &str, now_ms: u64) -> Result<u64, String> {
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit()) {
        return t
            .parse()
            .map_err(|_| format!("--since {s:?}: number too large"));
    }
    if let Some(d) = parse_duration(t) {
        return Ok(now_ms.saturating_sub(d.as_millis() as u64));
    }
    match parse_rfc3339(t) {
        Some(ms) => Ok(ms.max(0) as u64),
        None => Err(format!(
            "--since {s:?}: expected an RFC 3339 time (2025-01-31T12:00:00Z), Unix milliseconds, \
             or a duration before now (30m, 1h, 2d)"
        )),
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_round_trip() {
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(format_ms(1_735_689_599_999), "2024-12-31T23:59:59.999Z");
        for ms in [0, 951_782_400_123, 1_735_689_599_999, 4_102_444_800_000] {
            assert_eq!(parse_rfc3339(&format_ms(ms)), Some(ms as i64));
        }
    }

    #[test]
    fn parses_offsets_fractions_and_dates() {
        let z = parse_rfc3339("2025-03-01T12:00:00Z").unwrap();
        assert_eq!(parse_rfc3339("2025-03-01T14:30:00+02:30"), Some(z));
        assert_eq!(parse_rfc3339("2025-03-01 07:00:00-05:00"), Some(z));
        assert_eq!(parse_rfc3339("2025-03-01T12:00:00.5Z"), Some(z + 500));
        assert_eq!(parse_rfc3339("2025-03-01T12:00:00.123456Z"), Some(z + 123));
        assert_eq!(parse_rfc3339("2025-03-01"), Some(z - 12 * 3_600_000));
        for bad in [
            "",
            "2025-02-30",
            "2025-13-01T00:00:00Z",
            "2025-03-01T12:00:00",
            "2025-03-01T25:00:00Z",
            "2025-03-01T12:00:00.Z",
            "yesterday",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn parses_durations_and_since() {
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2d"), Some(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("1x"), None);
        assert_eq!(parse_duration("h"), None);
        let now = 10_000_000;
        assert_eq!(parse_since("1h", now), Ok(now - 3_600_000));
        assert_eq!(parse_since("1700000000000", now), Ok(1_700_000_000_000));
        assert_eq!(
            parse_since("1970-01-01T00:00:01Z", now),
            Ok(1000),
            "RFC 3339"
        );
        assert!(parse_since("soon", now).is_err());
    }
}
