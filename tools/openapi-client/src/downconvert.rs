//! OpenAPI 3.1 → 3.0 down-conversion of our document, for progenitor (whose parser,
//! `openapiv3`, reads 3.0 only). utoipa writes 3.1; the constructs it uses that 3.0 lacks are
//! few, and each is rewritten to its 3.0 equivalent:
//!
//! - `"openapi": "3.1.x"` → `"3.0.3"`;
//! - `"type": [T, "null"]` → `"type": T, "nullable": true`;
//! - `"oneOf": [S, {"type": "null"}]` (an optional `$ref`) → `"allOf": [S], "nullable": true`;
//! - `"exclusiveMinimum": N` (a number in 3.1) → `"minimum": N, "exclusiveMinimum": true`, and
//!   the same for `exclusiveMaximum`.
//!
//! Anything else 3.1-only is refused with its JSON pointer, so a new construct in the document
//! fails regeneration loudly instead of being generated wrong.

use serde_json::{Map, Value};

/// The down-converted document, or the JSON pointer and reason of the first construct that has
/// no 3.0 equivalent here.
pub fn to_openapi_30(mut doc: Value) -> Result<Value, String> {
    match doc.get("openapi").and_then(Value::as_str) {
        Some(v) if v.starts_with("3.1.") => {}
        other => return Err(format!("/openapi: expected 3.1.x, found {other:?}")),
    }
    doc["openapi"] = Value::String("3.0.3".into());
    drop_streaming_alternatives(&mut doc);
    convert(&mut doc, "")?;
    Ok(doc)
}

/// progenitor allows one success type per operation. `POST /v1/tasks` answers either 202 JSON
/// or, with `Accept: text/event-stream`, 200 with the stream itself; the generated client does
/// not stream (llorch streams by hand), so an event-stream success beside a JSON one is left out.
fn drop_streaming_alternatives(doc: &mut Value) {
    let Some(Value::Object(paths)) = doc.get_mut("paths") else {
        return;
    };
    for op in paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|ops| ops.values_mut())
    {
        let Some(Value::Object(responses)) = op.get_mut("responses") else {
            continue;
        };
        let only = |r: &Value, ct: &str| {
            r.get("content")
                .and_then(Value::as_object)
                .is_some_and(|c| c.len() == 1 && c.contains_key(ct))
        };
        let success = |code: &String| code.starts_with('2');
        let has_json = responses
            .iter()
            .any(|(c, r)| success(c) && only(r, "application/json"));
        if has_json {
            responses.retain(|c, r| !(success(c) && only(r, "text/event-stream")));
        }
    }
}

fn convert(v: &mut Value, at: &str) -> Result<(), String> {
    match v {
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                convert(item, &format!("{at}/{i}"))?;
            }
        }
        Value::Object(obj) => {
            schema_object(obj, at)?;
            for (k, child) in obj.iter_mut() {
                convert(
                    child,
                    &format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                )?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn schema_object(obj: &mut Map<String, Value>, at: &str) -> Result<(), String> {
    for key in [
        "const",
        "prefixItems",
        "$schema",
        "unevaluatedProperties",
        "examples",
    ] {
        if obj.contains_key(key) && at.contains("/schemas/") {
            return Err(format!(
                "{at}/{key}: OpenAPI 3.1 only, no down-conversion defined"
            ));
        }
    }
    if let Some(Value::Array(types)) = obj.get("type") {
        let non_null: Vec<&Value> = types.iter().filter(|t| *t != "null").collect();
        let nullable = non_null.len() < types.len();
        let [t] = non_null.as_slice() else {
            return Err(format!(
                "{at}/type: a list of several non-null types: {types:?}"
            ));
        };
        let t = (*t).clone();
        obj.insert("type".into(), t);
        if nullable {
            obj.insert("nullable".into(), Value::Bool(true));
        }
    }
    for (exclusive, bound) in [
        ("exclusiveMinimum", "minimum"),
        ("exclusiveMaximum", "maximum"),
    ] {
        if let Some(n) = obj.get(exclusive).filter(|v| v.is_number()).cloned() {
            if obj.contains_key(bound) {
                return Err(format!("{at}: both {bound} and a numeric {exclusive}"));
            }
            obj.insert(bound.into(), n);
            obj.insert(exclusive.into(), Value::Bool(true));
        }
    }
    for key in ["oneOf", "anyOf"] {
        let Some(Value::Array(alts)) = obj.get(key) else {
            continue;
        };
        let is_null = |s: &Value| s.get("type").and_then(Value::as_str) == Some("null");
        if !alts.iter().any(is_null) {
            continue;
        }
        let rest: Vec<Value> = alts.iter().filter(|s| !is_null(s)).cloned().collect();
        if rest.len() != 1 {
            return Err(format!("{at}/{key}: null beside several alternatives"));
        }
        obj.remove(key);
        obj.insert("allOf".into(), Value::Array(rest));
        obj.insert("nullable".into(), Value::Bool(true));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rewrites_nullable_forms() {
        let doc = json!({
            "openapi": "3.1.0",
            "components": {"schemas": {"X": {"properties": {
                "a": {"type": ["integer", "null"], "format": "int64"},
                "b": {"oneOf": [{"$ref": "#/components/schemas/Y"}, {"type": "null"}]},
                "c": {"type": "string"}
            }}}}
        });
        let out = to_openapi_30(doc).expect("converts");
        assert_eq!(out["openapi"], "3.0.3");
        let p = &out["components"]["schemas"]["X"]["properties"];
        assert_eq!(
            p["a"],
            json!({"type": "integer", "format": "int64", "nullable": true})
        );
        assert_eq!(
            p["b"],
            json!({"allOf": [{"$ref": "#/components/schemas/Y"}], "nullable": true})
        );
        assert_eq!(p["c"], json!({"type": "string"}));
    }

    #[test]
    fn rewrites_numeric_exclusive_bounds() {
        let doc = json!({"openapi": "3.1.0", "components": {"schemas": {"X": {"properties": {
            "t": {"type": "number", "exclusiveMinimum": 0, "maximum": 2},
        }}}}});
        let out = to_openapi_30(doc).unwrap();
        assert_eq!(
            out["components"]["schemas"]["X"]["properties"]["t"],
            json!({"type": "number", "minimum": 0, "exclusiveMinimum": true, "maximum": 2})
        );
    }

    #[test]
    fn refuses_what_it_cannot_convert() {
        assert!(to_openapi_30(json!({"openapi": "3.0.0"})).is_err());
        let bad = json!({"openapi": "3.1.0", "components": {"schemas": {"X": {"type": ["string", "integer"]}}}});
        let e = to_openapi_30(bad).expect_err("refused");
        assert!(e.starts_with("/components/schemas/X/type"), "{e}");
        let bad = json!({"openapi": "3.1.0", "components": {"schemas": {"X": {"const": 1}}}});
        assert!(to_openapi_30(bad).is_err());
    }
}
