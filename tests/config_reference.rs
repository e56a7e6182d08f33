//! docs/configuration.md and the configuration code cannot drift: every key of the code is
//! documented with its environment variable and default, and every documented key exists.

use std::collections::BTreeMap;

use campaign_connector::runtime::config::{load, RawConfig};
use serde_json::Value;

/// Dotted keys of the default configuration with their defaults. Open maps (`encodings`,
/// `kafka`) are one key each.
fn code_keys() -> BTreeMap<String, Value> {
    fn walk(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, v) in m {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            _ => {
                out.insert(prefix.to_string(), v.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(
        "",
        &serde_json::to_value(RawConfig::default()).unwrap(),
        &mut out,
    );
    out
}

/// Rows of the reference table: key → (variable, default).
fn doc_rows() -> BTreeMap<String, (String, String)> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .unwrap();
    text.lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let strip = |c: &str| c.split('`').nth(1).unwrap_or(c).to_string();
            (strip(cells[1]), (strip(cells[2]), cells[3].to_string()))
        })
        .collect()
}

fn env_name(key: &str) -> String {
    format!("CONNECTOR_{}", key.to_uppercase().replace('.', "__"))
}

#[test]
fn every_key_in_the_code_is_documented_with_its_variable_and_default() {
    let doc = doc_rows();
    for (key, default) in code_keys() {
        let doc_key = match key.as_str() {
            "encodings" => "encodings.<role>".to_string(),
            "kafka" => "kafka.<property>".to_string(),
            k => k.to_string(),
        };
        let (var, documented) = doc
            .get(&doc_key)
            .unwrap_or_else(|| panic!("{doc_key} is not in docs/configuration.md"));
        if !doc_key.contains('<') {
            assert_eq!(var, &env_name(&key), "variable of {key}");
        }
        let expected = match &default {
            Value::Null => "none".to_string(),
            Value::String(s) => format!("`{s}`"),
            Value::Array(a) if a.is_empty() => "`[]`".to_string(),
            Value::Object(m) if m.is_empty() => "`{}`".to_string(),
            other => format!("`{other}`"),
        };
        assert!(
            documented.starts_with(&expected),
            "default of {key}: the code says {expected}, the doc says {documented}"
        );
    }
}

#[test]
fn every_documented_key_exists_and_its_variable_sets_it() {
    let code = code_keys();
    for (key, (var, _)) in doc_rows() {
        let base = key.split(".<").next().unwrap();
        assert!(
            code.contains_key(base),
            "docs/configuration.md documents {key}, which the code does not have"
        );
        if key.contains('<') {
            continue;
        }
        // The documented variable is accepted (a value of the right shape for the key).
        let value = match code[&key] {
            Value::Bool(_) => "false",
            Value::Number(_) => "3",
            Value::Array(_) => "[]",
            _ if key.ends_with("interval") || key.ends_with("wait") || key.ends_with("timeout") => {
                "2s"
            }
            _ if key == "max_delay"
                || key == "max_backfill"
                || key == "max_future_skew"
                || key == "retry_budget" =>
            {
                "7d"
            }
            _ if key == "processing_guarantee" => "at_least_once",
            _ if key == "group_protocol" => "consumer",
            _ if key == "http_listen" => "127.0.0.1:19464",
            _ if key == "encoding.format" => "json",
            _ if key.starts_with("encoding.") => continue,
            _ => "x-value",
        };
        let parsed = load(None, vec![(var.clone(), value.to_string())]);
        assert!(parsed.is_ok(), "{var}={value}: {:?}", parsed.err());
    }
}
