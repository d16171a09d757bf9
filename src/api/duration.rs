//! Durations written the way Go (and so NACK and the nats CLI) writes them:
//! `90s`, `1h30m`, `1.5h`, `250ms`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration in Go's `time.Duration` string format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GoDuration(pub Duration);

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a duration such as 90s, 1h30m or 250ms: {problem}")]
pub struct ParseDurationError {
    input: String,
    problem: &'static str,
}

const UNITS: [(&str, u128); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

impl FromStr for GoDuration {
    type Err = ParseDurationError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let error = |problem| ParseDurationError { input: input.to_owned(), problem };
        if input == "0" {
            return Ok(Self(Duration::ZERO));
        }
        if input.starts_with('-') {
            return Err(error("it must not be negative"));
        }
        let mut rest = input.strip_prefix('+').unwrap_or(input);
        if rest.is_empty() {
            return Err(error("it is empty"));
        }
        let mut nanos: u128 = 0;
        while !rest.is_empty() {
            let number_len = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
            let (number, after) = rest.split_at(number_len);
            if number.is_empty() || number == "." {
                return Err(error("a number must come before each unit"));
            }
            let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
            let (unit, after) = after.split_at(unit_len);
            let &(_, scale) = UNITS.iter().find(|(name, _)| *name == unit).ok_or_else(|| {
                error(if unit.is_empty() { "each number needs a unit (ns, us, ms, s, m, h)" } else { "unknown unit" })
            })?;
            let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
            if fraction.contains('.') {
                return Err(error("a number has two decimal points"));
            }
            let whole: u128 =
                if whole.is_empty() { 0 } else { whole.parse().map_err(|_| error("a number is too large"))? };
            let mut part = whole.checked_mul(scale).ok_or_else(|| error("it is too large"))?;
            let mut divisor = 1u128;
            for digit in fraction.bytes().take(18) {
                divisor *= 10;
                part += u128::from(digit - b'0') * scale / divisor;
            }
            nanos = nanos.checked_add(part).ok_or_else(|| error("it is too large"))?;
            rest = after;
        }
        // Go's durations, and so the server's, end at i64::MAX nanoseconds (about 292 years).
        let nanos = u64::try_from(nanos)
            .ok()
            .filter(|n| i64::try_from(*n).is_ok())
            .ok_or_else(|| error("it is longer than 2562047h, the longest the server knows"))?;
        Ok(Self(Duration::from_nanos(nanos)))
    }
}

impl fmt::Display for GoDuration {
    /// The shortest exact form: `1h30m`, `90ms`, `0s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut nanos = self.0.as_nanos();
        if nanos == 0 {
            return f.write_str("0s");
        }
        for (unit, scale) in [("h", 3_600_000_000_000u128), ("m", 60_000_000_000), ("s", 1_000_000_000)] {
            if nanos >= scale && nanos.is_multiple_of(1_000_000_000) {
                write!(f, "{}{unit}", nanos / scale)?;
                nanos %= scale;
            }
        }
        if nanos == 0 {
            return Ok(());
        }
        let (unit, scale) = [("ms", 1_000_000u128), ("us", 1_000), ("ns", 1)]
            .into_iter()
            .find(|(_, scale)| nanos.is_multiple_of(*scale))
            .expect("1 divides everything");
        write!(f, "{}{unit}", nanos / scale)
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for GoDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "GoDuration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": r"^(0|\+?(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+)$",
            "maxLength": 64,
            // CEL parses durations as Go does, so one too long for the server is refused too.
            "x-kubernetes-validations": [{
                "rule": "duration(self) >= duration('0s')",
                "message": "must be a duration of at most 2562047h, the longest the server knows",
            }],
        })
    }
}

impl From<Duration> for GoDuration {
    fn from(duration: Duration) -> Self {
        Self(duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Duration, ParseDurationError> {
        s.parse::<GoDuration>().map(|d| d.0)
    }

    #[test]
    fn go_duration_strings_parse() {
        let cases = [
            ("0", 0),
            ("0s", 0),
            ("1ns", 1),
            ("1us", 1_000),
            ("1µs", 1_000),
            ("250ms", 250_000_000),
            ("90s", 90_000_000_000),
            ("1h30m", 5_400_000_000_000),
            ("1.5h", 5_400_000_000_000),
            (".5s", 500_000_000),
            ("2m0.5s", 120_500_000_000),
            ("+1s", 1_000_000_000),
        ];
        for (text, nanos) in cases {
            assert_eq!(parse(text), Ok(Duration::from_nanos(nanos)), "{text}");
        }
    }

    #[test]
    fn malformed_durations_are_refused_with_the_reason() {
        for (text, problem) in [
            ("", "it is empty"),
            ("10", "each number needs a unit"),
            ("1d", "unknown unit"),
            ("-1s", "negative"),
            ("h", "a number must come before each unit"),
            ("1.2.3s", "two decimal points"),
        ] {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.contains(problem), "{text}: {err}");
        }
    }

    #[test]
    fn durations_end_where_go_durations_end() {
        assert_eq!(parse("2562047h"), Ok(Duration::from_secs(2_562_047 * 3600)));
        assert_eq!(parse("9223372036854775807ns"), Ok(Duration::from_nanos(i64::MAX as u64)));
        for text in ["9223372036854775808ns", "2562048h", "6000000h"] {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.contains("longer than 2562047h"), "{text}: {err}");
        }
    }

    #[test]
    fn durations_print_in_the_shortest_exact_go_form() {
        for (nanos, text) in [
            (0, "0s"),
            (5_400_000_000_000, "1h30m"),
            (120_000_000_000, "2m"),
            (90_000_000_000, "1m30s"),
            (1_500_000_000, "1500ms"),
            (2_000, "2us"),
            (7, "7ns"),
        ] {
            let printed = GoDuration(Duration::from_nanos(nanos)).to_string();
            assert_eq!(printed, text);
            assert_eq!(parse(&printed), Ok(Duration::from_nanos(nanos)), "round trip of {printed}");
        }
    }

    #[test]
    fn the_schema_pattern_accepts_exactly_what_the_parser_accepts() {
        let schema = serde_json::to_value(schemars::schema_for!(GoDuration)).expect("schema");
        let pattern = regex::Regex::new(schema["pattern"].as_str().expect("a pattern")).expect("a valid regex");
        for text in [
            "0", "0s", "1ns", "1µs", "250ms", "1h30m", "1.5h", ".5s", "2m0.5s", "+1s", "1.2.3s", "10", "1d", "-1s",
            "h", "",
        ] {
            assert_eq!(pattern.is_match(text), parse(text).is_ok(), "{text:?}");
        }
    }
}
