//! The value parsers behind every numeric flag of every binary in the workspace (the proxy, the
//! fixtures, the harness and its `fuzz` and `grade` subcommands), so that `inf`, `NaN`, `1e30`,
//! negatives, zero and garbage are refused the same way everywhere: one line naming what was
//! expected and what was given, which each binary turns into exit 2. `Duration::from_secs_f64`
//! panics on a value it cannot hold, so no number reaches it without passing through here.

use std::fmt::Display;
use std::ops::RangeInclusive;
use std::str::FromStr;

/// A day: the most any harness deadline or factor needs.
pub const DAY_SECS: f64 = 86_400.0;
/// A year: the most a proxy's own timers need.
pub const YEAR_SECS: f64 = 365.0 * DAY_SECS;

fn number(s: &str, what: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("expected {what}, got '{s}'"))?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("expected {what}, got '{s}'"))
    }
}

/// Seconds, greater than 0 and at most `max`.
pub fn seconds(s: &str, max: f64) -> Result<f64, String> {
    let v = number(s, "a number of seconds")?;
    if v <= 0.0 || v > max {
        return Err(format!(
            "expected a number of seconds greater than 0 and at most {max}, got '{s}'"
        ));
    }
    Ok(v)
}

/// Seconds, from 0 to `max`: a budget that may be nothing.
pub fn seconds_or_zero(s: &str, max: f64) -> Result<f64, String> {
    let v = number(s, "a number of seconds")?;
    if !(0.0..=max).contains(&v) {
        return Err(format!(
            "expected a number of seconds from 0 to {max}, got '{s}'"
        ));
    }
    Ok(v)
}

/// A factor that stretches deadlines: greater than 0 and at most 1000.
pub fn factor(s: &str) -> Result<f64, String> {
    const MAX: f64 = 1000.0;
    let v = number(s, "a factor")?;
    if v <= 0.0 || v > MAX {
        return Err(format!(
            "expected a factor greater than 0 and at most {MAX}, got '{s}'"
        ));
    }
    Ok(v)
}

/// A whole number of `what` (bytes, connections) from 1 to `max`.
pub fn count(s: &str, what: &str, max: usize) -> Result<usize, String> {
    whole(s, &format!("a number of {what}"), 1..=max)
}

/// A whole number in `range`, of the flag's own type, for the ones [`count`] does not fit: a
/// range from 0 (cases besides the regressions, a case's index) or the whole type (a seed).
/// `what` names it with its article ("a number of cases", "a seed").
pub fn whole<T>(s: &str, what: &str, range: RangeInclusive<T>) -> Result<T, String>
where
    T: FromStr + PartialOrd + Display,
{
    match s.trim().parse::<T>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(format!(
            "expected {what} from {} to {}, got '{s}'",
            range.start(),
            range.end()
        )),
    }
}

/// A TCP port, 1-65535.
pub fn port(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u16>() {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(format!("expected a port number 1-65535, got '{s}'")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every parser refuses the same bad inputs with one line that quotes them.
    #[test]
    fn bad_numbers_are_refused_with_one_line_quoting_them() {
        type Parser = fn(&str) -> Result<(), String>;
        let parsers: [(&str, Parser); 7] = [
            ("seconds", |s| seconds(s, DAY_SECS).map(drop)),
            ("seconds_or_zero", |s| {
                seconds_or_zero(s, DAY_SECS).map(drop)
            }),
            ("factor", |s| factor(s).map(drop)),
            ("count", |s| count(s, "bytes", 1 << 20).map(drop)),
            ("whole from 0", |s| {
                whole(s, "a number of cases", 0..=u32::MAX).map(drop)
            }),
            ("whole u64", |s| whole(s, "a seed", 0..=u64::MAX).map(drop)),
            ("port", |s| port(s).map(drop)),
        ];
        for (name, parse) in parsers {
            for bad in [
                "inf", "-inf", "NaN", "1e30", "-1", "garbage", "", " ", "0x10",
            ] {
                let e = parse(bad).expect_err(&format!("{name} took {bad:?}"));
                assert!(e.starts_with("expected ") && !e.contains('\n'), "{e}");
                assert!(e.ends_with(&format!("got '{bad}'")), "{name}: {e}");
            }
        }
        for zero_is_bad in [
            seconds("0", DAY_SECS).is_err(),
            factor("0").is_err(),
            count("0", "bytes", 10).is_err(),
            port("0").is_err(),
        ] {
            assert!(zero_is_bad);
        }
        assert_eq!(seconds_or_zero("0", DAY_SECS), Ok(0.0));
        assert_eq!(seconds(" 2.5 ", DAY_SECS), Ok(2.5));
        assert!(seconds("86401", DAY_SECS).is_err());
        assert_eq!(seconds("86401", YEAR_SECS), Ok(86_401.0));
        assert_eq!(factor("1000"), Ok(1000.0));
        assert!(factor("1000.5").is_err());
        assert_eq!(count("10", "bytes", 10), Ok(10));
        assert!(count("11", "bytes", 10).is_err());
        assert_eq!(whole("0", "a number of cases", 0..=10u32), Ok(0));
        assert_eq!(whole(" 10 ", "a number of cases", 0..=10u32), Ok(10));
        assert_eq!(
            whole("11", "a number of cases", 0..=10u32),
            Err("expected a number of cases from 0 to 10, got '11'".into())
        );
        assert_eq!(
            whole("3", "a number of runs", 4..=8u8),
            Err("expected a number of runs from 4 to 8, got '3'".into())
        );
        assert_eq!(
            whole("18446744073709551615", "a seed", 0..=u64::MAX),
            Ok(u64::MAX)
        );
        assert_eq!(
            count("0", "bytes", 10),
            Err("expected a number of bytes from 1 to 10, got '0'".into())
        );
        assert_eq!(port("65535"), Ok(65535));
        assert!(port("65536").is_err());
    }
}
