//! Durations on the command line, written the way kubectl's flags take them (`30s`, `2m`,
//! `1m30s`, `500ms`), so `--timeout` reads the same in `kubectl wait` and `kubectl canary`.

use std::time::Duration;

/// Parses `90s`, `2m`, `1h30m`, `250ms` or a bare number of seconds. Zero is refused: every wait
/// this plugin does must end, and a zero timeout would end before it starts.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    let total = if text.chars().all(|c| c.is_ascii_digit()) {
        seconds(text)?
    } else {
        let mut total = Duration::ZERO;
        let mut rest = text;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit() && c != '.')
                .unwrap_or(rest.len());
            let (number, tail) = rest.split_at(digits);
            let unit_len = tail
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(tail.len());
            let (unit, tail) = tail.split_at(unit_len);
            let value: f64 = number
                .parse()
                .map_err(|_| format!("{text:?} is not a duration (like 30s, 2m, 1m30s)"))?;
            let scale = match unit {
                "ms" => 0.001,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                "" => return Err(format!("{text:?}: {number} needs a unit (ms, s, m or h)")),
                other => {
                    return Err(format!(
                        "{text:?}: unknown unit {other:?} (use ms, s, m or h)"
                    ));
                }
            };
            total += Duration::try_from_secs_f64(value * scale)
                .map_err(|_| format!("{text:?} is out of range"))?;
            rest = tail;
        }
        total
    };
    if total.is_zero() {
        return Err(format!("{text:?}: the duration must be longer than zero"));
    }
    Ok(total)
}

fn seconds(text: &str) -> Result<Duration, String> {
    text.parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|_| format!("{text:?} is out of range"))
}

/// Writes a duration compactly (`1.2s`, `45s`, `2m05s`) for progress and result lines.
pub fn display(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 10.0 {
        format!("{secs:.1}s")
    } else if secs < 60.0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_kubectl_style_durations() {
        let cases = [
            ("30s", Duration::from_secs(30)),
            ("2m", Duration::from_secs(120)),
            ("1m30s", Duration::from_secs(90)),
            ("1h", Duration::from_secs(3600)),
            ("250ms", Duration::from_millis(250)),
            ("1.5s", Duration::from_millis(1500)),
            ("45", Duration::from_secs(45)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_bounded_duration() {
        let cases = [
            ("", "empty"),
            ("0s", "longer than zero"),
            ("0", "longer than zero"),
            ("10x", "unknown unit"),
            ("1m30", "needs a unit"),
            ("s", "not a duration"),
            ("abc", "not a duration"),
        ];
        for (text, message) in cases {
            match parse(text) {
                Ok(d) => panic!("{text:?} was accepted as {d:?}"),
                Err(error) => assert!(error.contains(message), "{text}: {error}"),
            }
        }
    }

    #[test]
    fn displays_compactly() {
        assert_eq!(display(Duration::from_millis(1234)), "1.2s");
        assert_eq!(display(Duration::from_secs(45)), "45s");
        assert_eq!(display(Duration::from_secs(125)), "2m05s");
    }
}
