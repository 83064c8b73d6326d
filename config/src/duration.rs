//! Durations as operators write them: `250ms`, `5s`, `2m`, `1h`, `1m30s`.

use std::time::Duration;

/// Parses a duration such as `250ms`, `5s`, `1m30s` or `1h`. A bare number
/// is refused: the unit is where mistakes hide.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let expected =
        || format!("expected a duration like \"250ms\", \"5s\" or \"1m30s\", found {text:?}");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(expected());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(expected)?;
        if digits == 0 {
            return Err(expected());
        }
        let value: u64 = rest[..digits].parse().map_err(|_| expected())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "us" | "µs" => Duration::from_micros(value),
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value.saturating_mul(60)),
            "h" => Duration::from_secs(value.saturating_mul(3600)),
            _ => return Err(expected()),
        };
        total = total.saturating_add(part);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_compounds() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("100us"), Ok(Duration::from_micros(100)));
    }

    #[test]
    fn bare_numbers_and_unknown_units_are_refused() {
        for bad in ["", "5", "s", "5 s", "5sec", "-1s", "1.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
