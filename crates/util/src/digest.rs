//! SHA-256 helpers shared by stage keys, cache manifests and dataset locks: hex digests of bytes, files and
//! canonical JSON (object keys sorted, no whitespace).

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::io;
use std::path::Path;

/// How a digest names its algorithm wherever mgat writes one (keys' inputs, manifests' upstream digests, the lock).
pub const PREFIX: &str = "sha256:";

/// `sha256:<hex>`: the one spelling of a labelled digest.
pub fn labelled(hex: &str) -> String {
    format!("{PREFIX}{hex}")
}

/// Lower-case hex of a SHA-256 digest.
pub fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The SHA-256 of a file's contents and its size in bytes, streamed.
pub fn sha256_file(path: &Path) -> io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let bytes = io::copy(&mut file, &mut hasher)?;
    Ok((hex(&hasher.finalize()), bytes))
}

/// JSON with object keys sorted at every level and no insignificant whitespace: equal values give equal text.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_json_string(k, out);
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::String(text) => push_json_string(text, out),
        scalar => {
            let _ = write!(out, "{scalar}");
        }
    }
}

/// `text` as a JSON string, exactly as serde_json writes it: quoted as is when nothing in it needs escaping (the
/// usual case, without allocating), else by serde_json.
fn push_json_string(text: &str, out: &mut String) {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(text);
        out.push('"');
    } else {
        out.push_str(&Value::String(text.to_string()).to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sha256_matches_the_standard_test_vector() {
        assert_eq!(
            sha256_bytes(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let a = json!({"b": 1, "a": {"y": [1, {"d": 2, "c": 3}], "x": null}});
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"x":null,"y":[1,{"c":3,"d":2}]},"b":1}"#
        );
    }

    #[test]
    fn strings_and_numbers_are_written_exactly_as_serde_json_writes_them() {
        // Already in key order, so serde_json's own output is the canonical form.
        let v = json!({
            "a\"q": "tab\there",
            "b\\s": ["quote \" backslash \\ nul \u{0} del \u{7f}", "Γ ü ✱ 😀", "plain"],
            "c": [0.1, 1e300, -0.0, 5e-324, 12345678901234567890u64, -7],
        });
        assert_eq!(canonical_json(&v), serde_json::to_string(&v).unwrap());
    }
}
