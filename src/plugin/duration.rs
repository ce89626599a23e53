//! Durations on the command line, parsed by `kube::core::Duration` the way kubectl parses its
//! flags (Go's `time.ParseDuration`: `30s`, `2m`, `1m30s`, `500ms`), so `--timeout` reads the
//! same in `kubectl wait` and `kubectl canary`, and a bare `45` is refused as kubectl refuses it.

use std::time::Duration;

/// Parses a positive duration. Zero and negative durations are refused: every wait this plugin
/// does must end, and a zero timeout would end before it starts.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    let parsed: kube::core::Duration = text
        .parse()
        .map_err(|e| format!("{text:?} is not a duration like 30s, 2m or 1m30s: {e}"))?;
    let duration = Duration::from(parsed);
    if parsed.is_negative() || duration.is_zero() {
        return Err(format!("{text:?}: the duration must be longer than zero"));
    }
    Ok(duration)
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
            ("1h2m3.5s", Duration::from_millis(3_723_500)),
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
            ("-5s", "longer than zero"),
            ("45", "missing a unit"),
            ("10x", "invalid unit"),
            ("1m30", "missing a unit"),
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
