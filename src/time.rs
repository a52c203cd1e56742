//! UTC time formatting (the civil-from-days algorithm
//! of H. Hinnant: a dozen lines, exact) and parsing of times users give (jiff, with time zones).

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds and nanoseconds since the epoch, now.
pub fn now() -> (i64, u32) {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(_) => (0, 0),
    }
}

/// `2026-11-21T23:00:05Z`
pub fn format_utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_known_instants() {
        assert_eq!(super::format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::format_utc(1_795_302_005), "2026-11-21T23:00:05Z");
        assert_eq!(super::format_utc(951_782_400), "2000-02-29T00:00:00Z");
    }
}

/// Parse a time given on the command line (`ingest --time`): RFC 3339 with an offset
/// (`2025-09-01T02:00:00+02:00`, `…Z`), or a civil time `2025-09-01 02:00:00` (also with
/// `T`, or without seconds) in the local time zone (TZ honoured), as restic's `--time`.
/// Returns Unix seconds and nanoseconds.
pub fn parse_time(s: &str) -> Result<(i64, u32), String> {
    let t = s.trim();
    if let Ok(ts) = t.parse::<jiff::Timestamp>() {
        return Ok((ts.as_second(), ts.subsec_nanosecond().max(0) as u32));
    }
    let civil = t
        .parse::<jiff::civil::DateTime>()
        .map_err(|_| format!("{s:?} is not a time: use \"YYYY-MM-DD HH:MM:SS\" (local time) or RFC 3339 such as 2025-09-01T02:00:00Z"))?;
    let zoned = civil
        .to_zoned_datetime(jiff::tz::TimeZone::system())
        .map_err(|e| format!("{s:?}: {e}"))?;
    let ts = zoned.timestamp();
    Ok((ts.as_second(), ts.subsec_nanosecond().max(0) as u32))
}

#[cfg(test)]
mod parse_tests {
    #[test]
    fn parses_rfc3339_and_civil_times() {
        assert_eq!(
            super::parse_time("2025-09-01T02:00:00Z").unwrap(),
            (1_756_692_000, 0)
        );
        assert_eq!(
            super::parse_time("2025-09-01T04:00:00+02:00").unwrap(),
            (1_756_692_000, 0)
        );
        assert!(super::parse_time("2025-09-01 02:00:00").is_ok());
        assert!(super::parse_time("yesterday").is_err());
        assert!(super::parse_time("2025-13-01 02:00:00").is_err());
    }
}
