//! Go `time.Duration` text (`1m30s`, `500ms`, `-1.5h`): the syntax of upstream kubelet duration
//! flags and of every `metav1.Duration` field in the KubeletConfiguration file.
//!
//! [`parse_duration`] follows Go's `time.ParseDuration` and [`format_duration`] Go's
//! `Duration.String`, so values round-trip with upstream tools (`/configz`, kubeadm) and
//! messages read as upstream's (`back-off 2m40s restarting failed container`). Pure
//! functions.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

const NANOSECOND: u64 = 1;
const MICROSECOND: u64 = 1_000;
const MILLISECOND: u64 = 1_000_000;
const SECOND: u64 = 1_000_000_000;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;
/// Magnitude of the most negative duration (`i64::MIN` nanoseconds), the largest Go accepts.
const MAX_MAGNITUDE: u64 = 1 << 63;

/// Why a duration string was rejected; the messages are Go's, word for word.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Empty, or not a sequence of `<number><unit>` terms (`1h2m`, `1.5s`).
    #[error("time: invalid duration {0:?}")]
    Invalid(String),
    /// A number without a unit (only a bare `0` may omit it).
    #[error("time: missing unit in duration {0:?}")]
    MissingUnit(String),
    /// A unit other than `ns`, `us` (`µs`), `ms`, `s`, `m`, `h`.
    #[error("time: unknown unit {unit:?} in duration {input:?}")]
    UnknownUnit {
        /// The unit as written.
        unit: String,
        /// The whole input.
        input: String,
    },
    /// Beyond the range of Go's int64 nanoseconds (about 292 years).
    #[error("time: invalid duration {0:?} (out of range)")]
    OutOfRange(String),
}

/// A signed span of time in nanoseconds, like Go's `time.Duration`.
///
/// Negative values parse (as in Go) so that validation can name them; [`GoDuration::to_std`]
/// refuses them. Serialized as its Go string (`"1m0s"`), like `metav1.Duration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GoDuration(i64);

impl GoDuration {
    /// The zero duration, which most config fields read as "use the default".
    pub const ZERO: GoDuration = GoDuration(0);

    /// A duration of `nanos` nanoseconds.
    pub const fn from_nanos(nanos: i64) -> Self {
        GoDuration(nanos)
    }

    /// A duration of `secs` seconds, saturating at the ends of the range.
    pub const fn from_secs(secs: i64) -> Self {
        GoDuration(secs.saturating_mul(SECOND as i64))
    }

    /// A duration of `millis` milliseconds, saturating at the ends of the range.
    pub const fn from_millis(millis: i64) -> Self {
        GoDuration(millis.saturating_mul(MILLISECOND as i64))
    }

    /// The length in nanoseconds.
    pub const fn as_nanos(self) -> i64 {
        self.0
    }

    /// Whether this is exactly zero.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Whether this is below zero.
    pub const fn is_negative(self) -> bool {
        self.0 < 0
    }

    /// The same span as a [`std::time::Duration`], or `None` when negative.
    pub fn to_std(self) -> Option<Duration> {
        u64::try_from(self.0).ok().map(Duration::from_nanos)
    }

    /// A [`std::time::Duration`] as a `GoDuration`, saturating at about 292 years.
    pub fn from_std(d: Duration) -> Self {
        GoDuration(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    }
}

impl FromStr for GoDuration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_duration(s)
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(*self))
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_duration(*self))
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(DurationVisitor)
    }
}

/// Accepts only strings, like `metav1.Duration` (a JSON number is a type error upstream too).
struct DurationVisitor;

impl de::Visitor<'_> for DurationVisitor {
    type Value = GoDuration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Go duration string such as \"1m30s\"")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<GoDuration, E> {
        parse_duration(v).map_err(E::custom)
    }
}

/// Parses Go duration syntax: an optional sign, then one or more decimal numbers, each with an
/// optional fraction and a unit (`ns`, `us`/`µs`/`μs`, `ms`, `s`, `m`, `h`), e.g. `-1.5h`,
/// `2h45m`, `300ms`. A bare `0` is the only number allowed without a unit.
pub fn parse_duration(input: &str) -> Result<GoDuration, DurationError> {
    let invalid = || DurationError::Invalid(input.to_string());
    let out_of_range = || DurationError::OutOfRange(input.to_string());

    let (negative, mut rest) = match input.as_bytes().first() {
        Some(b'-') => (true, &input[1..]),
        Some(b'+') => (false, &input[1..]),
        _ => (false, input),
    };
    if rest == "0" {
        return Ok(GoDuration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }

    let mut total: u64 = 0;
    while !rest.is_empty() {
        // Each term starts with a digit or a decimal point.
        if !rest.starts_with(|c: char| c == '.' || c.is_ascii_digit()) {
            return Err(invalid());
        }
        let (whole_digits, after_whole) = split_digits(rest);
        let (frac_digits, after_number) = match after_whole.strip_prefix('.') {
            Some(after_dot) => split_digits(after_dot),
            None => ("", after_whole),
        };
        if whole_digits.is_empty() && frac_digits.is_empty() {
            return Err(invalid());
        }

        let unit_len = after_number
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(after_number.len());
        if unit_len == 0 {
            return Err(DurationError::MissingUnit(input.to_string()));
        }
        let (unit_text, after_unit) = after_number.split_at(unit_len);
        let unit = unit_nanos(unit_text).ok_or_else(|| DurationError::UnknownUnit {
            unit: unit_text.to_string(),
            input: input.to_string(),
        })?;

        let whole: u64 = if whole_digits.is_empty() {
            0
        } else {
            whole_digits.parse().map_err(|_| out_of_range())?
        };
        let term = whole
            .checked_mul(unit)
            .and_then(|v| v.checked_add(fraction_nanos(frac_digits, unit)))
            .filter(|v| *v <= MAX_MAGNITUDE)
            .ok_or_else(out_of_range)?;
        total = total
            .checked_add(term)
            .filter(|v| *v <= MAX_MAGNITUDE)
            .ok_or_else(out_of_range)?;
        rest = after_unit;
    }

    let signed = if negative {
        -i128::from(total)
    } else {
        i128::from(total)
    };
    i64::try_from(signed)
        .map(GoDuration)
        .map_err(|_| out_of_range())
}

/// Splits `s` into its leading ASCII digits and the rest.
fn split_digits(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s.split_at(end)
}

/// Nanoseconds per unit for the unit names Go accepts.
fn unit_nanos(unit: &str) -> Option<u64> {
    match unit {
        "ns" => Some(NANOSECOND),
        // Go accepts the ASCII `us`, U+00B5 micro sign and U+03BC Greek mu.
        "us" | "\u{b5}s" | "\u{3bc}s" => Some(MICROSECOND),
        "ms" => Some(MILLISECOND),
        "s" => Some(SECOND),
        "m" => Some(MINUTE),
        "h" => Some(HOUR),
        _ => None,
    }
}

/// The nanoseconds `0.<digits>` of `unit` amount to, computed as Go's `leadingFraction` and
/// `ParseDuration` do (digits past 63 bits ignored, one float multiply) so results match to the
/// nanosecond, e.g. `0.3333333333333333333h` is exactly 20m.
fn fraction_nanos(digits: &str, unit: u64) -> u64 {
    let mut numerator: u64 = 0;
    let mut scale: f64 = 1.0;
    for digit in digits.bytes() {
        let next = numerator
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(digit - b'0')))
            .filter(|n| *n <= MAX_MAGNITUDE);
        match next {
            Some(n) => {
                numerator = n;
                scale *= 10.0;
            }
            None => break,
        }
    }
    // At most 3.6e12 (one hour), so the float-to-int conversion cannot saturate.
    (numerator as f64 * (unit as f64 / scale)) as u64
}

/// Formats like Go's `Duration.String`: `0s`, `1.5µs`, `250ms`, `1m0s`, `1h2m3.5s`, `-2s`.
pub fn format_duration(d: GoDuration) -> String {
    let magnitude = d.0.unsigned_abs();
    let sign = if d.0 < 0 { "-" } else { "" };
    if magnitude == 0 {
        return "0s".to_string();
    }
    if magnitude < SECOND {
        // Under a second Go switches to the largest unit that keeps an integer part.
        let (precision, unit) = if magnitude < MICROSECOND {
            (0, "ns")
        } else if magnitude < MILLISECOND {
            (3, "\u{b5}s")
        } else {
            (6, "ms")
        };
        let (whole, fraction) = split_fraction(magnitude, precision);
        return format!("{sign}{whole}{fraction}{unit}");
    }
    let (total_secs, fraction) = split_fraction(magnitude, 9);
    let secs = total_secs % 60;
    let total_mins = total_secs / 60;
    if total_mins == 0 {
        return format!("{sign}{secs}{fraction}s");
    }
    let mins = total_mins % 60;
    let hours = total_mins / 60;
    if hours == 0 {
        format!("{sign}{mins}m{secs}{fraction}s")
    } else {
        format!("{sign}{hours}h{mins}m{secs}{fraction}s")
    }
}

/// Splits `value` into `value / 10^precision` and the fraction `.ddd` with trailing zeros
/// dropped (empty when the fraction is zero), as Go's `fmtFrac` does.
fn split_fraction(value: u64, precision: u32) -> (u64, String) {
    let pow = 10u64.pow(precision);
    let fraction = value % pow;
    if fraction == 0 {
        return (value / pow, String::new());
    }
    let digits = format!("{:0width$}", fraction, width = precision as usize);
    (value / pow, format!(".{}", digits.trim_end_matches('0')))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const NS: i64 = 1;
    const US: i64 = 1_000;
    const MS: i64 = 1_000_000;
    const S: i64 = 1_000_000_000;
    const M: i64 = 60 * S;
    const H: i64 = 60 * M;

    #[test]
    fn parses_go_syntax() {
        let cases: &[(&str, i64)] = &[
            ("0", 0),
            ("-0", 0),
            ("+0", 0),
            ("0s", 0),
            ("5s", 5 * S),
            ("30s", 30 * S),
            ("1478s", 1478 * S),
            ("-5s", -5 * S),
            ("+5s", 5 * S),
            ("5.0s", 5 * S),
            ("5.6s", 5 * S + 600 * MS),
            ("5.s", 5 * S),
            (".5s", 500 * MS),
            ("1.004s", S + 4 * MS),
            ("1.0040s", S + 4 * MS),
            ("100.00100s", 100 * S + MS),
            ("10ns", 10 * NS),
            ("11us", 11 * US),
            ("12\u{b5}s", 12 * US),
            ("12\u{3bc}s", 12 * US),
            ("13ms", 13 * MS),
            ("14s", 14 * S),
            ("15m", 15 * M),
            ("16h", 16 * H),
            ("3h30m", 3 * H + 30 * M),
            ("10.5s4m", 4 * M + 10 * S + 500 * MS),
            ("-2m3.4s", -(2 * M + 3 * S + 400 * MS)),
            (
                "1h2m3s4ms5us6ns",
                H + 2 * M + 3 * S + 4 * MS + 5 * US + 6 * NS,
            ),
            ("39h9m14.425s", 39 * H + 9 * M + 14 * S + 425 * MS),
            ("52763797000ns", 52763797000 * NS),
            ("0.3333333333333333333h", 20 * M),
            ("9007199254740993ns", 9007199254740993 * NS),
            ("9223372036854775807ns", i64::MAX),
            ("9223372036854775.807us", i64::MAX),
            ("-9223372036854775808ns", i64::MIN),
            ("0.100000000000000000000h", 6 * M),
            ("1m30s", 90 * S),
            ("500ms", 500 * MS),
            ("2m", 2 * M),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_duration(input),
                Ok(GoDuration::from_nanos(*want)),
                "parse_duration({input:?})"
            );
        }
    }

    #[test]
    fn rejects_what_go_rejects() {
        let cases: &[(&str, DurationError)] = &[
            ("", DurationError::Invalid(String::new())),
            ("3", DurationError::MissingUnit("3".into())),
            ("-", DurationError::Invalid("-".into())),
            ("s", DurationError::Invalid("s".into())),
            (".", DurationError::Invalid(".".into())),
            ("-.", DurationError::Invalid("-.".into())),
            (".s", DurationError::Invalid(".s".into())),
            ("+.s", DurationError::Invalid("+.s".into())),
            ("1d", unknown("d", "1d")),
            ("1 s", unknown(" s", "1 s")),
            ("1s ", unknown("s ", "1s ")),
            (" 1s", DurationError::Invalid(" 1s".into())),
            ("lots", DurationError::Invalid("lots".into())),
            (
                "9223372036854775808ns",
                DurationError::OutOfRange("9223372036854775808ns".into()),
            ),
            (
                "9223372036854775.808us",
                DurationError::OutOfRange("9223372036854775.808us".into()),
            ),
            ("3000000h", DurationError::OutOfRange("3000000h".into())),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_duration(input).as_ref(),
                Err(want),
                "parse_duration({input:?})"
            );
        }
    }

    fn unknown(unit: &str, input: &str) -> DurationError {
        DurationError::UnknownUnit {
            unit: unit.into(),
            input: input.into(),
        }
    }

    #[test]
    fn formats_like_go() {
        let cases: &[(i64, &str)] = &[
            (0, "0s"),
            (1, "1ns"),
            (1100, "1.1\u{b5}s"),
            (2200 * US, "2.2ms"),
            (250 * MS, "250ms"),
            (3300 * MS, "3.3s"),
            (M, "1m0s"),
            (4 * M + 5 * S, "4m5s"),
            (4 * M + 5001 * MS, "4m5.001s"),
            (5 * H + 6 * M + 7001 * MS, "5h6m7.001s"),
            (8 * M + 1, "8m0.000000001s"),
            (H + 2 * M + 3500 * MS, "1h2m3.5s"),
            (2 * H, "2h0m0s"),
            (-S, "-1s"),
            (i64::MAX, "2562047h47m16.854775807s"),
            (i64::MIN, "-2562047h47m16.854775808s"),
        ];
        for (nanos, want) in cases {
            assert_eq!(format_duration(GoDuration::from_nanos(*nanos)), *want);
        }
    }

    #[test]
    fn round_trips() {
        for text in [
            "1m0s",
            "1h2m3.5s",
            "250ms",
            "0s",
            "-1.5s",
            "1.1\u{b5}s",
            "4h0m0s",
        ] {
            let parsed: GoDuration = text.parse().unwrap();
            assert_eq!(parsed.to_string(), text);
            assert_eq!(parse_duration(&parsed.to_string()), Ok(parsed));
        }
    }

    #[test]
    fn converts_to_std_only_when_not_negative() {
        assert_eq!(
            GoDuration::from_secs(2).to_std(),
            Some(Duration::from_secs(2))
        );
        assert_eq!(GoDuration::from_nanos(-1).to_std(), None);
        assert_eq!(
            GoDuration::from_std(Duration::from_millis(1500)),
            GoDuration::from_millis(1500)
        );
        assert_eq!(
            GoDuration::from_std(Duration::MAX),
            GoDuration::from_nanos(i64::MAX)
        );
    }

    #[test]
    fn serde_uses_the_go_string() {
        let d: GoDuration = serde_json::from_str("\"1m30s\"").unwrap();
        assert_eq!(d, GoDuration::from_secs(90));
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"1m30s\"");
        let err = serde_json::from_str::<GoDuration>("\"1x\"").unwrap_err();
        assert!(err.to_string().contains("unknown unit"), "{err}");
        assert!(serde_json::from_str::<GoDuration>("90").is_err());
    }
}
