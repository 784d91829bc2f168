//! Input rules, checked before anything is written: a request that breaks one gets a 4xx
//! problem and changes nothing.

use std::collections::HashSet;

use serde_json::{Map, Value};

use crate::problem::Problem;

/// Firestore's own document limit; the HTTP body limit is the same number.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Firestore allows maps nested 20 deep; the document's `data` map is one of them.
pub const MAX_DEPTH: usize = 19;
/// Path segments that are routes of their own, so they cannot be collection names.
const RESERVED_COLLECTIONS: [&str; 4] = ["auth", "files", "jobs", "me"];

pub fn collection(allowed: &HashSet<String>, name: &str) -> Result<(), Problem> {
    if allowed.contains(name) && !RESERVED_COLLECTIONS.contains(&name) {
        Ok(())
    } else {
        Err(Problem::not_found(format!("unknown collection {name:?}")))
    }
}

/// Letters, digits, `-` and `_`, at most 64 (server-made ids are 28 lowercase hex digits): no
/// `:` or `/`, so the id cannot change the meaning of a cache key (`doc:<collection>:<id>`) or a
/// Firestore path. Anything else is "not found" without a Firestore read.
pub fn document_id(id: &str) -> Result<(), Problem> {
    if !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(())
    } else {
        Err(Problem::not_found(format!("no document {id:?}")))
    }
}

/// A JSON object within the size, depth and naming rules.
pub fn object(bytes: &[u8]) -> Result<Map<String, Value>, Problem> {
    if bytes.len() > MAX_BODY_BYTES {
        return Err(too_large());
    }
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| Problem::bad_request(format!("invalid JSON: {e}")))?;
    match value {
        Value::Object(map) => {
            check_tree(&map, 1)?;
            Ok(map)
        }
        _ => Err(unprocessable("the body must be a JSON object")),
    }
}

/// Applies an RFC 7386 JSON merge patch to `target`.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(patch) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Value::Object(map) = target {
                for (k, v) in patch {
                    if v.is_null() {
                        map.remove(k);
                    } else {
                        merge_patch(map.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// The rules again on a merged result: a patch must not produce what a create may not send.
pub fn merged(map: &Map<String, Value>) -> Result<(), Problem> {
    check_tree(map, 1)?;
    let size = serde_json::to_vec(map)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_BODY_BYTES {
        return Err(too_large());
    }
    Ok(())
}

fn check_tree(map: &Map<String, Value>, depth: usize) -> Result<(), Problem> {
    if depth > MAX_DEPTH {
        return Err(unprocessable(format!(
            "objects nest more than {MAX_DEPTH} levels deep"
        )));
    }
    for (key, value) in map {
        if key.is_empty() {
            return Err(unprocessable("empty field names are not allowed"));
        }
        // Firestore reserves `__name__`-style names.
        if key.len() >= 4 && key.starts_with("__") && key.ends_with("__") {
            return Err(unprocessable(format!("field name {key:?} is reserved")));
        }
        check_value(value, depth)?;
    }
    Ok(())
}

fn check_value(value: &Value, depth: usize) -> Result<(), Problem> {
    match value {
        Value::Object(m) => check_tree(m, depth + 1),
        Value::Array(items) => {
            for item in items {
                // Firestore arrays cannot contain arrays directly.
                if item.is_array() {
                    return Err(unprocessable("arrays of arrays cannot be stored"));
                }
                check_value(item, depth + 1)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn unprocessable(detail: impl Into<String>) -> Problem {
    Problem::new(
        axum::http::StatusCode::UNPROCESSABLE_ENTITY,
        "Unprocessable content",
        detail,
    )
}

pub fn too_large() -> Problem {
    Problem::new(
        axum::http::StatusCode::PAYLOAD_TOO_LARGE,
        "Content too large",
        format!("documents are limited to {MAX_BODY_BYTES} bytes"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7386_examples() {
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (mut target, patch, want) in cases {
            merge_patch(&mut target, &patch);
            assert_eq!(target, want);
        }
    }

    #[test]
    fn bodies_are_checked_for_shape_depth_and_names() {
        assert!(object(br#"{"a":1,"b":{"c":[1,{"d":2}]}}"#).is_ok());
        assert_eq!(
            object(b"{nope").err().map(|p| p.status().as_u16()),
            Some(400)
        );
        assert_eq!(object(b"[1]").err().map(|p| p.status().as_u16()), Some(422));
        assert_eq!(
            object(br#"{"__name__":1}"#)
                .err()
                .map(|p| p.status().as_u16()),
            Some(422)
        );
        assert_eq!(
            object(br#"{"a":{"":1}}"#)
                .err()
                .map(|p| p.status().as_u16()),
            Some(422)
        );
        assert_eq!(
            object(br#"{"a":[[1]]}"#).err().map(|p| p.status().as_u16()),
            Some(422)
        );
        let deep = format!(
            "{}1{}",
            r#"{"a":"#.repeat(MAX_DEPTH + 1),
            "}".repeat(MAX_DEPTH + 1)
        );
        assert_eq!(
            object(deep.as_bytes()).err().map(|p| p.status().as_u16()),
            Some(422)
        );
        let ok = format!("{}1{}", r#"{"a":"#.repeat(MAX_DEPTH), "}".repeat(MAX_DEPTH));
        assert!(object(ok.as_bytes()).is_ok());
    }

    #[test]
    fn only_allow_listed_collections_and_plain_ids() {
        let allowed: HashSet<String> = ["notes".to_string(), "me".to_string()].into();
        assert!(collection(&allowed, "notes").is_ok());
        assert!(collection(&allowed, "users").is_err());
        assert!(collection(&allowed, "me").is_err());
        assert!(document_id("0123abc").is_ok());
        assert!(document_id("a/b").is_err());
        assert!(document_id("").is_err());
    }
}
