//! The values that are more than one TOML type (`workers = "auto"` or a
//! number, an endpoint as a string or a table, ...): each reads itself
//! (a hand-written `Deserialize`) and describes itself to the JSON Schema
//! (a hand-written `JsonSchema`), so the two cannot disagree.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, MapAccess, Visitor, value::MapAccessDeserializer};
use serde::{Deserialize, Deserializer};

/// Schema-only: a duration as [`crate::parse_duration`] reads it.
pub(crate) struct DurationText;

impl JsonSchema for DurationText {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A duration: \"250ms\", \"5s\", \"1m30s\", \"1h\" (units us, ms, s, m, h).",
            "type": "string",
            "pattern": "^\\s*([0-9]+(us|µs|ms|s|m|h))+\\s*$"
        })
    }
}

/// `workers = "auto"` or `workers = 4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkersValue {
    /// One per core.
    Auto,
    /// This many.
    Count(i64),
}

impl JsonSchema for WorkersValue {
    fn schema_name() -> Cow<'static, str> {
        "Workers".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "\"auto\" (one per core) or a number of workers.",
            "anyOf": [{ "const": "auto" }, { "type": "integer", "minimum": 1 }]
        })
    }
}

impl<'de> Deserialize<'de> for WorkersValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = WorkersValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"auto\" or a number of workers")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<WorkersValue, E> {
                Ok(WorkersValue::Count(n))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<WorkersValue, E> {
                match s {
                    "auto" => Ok(WorkersValue::Auto),
                    _ => Err(E::invalid_value(de::Unexpected::Str(s), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A size: a number of bytes, or "64KiB", "1MiB", "2GiB".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SizeValue {
    /// Bytes.
    Bytes(i64),
    /// Text with a unit.
    Text(String),
}

impl JsonSchema for SizeValue {
    fn schema_name() -> Cow<'static, str> {
        "Size".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A size: a number of bytes, or text such as \"64KiB\", \"1MiB\", \"2GiB\".",
            "anyOf": [{ "type": "integer", "minimum": 0 }, { "type": "string" }]
        })
    }
}

impl<'de> Deserialize<'de> for SizeValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = SizeValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size in bytes, or a string such as \"64KiB\" or \"1MiB\"")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<SizeValue, E> {
                Ok(SizeValue::Bytes(n))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<SizeValue, E> {
                Ok(SizeValue::Text(s.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A header condition: `"value"` or `true`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderCondition {
    /// Present with any value.
    Present,
    /// Exactly this value.
    Exact(String),
}

impl JsonSchema for HeaderCondition {
    fn schema_name() -> Cow<'static, str> {
        "HeaderCondition".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A header value to match exactly, or `true` for present with any value.",
            "anyOf": [{ "type": "string" }, { "const": true }]
        })
    }
}

impl<'de> Deserialize<'de> for HeaderCondition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HeaderCondition;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a header value (string) or `true` for \"present\"")
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<HeaderCondition, E> {
                if b {
                    Ok(HeaderCondition::Present)
                } else {
                    Err(E::invalid_value(de::Unexpected::Bool(b), &self))
                }
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<HeaderCondition, E> {
                Ok(HeaderCondition::Exact(s.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

/// `"IP:port"` or `{ addr = "IP:port", weight = N }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointValue {
    /// The address as written.
    pub addr: String,
    /// The weight (1 when not given).
    pub weight: i64,
}

impl JsonSchema for EndpointValue {
    fn schema_name() -> Cow<'static, str> {
        "Endpoint".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "\"host:port\", or { addr = \"host:port\", weight = N }.",
            "anyOf": [
                { "type": "string" },
                {
                    "type": "object",
                    "properties": {
                        "addr": { "type": "string", "description": "host:port" },
                        "weight": { "type": "integer", "description": "Its share (default 1)." }
                    },
                    "required": ["addr"],
                    "additionalProperties": false
                }
            ]
        })
    }
}

impl<'de> Deserialize<'de> for EndpointValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            addr: String,
            #[serde(default = "one")]
            weight: i64,
        }
        fn one() -> i64 {
            1
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = EndpointValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "an address \"host:port\" or a table { addr = \"host:port\", weight = N }",
                )
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<EndpointValue, E> {
                Ok(EndpointValue {
                    addr: s.to_owned(),
                    weight: 1,
                })
            }
            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<EndpointValue, M::Error> {
                let t = Table::deserialize(MapAccessDeserializer::new(map))?;
                Ok(EndpointValue {
                    addr: t.addr,
                    weight: t.weight,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// `"round-robin"` or `{ kind = "maglev", key = "header:x-user-id", ... }`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BalancerValue {
    /// The algorithm's name.
    pub kind: String,
    /// What to hash, for the hashing kinds.
    pub key: Option<String>,
    /// Maglev table size (a prime).
    pub table_size: Option<i64>,
    /// Ring hash: smallest ring.
    pub min_ring_size: Option<i64>,
    /// Ring hash: largest ring.
    pub max_ring_size: Option<i64>,
    /// Hashing kinds: the bounded-load factor (e.g. 1.25).
    pub bounded_load: Option<f64>,
    /// Least request: Envoy's active-request bias.
    pub active_request_bias: Option<f64>,
}

impl JsonSchema for BalancerValue {
    fn schema_name() -> Cow<'static, str> {
        "Balancer".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        const KINDS: [&str; 5] = [
            "round-robin",
            "random",
            "least-request",
            "ring-hash",
            "maglev",
        ];
        json_schema!({
            "description": "A balancer name, or a table with its settings.",
            "anyOf": [
                { "enum": KINDS },
                {
                    "type": "object",
                    "properties": {
                        "kind": { "enum": KINDS },
                        "key": {
                            "type": "string",
                            "description": "What to hash: header:NAME, cookie:NAME, query:NAME, path or client-ip."
                        },
                        "table_size": { "type": "integer", "description": "Maglev table size (a prime)." },
                        "min_ring_size": { "type": "integer", "description": "Ring hash: smallest ring." },
                        "max_ring_size": { "type": "integer", "description": "Ring hash: largest ring." },
                        "bounded_load": { "type": "number", "description": "Hashing kinds: the bounded-load factor (e.g. 1.25)." },
                        "active_request_bias": { "type": "number", "description": "Least request: Envoy's active-request bias." }
                    },
                    "required": ["kind"],
                    "additionalProperties": false
                }
            ]
        })
    }
}

impl<'de> Deserialize<'de> for BalancerValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            kind: String,
            key: Option<String>,
            table_size: Option<i64>,
            min_ring_size: Option<i64>,
            max_ring_size: Option<i64>,
            bounded_load: Option<f64>,
            active_request_bias: Option<f64>,
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = BalancerValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a balancer name such as \"round-robin\", or a table { kind = \"...\", ... }",
                )
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<BalancerValue, E> {
                Ok(BalancerValue {
                    kind: s.to_owned(),
                    ..BalancerValue::default()
                })
            }
            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<BalancerValue, M::Error> {
                let t = Table::deserialize(MapAccessDeserializer::new(map))?;
                Ok(BalancerValue {
                    kind: t.kind,
                    key: t.key,
                    table_size: t.table_size,
                    min_ring_size: t.min_ring_size,
                    max_ring_size: t.max_ring_size,
                    bounded_load: t.bounded_load,
                    active_request_bias: t.active_request_bias,
                })
            }
        }
        d.deserialize_any(V)
    }
}
