//! Resource quantities as the API server prints and parses them (upstream
//! `k8s.io/apimachinery/pkg/api/resource`): the one parser every part of the kubelet uses
//! (exact integer milli-units and bytes, upstream's suffixes and rounding up), the canonical
//! forms node status prints (`2`, `110`, `1500m`, `24684084Ki`, `243497856212`), and the
//! configured reservations and eviction thresholds (`100Mi`, `500m`, `10%`). Pure functions,
//! no thread.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// A quantity or threshold string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Not a number with an optional suffix.
    #[error("invalid quantity {value:?}: {reason}")]
    Invalid {
        /// The text given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

const DECIMAL_SUFFIXES: [&str; 7] = ["", "k", "M", "G", "T", "P", "E"];
const BINARY_SUFFIXES: [&str; 6] = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];

/// An integer in canonical `DecimalSI` form: trailing zeros fold into `k`, `M`, `G`... as
/// the API server prints them (`110`, `2`, `1k`).
pub fn decimal_si(value: i64) -> Quantity {
    let mut v = value;
    let mut i = 0;
    while v != 0 && v % 1000 == 0 && i + 1 < DECIMAL_SUFFIXES.len() {
        v /= 1000;
        i += 1;
    }
    Quantity(format!("{v}{}", DECIMAL_SUFFIXES[i]))
}

/// Thousandths in canonical `DecimalSI` form: whole units print as [`decimal_si`], the rest
/// in milli-units (`2`, `1500m`, `100m`). CPU is the one resource counted this way.
pub fn milli_si(millis: i64) -> Quantity {
    if millis % 1000 == 0 {
        decimal_si(millis / 1000)
    } else {
        Quantity(format!("{millis}m"))
    }
}

/// Bytes in canonical `BinarySI` form: the largest power of 1024 that divides the value
/// exactly (`24684084Ki`, `2Gi`), plain digits when none does (`243497856212`), and the
/// decimal form below 1024 (`0`), as upstream `Quantity.String()` does.
pub fn binary_si(bytes: i64) -> Quantity {
    if bytes > -1024 && bytes < 1024 {
        return decimal_si(bytes);
    }
    let mut v = bytes;
    let mut i = 0;
    while v % 1024 == 0 && i < BINARY_SUFFIXES.len() {
        v /= 1024;
        i += 1;
    }
    match i {
        0 => Quantity(v.to_string()),
        _ => Quantity(format!("{v}{}", BINARY_SUFFIXES[i - 1])),
    }
}

/// Parses a quantity into thousandths of a unit, rounding up as upstream `MilliValue()`:
/// `500m` → 500, `2` → 2000, `100Mi` → 104857600000. Accepts an optional sign, a decimal
/// fraction, the suffixes `m k M G T P E Ki Mi Gi Ti Pi Ei` and `e<n>` exponents.
pub fn parse_millis(text: &str) -> Result<i128, QuantityError> {
    let invalid = |reason| QuantityError::Invalid {
        value: text.to_string(),
        reason,
    };
    let s = text.trim();
    let (negative, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return Err(invalid("no digits"));
    }
    if fraction.contains('.') {
        return Err(invalid("more than one decimal point"));
    }
    let digits = format!("{whole}{fraction}");
    let mantissa: i128 = digits.parse().map_err(|_| invalid("number too large"))?;
    let denominator = pow(10, fraction.len()).ok_or_else(|| invalid("too many digits"))?;
    let (mul, div) = suffix_factor(suffix).ok_or_else(|| invalid("unknown suffix"))?;
    let numerator = mantissa
        .checked_mul(mul)
        .and_then(|n| n.checked_mul(1000))
        .ok_or_else(|| invalid("number too large"))?;
    let denominator = denominator
        .checked_mul(div)
        .ok_or_else(|| invalid("too many digits"))?;
    // Round up, as upstream does when a value does not fit the requested scale (without
    // adding to a numerator that may be near the top of the range).
    let millis = numerator / denominator + i128::from(numerator % denominator != 0);
    Ok(if negative { -millis } else { millis })
}

/// Parses a quantity into whole units (bytes, pods), rounding up as upstream `Value()`.
pub fn parse_value(text: &str) -> Result<i64, QuantityError> {
    let millis = parse_millis(text)?;
    let value = if millis >= 0 {
        millis / 1000 + i128::from(millis % 1000 != 0)
    } else {
        millis / 1000
    };
    i64::try_from(value).map_err(|_| QuantityError::Invalid {
        value: text.to_string(),
        reason: "number too large",
    })
}

/// The value of a suffix as a fraction `(multiplier, divisor)`.
fn suffix_factor(suffix: &str) -> Option<(i128, i128)> {
    if suffix == "m" {
        return Some((1, 1000));
    }
    if let Some(i) = DECIMAL_SUFFIXES.iter().position(|s| *s == suffix) {
        return Some((pow(1000, i)?, 1));
    }
    if let Some(i) = BINARY_SUFFIXES.iter().position(|s| *s == suffix) {
        return Some((pow(1024, i + 1)?, 1));
    }
    let exponent: i32 = suffix
        .strip_prefix('e')
        .or_else(|| suffix.strip_prefix('E'))?
        .parse()
        .ok()?;
    let scale = pow(10, usize::try_from(exponent.unsigned_abs()).ok()?)?;
    Some(if exponent >= 0 {
        (scale, 1)
    } else {
        (1, scale)
    })
}

fn pow(base: i128, exp: usize) -> Option<i128> {
    (0..exp).try_fold(1i128, |acc, _| acc.checked_mul(base))
}

/// An eviction threshold's value (upstream `ThresholdValue`): an absolute amount or a share
/// of capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ThresholdValue {
    /// Bytes (`100Mi`).
    Quantity(i64),
    /// A fraction of capacity (`10%` is 0.1). `f32` as upstream, whose float rounding shows
    /// in reported allocatable values.
    Percentage(f32),
}

impl ThresholdValue {
    /// Parses `100Mi` or `10%`.
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        match text.trim().strip_suffix('%') {
            Some(percent) => {
                let value: f32 = percent.parse().map_err(|_| QuantityError::Invalid {
                    value: text.to_string(),
                    reason: "not a percentage",
                })?;
                Ok(ThresholdValue::Percentage(value / 100.0))
            }
            None => parse_value(text).map(ThresholdValue::Quantity),
        }
    }

    /// The amount this threshold holds back from `capacity` (upstream `GetThresholdQuantity`,
    /// which multiplies in `float64` by the `float32` percentage and truncates).
    pub fn amount(&self, capacity: i64) -> i64 {
        match *self {
            ThresholdValue::Quantity(v) => v,
            // Truncation towards zero is the point: it is what upstream's int64() does.
            ThresholdValue::Percentage(p) => (capacity as f64 * f64::from(p)) as i64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator for the property tests.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, below: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % below
        }
    }

    #[test]
    fn parsing_is_exact_for_every_suffix_and_rounds_up() {
        let mut rng = Lcg(7);
        let suffixes: [(&str, i128); 14] = [
            ("", 1000),
            ("m", 1),
            ("k", 1_000_000),
            ("M", 1_000_000_000),
            ("G", 1_000_000_000_000),
            ("T", 1_000_000_000_000_000),
            ("Ki", 1024 * 1000),
            ("Mi", 1024 * 1024 * 1000),
            ("Gi", 1024 * 1024 * 1024 * 1000),
            ("Ti", 1024_i128.pow(4) * 1000),
            ("e3", 1_000_000),
            ("P", 1000_i128.pow(6)),
            ("Pi", 1024_i128.pow(5) * 1000),
            ("E", 1000_i128.pow(7)),
        ];
        for _ in 0..5000 {
            let whole = i128::from(rng.next(1_000_000));
            let frac_digits = rng.next(4) as u32;
            let frac = i128::from(rng.next(10_u64.pow(frac_digits).max(1)));
            let (suffix, millis_per_unit) = suffixes[rng.next(14) as usize];
            let text = if frac_digits == 0 {
                format!("{whole}{suffix}")
            } else {
                format!(
                    "{whole}.{frac:0width$}{suffix}",
                    width = frac_digits as usize
                )
            };
            // Exact value in thousandths, rounded up: (whole + frac/10^d) * millis_per_unit.
            let scale = 10_i128.pow(frac_digits);
            let numerator = (whole * scale + frac) * millis_per_unit;
            let want = (numerator + scale - 1) / scale;
            assert_eq!(parse_millis(&text), Ok(want), "{text}");
            // Whole units round up too, and must fit an i64 or be refused by name.
            let units = (want + 999) / 1000;
            match i64::try_from(units) {
                Ok(units) => assert_eq!(parse_value(&text), Ok(units), "{text}"),
                Err(_) => assert!(parse_value(&text).is_err(), "{text}"),
            }
        }
    }

    #[test]
    fn values_at_the_top_of_the_range_round_up_without_overflow() {
        // Found by the `values` fuzz target: the rounding once added to a numerator near
        // i128::MAX.
        let text = format!("-1.52{}0m", "5".repeat(32));
        assert_eq!(parse_millis(&text), Ok(-2), "{text}");
        assert_eq!(parse_value(&text), Ok(0), "{text}");
        let top = i128::MAX / 1000;
        assert_eq!(parse_millis(&top.to_string()), Ok(top * 1000));
        let x = top / 10_000;
        assert_eq!(parse_millis(&format!("{x}.0001m")), Ok(x + 1));
        assert!(parse_value(&format!("{}", i128::MAX / 1000)).is_err());
    }

    #[test]
    fn canonical_forms_parse_back_to_their_value() {
        let mut rng = Lcg(11);
        for _ in 0..5000 {
            let v = i64::try_from(rng.next(1 << 40)).unwrap()
                * [1, 1024, 1_000, 1 << 20][rng.next(4) as usize];
            assert_eq!(parse_value(&binary_si(v).0), Ok(v), "{v}");
            assert_eq!(parse_value(&decimal_si(v).0), Ok(v), "{v}");
            let millis = i64::try_from(rng.next(1 << 30)).unwrap();
            assert_eq!(parse_millis(&milli_si(millis).0), Ok(i128::from(millis)));
        }
    }

    #[test]
    fn formats_canonically() {
        let cases: &[(Quantity, &str)] = &[
            (decimal_si(0), "0"),
            (decimal_si(2), "2"),
            (decimal_si(110), "110"),
            (decimal_si(1000), "1k"),
            (decimal_si(1500), "1500"),
            (milli_si(2000), "2"),
            (milli_si(1500), "1500m"),
            (milli_si(100), "100m"),
            (binary_si(0), "0"),
            (binary_si(1000), "1k"),
            (binary_si(24684084 * 1024), "24684084Ki"),
            (binary_si(2 << 30), "2Gi"),
            (binary_si(104857600), "100Mi"),
            (binary_si(243497856212), "243497856212"),
            (binary_si(1536), "1536"),
        ];
        for (got, want) in cases {
            assert_eq!(got.0, *want);
        }
    }

    #[test]
    fn parses_quantities() {
        let cases: &[(&str, i128)] = &[
            ("2", 2000),
            ("500m", 500),
            ("1.5", 1500),
            ("100Mi", 104857600 * 1000),
            ("1k", 1_000_000),
            ("1Gi", (1 << 30) * 1000),
            ("0.5Gi", (1 << 29) * 1000),
            ("1e3", 1_000_000),
            ("-1", -1000),
            ("0.0001", 1),
        ];
        for (text, want) in cases {
            assert_eq!(parse_millis(text), Ok(*want), "{text}");
        }
        for bad in ["", "Mi", "1.2.3", "12x", "1..5"] {
            assert!(parse_millis(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_value("100Mi"), Ok(104857600));
        assert_eq!(parse_value("1500m"), Ok(2));
    }

    #[test]
    fn thresholds_match_upstream_rounding() {
        let ten = ThresholdValue::parse("10%").unwrap();
        assert_eq!(ten, ThresholdValue::Percentage(0.1));
        // Reference node: ephemeral capacity 264212084Ki, allocatable 243497856212 bytes.
        let capacity = 264212084 * 1024;
        assert_eq!(capacity - ten.amount(capacity), 243497856212);
        let mem = ThresholdValue::parse("100Mi").unwrap();
        assert_eq!(mem.amount(capacity), 104857600);
        assert!(ThresholdValue::parse("x%").is_err());
    }
}
