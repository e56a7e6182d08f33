//! The Avro specification's Parsing Canonical Form of a schema and its CRC-64-AVRO (Rabin)
//! fingerprint: what the single-object header carries and what every other Avro
//! implementation (the Java library's `SchemaNormalization`, its `BinaryMessageEncoder` and
//! `SchemaStore`) computes for the same schema.
//!
//! Computed here from the schema's JSON rather than taken from apache-avro, whose form keeps
//! attributes that the specification strips (a `timestamp-millis` long comes out as
//! `{"type":"long"}`, not `"long"`), so its fingerprints differ from everybody else's for
//! any schema with a logical type. That older fingerprint is still computed, as
//! [`legacy_fingerprint`], so that records written with it keep decoding (see
//! `docs/encodings.md`, "Fingerprints").
//!
//! The transformations of the specification, in the order it lists them:
//!
//! - PRIMITIVES: `{"type": "long", …}` becomes `"long"` (logical types are annotations).
//! - FULLNAMES: every name of a named type is written in full (namespace + `.` + name), the
//!   namespaces inherited from the enclosing named type; references too.
//! - STRIP: only `type`, `name`, `fields`, `symbols`, `items`, `values` and `size` are kept
//!   (no `doc`, `aliases`, `default`, `order`, `logicalType`, `namespace` or other property).
//! - ORDER: those attributes in exactly that order.
//! - STRINGS / INTEGERS / WHITESPACE: names and symbols as plain text, `size` as a bare
//!   integer, no whitespace.
//!
//! As in the Java library, a named type is written out at its first occurrence only; later
//! occurrences are its full name.

use std::collections::HashSet;

use apache_avro::rabin::Rabin;
use apache_avro::Schema;
use serde_json::{Map, Value};

/// The CRC-64-AVRO of the empty input, and the polynomial's seed (the specification's
/// `EMPTY`).
const EMPTY: u64 = 0xc15d_213a_a4d7_a795;

/// The lookup table of CRC-64-AVRO, built at compile time.
const TABLE: [u64; 256] = {
    let mut table = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut fp = i as u64;
        let mut bit = 0;
        while bit < 8 {
            // Shift right, folding in the polynomial whenever a 1 drops out.
            fp = (fp >> 1) ^ (EMPTY & (fp & 1).wrapping_neg());
            bit += 1;
        }
        table[i] = fp;
        i += 1;
    }
    table
};

const PRIMITIVES: [&str; 8] = [
    "null", "boolean", "int", "long", "float", "double", "bytes", "string",
];

/// CRC-64-AVRO of `bytes`, as an unsigned number. Java prints the same 64 bits as a signed
/// `long` (`as i64`); the single-object header carries them little-endian.
pub fn crc64_avro(bytes: &[u8]) -> u64 {
    bytes.iter().fold(EMPTY, |fp, &b| {
        (fp >> 8) ^ TABLE[((fp ^ u64::from(b)) & 0xff) as usize]
    })
}

/// A schema, named by its canonical form and fingerprints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprinted {
    /// The Parsing Canonical Form.
    pub canonical_form: String,
    /// CRC-64-AVRO of the canonical form.
    pub fingerprint: u64,
}

impl Fingerprinted {
    /// The canonical form and fingerprint of a schema given as JSON text.
    pub fn of_text(text: &str) -> Result<Self, String> {
        let json: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        Self::of_json(&json)
    }

    /// The canonical form and fingerprint of a schema given as parsed JSON.
    pub fn of_json(json: &Value) -> Result<Self, String> {
        let canonical_form = parsing_canonical_form(json)?;
        let fingerprint = crc64_avro(canonical_form.as_bytes());
        Ok(Self {
            canonical_form,
            fingerprint,
        })
    }

    /// The canonical form and fingerprint of a parsed schema (through its JSON).
    pub fn of_schema(schema: &Schema) -> Result<Self, String> {
        let json = serde_json::to_value(schema).map_err(|e| e.to_string())?;
        Self::of_json(&json)
    }
}

/// The Parsing Canonical Form of the schema `json`.
pub fn parsing_canonical_form(json: &Value) -> Result<String, String> {
    let mut form = Form {
        out: String::with_capacity(256),
        defined: HashSet::new(),
    };
    form.schema(json, "")?;
    Ok(form.out)
}

/// The fingerprint that apache-avro 0.22 computes (CRC-64-AVRO of its own canonical form,
/// which keeps logical types), and that this connector wrote into single-object headers
/// before it computed the specification's. Only ever used to read old records.
pub fn legacy_fingerprint(schema: &Schema) -> u64 {
    let bytes = schema.fingerprint::<Rabin>().bytes;
    let mut le = [0u8; 8];
    le.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(le)
}

struct Form {
    out: String,
    /// Full names of the named types written so far.
    defined: HashSet<String>,
}

impl Form {
    /// Writes one schema; `namespace` is the enclosing one ("" for none).
    fn schema(&mut self, json: &Value, namespace: &str) -> Result<(), String> {
        match json {
            Value::String(name) => {
                self.reference(name, namespace);
                Ok(())
            }
            Value::Array(branches) => {
                self.out.push('[');
                for (i, branch) in branches.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.schema(branch, namespace)?;
                }
                self.out.push(']');
                Ok(())
            }
            Value::Object(attributes) => self.complex(attributes, namespace),
            other => Err(format!("{other} is not a schema")),
        }
    }

    fn complex(&mut self, attributes: &Map<String, Value>, namespace: &str) -> Result<(), String> {
        let kind = match attributes.get("type") {
            Some(Value::String(kind)) => kind.as_str(),
            // `{"type": {...}}` or `{"type": [...]}`: the attributes around it annotate it.
            Some(nested @ (Value::Object(_) | Value::Array(_))) => {
                return self.schema(nested, namespace)
            }
            Some(other) => return Err(format!("\"type\" {other} is not a type name")),
            None => return Err("a schema object without \"type\"".into()),
        };
        match kind {
            "record" | "error" | "enum" | "fixed" => self.named(kind, attributes, namespace),
            "array" => {
                self.out.push_str(r#"{"type":"array","items":"#);
                self.schema(required(attributes, "items", "array")?, namespace)?;
                self.out.push('}');
                Ok(())
            }
            "map" => {
                self.out.push_str(r#"{"type":"map","values":"#);
                self.schema(required(attributes, "values", "map")?, namespace)?;
                self.out.push('}');
                Ok(())
            }
            // A primitive with attributes (logicalType, …) or `{"type": "SomeName"}`.
            name => {
                self.reference(name, namespace);
                Ok(())
            }
        }
    }

    fn named(
        &mut self,
        kind: &str,
        attributes: &Map<String, Value>,
        enclosing: &str,
    ) -> Result<(), String> {
        let name = match attributes.get("name") {
            Some(Value::String(name)) if !name.is_empty() => name,
            _ => return Err(format!("a {kind} without a \"name\"")),
        };
        let namespace = match attributes.get("namespace") {
            Some(Value::String(namespace)) => namespace.as_str(),
            Some(Value::Null) | None => enclosing,
            Some(other) => return Err(format!("{kind} {name}: namespace {other} is not a string")),
        };
        let full = full_name(name, namespace);
        if !self.defined.insert(full.clone()) {
            // Written already: a reference by name.
            self.quoted(&full);
            return Ok(());
        }
        // The namespace of the type's own full name encloses its fields.
        let own_namespace = full.rsplit_once('.').map_or("", |(ns, _)| ns).to_string();
        self.out.push_str(r#"{"name":"#);
        self.quoted(&full);
        self.out.push_str(r#","type":"#);
        // An error is a record to the parser (and to the Java library's canonical form).
        self.quoted(if kind == "error" { "record" } else { kind });
        match kind {
            "enum" => {
                self.out.push_str(r#","symbols":["#);
                let symbols = required(attributes, "symbols", "enum")?
                    .as_array()
                    .ok_or_else(|| format!("enum {full}: \"symbols\" is not an array"))?;
                for (i, symbol) in symbols.iter().enumerate() {
                    let symbol = symbol
                        .as_str()
                        .ok_or_else(|| format!("enum {full}: symbol {symbol} is not a string"))?;
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.quoted(symbol);
                }
                self.out.push(']');
            }
            "fixed" => {
                let size = match required(attributes, "size", "fixed")? {
                    Value::Number(n) => n.as_u64(),
                    Value::String(s) => s.trim().parse::<u64>().ok(),
                    _ => None,
                }
                .ok_or_else(|| format!("fixed {full}: \"size\" is not a non-negative integer"))?;
                self.out.push_str(&format!(r#","size":{size}"#));
            }
            _ => {
                self.out.push_str(r#","fields":["#);
                let fields = required(attributes, "fields", "record")?
                    .as_array()
                    .ok_or_else(|| format!("record {full}: \"fields\" is not an array"))?;
                for (i, field) in fields.iter().enumerate() {
                    let field_name = field
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| format!("record {full}: a field without a \"name\""))?;
                    let field_type = field.get("type").ok_or_else(|| {
                        format!("record {full}: field {field_name} has no \"type\"")
                    })?;
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.out.push_str(r#"{"name":"#);
                    self.quoted(field_name);
                    self.out.push_str(r#","type":"#);
                    self.schema(field_type, &own_namespace)
                        .map_err(|e| format!("{full}.{field_name}: {e}"))?;
                    self.out.push('}');
                }
                self.out.push(']');
            }
        }
        self.out.push('}');
        Ok(())
    }

    /// A primitive, or a reference to a named type by its name.
    fn reference(&mut self, name: &str, namespace: &str) {
        if PRIMITIVES.contains(&name) {
            self.quoted(name);
            return;
        }
        let full = full_name(name, namespace);
        // Like the Java parser: an unqualified name that is not defined in the enclosing
        // namespace but is defined without one means the latter.
        if !self.defined.contains(&full) && self.defined.contains(name) {
            self.quoted(name);
        } else {
            self.quoted(&full);
        }
    }

    /// A name or symbol as a JSON string. Avro names and symbols are `[A-Za-z0-9_]` (and
    /// dots), which need no escaping; anything else is escaped as JSON would be.
    fn quoted(&mut self, text: &str) {
        if text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        {
            self.out.push('"');
            self.out.push_str(text);
            self.out.push('"');
        } else {
            self.out
                .push_str(&Value::String(text.to_string()).to_string());
        }
    }
}

fn required<'a>(
    attributes: &'a Map<String, Value>,
    key: &str,
    kind: &str,
) -> Result<&'a Value, String> {
    attributes
        .get(key)
        .ok_or_else(|| format!("{kind} without \"{key}\""))
}

/// `name` in `namespace`: a name with a dot is already full.
fn full_name(name: &str, namespace: &str) -> String {
    if name.contains('.') || namespace.is_empty() {
        name.to_string()
    } else {
        format!("{namespace}.{name}")
    }
}

#[cfg(test)]
mod tests;
