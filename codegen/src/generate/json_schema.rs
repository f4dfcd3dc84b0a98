//! Each root entity's JSON Schema (served in the OpenAPI document).

use crate::example::json_path;
use crate::model::*;
use crate::types::FieldType;
use crate::validate::Schema;

/// A JSON Schema (as JSON text) describing a root entity's message body, built from each
/// type's fragment in the type table.
pub(crate) fn json_schema(schema: &Schema, root: &EntityDef) -> String {
    use serde_json::{Map, Value, json};
    fn object(schema: &Schema, e: &EntityDef) -> Value {
        let mut props = Map::new();
        let mut required = Vec::new();
        let mut either = Vec::new();
        for f in &e.fields {
            // Only fields read straight from the body by name are part of the body's shape.
            let direct = match &f.computed_from {
                None => true,
                Some(c) => matches!(c.transform, Transform::ExtractField { .. }),
            };
            let path = json_path(f);
            if !direct || path.len() != 1 {
                continue;
            }
            let mut prop = (f.ty.value.info().json_schema)();
            if let Some(m) = &f.max_length {
                prop["maxLength"] = json!(m.value);
            }
            // A list's elements, or a nested object, are the rows of the entity derived
            // from this field.
            let child = schema.children(&e.name.value).into_iter().find(|c| {
                c.repeated_for.as_ref().map(|r| r.field.value.as_str())
                    == Some(f.name.value.as_str())
            });
            match child {
                Some(c) if f.ty.value == FieldType::ListObject => {
                    prop["items"] = object(schema, c);
                }
                Some(c) if f.ty.value == FieldType::Json => prop = object(schema, c),
                _ => {}
            }
            if let Some(d) = &f.doc {
                prop["description"] = json!(d);
            }
            let old_name = match (&f.renamed_from, &f.computed_from) {
                (Some(old), None) => Some(old.value.as_str()),
                _ => None,
            };
            if f.nullable {
                prop = json!({"anyOf": [prop, {"type": "null"}]});
            } else if let Some(old) = old_name {
                // Required under one name or the other.
                either.push(json!({"anyOf": [{"required": [path[0]]}, {"required": [old]}]}));
            } else {
                required.push(json!(path[0]));
            }
            if let (Some(old), None) = (&f.renamed_from, &f.computed_from) {
                // The old name, still read from bodies of the shape before the rename.
                let mut alias = prop.clone();
                alias["deprecated"] = json!(true);
                alias["description"] = json!(format!("The former name of `{}`", f.name.value));
                props.insert(old.value.clone(), alias);
            }
            props.insert(path[0].clone(), prop);
        }
        let mut object = json!({"type": "object", "properties": props, "required": required});
        if !either.is_empty() {
            object["allOf"] = json!(either);
        }
        object
    }
    object(schema, root).to_string()
}

// ---------------------------------------------------------------------------------------------
// Per-entity file
// ---------------------------------------------------------------------------------------------
