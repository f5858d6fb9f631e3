//! Time in the engine: milliseconds since the Unix epoch (`u64`), by event time; and the
//! durations a bundle writes (`"30m"`, `"1d"`).

/// Milliseconds in a second.
pub const SECOND_MS: u64 = 1000;
/// Milliseconds in a minute.
pub const MINUTE_MS: u64 = 60 * SECOND_MS;
/// Milliseconds in an hour; hour buckets are `time / HOUR_MS`.
pub const HOUR_MS: u64 = 60 * MINUTE_MS;
/// Milliseconds in a day; day buckets are `time / DAY_MS` (UTC days).
pub const DAY_MS: u64 = 24 * HOUR_MS;

/// Parses a duration: a whole number and a unit, `ms`, `s`, `m`, `h` or `d` (`"90s"`, `"1d"`).
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = s.split_at(digits);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (like \"30m\", \"1d\")"))?;
    let unit_ms = match unit {
        "ms" => 1,
        "s" => SECOND_MS,
        "m" => MINUTE_MS,
        "h" => HOUR_MS,
        "d" => DAY_MS,
        _ => return Err(format!("{s:?}: the unit must be ms, s, m, h or d")),
    };
    n.checked_mul(unit_ms)
        .ok_or_else(|| format!("{s:?} is too long"))
}

/// `t` in whole `unit_ms` (a window's days or hours since the epoch). The two units windows
/// have are divided by as constants (a multiply) rather than by a run-time divisor: a feature
/// divides twice per event, and a 64-bit division costs tens of cycles.
#[inline]
pub(crate) fn units(t: u64, unit_ms: u64) -> u64 {
    match unit_ms {
        DAY_MS => t / DAY_MS,
        HOUR_MS => t / HOUR_MS,
        u => t / u,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30m"), Ok(30 * MINUTE_MS));
        assert_eq!(parse_duration("1d"), Ok(DAY_MS));
        assert_eq!(parse_duration("250ms"), Ok(250));
        assert!(parse_duration("1 d").is_err());
        assert!(parse_duration("d").is_err());
        assert!(parse_duration("5w").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }
}
