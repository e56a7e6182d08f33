//! Parsing Canonical Forms and fingerprints against the Java library's: every vector below
//! was printed by Apache Avro 1.12.1's `SchemaNormalization.toParsingForm` and
//! `parsingFingerprint64` (`tests/java/AvroInterop.java canonical`), and `tests/java_interop.rs`
//! compares every schema file with the Java library at test time.

use super::*;

/// (schema, its Parsing Canonical Form, its CRC-64-AVRO fingerprint as Java prints it).
const JAVA_VECTORS: [(&str, &str, i64); 25] = [
    (r#""null""#, r#""null""#, 7195948357588979594),
    (r#""boolean""#, r#""boolean""#, -6970731678124411036),
    (r#""int""#, r#""int""#, 8247732601305521295),
    (r#""long""#, r#""long""#, -3434872931120570953),
    (r#""float""#, r#""float""#, 5583340709985441680),
    (r#""double""#, r#""double""#, -8181574048448539266),
    (r#""bytes""#, r#""bytes""#, 5746618253357095269),
    (r#""string""#, r#""string""#, -8142146995180207161),
    (r#"{"type": "long"}"#, r#""long""#, -3434872931120570953),
    (
        r#"{"type": "long", "logicalType": "timestamp-millis"}"#,
        r#""long""#,
        -3434872931120570953,
    ),
    (
        r#"{"type": "int", "logicalType": "date"}"#,
        r#""int""#,
        8247732601305521295,
    ),
    (
        r#"{"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2}"#,
        r#""bytes""#,
        5746618253357095269,
    ),
    (
        r#"{"type": "string", "logicalType": "uuid"}"#,
        r#""string""#,
        -8142146995180207161,
    ),
    (
        r#"["null", "string", {"type": "long", "logicalType": "timestamp-micros"}]"#,
        r#"["null","string","long"]"#,
        6272898385476817121,
    ),
    (
        r#"{"type": "array", "items": {"type": "int"}, "doc": "numbers"}"#,
        r#"{"type":"array","items":"int"}"#,
        5920968314789803198,
    ),
    (
        r#"{"type": "map", "values": "string", "default": {}}"#,
        r#"{"type":"map","values":"string"}"#,
        -8732877298790414990,
    ),
    (
        r#"{"type": "fixed", "name": "Hash", "namespace": "x.y", "size": 16, "aliases": ["H"]}"#,
        r#"{"name":"x.y.Hash","type":"fixed","size":16}"#,
        -3943286188776253889,
    ),
    (
        r#"{"type": "fixed", "name": "Money", "size": 8, "logicalType": "decimal", "precision": 12, "scale": 2}"#,
        r#"{"name":"Money","type":"fixed","size":8}"#,
        -8106178044097673430,
    ),
    (
        r#"{"type": "enum", "name": "Suit", "symbols": ["SPADES", "HEARTS"], "default": "SPADES", "doc": "cards"}"#,
        r#"{"name":"Suit","type":"enum","symbols":["SPADES","HEARTS"]}"#,
        6369477722858210447,
    ),
    (
        r#"{"namespace": "ns", "type": "enum", "name": "a.b.Suit", "symbols": ["X"]}"#,
        r#"{"name":"a.b.Suit","type":"enum","symbols":["X"]}"#,
        -9193268408997578364,
    ),
    (
        r#"{"type": "record", "name": "R", "fields": []}"#,
        r#"{"name":"R","type":"record","fields":[]}"#,
        -4944168350069493447,
    ),
    (
        r#"{"type": "record", "name": "R", "namespace": "outer", "doc": "d", "aliases": ["Q"], "fields": [{"name": "a", "type": "int", "default": 1, "doc": "x", "order": "descending", "aliases": ["b"]}, {"type": {"type": "enum", "name": "E", "symbols": ["A"]}, "name": "e"}, {"name": "again", "type": "E"}, {"name": "full", "type": "outer.E"}, {"name": "inner", "type": {"type": "record", "name": "other.In", "fields": [{"name": "f", "type": {"type": "fixed", "name": "F", "size": 2}}, {"name": "g", "type": "F"}]}}, {"name": "h", "type": "other.F"}]}"#,
        r#"{"name":"outer.R","type":"record","fields":[{"name":"a","type":"int"},{"name":"e","type":{"name":"outer.E","type":"enum","symbols":["A"]}},{"name":"again","type":"outer.E"},{"name":"full","type":"outer.E"},{"name":"inner","type":{"name":"other.In","type":"record","fields":[{"name":"f","type":{"name":"other.F","type":"fixed","size":2}},{"name":"g","type":"other.F"}]}},{"name":"h","type":"other.F"}]}"#,
        1057460291194689304,
    ),
    (
        r#"{"type": "record", "name": "Node", "namespace": "", "fields": [{"name": "value", "type": "string"}, {"name": "next", "type": ["null", "Node"], "default": null}]}"#,
        r#"{"name":"Node","type":"record","fields":[{"name":"value","type":"string"},{"name":"next","type":["null","Node"]}]}"#,
        2652392348073040415,
    ),
    (
        r#"{"type": "record", "name": "Uni", "fields": [{"name": "s", "type": "string", "default": "caf\u00e9 \"q\" \\ \/"}, {"name": "t", "type": {"type": "string", "avro.java.string": "String"}}]}"#,
        r#"{"name":"Uni","type":"record","fields":[{"name":"s","type":"string"},{"name":"t","type":"string"}]}"#,
        9087315861142638249,
    ),
    (
        r#"{"type": "record", "name": "Props", "custom": {"k": [1, 2]}, "fields": [{"name": "m", "type": {"type": "map", "values": {"type": "array", "items": "long"}}, "extra": true}]}"#,
        r#"{"name":"Props","type":"record","fields":[{"name":"m","type":{"type":"map","values":{"type":"array","items":"long"}}}]}"#,
        -5854910867648813745,
    ),
];

#[test]
fn canonical_forms_and_fingerprints_are_the_java_librarys() {
    for (schema, canonical, java) in JAVA_VECTORS {
        let got = Fingerprinted::of_text(schema).unwrap_or_else(|e| panic!("{schema}: {e}"));
        assert_eq!(got.canonical_form, canonical, "canonical form of {schema}");
        assert_eq!(got.fingerprint as i64, java, "fingerprint of {schema}");
    }
}

#[test]
fn crc64_avro_of_nothing_is_the_seed_and_each_byte_matters() {
    assert_eq!(crc64_avro(b""), EMPTY);
    // The specification's fingerprint of the schema "int", straight from the bytes.
    assert_eq!(crc64_avro(br#""int""#) as i64, 8247732601305521295);
    assert_ne!(crc64_avro(br#""int""#), crc64_avro(br#""inu""#));
}

#[test]
fn logical_types_do_not_change_the_fingerprint_but_apache_avros_legacy_one_differs() {
    let plain = r#"{"type": "record", "name": "T", "fields": [{"name": "at", "type": "long"}]}"#;
    let logical = r#"{"type": "record", "name": "T", "fields":
        [{"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}}]}"#;
    let (plain_fp, logical_fp) = (
        Fingerprinted::of_text(plain).unwrap(),
        Fingerprinted::of_text(logical).unwrap(),
    );
    assert_eq!(plain_fp, logical_fp);
    let legacy = legacy_fingerprint(&Schema::parse_str(logical).unwrap());
    assert_ne!(
        legacy, logical_fp.fingerprint,
        "apache-avro keeps the logical type in its form; if this fails, its fingerprints \
         became the specification's and the legacy index is no longer needed"
    );
    assert_eq!(
        legacy_fingerprint(&Schema::parse_str(plain).unwrap()),
        plain_fp.fingerprint,
        "without logical types both agree"
    );
}

#[test]
fn a_parsed_schema_has_the_fingerprint_of_its_text() {
    for (schema, _, java) in JAVA_VECTORS {
        let parsed = Schema::parse_str(schema).unwrap();
        let got = Fingerprinted::of_schema(&parsed).unwrap();
        assert_eq!(got.fingerprint as i64, java, "{schema} through apache-avro");
    }
}

#[test]
fn malformed_schemas_are_named() {
    for (schema, expected) in [
        (r#"{"name": "X"}"#, "a schema object without \"type\""),
        (
            r#"{"type": "record", "fields": []}"#,
            "a record without a \"name\"",
        ),
        (
            r#"{"type": "enum", "name": "E"}"#,
            "enum without \"symbols\"",
        ),
        (
            r#"{"type": "fixed", "name": "F", "size": -1}"#,
            "fixed F: \"size\" is not a non-negative integer",
        ),
        (
            r#"{"type": "record", "name": "R", "fields": [{"name": "a"}]}"#,
            "record R: field a has no \"type\"",
        ),
        (r#"{"type": "array"}"#, "array without \"items\""),
        ("3", "3 is not a schema"),
        ("{", "not JSON"),
    ] {
        let e = Fingerprinted::of_text(schema).unwrap_err();
        assert!(e.contains(expected), "{schema}: {e}");
    }
}
