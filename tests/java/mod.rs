//! Harness of the Java interoperability tests: fetches the Apache Avro Java library and the
//! Kafka Java client with `scripts/java/fetch.sh` (Maven Central, cached), compiles
//! `tests/java/AvroInterop.java` with `javac`, and runs its commands. Records cross the
//! language boundary as Avro's JSON encoding, which [`avro_json`] produces from a Rust
//! record independently of both codecs.
//!
//! A machine without Maven or a JDK fails these tests with a message saying what is
//! missing: they prove the product's interoperability claims and must not be skipped.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use apache_avro::schema::{Name, ResolvedSchema};
use apache_avro::types::Value;
use apache_avro::Schema;
use serde::Serialize;

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The compiled Java program and its class path.
pub struct Java {
    classpath: String,
}

impl Java {
    /// Fetches, compiles (once per test process) and returns the Java program; panics
    /// with what is missing when it cannot.
    pub fn get() -> &'static Java {
        static JAVA: OnceLock<Result<Java, String>> = OnceLock::new();
        match JAVA.get_or_init(Java::prepare) {
            Ok(java) => java,
            Err(why) => panic!("the Java interoperability tests cannot run: {why}"),
        }
    }

    fn prepare() -> Result<Java, String> {
        let fetch = Command::new(root().join("scripts/java/fetch.sh"))
            .current_dir(root())
            .output()
            .map_err(|e| format!("running scripts/java/fetch.sh: {e}"))?;
        if !fetch.status.success() {
            return Err(format!(
                "scripts/java/fetch.sh failed (it needs mvn and a JDK 17+, which scripts/setup.sh installs): {}",
                String::from_utf8_lossy(&fetch.stderr).trim()
            ));
        }
        let libs = PathBuf::from(String::from_utf8_lossy(&fetch.stdout).trim());
        let mut jars: Vec<String> = std::fs::read_dir(&libs)
            .map_err(|e| format!("{}: {e}", libs.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "jar"))
            .map(|p| p.display().to_string())
            .collect();
        jars.sort();
        let classes = Path::new(env!("CARGO_TARGET_TMPDIR")).join("java-interop-classes");
        let _ = std::fs::remove_dir_all(&classes);
        std::fs::create_dir_all(&classes).map_err(|e| format!("{}: {e}", classes.display()))?;
        let javac = Command::new("javac")
            .arg("-d")
            .arg(&classes)
            .arg("-cp")
            .arg(jars.join(":"))
            .arg(root().join("tests/java/AvroInterop.java"))
            .output()
            .map_err(|e| {
                format!("javac (a JDK 17+) is needed to compile tests/java/AvroInterop.java: {e}")
            })?;
        if !javac.status.success() {
            return Err(format!(
                "javac failed: {}",
                String::from_utf8_lossy(&javac.stderr).trim()
            ));
        }
        jars.insert(0, classes.display().to_string());
        Ok(Java {
            classpath: jars.join(":"),
        })
    }

    /// Runs `AvroInterop <args>` with `stdin` lines; returns its stdout lines. Panics with
    /// its stderr when it fails.
    pub fn run(&self, args: &[&str], stdin: &[String]) -> Vec<String> {
        self.run_with_env(args, stdin, &[])
    }

    /// [`run`](Self::run) with extra environment variables.
    pub fn run_with_env(
        &self,
        args: &[&str],
        stdin: &[String],
        env: &[(&str, &str)],
    ) -> Vec<String> {
        let mut child = Command::new("java")
            .args([
                "-Xmx256m",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
                "-cp",
                &self.classpath,
                "AvroInterop",
            ])
            .args(args)
            .envs(env.iter().copied())
            .current_dir(root())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("java (17+) is needed for the Java interoperability tests: {e}")
            });
        let mut input = child.stdin.take().unwrap();
        let text: String = stdin.iter().map(|l| format!("{l}\n")).collect();
        let writer = std::thread::spawn(move || input.write_all(text.as_bytes()));
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        assert!(
            out.status.success(),
            "AvroInterop {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// A parsed schema file with the named types it defines.
pub struct SchemaFile {
    pub path: String,
    pub schema: Schema,
    names: HashMap<Name, Schema>,
}

impl SchemaFile {
    /// `relative` is relative to the repository root, e.g. `schemas/interaction.avsc`.
    pub fn load(relative: &str) -> Self {
        let path = root().join(relative);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let schema = Schema::parse_str(&text).unwrap();
        let names = ResolvedSchema::new(&schema)
            .unwrap()
            .get_names()
            .iter()
            .map(|(n, s)| (n.clone(), (*s).clone()))
            .collect();
        Self {
            path: path.display().to_string(),
            schema,
            names,
        }
    }

    /// A Rust record in Avro's JSON encoding of this schema.
    pub fn json_of<T: Serialize>(&self, record: &T) -> serde_json::Value {
        let value = apache_avro::to_value(record)
            .unwrap()
            .resolve(&self.schema)
            .unwrap();
        avro_json(&value, &self.schema, &self.names)
    }
}

/// `value` (of `schema`) in Avro's JSON encoding: a union's non-null branch is an object
/// named by the branch's type, everything else is plain JSON.
pub fn avro_json(
    value: &Value,
    schema: &Schema,
    names: &HashMap<Name, Schema>,
) -> serde_json::Value {
    use serde_json::Value as J;
    let schema = match schema {
        Schema::Ref { name } => names.get(name).expect("named types are defined"),
        other => other,
    };
    match (value, schema) {
        (Value::Null, _) => J::Null,
        (Value::Boolean(b), _) => J::Bool(*b),
        (Value::Int(i) | Value::Date(i) | Value::TimeMillis(i), _) => J::from(*i),
        (
            Value::Long(i)
            | Value::TimestampMillis(i)
            | Value::TimestampMicros(i)
            | Value::TimeMicros(i)
            | Value::LocalTimestampMillis(i)
            | Value::LocalTimestampMicros(i),
            _,
        ) => J::from(*i),
        (Value::Float(f), _) => J::from(*f),
        (Value::Double(f), _) => J::from(*f),
        (Value::String(s) | Value::Enum(_, s), _) => J::String(s.clone()),
        (Value::Array(items), Schema::Array(array)) => J::Array(
            items
                .iter()
                .map(|v| avro_json(v, &array.items, names))
                .collect(),
        ),
        (Value::Map(entries), Schema::Map(map)) => J::Object(
            entries
                .iter()
                .map(|(k, v)| (k.clone(), avro_json(v, &map.types, names)))
                .collect(),
        ),
        (Value::Record(fields), Schema::Record(record)) => J::Object(
            fields
                .iter()
                .map(|(name, v)| {
                    let field = &record.fields[record.lookup[name]];
                    (name.clone(), avro_json(v, &field.schema, names))
                })
                .collect(),
        ),
        (Value::Union(index, inner), Schema::Union(union)) => {
            let branch = &union.variants()[*index as usize];
            match **inner {
                Value::Null => J::Null,
                _ => serde_json::json!({ branch_name(branch): avro_json(inner, branch, names) }),
            }
        }
        (value, schema) => panic!("no Avro JSON for {value:?} as {schema:?}"),
    }
}

/// How Avro's JSON encoding names a union branch: its type's (full) name.
fn branch_name(schema: &Schema) -> String {
    match schema {
        Schema::Boolean => "boolean".into(),
        Schema::Int | Schema::Date | Schema::TimeMillis => "int".into(),
        Schema::Long
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimeMicros
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros => "long".into(),
        Schema::Float => "float".into(),
        Schema::Double => "double".into(),
        Schema::Bytes => "bytes".into(),
        Schema::String => "string".into(),
        Schema::Array(_) => "array".into(),
        Schema::Map(_) => "map".into(),
        Schema::Ref { name } => name.fullname(None),
        named => named
            .name()
            .map(|n| n.fullname(None))
            .unwrap_or_else(|| panic!("no branch name for {named:?}")),
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(text: &str) -> Vec<u8> {
    assert!(
        !text.starts_with("ERROR"),
        "the Java program failed on a record: {text}"
    );
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// The `.avsc` files directly in a directory of the repository, sorted.
pub fn avsc_files(relative_dir: &str) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(root().join(relative_dir))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".avsc"))
        .map(|n| format!("{relative_dir}/{n}"))
        .collect();
    files.sort();
    files
}
