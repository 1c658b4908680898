//! Durations as rule files write them: `30s`, `5m`, `1h`, `2d`.

use chrono::Duration;

/// Parses a duration written as a whole number and a unit: `s`, `m`, `h` or `d`
/// (`30s`, `5m`, `1h`, `2d`). Surrounding whitespace is ignored; zero is allowed.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("duration {t:?} has no unit (use s, m, h or d)"))?;
    let (digits, unit) = t.split_at(split);
    if digits.is_empty() {
        return Err(format!("duration {t:?} does not start with a number"));
    }
    let n: i64 = digits
        .parse()
        .map_err(|_| format!("duration {t:?} is too large"))?;
    let secs_per_unit: i64 = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        other => {
            return Err(format!(
                "duration {t:?} has unknown unit {other:?} (use s, m, h or d)"
            ))
        }
    };
    n.checked_mul(secs_per_unit)
        .and_then(Duration::try_seconds)
        .ok_or_else(|| format!("duration {t:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_each_unit_parse() {
        assert_eq!(parse_duration("30s"), Ok(Duration::seconds(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::minutes(5)));
        assert_eq!(parse_duration(" 1h "), Ok(Duration::hours(1)));
        assert_eq!(parse_duration("2d"), Ok(Duration::days(2)));
        assert_eq!(parse_duration("0s"), Ok(Duration::zero()));
    }

    #[test]
    fn malformed_durations_are_refused() {
        for bad in [
            "",
            "5",
            "m",
            "5x",
            "-5m",
            "1.5h",
            "99999999999999999999d",
            "9223372036854775807d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
