//! [`CompactMap`]: a string-keyed status map that the controllers' caches hold as one piece of text.
//!
//! A `BTreeMap<String, String>` of thirty job inputs costs about 3 KiB of heap (tree nodes plus two
//! allocations an entry); the same map as JSON text is one allocation of about a third of that. The
//! operator caches every FineTuneJob it watches, so with ten thousand jobs this is tens of MiB. On the
//! wire and in the schema the field is still a plain JSON object.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A map from names to `V`, stored as its canonical JSON text (keys sorted, as a `BTreeMap` writes
/// them), so equal maps compare equal.
pub struct CompactMap<V> {
    /// `""` for the empty map, else a JSON object.
    text: Box<str>,
    values: PhantomData<fn() -> V>,
}

impl<V: Serialize + DeserializeOwned> CompactMap<V> {
    /// The map's entries, decoded.
    pub fn to_map(&self) -> BTreeMap<String, V> {
        if self.text.is_empty() {
            return BTreeMap::new();
        }
        // The text was written by `From<BTreeMap>` from the same type, so it always decodes.
        serde_json::from_str(&self.text).unwrap_or_default()
    }

    /// The value of `key`, if the map has one.
    pub fn get(&self, key: &str) -> Option<V> {
        self.to_map().remove(key)
    }

    /// Whether `key` is in the map.
    pub fn contains_key(&self, key: &str) -> bool {
        self.to_map().contains_key(key)
    }
}

impl<V> CompactMap<V> {
    /// Whether the map has no entries.
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }
}

impl<V: Serialize> From<BTreeMap<String, V>> for CompactMap<V> {
    fn from(map: BTreeMap<String, V>) -> Self {
        let text = if map.is_empty() {
            String::new()
        } else {
            // Maps of strings and numbers always serialize; non-finite floats become null.
            serde_json::to_string(&map).unwrap_or_default()
        };
        Self { text: text.into_boxed_str(), values: PhantomData }
    }
}

impl<V> Default for CompactMap<V> {
    fn default() -> Self {
        Self { text: Box::default(), values: PhantomData }
    }
}

impl<V> Clone for CompactMap<V> {
    fn clone(&self) -> Self {
        Self { text: self.text.clone(), values: PhantomData }
    }
}

impl<V> PartialEq for CompactMap<V> {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl<V> fmt::Debug for CompactMap<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.text.is_empty() { "{}" } else { &self.text })
    }
}

impl<V: Serialize + DeserializeOwned> Serialize for CompactMap<V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.text.is_empty() {
            return BTreeMap::<String, V>::new().serialize(serializer);
        }
        let map: BTreeMap<String, V> = serde_json::from_str(&self.text).map_err(serde::ser::Error::custom)?;
        map.serialize(serializer)
    }
}

impl<'de, V: Serialize + Deserialize<'de>> Deserialize<'de> for CompactMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, V>::deserialize(deserializer)?;
        if map.is_empty() {
            return Ok(Self::default());
        }
        let text = serde_json::to_string(&map).map_err(D::Error::custom)?;
        Ok(Self { text: text.into_boxed_str(), values: PhantomData })
    }
}

impl<V: JsonSchema> JsonSchema for CompactMap<V> {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        BTreeMap::<String, V>::schema_name()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        BTreeMap::<String, V>::json_schema(generator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("learning_rate".to_owned(), "5e-06".to_owned()),
            ("epochs".to_owned(), "3".to_owned()),
        ])
    }

    /// On the wire the field is the JSON object it always was, in both directions.
    #[test]
    fn reads_and_writes_a_plain_object() {
        let map: CompactMap<String> =
            serde_json::from_value(serde_json::json!({"learning_rate": "5e-06", "epochs": "3"}))
                .expect("decode");
        assert_eq!(map.get("learning_rate").as_deref(), Some("5e-06"));
        assert!(map.contains_key("epochs") && !map.contains_key("seed"));
        assert_eq!(map.to_map(), params());
        assert_eq!(
            serde_json::to_value(&map).expect("encode"),
            serde_json::json!({"epochs": "3", "learning_rate": "5e-06"})
        );
        let metrics: CompactMap<f64> = BTreeMap::from([("eval_loss".to_owned(), 0.25)]).into();
        assert_eq!(serde_json::to_string(&metrics).expect("encode"), r#"{"eval_loss":0.25}"#);
    }

    /// Equal maps compare equal however they were built, so unchanged status is not rewritten.
    #[test]
    fn equal_maps_are_equal() {
        let decoded: CompactMap<String> =
            serde_json::from_str(r#"{"learning_rate": "5e-06", "epochs": "3"}"#).expect("decode");
        assert_eq!(decoded, CompactMap::from(params()));
        assert_ne!(decoded, CompactMap::default());
        let empty: CompactMap<String> = serde_json::from_str("{}").expect("decode");
        assert!(empty.is_empty());
        assert_eq!(empty, CompactMap::default());
        assert_eq!(serde_json::to_string(&empty).expect("encode"), "{}");
    }

    /// The schema is the map's, so the CRD does not change.
    #[test]
    fn schema_is_the_maps() {
        let compact = schemars::SchemaGenerator::default().into_root_schema_for::<CompactMap<String>>();
        let map = schemars::SchemaGenerator::default().into_root_schema_for::<BTreeMap<String, String>>();
        assert_eq!(compact, map);
    }
}
