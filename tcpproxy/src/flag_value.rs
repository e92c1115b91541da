//! The value parsers behind every numeric flag of every binary in the workspace (the proxy, the
//! fixtures, the harness and its `fuzz` and `grade` subcommands), so that `inf`, `NaN`, `1e30`,
//! negatives, zero and garbage are refused the same way everywhere: one line naming what was
//! expected and what was given, which each binary turns into exit 2. `Duration::from_secs_f64`
//! panics on a value it cannot hold, so no number reaches it without passing through here.

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
    let refuse = || format!("expected a number of {what} from 1 to {max}, got '{s}'");
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(refuse()),
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
        let parsers: [(&str, Parser); 5] = [
            ("seconds", |s| seconds(s, DAY_SECS).map(drop)),
            ("seconds_or_zero", |s| {
                seconds_or_zero(s, DAY_SECS).map(drop)
            }),
            ("factor", |s| factor(s).map(drop)),
            ("count", |s| count(s, "bytes", 1 << 20).map(drop)),
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
        assert_eq!(port("65535"), Ok(65535));
        assert!(port("65536").is_err());
    }
}
