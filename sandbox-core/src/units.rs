//! Parsing of human units: sizes ("512m", "1.5g"), durations ("30s", "500ms")
//! and CPU counts ("1.5").

use std::time::Duration;

use crate::Error;

/// Parses a byte size such as `512m`, `1g`, `1.5GiB`, `64k` or `1048576`.
///
/// Suffixes are binary, as Docker reads them: `k` = 1024, `m` = 1024², `g` = 1024³,
/// `t` = 1024⁴; `b`, `ib` and `B` endings are accepted (`512MiB`, `512mb`).
///
/// ```
/// use sandbox_core::units::parse_bytes;
/// assert_eq!(parse_bytes("memory", "512m").unwrap(), 512 * 1024 * 1024);
/// assert_eq!(parse_bytes("memory", "1.5g").unwrap(), 3 * 512 * 1024 * 1024);
/// assert!(parse_bytes("memory", "-1m").is_err());
/// ```
pub fn parse_bytes(name: &'static str, text: &str) -> Result<u64, Error> {
    let invalid = |why: &str| Error::InvalidLimit {
        name,
        reason: format!("{why} in {text:?}; write a size such as \"512m\", \"1g\" or \"65536\""),
    };
    let lower = text.trim().to_ascii_lowercase();
    let trimmed = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    let split = trimmed
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(trimmed.len());
    let (number, suffix) = trimmed.split_at(split);
    let multiplier: u64 = match suffix {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(invalid("unknown unit")),
    };
    let value = parse_positive_number(number.trim()).ok_or_else(|| invalid("not a number"))?;
    let bytes = value * multiplier as f64;
    if bytes >= u64::MAX as f64 {
        return Err(invalid("too large"));
    }
    Ok(bytes.round() as u64)
}

/// Parses a duration such as `30s`, `500ms`, `2m`, `1h`, `1.5s` or `10` (seconds).
///
/// ```
/// use std::time::Duration;
/// use sandbox_core::units::parse_duration;
/// assert_eq!(parse_duration("timeout", "500ms").unwrap(), Duration::from_millis(500));
/// assert_eq!(parse_duration("timeout", "2m").unwrap(), Duration::from_secs(120));
/// assert!(parse_duration("timeout", "soon").is_err());
/// ```
pub fn parse_duration(name: &'static str, text: &str) -> Result<Duration, Error> {
    let invalid = |why: &str| Error::InvalidLimit {
        name,
        reason: format!("{why} in {text:?}; write a duration such as \"30s\", \"500ms\" or \"2m\""),
    };
    let lower = text.trim().to_ascii_lowercase();
    let split = lower
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(lower.len());
    let (number, suffix) = lower.split_at(split);
    let seconds_per_unit = match suffix {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 1e-3,
        "us" => 1e-6,
        "m" | "min" | "mins" => 60.0,
        "h" => 3600.0,
        _ => return Err(invalid("unknown unit")),
    };
    let value = parse_positive_number(number.trim()).ok_or_else(|| invalid("not a number"))?;
    Duration::try_from_secs_f64(value * seconds_per_unit).map_err(|_| invalid("out of range"))
}

/// Parses a CPU count such as `1`, `1.5` or `0.25`.
///
/// ```
/// use sandbox_core::units::parse_cpus;
/// assert_eq!(parse_cpus("1.5").unwrap(), 1.5);
/// assert!(parse_cpus("many").is_err());
/// ```
pub fn parse_cpus(text: &str) -> Result<f64, Error> {
    parse_positive_number(text.trim()).ok_or_else(|| Error::InvalidLimit {
        name: "cpus",
        reason: format!("not a number in {text:?}; write a CPU count such as \"1\" or \"1.5\""),
    })
}

/// A finite, non-negative decimal number; `None` for anything else.
fn parse_positive_number(text: &str) -> Option<f64> {
    if text.is_empty() || !text.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return None;
    }
    text.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Formats a byte count the way [`parse_bytes`] reads it back (`512m`, `1g`, `100k`, `12345`).
///
/// ```
/// use sandbox_core::units::format_bytes;
/// assert_eq!(format_bytes(512 * 1024 * 1024), "512m");
/// assert_eq!(format_bytes(1000), "1000");
/// ```
pub fn format_bytes(bytes: u64) -> String {
    for (unit, size) in [
        ("t", 1u64 << 40),
        ("g", 1 << 30),
        ("m", 1 << 20),
        ("k", 1 << 10),
    ] {
        if bytes >= size && bytes % size == 0 {
            return format!("{}{unit}", bytes / size);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_binary_units() {
        assert_eq!(parse_bytes("m", "1").unwrap(), 1);
        assert_eq!(parse_bytes("m", "64k").unwrap(), 65536);
        assert_eq!(parse_bytes("m", "512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("m", "512mb").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("m", " 1G ").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("m", "2t").unwrap(), 2 << 40);
    }

    #[test]
    fn bad_sizes_are_rejected_with_the_limit_name() {
        for bad in [
            "",
            "m",
            "-5m",
            "1x",
            "1.2.3m",
            "nan",
            "inf",
            "99999999999999999999t",
        ] {
            let err = parse_bytes("memory", bad).unwrap_err();
            assert!(
                matches!(err, Error::InvalidLimit { name: "memory", .. }),
                "{bad:?} gave {err}"
            );
        }
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("t", "30s").unwrap(), Duration::from_secs(30));
        assert_eq!(
            parse_duration("t", "1.5s").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(parse_duration("t", "10").unwrap(), Duration::from_secs(10));
        assert_eq!(
            parse_duration("t", "1h").unwrap(),
            Duration::from_secs(3600)
        );
        for bad in ["", "s", "-1s", "1 fortnight", "1e9999s"] {
            assert!(parse_duration("t", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn format_round_trips() {
        for bytes in [1, 1000, 1024, 65536, 512 << 20, 3 << 30, (1 << 30) + 1] {
            assert_eq!(parse_bytes("m", &format_bytes(bytes)).unwrap(), bytes);
        }
    }
}
