//! Human-friendly sizes (`"64MiB"`) and durations (`"30s"`) for pipeline files.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A byte count written as `"64MiB"`, `"1MB"`, `"512KiB"` or a plain integer of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses `"64MiB"`-style text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let split = t
            .find(|c: char| !c.is_ascii_digit() && c != '_')
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let num: u64 = num.replace('_', "").parse().map_err(|_| {
            format!("invalid size `{text}`: write a number and a unit, e.g. \"64MiB\"")
        })?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            other => {
                return Err(format!(
                    "invalid size unit `{other}` in `{text}`: use B, KiB, MiB, GiB, KB, MB or GB"
                ));
            }
        };
        num.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("size `{text}` is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if b >= size && b.is_multiple_of(size) {
                return write!(f, "{} {unit}", b / size);
            }
        }
        write!(f, "{b} B")
    }
}

impl ByteSize {
    /// For a person reading a measure, not a limit: three significant digits in the largest
    /// unit that fits (`1.31 MiB`, `25.1 MiB`, `512 B`); exact sizes stay exact (`64 MiB`).
    pub fn approx(self) -> String {
        let b = self.0;
        for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if b >= size {
                if b.is_multiple_of(size) {
                    return format!("{} {unit}", b / size);
                }
                let value = b as f64 / size as f64;
                let decimals = match value {
                    v if v < 10.0 => 2,
                    v if v < 100.0 => 1,
                    _ => 0,
                };
                return format!("{value:.decimals$} {unit}");
            }
        }
        format!("{b} B")
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"64MiB\" or \"512KiB\", or a number of bytes")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(n))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<ByteSize, E> {
                u64::try_from(n).map(ByteSize).map_err(|_| {
                    E::custom(format!(
                        "a size cannot be negative ({n}): write e.g. \"64MiB\""
                    ))
                })
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<ByteSize, E> {
                ByteSize::parse(text).map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl schemars::JsonSchema for ByteSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Size".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A size: a number of bytes, or text with a unit, e.g. \"64MiB\" (B, KiB, MiB, GiB, KB, MB, GB)",
            "oneOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": "^\\s*[0-9][0-9_]*\\s*(B|KiB|MiB|GiB|KB|kB|MB|GB)?\\s*$"}
            ]
        })
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string().replace(' ', ""))
    }
}

/// A duration written as `"30s"`, `"500ms"`, `"2m"` (humantime syntax).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// Parses `"30s"`-style text.
    pub fn parse(text: &str) -> Result<Self, String> {
        humantime::parse_duration(text)
            .map(HumanDuration)
            .map_err(|e| {
                format!("invalid duration `{text}` ({e}): write e.g. \"30s\", \"500ms\" or \"2m\"")
            })
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration as a string, e.g. \"30s\", \"500ms\" or \"2m\"")
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<HumanDuration, E> {
                Err(E::custom(format!(
                    "a duration needs a unit: write \"{n}s\" for {n} seconds (or \"{n}ms\", \"{n}m\")"
                )))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<HumanDuration, E> {
                self.visit_i64(i64::try_from(n).unwrap_or(i64::MAX))
            }
            fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<HumanDuration, E> {
                Err(E::custom(format!(
                    "a duration needs a unit and is written as a string: e.g. \"{}ms\"",
                    (n * 1000.0).round()
                )))
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<HumanDuration, E> {
                HumanDuration::parse(text).map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl schemars::JsonSchema for HumanDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A duration with a unit, e.g. \"30s\", \"500ms\", \"2m\", \"1h 30m\"",
            "type": "string",
            "pattern": "^\\s*([0-9]+(\\.[0-9]+)?\\s*[a-zA-Zµ]+\\s*)+$"
        })
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// Formats a time as RFC 3339 UTC with microseconds.
pub fn rfc3339(t: SystemTime) -> String {
    let t: time::OffsetDateTime = t.into();
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    t.format(&fmt).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("64MiB"), Ok(ByteSize(64 << 20)));
        assert_eq!(ByteSize(64 << 20).approx(), "64 MiB");
        assert_eq!(ByteSize(1_376_256).approx(), "1.31 MiB");
        assert_eq!(ByteSize(26_300_619).approx(), "25.1 MiB");
        assert_eq!(ByteSize(512).approx(), "512 B");
        assert_eq!(ByteSize(3 << 30 | 5).approx(), "3.00 GiB");
        assert_eq!(ByteSize::parse("1_000"), Ok(ByteSize(1000)));
        assert_eq!(ByteSize::parse("2 KB"), Ok(ByteSize(2000)));
        assert!(ByteSize::parse("12 parsecs").unwrap_err().contains("unit"));
        assert_eq!(ByteSize(64 << 20).to_string(), "64 MiB");
    }
}
