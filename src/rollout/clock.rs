//! Times that come from other clocks than the operator's: the stamp a person's tool puts on a
//! request (`pause@2026-12-07T23:00:00.000Z`), and the times in a status that another replica
//! wrote. Either one, if trusted blindly, can lock a rollout: a request stamped a day ahead makes
//! every honest request after it look older for a day; a step start an hour ahead makes the step
//! last an hour longer. The rules here keep the operator's clock the judge.

use std::time::{Duration, SystemTime};

/// How far ahead of the operator's clock a request's stamp may be and still be acted on. Clocks
/// kept by NTP agree to well under a second, and a laptop that lost sync drifts by seconds a day;
/// five minutes lets through every clock that is merely imprecise and stops one that is wrong
/// (a time zone taken for UTC, a date a day off), whose stamp would otherwise outrank every
/// honest request made after it.
pub const MAX_REQUEST_SKEW: Duration = Duration::from_secs(5 * 60);

/// How far ahead of now a time in status may be before it is reported: status keeps whole
/// seconds, so a replica whose clock is a fraction of a second ahead writes times up to a second
/// ahead, which is corrected without a word.
const STATUS_TOLERANCE: Duration = Duration::from_secs(1);

/// The time a request's stamp names, if it is one (`verb@2026-12-07T23:00:00.000Z`, as the plugin
/// writes it, or any RFC 3339 time). Other stamps (a counter, a word) name no time.
pub fn stamp_time(request: &str) -> Option<SystemTime> {
    let (_, stamp) = request.split_once('@')?;
    let at: jiff::Timestamp = stamp.trim().parse().ok()?;
    let since_epoch = Duration::try_from(at.duration_since(jiff::Timestamp::UNIX_EPOCH)).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(since_epoch)
}

/// How far ahead of `now` a request is stamped, when that is more than [`MAX_REQUEST_SKEW`].
pub fn request_too_far_ahead(request: &str, now: SystemTime) -> Option<Duration> {
    let ahead = stamp_time(request)?.duration_since(now).ok()?;
    (ahead > MAX_REQUEST_SKEW).then_some(ahead)
}

/// Brings a time that lies in the future back to `now`: a standby whose clock ran fast wrote it,
/// and a step counted from the future would never end on time. Returns how far it was ahead when
/// that is worth reporting (beyond [`STATUS_TOLERANCE`]).
pub fn pull_back(t: &mut SystemTime, now: SystemTime) -> Option<Duration> {
    let ahead = t.duration_since(now).ok().filter(|d| !d.is_zero())?;
    *t = now;
    (ahead > STATUS_TOLERANCE).then_some(ahead)
}

/// A duration as a person reads it, in its two largest units, rounded to the nearest of the
/// smaller one: `1d2h`, `59m30s`, `4s`. Rounded, not cut: a stamp 25 hours ahead, read a moment
/// later, is `1d1h` ahead, not `1d`.
pub fn human(d: Duration) -> String {
    const UNITS: [(u64, &str); 4] = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    let secs = d
        .as_secs()
        .saturating_add(u64::from(d.subsec_millis() >= 500));
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let first = UNITS
        .iter()
        .position(|(size, _)| secs >= *size)
        .unwrap_or(3);
    let finest = UNITS[(first + 1).min(3)].0;
    let secs = secs.saturating_add(finest / 2) / finest * finest;
    let mut rest = secs;
    let mut text = String::new();
    for (size, unit) in UNITS.iter().skip_while(|(size, _)| secs < *size).take(2) {
        let n = rest / size;
        rest %= size;
        if n > 0 {
            text.push_str(&format!("{n}{unit}"));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> SystemTime {
        stamp_time(&format!("x@{rfc3339}")).unwrap_or_else(|| panic!("{rfc3339}"))
    }

    /// Each case: the request, and whether it is refused when the operator's clock says
    /// 2026-12-07T23:00:00Z.
    #[test]
    fn requests_stamped_far_ahead_are_refused() {
        let now = at("2026-12-07T23:00:00Z");
        let cases = [
            ("pause@2026-12-07T23:00:00.000Z", None),
            ("pause@2026-12-07T22:00:00.000Z", None),
            ("pause@2026-12-07T23:04:59.999Z", None),
            ("pause@2026-12-07T23:05:00.000Z", None),
            ("pause@2026-12-07T23:05:01.000Z", Some("5m1s")),
            ("pause@2026-12-08T23:00:00.000Z", Some("1d")),
            ("resume@2026-12-08T01:30:00+00:00", Some("2h30m")),
            ("pause", None),
            ("pause@7", None),
            ("pause@tomorrow", None),
        ];
        for (request, refused) in cases {
            assert_eq!(
                request_too_far_ahead(request, now).map(human).as_deref(),
                refused,
                "{request}"
            );
        }
    }

    #[test]
    fn times_ahead_are_pulled_back_to_now() {
        let now = at("2026-12-07T23:00:00Z");
        let cases = [
            ("2026-12-07T22:00:00Z", "2026-12-07T22:00:00Z", None),
            ("2026-12-07T23:00:00Z", "2026-12-07T23:00:00Z", None),
            ("2026-12-07T23:00:01Z", "2026-12-07T23:00:00Z", None),
            ("2026-12-08T00:00:00Z", "2026-12-07T23:00:00Z", Some("1h")),
        ];
        for (held, after, reported) in cases {
            let mut t = at(held);
            let ahead = pull_back(&mut t, now);
            assert_eq!(
                (t, ahead.map(human).as_deref()),
                (at(after), reported),
                "{held}"
            );
        }
    }

    #[test]
    fn durations_read_as_people_write_them() {
        let cases = [
            (0, "0ms"),
            (4, "4s"),
            (60, "1m"),
            (3_599, "59m59s"),
            (3_600, "1h"),
            (86_400 + 7_200 + 5, "1d2h"),
            (90_000 - 1, "1d1h"),
            (86_400 + 1_799, "1d"),
            (86_400 + 1_800, "1d1h"),
            (3_600 - 1, "59m59s"),
            (7_199, "2h"),
        ];
        for (secs, text) in cases {
            assert_eq!(human(Duration::from_secs(secs)), text, "{secs}");
        }
        assert_eq!(human(Duration::from_millis(1_499)), "1s");
        assert_eq!(human(Duration::from_millis(400)), "400ms");
        assert_eq!(human(Duration::from_millis(90_000_000 - 30)), "1d1h");
    }
}
