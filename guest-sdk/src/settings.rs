//! Reading a policy's settings, which arrive as JSON text.
//!
//! Empty (or all-whitespace) text and `null` are read as `{}`, so a policy
//! configured without settings sees an empty object. [`SettingsObject`] gives
//! error messages that name the offending key, for strict hand-written validation.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// Parses settings as JSON; empty text and `null` become `{}`.
pub fn settings_value(settings: &str) -> Result<Value, String> {
    if settings.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    match serde_json::from_str(settings) {
        Ok(Value::Null) => Ok(Value::Object(Map::new())),
        Ok(value) => Ok(value),
        Err(e) => Err(format!("settings are not valid JSON: {e}")),
    }
}

/// Deserializes settings into `T` with serde; empty text and `null` become `{}`.
/// Use `#[serde(deny_unknown_fields)]` on `T` to refuse unknown keys.
pub fn parse_settings<T: DeserializeOwned>(settings: &str) -> Result<T, String> {
    serde_json::from_value(settings_value(settings)?).map_err(|e| format!("invalid settings: {e}"))
}

/// Accepts only `{}` (or empty text / `null`); any key is an error naming it.
pub fn expect_empty_settings(settings: &str) -> Result<(), String> {
    SettingsObject::parse(settings)?.finish()
}

/// A settings object read key by key: each getter removes its key and reports a
/// wrong type by name, and [`SettingsObject::finish`] refuses any key left over.
#[derive(Debug)]
pub struct SettingsObject {
    map: Map<String, Value>,
}

impl SettingsObject {
    /// Parses the settings, which must be a JSON object (or empty / `null`).
    pub fn parse(settings: &str) -> Result<Self, String> {
        match settings_value(settings)? {
            Value::Object(map) => Ok(SettingsObject { map }),
            other => Err(format!(
                "settings must be a JSON object, got {}",
                type_name(&other)
            )),
        }
    }

    /// An optional boolean key.
    pub fn bool(&mut self, key: &str) -> Result<Option<bool>, String> {
        match self.map.remove(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(other) => Err(wrong_type(key, "a boolean", &other)),
        }
    }

    /// An optional string key.
    pub fn string(&mut self, key: &str) -> Result<Option<String>, String> {
        match self.map.remove(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(wrong_type(key, "a string", &other)),
        }
    }

    /// An optional key holding an array of strings.
    pub fn string_list(&mut self, key: &str) -> Result<Option<Vec<String>>, String> {
        let items = match self.map.remove(key) {
            None => return Ok(None),
            Some(Value::Array(items)) => items,
            Some(other) => return Err(wrong_type(key, "an array of strings", &other)),
        };
        items
            .into_iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(s),
                other => Err(wrong_type(&format!("{key}[{i}]"), "a string", &other)),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// Refuses any key no getter took.
    pub fn finish(self) -> Result<(), String> {
        // Sorted, so the message does not depend on the JSON map's ordering.
        let mut keys: Vec<String> = self.map.keys().map(|k| format!("`{k}`")).collect();
        keys.sort();
        match keys.len() {
            0 => Ok(()),
            1 => Err(format!("unknown settings key {}", keys[0])),
            _ => Err(format!("unknown settings keys {}", keys.join(", "))),
        }
    }
}

fn wrong_type(key: &str, expected: &str, got: &Value) -> String {
    format!(
        "settings key `{key}` must be {expected}, got {}",
        type_name(got)
    )
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests;
