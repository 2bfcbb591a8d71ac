//! Value types shared by several Istio kinds: string matches, durations, percentages, ports.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration as StdDuration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Istio's `StringMatch`: exactly one of `exact`, `prefix` or `regex`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Regex(String),
}

/// A protobuf-style duration written as a string: `"1.5s"`, and also the Go forms
/// (`"100ms"`, `"1m30s"`, `"2h"`) that Kubernetes' CEL `duration()` accepts in Istio's CRDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Duration(pub StdDuration);

impl Duration {
    pub fn parse(s: &str) -> Result<Self, String> {
        let text = s.trim();
        if text.is_empty() {
            return Err("empty duration".into());
        }
        // Exact integer arithmetic in nanoseconds: "0.1s" is 100ms, not 99.999…ms.
        let mut total: u128 = 0;
        let mut rest = text;
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            let (number, after) = rest.split_at(num_len);
            let unit_len = after
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(after.len());
            let (unit, after) = after.split_at(unit_len);
            let scale: u128 = match unit {
                "h" => 3_600_000_000_000,
                "m" => 60_000_000_000,
                "s" => 1_000_000_000,
                "ms" => 1_000_000,
                "us" | "µs" => 1_000,
                "ns" => 1,
                "" => return Err(format!("duration {text:?} has no unit (e.g. \"1s\")")),
                unit => return Err(format!("unknown unit {unit:?} in duration {text:?}")),
            };
            let (int, frac) = number.split_once('.').unwrap_or((number, ""));
            if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
                return Err(format!("invalid number in duration {text:?}"));
            }
            let parse = |d: &str| {
                if d.is_empty() {
                    Ok(0)
                } else {
                    d.parse::<u128>()
                }
            };
            let int = parse(int).map_err(|_| format!("duration {text:?} is out of range"))?;
            let frac_digits = &frac[..frac.len().min(18)];
            let frac_value =
                parse(frac_digits).map_err(|_| format!("invalid number in duration {text:?}"))?;
            let frac_nanos = frac_value * scale / 10u128.pow(frac_digits.len() as u32);
            total = int
                .checked_mul(scale)
                .and_then(|n| n.checked_add(frac_nanos))
                .and_then(|n| total.checked_add(n))
                .ok_or_else(|| format!("duration {text:?} is out of range"))?;
            rest = after;
        }
        // protobuf's Duration limit: 10,000 years.
        if total > 315_576_000_000 * 1_000_000_000 {
            return Err(format!("duration {text:?} is out of range"));
        }
        let secs = (total / 1_000_000_000) as u64;
        Ok(Duration(StdDuration::new(
            secs,
            (total % 1_000_000_000) as u32,
        )))
    }

    pub fn as_std(self) -> StdDuration {
        self.0
    }

    /// The protobuf `google.protobuf.Duration` Envoy expects.
    pub fn to_proto(self) -> envoy_types::pb::google::protobuf::Duration {
        envoy_types::pb::google::protobuf::Duration {
            seconds: self.0.as_secs() as i64,
            nanos: self.0.subsec_nanos() as i32,
        }
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.subsec_nanos();
        if nanos == 0 {
            write!(f, "{}s", self.0.as_secs())
        } else {
            let frac = format!("{nanos:09}");
            write!(f, "{}.{}s", self.0.as_secs(), frac.trim_end_matches('0'))
        }
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Duration::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Serde reads a `Duration` from a string, so the schema says string (as Istio's CRDs do).
impl JsonSchema for Duration {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string" })
    }
}

/// Istio's `Percent` (`{value: 12.5}`), a double between 0 and 100.
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct Percent {
    pub value: f64,
}

/// `PortSelector`: a destination port number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct PortSelector {
    pub number: u32,
}

/// A port exposed by a Gateway server or a ServiceEntry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Port {
    pub number: u32,
    pub protocol: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

/// `WorkloadSelector`: labels a workload must carry.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
pub struct WorkloadSelector {
    pub labels: std::collections::BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proto_and_go_durations() {
        assert_eq!(
            Duration::parse("1.5s").unwrap().0,
            StdDuration::from_millis(1500)
        );
        assert_eq!(
            Duration::parse("100ms").unwrap().0,
            StdDuration::from_millis(100)
        );
        assert_eq!(
            Duration::parse("1m30s").unwrap().0,
            StdDuration::from_secs(90)
        );
        assert_eq!(
            Duration::parse("2h").unwrap().0,
            StdDuration::from_secs(7200)
        );
        assert!(Duration::parse("10").is_err());
        assert!(Duration::parse("1x").is_err());
        assert!(Duration::parse("").is_err());
        assert!(Duration::parse("s").is_err());
        assert!(Duration::parse("1.2.3s").is_err());
        assert_eq!(
            Duration::parse("0.1s").unwrap().0,
            StdDuration::from_millis(100)
        );
        assert_eq!(
            Duration::parse("1.000000001s").unwrap().0,
            StdDuration::new(1, 1)
        );
        assert!(Duration::parse("99999999999999999999999h").is_err());
    }

    #[test]
    fn displays_as_protobuf_json() {
        assert_eq!(Duration::parse("1.5s").unwrap().to_string(), "1.5s");
        assert_eq!(Duration::parse("100ms").unwrap().to_string(), "0.1s");
        assert_eq!(Duration::parse("3s").unwrap().to_string(), "3s");
    }

    #[test]
    fn string_match_is_one_of() {
        let m: StringMatch = serde_json::from_str(r#"{"prefix":"/a"}"#).unwrap();
        assert_eq!(m, StringMatch::Prefix("/a".into()));
        assert!(serde_json::from_str::<StringMatch>(r#"{"prefix":"/a","exact":"/b"}"#).is_err());
    }
}

/// `istio.type.v1beta1.WorkloadSelector` (`matchLabels`): how DestinationRules and the security
/// and telemetry kinds select workloads (ServiceEntry, Sidecar and Gateway use `labels`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct MatchLabels {
    pub match_labels: BTreeMap<String, String>,
}
