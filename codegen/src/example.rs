//! Example bodies: an entity's `example:` as written in YAML, checked against what its parser
//! reads, or one synthesized from its fields' types (each type's example in the type table).
//! The generated code carries one per ingested entity; the OpenAPI document and the tests use it.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::diag::{Diagnostics, did_you_mean};
use crate::model::{ComputedFrom, EntityDef, ExampleNode, FieldDef, Literal, SourceRef, Transform};
use crate::types::FieldType;

/// The JSON path (relative to the element) a field is read from, for error messages.
pub(crate) fn json_path(f: &FieldDef) -> Vec<String> {
    match &f.computed_from {
        Some(c) => match (&c.field_path, c.sources.as_slice()) {
            (Some(p), _) => p.value.clone(),
            (None, [SourceRef::Element { path, .. }]) => path.clone(),
            _ => vec![f.name.value.clone()],
        },
        None => vec![f.name.value.clone()],
    }
}

/// Where a user transform's input is: `args: {field_path}`, else its one source's path, else
/// the element (or body) itself.
pub(crate) fn transform_input_path(c: &ComputedFrom) -> Vec<String> {
    match (&c.field_path, c.sources.as_slice()) {
        (Some(p), _) => p.value.clone(),
        (None, [SourceRef::Element { path, .. }]) => path.clone(),
        _ => Vec::new(),
    }
}

/// Where the parser reads each field of `e` in a body (element): one path per field, several
/// for a `coalesce`, none for constants and parent copies.
fn body_paths(e: &EntityDef) -> Vec<(Vec<String>, &FieldDef)> {
    let mut out = Vec::new();
    for f in &e.fields {
        match f.computed_from.as_ref().map(|c| (&c.transform, c)) {
            None | Some((Transform::ExtractField { .. }, _)) => out.push((json_path(f), f)),
            Some((Transform::Coalesce | Transform::Conditional, c)) => {
                let condition = c.condition.as_ref().map(|k| &k.source);
                for s in c.sources.iter().chain(condition) {
                    if let SourceRef::Element { path, .. } = s {
                        out.push((path.clone(), f));
                    }
                }
            }
            Some((Transform::Rust { .. }, c)) => {
                out.push((transform_input_path(c), f));
            }
            Some((Transform::Constant | Transform::CopyFromParent, _)) => {}
        }
    }
    out.retain(|(p, _)| !p.is_empty());
    out
}

/// The top-level members a body (element) of `e` is read from, sorted: a member outside them
/// is one the entity does not know.
pub(crate) fn body_members(e: &EntityDef) -> Vec<String> {
    let mut members: Vec<String> = body_paths(e)
        .into_iter()
        .map(|(p, _)| p[0].clone())
        .collect();
    // A renamed field's old name: bodies of the shape before the rename still come.
    members.extend(
        e.fields
            .iter()
            .filter(|f| f.computed_from.is_none())
            .filter_map(|f| f.renamed_from.as_ref().map(|r| r.value.clone())),
    );
    members.sort();
    members.dedup();
    members
}

/// The derived entity whose rows are the elements of `f`, a list field of `e` (or whose row
/// is `f`, an object field).
fn list_child<'a>(entities: &'a [EntityDef], e: &EntityDef, f: &FieldDef) -> Option<&'a EntityDef> {
    entities.iter().find(|c| {
        c.repeated_for
            .as_ref()
            .is_some_and(|r| r.entity.value == e.name.value && r.field.value == f.name.value)
    })
}

/// The example body (element) of `e`: its `example:`, else one built from its fields' types.
pub(crate) fn example_of(entities: &[EntityDef], e: &EntityDef) -> Value {
    if let Some(x) = &e.example {
        return x.to_json();
    }
    let mut body = Value::Object(Map::new());
    let mut filled = BTreeSet::new();
    for (path, f) in body_paths(e) {
        // Every source of a field (each `coalesce` or conditional one) is filled: whichever a
        // condition picks must hold a value.
        if !filled.insert(path.clone()) {
            continue;
        }
        let child = list_child(entities, e, f);
        let value = if f.ty.value == FieldType::ListObject {
            let element = child.map(|c| example_of(entities, c));
            Value::Array(element.into_iter().collect())
        } else if let Some(c) = child.filter(|_| f.ty.value == FieldType::Json) {
            // The object an entity derived with `object:` reads its row from.
            example_of(entities, c)
        } else {
            type_example(f)
        };
        set_path(&mut body, &path, value);
    }
    body
}

/// The type table's example of `f`'s type, a `String` cut to its `max_length`.
fn type_example(f: &FieldDef) -> Value {
    let example = f.ty.value.info().example;
    let value: Value = serde_json::from_str(example)
        .unwrap_or_else(|e| panic!("the type table's example `{example}` is not JSON: {e}"));
    match (value, &f.max_length) {
        (Value::String(s), Some(m)) => Value::String(s.chars().take(m.value as usize).collect()),
        (v, _) => v,
    }
}

/// Sets `value` at `path` of `body`, making the objects on the way (a path through a member
/// that is not an object is left alone).
fn set_path(body: &mut Value, path: &[String], value: Value) {
    let Some((last, init)) = path.split_last() else {
        return;
    };
    let mut at = body;
    for segment in init {
        let Value::Object(map) = at else { return };
        at = map
            .entry(segment.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if let Value::Object(map) = at {
        map.entry(last.clone()).or_insert(value);
    }
}

/// Checks `e`'s `example:` against what its parser reads: members it knows, values of the
/// fields' types, required members present.
pub(crate) fn check(entities: &[EntityDef], e: &EntityDef, d: &mut Diagnostics) {
    let Some(x) = &e.example else { return };
    if e.is_documentation_only() {
        d.error(
            &e.file,
            x.loc(),
            "`example` applies to entities that are parsed (root, derived, or reference with `persistence`)",
        );
        return;
    }
    Checker {
        entities,
        file: &e.file,
        e,
        d,
    }
    .object(x, "example");
}

/// Walks an `example:` written in `file` against entity `e` (a list element's entity for the
/// elements of a list field).
struct Checker<'a, 'd> {
    entities: &'a [EntityDef],
    file: &'a str,
    e: &'a EntityDef,
    d: &'d mut Diagnostics,
}

impl Checker<'_, '_> {
    fn err(&mut self, at: crate::diag::Loc, msg: String) {
        self.d.error(self.file, at, msg);
    }

    fn object(&mut self, node: &ExampleNode, at: &str) {
        let paths = body_paths(self.e);
        let paths: Vec<(&[String], &FieldDef)> =
            paths.iter().map(|(p, f)| (p.as_slice(), *f)).collect();
        self.members(&paths, node, at);
    }

    fn members(&mut self, paths: &[(&[String], &FieldDef)], node: &ExampleNode, at: &str) {
        let ExampleNode::Map(members, loc) = node else {
            let name = self.e.name.value.clone();
            self.err(
                node.loc(),
                format!("`{at}` must be a mapping of `{name}`'s members"),
            );
            return;
        };
        let known: Vec<&str> = paths
            .iter()
            .filter_map(|(p, _)| p.first().map(String::as_str))
            .collect();
        for (name, value) in members {
            let here = format!("{at}.{}", name.value);
            let under: Vec<(&[String], &FieldDef)> = paths
                .iter()
                .filter(|(p, _)| p.first() == Some(&name.value))
                .map(|(p, f)| (&p[1..], *f))
                .collect();
            match under.iter().find(|(p, _)| p.is_empty()) {
                _ if under.is_empty() => {
                    let entity = &self.e.name.value;
                    self.d.push(
                        self.file,
                        name.loc,
                        format!("`{here}` is not a member `{entity}` reads"),
                        Some(did_you_mean(&name.value, &known)),
                    );
                }
                Some((_, f)) => self.leaf(f, value, &here),
                None => self.members(&under, value, &here),
            }
        }
        for (p, f) in paths {
            let plain = !matches!(
                f.computed_from.as_ref().map(|c| &c.transform),
                Some(Transform::Coalesce | Transform::Conditional)
            );
            if let [member] = p
                && plain
                && !f.nullable
                && !members.iter().any(|(n, _)| &n.value == member)
            {
                // A mapping's own position is its first value's; its first key reads better.
                let first = members.first().map_or(*loc, |(k, _)| k.loc);
                self.err(
                    first,
                    format!("`{at}` lacks the required member `{member}`"),
                );
            }
        }
    }

    fn leaf(&mut self, f: &FieldDef, value: &ExampleNode, at: &str) {
        let ty = f.ty.value;
        if value.is_null() {
            if !f.nullable {
                let name = &f.name.value;
                self.err(
                    value.loc(),
                    format!("`{at}` is null but field `{name}` is not nullable"),
                );
            }
            return;
        }
        match (ty, value) {
            (FieldType::Json, ExampleNode::Map(..))
                if let Some(c) = list_child(self.entities, self.e, f) =>
            {
                Checker {
                    entities: self.entities,
                    file: self.file,
                    e: c,
                    d: &mut *self.d,
                }
                .object(value, at)
            }
            (FieldType::Json, _) if list_child(self.entities, self.e, f).is_some() => self.err(
                value.loc(),
                format!("`{at}` must be a mapping (it holds a row) or null"),
            ),
            (FieldType::Json, _) => {}
            (FieldType::ListObject, ExampleNode::List(items, _)) => {
                let child = list_child(self.entities, self.e, f);
                for (i, item) in items.iter().enumerate() {
                    let here = format!("{at}[{i}]");
                    match child {
                        Some(c) => Checker {
                            entities: self.entities,
                            file: self.file,
                            e: c,
                            d: &mut *self.d,
                        }
                        .object(item, &here),
                        None if !matches!(item, ExampleNode::Map(..)) => {
                            self.err(item.loc(), format!("`{here}` must be a mapping"))
                        }
                        None => {}
                    }
                }
            }
            (FieldType::ListString, ExampleNode::List(items, _)) => {
                for (i, item) in items.iter().enumerate() {
                    if !matches!(item, ExampleNode::Scalar(_)) || item.is_null() {
                        self.err(item.loc(), format!("`{at}[{i}]` must be a string"));
                    }
                }
            }
            (_, ExampleNode::Scalar(lit))
                if !matches!(ty, FieldType::ListObject | FieldType::ListString) =>
            {
                if let Err(why) = scalar(lit, f) {
                    self.err(lit.loc, format!("`{at}`: {why}"));
                }
            }
            _ => self.err(
                value.loc(),
                format!("`{at}` must be {}", ty.info().expected),
            ),
        }
    }
}

/// Checks a scalar of an example against its field, as the type table checks constants.
fn scalar(lit: &Literal, f: &FieldDef) -> Result<(), String> {
    let ty = f.ty.value;
    let json = ExampleNode::Scalar(lit.clone()).to_json();
    if ty == FieldType::String {
        if !json.is_string() {
            return Err(format!(
                "`{}` is read as {json_kind}; quote it for a String field",
                lit.text,
                json_kind = if json.is_boolean() {
                    "a boolean"
                } else {
                    "a number"
                }
            ));
        }
        if let Some(m) = &f.max_length
            && lit.text.chars().count() > m.value as usize
        {
            return Err(format!("longer than max_length {}", m.value));
        }
        return Ok(());
    }
    let ok = match ty.info().constant {
        nomnom_runtime::Constant::RustLiteral(check)
        | nomnom_runtime::Constant::Converted(check) => check(&lit.text).is_ok(),
        nomnom_runtime::Constant::Unsupported => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a valid `{}` (expected {})",
            lit.text,
            ty.name(),
            ty.info().expected
        ))
    }
}
