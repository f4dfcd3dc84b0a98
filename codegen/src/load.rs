//! Stage 1: read `entities/*.yaml` into [`EntityDef`]s, collecting every problem with its position.
//!
//! We walk a position-marked YAML tree (marked-yaml) by hand instead of deriving serde impls:
//! serde stops at the first error and cannot point at a value it accepted but we reject
//! (an unknown type name, say), while the spec asks for all problems at once.

use std::path::Path;

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::{LoaderOptions, Node};

use crate::diag::{Diagnostics, Loc, did_you_mean};
use crate::ident::{is_pascal, is_snake};
use crate::model::*;
use crate::types::FieldType;

const ENTITY_KEYS: &[&str] = &[
    "name",
    "source_type",
    "type",
    "doc",
    "prefix",
    "fields",
    "repeated_for",
    "parent",
    "object",
    "persistence",
    "csv",
    "example",
    "removed",
];
const CSV_KEYS: &[&str] = &[
    "delimiter",
    "quote",
    "header",
    "columns",
    "header_map",
    "null",
    "date_format",
];
const FIELD_KEYS: &[&str] = &[
    "name",
    "type",
    "nullable",
    "doc",
    "max_length",
    "args",
    "computed_from",
    "renamed_from",
    "default",
];
const REPEATED_FOR_KEYS: &[&str] = &["entity", "field", "each_known_as"];
const OBJECT_KEYS: &[&str] = &["field", "known_as"];
const COMPUTED_KEYS: &[&str] = &["transform", "sources", "args", "condition"];
const CONDITION_KEYS: &[&str] = &["field", "equals"];
const USER_TRANSFORM_KEYS: &[&str] = &["rust", "args"];
const ARGS_KEYS: &[&str] = &["field_path", "field", "value"];
const SOURCE_KEYS: &[&str] = &["source", "field"];
const PERSISTENCE_KEYS: &[&str] = &["database", "primary_key", "field_overrides"];
const DATABASE_KEYS: &[&str] = &[
    "conformant_table",
    "conformant_id_column",
    "unicity_fields",
    "on_conflict",
    "order_by",
];
const PRIMARY_KEY_KEYS: &[&str] = &["name", "type", "autogenerate"];
/// Every transform spelling the spec accepts.
pub(crate) const TRANSFORMS: &[&str] = &[
    "copy_from_parent",
    "copy_field",
    "extract_field",
    "json_get_string",
    "json_get_int",
    "json_get_float",
    "json_get_bool",
    "json_get_optional_string",
    "json_get_optional_int",
    "json_get_optional_float",
    "json_get_optional_bool",
    "constant",
    "constant_value",
    "coalesce",
    "copy_field_conditional",
];

/// A loaded YAML file: its display path and its text (for rerun-if-changed and diagnostics).
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Path as shown in diagnostics and printed for cargo.
    pub path: String,
    /// File contents.
    pub text: String,
}

/// Lists `*.yaml` / `*.yml` files of a directory in sorted file-name order.
pub fn read_dir(dir: &Path) -> Result<Vec<SourceFile>, std::io::Error> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        })
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            Ok(SourceFile {
                text: std::fs::read_to_string(&p)?,
                path: p.to_string_lossy().into_owned(),
            })
        })
        .collect()
}

/// What [`load`] produced.
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
    /// Entities that loaded (possibly incomplete, see [`EntityDef::complete`]).
    pub entities: Vec<EntityDef>,
    /// Every problem found while loading.
    pub diagnostics: Diagnostics,
    /// False when some file produced no entity at all (so its name is unknown).
    pub all_files_loaded: bool,
}

/// Parses every file; returns the entities that loaded and all problems found.
pub(crate) fn load(files: &[SourceFile]) -> Loaded {
    let mut diags = Diagnostics::default();
    let mut entities = Vec::new();
    let mut all_files_loaded = true;
    for (i, f) in files.iter().enumerate() {
        let before = diags.0.len();
        let mut cx = Cx {
            file: &f.path,
            diags: &mut diags,
        };
        match cx.file(i, &f.text) {
            Some(mut e) => {
                e.complete = diags.0.len() == before;
                entities.push(e);
            }
            None => all_files_loaded = false,
        }
    }
    Loaded {
        entities,
        diagnostics: diags,
        all_files_loaded,
    }
}

fn loc(node: &Node) -> Loc {
    node.span()
        .start()
        .map(|m| Loc {
            line: m.line(),
            col: m.column(),
        })
        .unwrap_or_default()
}

fn sloc(node: &MarkedScalarNode) -> Loc {
    node.span()
        .start()
        .map(|m| Loc {
            line: m.line(),
            col: m.column(),
        })
        .unwrap_or_default()
}

/// An `example:` value as written (checked against the entity by validate).
fn example_node(node: &Node) -> ExampleNode {
    match node {
        Node::Scalar(s) => ExampleNode::Scalar(Literal {
            text: s.as_str().to_string(),
            quoted: !s.may_coerce(),
            loc: sloc(s),
        }),
        Node::Sequence(items) => {
            ExampleNode::List(items.iter().map(example_node).collect(), loc(node))
        }
        Node::Mapping(map) => ExampleNode::Map(
            map.iter()
                .map(|(k, v)| {
                    (
                        Spanned {
                            value: k.as_str().to_string(),
                            loc: sloc(k),
                        },
                        example_node(v),
                    )
                })
                .collect(),
            loc(node),
        ),
    }
}

/// The keys of one mapping, after unknown keys were reported.
struct Keys<'n> {
    entries: Vec<(&'n MarkedScalarNode, &'n Node)>,
}

impl<'n> Keys<'n> {
    fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| k.as_str() == key)
            .map(|(_, v)| *v)
    }
    fn key_loc(&self, key: &str) -> Option<Loc> {
        self.entries
            .iter()
            .find(|(k, _)| k.as_str() == key)
            .map(|(k, _)| sloc(k))
    }
}

struct Cx<'a> {
    file: &'a str,
    diags: &'a mut Diagnostics,
}

impl Cx<'_> {
    fn err(&mut self, loc: Loc, msg: impl Into<String>) {
        self.diags.error(self.file, loc, msg);
    }

    fn err_hint(&mut self, loc: Loc, msg: impl Into<String>, hint: String) {
        self.diags.push(self.file, loc, msg, Some(hint));
    }

    /// Checks that `node` is a mapping whose keys are all in `allowed`.
    fn mapping<'n>(&mut self, node: &'n Node, allowed: &[&str], what: &str) -> Option<Keys<'n>> {
        let Some(map) = node.as_mapping() else {
            self.err(loc(node), format!("{what} must be a mapping"));
            return None;
        };
        Some(self.keys(map, allowed, what))
    }

    fn keys<'n>(&mut self, map: &'n MarkedMappingNode, allowed: &[&str], what: &str) -> Keys<'n> {
        let mut entries = Vec::new();
        for (k, v) in map.iter() {
            if allowed.contains(&k.as_str()) {
                entries.push((k, v));
            } else {
                self.err_hint(
                    sloc(k),
                    format!("unknown key `{}` in {what}", k.as_str()),
                    did_you_mean(k.as_str(), allowed),
                );
            }
        }
        Keys { entries }
    }

    fn string(&mut self, node: &Node, what: &str) -> Option<Spanned<String>> {
        match node.as_scalar() {
            Some(s) => Some(Spanned {
                value: s.as_str().to_string(),
                loc: sloc(s),
            }),
            None => {
                self.err(loc(node), format!("{what} must be a string"));
                None
            }
        }
    }

    fn bool(&mut self, node: &Node, what: &str) -> Option<bool> {
        let b = node.as_scalar().and_then(|s| s.as_bool());
        if b.is_none() {
            self.err(loc(node), format!("{what} must be true or false"));
        }
        b
    }

    fn positive_u32(&mut self, node: &Node, what: &str) -> Option<Spanned<u32>> {
        let parsed = node
            .as_scalar()
            .filter(|s| s.may_coerce())
            .and_then(|s| s.as_str().parse::<u32>().ok())
            .filter(|n| *n > 0);
        if parsed.is_none() {
            self.err(loc(node), format!("{what} must be a positive integer"));
        }
        parsed.map(|value| Spanned {
            value,
            loc: loc(node),
        })
    }

    fn string_list(&mut self, node: &Node, what: &str) -> Vec<Spanned<String>> {
        let Some(seq) = node.as_sequence() else {
            self.err(loc(node), format!("{what} must be a list of strings"));
            return Vec::new();
        };
        seq.iter().filter_map(|n| self.string(n, what)).collect()
    }

    fn file(&mut self, index: usize, text: &str) -> Option<EntityDef> {
        let options = LoaderOptions::default().error_on_duplicate_keys(true);
        let root = match marked_yaml::parse_yaml_with_options(index, text, options) {
            Ok(root) => root,
            Err(e) => {
                self.yaml_error(&e);
                return None;
            }
        };
        let top = self.mapping(&root, &["entity"], "the top level")?;
        let Some(entity) = top.get("entity") else {
            self.err(Loc { line: 1, col: 1 }, "missing top-level key `entity`");
            return None;
        };
        self.entity(entity)
    }

    fn yaml_error(&mut self, e: &marked_yaml::LoadError) {
        use marked_yaml::LoadError as E;
        let at = |m: &marked_yaml::Marker| Loc {
            line: m.line(),
            col: m.column(),
        };
        match e {
            E::DuplicateKey(inner) => {
                let first = inner.prev_key.span().start().map(at).unwrap_or_default();
                let l = inner.key.span().start().map(at).unwrap_or_default();
                self.err(
                    l,
                    format!(
                        "duplicate key `{}` (first written at line {}, column {})",
                        inner.key.as_str(),
                        first.line,
                        first.col
                    ),
                );
            }
            E::ScanError(m, se) => self.err(at(m), format!("invalid YAML: {}", se.info())),
            E::TopLevelMustBeMapping(m) => {
                self.err(at(m), "the top level must be a mapping with key `entity`")
            }
            other => {
                // The remaining variants all carry a marker and a fixed message.
                let text = other.to_string();
                let (l, msg) = match other {
                    E::TopLevelMustBeSequence(m)
                    | E::UnexpectedAnchor(m)
                    | E::MappingKeyMustBeScalar(m)
                    | E::UnexpectedTag(m) => (at(m), text),
                    _ => (Loc::default(), text),
                };
                self.err(l, format!("invalid YAML: {msg}"));
            }
        }
    }

    fn entity(&mut self, node: &Node) -> Option<EntityDef> {
        let keys = self.mapping(node, ENTITY_KEYS, "`entity`")?;
        let name = match keys.get("name") {
            Some(n) => self.string(n, "`entity.name`"),
            None => {
                self.err(loc(node), "missing key `name` in `entity`");
                None
            }
        };
        if let Some(n) = &name
            && !is_pascal(&n.value)
        {
            self.err(
                n.loc,
                format!(
                    "entity name `{}` must be PascalCase (e.g. `OrderLineItem`)",
                    n.value
                ),
            );
        }
        let source_type = match (keys.get("source_type"), keys.get("type")) {
            (Some(_), Some(t)) => {
                self.err(
                    loc(t),
                    "both `source_type` and its alias `type` are set; keep one",
                );
                None
            }
            (Some(n), None) | (None, Some(n)) => self.source_type(n),
            (None, None) => {
                self.err(loc(node), "missing key `source_type` in `entity`");
                None
            }
        };
        let doc = keys.get("doc").and_then(|n| self.string(n, "`doc`"));
        if let Some(p) = keys.get("prefix") {
            self.string(p, "`prefix`");
        }
        let repeated_for = keys.get("repeated_for").and_then(|n| {
            let rk = self.mapping(n, REPEATED_FOR_KEYS, "`repeated_for`")?;
            let entity = self.required(&rk, n, "entity", "`repeated_for`")?;
            let field = self.required(&rk, n, "field", "`repeated_for`")?;
            let each_known_as = match rk.get("each_known_as") {
                Some(e) => self.string(e, "`each_known_as`")?.value,
                None => "item".to_string(),
            };
            Some(RepeatedFor {
                entity,
                field,
                each_known_as,
                loc: keys.key_loc("repeated_for").unwrap_or_default(),
                nested_object: false,
            })
        });
        let parent = keys.get("parent").and_then(|n| self.string(n, "`parent`"));
        let object = keys
            .get("object")
            .and_then(|n| self.object(n, keys.key_loc("object")));
        let repeated_for = match (repeated_for, object) {
            (Some(r), Some((_, at))) => {
                self.err(
                    at,
                    "`object` and `repeated_for` exclude each other: rows come from a list or from one object",
                );
                Some(r)
            }
            (Some(r), None) => Some(r),
            (None, Some(((field, known_as), at))) => match &parent {
                Some(p) => Some(RepeatedFor {
                    entity: p.clone(),
                    field,
                    each_known_as: known_as,
                    loc: at,
                    nested_object: true,
                }),
                None => {
                    self.err(
                        at,
                        "`object` names a field of the parent: add `parent: <entity>`",
                    );
                    None
                }
            },
            (None, None) => None,
        };
        let element = repeated_for.as_ref().map(|r| r.each_known_as.clone());
        let parent_name = repeated_for
            .as_ref()
            .map(|r| r.entity.value.clone())
            .or_else(|| parent.as_ref().map(|p| p.value.clone()));
        let ctx = SourceCx {
            element: element.as_deref(),
            parent: parent_name.as_deref(),
        };
        let fields = match keys.get("fields") {
            Some(n) => self.fields(n, &ctx, "`fields`"),
            None => {
                self.err(loc(node), "missing key `fields` in `entity`");
                Vec::new()
            }
        };
        let persistence = keys
            .get("persistence")
            .and_then(|n| self.persistence(n, &ctx, keys.key_loc("persistence")));
        let csv = keys
            .get("csv")
            .and_then(|n| self.csv(n, keys.key_loc("csv").unwrap_or_default()));
        let example = keys.get("example").map(example_node);
        let removed = keys
            .get("removed")
            .map(|n| self.string_list(n, "`removed`"))
            .unwrap_or_default();
        Some(EntityDef {
            file: self.file.to_string(),
            name: name?,
            source_type: source_type?,
            doc: doc.map(|d| d.value),
            fields,
            repeated_for,
            parent,
            persistence,
            csv,
            example,
            removed,
            complete: true,
        })
    }

    /// `object: <field>` or `object: {field, known_as}`: the parent's field holding the
    /// object and the name sources call it by (the field's name unless given).
    #[allow(clippy::type_complexity)]
    fn object(
        &mut self,
        node: &Node,
        key_loc: Option<Loc>,
    ) -> Option<((Spanned<String>, String), Loc)> {
        let at = key_loc.unwrap_or_else(|| loc(node));
        if node.as_scalar().is_some() {
            let field = self.string(node, "`object`")?;
            let known_as = field.value.clone();
            return Some(((field, known_as), at));
        }
        let ok = self.mapping(node, OBJECT_KEYS, "`object`")?;
        let field = self.required(&ok, node, "field", "`object`")?;
        let known_as = match ok.get("known_as") {
            Some(k) => self.string(k, "`known_as`")?.value,
            None => field.value.clone(),
        };
        Some(((field, known_as), at))
    }

    /// A scalar as written (for `constant`, `default`, a condition's `equals`).
    fn literal(&mut self, node: &Node, what: &str) -> Option<Literal> {
        match node.as_scalar() {
            Some(s) => Some(Literal {
                text: s.as_str().to_string(),
                quoted: !s.may_coerce(),
                loc: sloc(s),
            }),
            None => {
                self.err(loc(node), format!("{what} must be a scalar"));
                None
            }
        }
    }

    fn required(
        &mut self,
        keys: &Keys<'_>,
        node: &Node,
        key: &str,
        what: &str,
    ) -> Option<Spanned<String>> {
        match keys.get(key) {
            Some(n) => self.string(n, &format!("`{key}`")),
            None => {
                self.err(loc(node), format!("missing key `{key}` in {what}"));
                None
            }
        }
    }

    fn source_type(&mut self, node: &Node) -> Option<SourceType> {
        let s = self.string(node, "`source_type`")?;
        match s.value.as_str() {
            "root" => Some(SourceType::Root),
            "derived" => Some(SourceType::Derived),
            "reference" => Some(SourceType::Reference),
            other => {
                self.err_hint(
                    s.loc,
                    format!("unknown source_type `{other}`"),
                    did_you_mean(other, &["root", "derived", "reference"]),
                );
                None
            }
        }
    }

    fn fields(&mut self, node: &Node, ctx: &SourceCx<'_>, what: &str) -> Vec<FieldDef> {
        let Some(seq) = node.as_sequence() else {
            self.err(loc(node), format!("{what} must be a list of fields"));
            return Vec::new();
        };
        seq.iter().filter_map(|f| self.field(f, ctx)).collect()
    }

    fn field(&mut self, node: &Node, ctx: &SourceCx<'_>) -> Option<FieldDef> {
        let keys = self.mapping(node, FIELD_KEYS, "a field")?;
        let name = self.required(&keys, node, "name", "a field");
        if let Some(n) = &name
            && !is_snake(&n.value)
        {
            self.err(
                n.loc,
                format!(
                    "field name `{}` must be snake_case (e.g. `order_key`)",
                    n.value
                ),
            );
        }
        let ty =
            self.required(&keys, node, "type", "a field")
                .and_then(|t| match FieldType::from_yaml(&t.value) {
                    Some(ty) => Some(Spanned {
                        value: ty,
                        loc: t.loc,
                    }),
                    None => {
                        let field = name.as_ref().map(|n| n.value.as_str()).unwrap_or("?");
                        let known = FieldType::canonical_names().collect::<Vec<_>>().join(", ");
                        let hint = match crate::diag::closest(&t.value, FieldType::all_names()) {
                            Some(c) => format!("did you mean `{c}`? (known: {known})"),
                            None => format!("known: {known}"),
                        };
                        self.err_hint(
                            t.loc,
                            format!("unknown type `{}` for field `{field}`", t.value),
                            hint,
                        );
                        None
                    }
                });
        let nullable = keys
            .get("nullable")
            .and_then(|n| self.bool(n, "`nullable`"))
            .unwrap_or(false);
        let doc = keys
            .get("doc")
            .and_then(|n| self.string(n, "`doc`"))
            .map(|d| d.value);
        let mut max_length = keys
            .get("max_length")
            .and_then(|n| self.positive_u32(n, "`max_length`"));
        if let Some(args) = keys.get("args") {
            // Legacy spelling: `args: [n]` is `max_length: n`.
            match args.as_sequence().map(|s| s.as_slice()) {
                Some([n]) if max_length.is_none() => {
                    max_length = self.positive_u32(n, "`args[0]` (max length)")
                }
                Some([_]) => self.err(loc(args), "`args` and `max_length` both set; keep one"),
                _ => self.err(loc(args), "`args` must be a one-element list: [max_length]"),
            }
        }
        if let (Some(ml), Some(t)) = (&max_length, &ty)
            && t.value != FieldType::String
        {
            self.err(
                ml.loc,
                format!(
                    "`max_length` applies to String fields only, not `{}`",
                    t.value.name()
                ),
            );
        }
        let computed_from = keys
            .get("computed_from")
            .and_then(|n| self.computed_from(n, ctx));
        let renamed_from = keys
            .get("renamed_from")
            .and_then(|n| self.string(n, "`renamed_from`"));
        let default = keys
            .get("default")
            .and_then(|v| self.literal(v, "`default`"));
        Some(FieldDef {
            name: name?,
            ty: ty?,
            nullable,
            doc,
            max_length,
            computed_from,
            renamed_from,
            default,
        })
    }

    fn computed_from(&mut self, node: &Node, ctx: &SourceCx<'_>) -> Option<ComputedFrom> {
        let keys = self.mapping(node, COMPUTED_KEYS, "`computed_from`")?;
        // `transform: {rust: <path>, args: [...]}`: a function of the user's crate.
        let user = match keys.get("transform") {
            Some(n) if n.as_mapping().is_some() => Some(self.user_transform(n)?),
            _ => None,
        };
        let t = match &user {
            Some(Transform::Rust { path, .. }) => Spanned {
                value: format!("rust: {}", path.value),
                loc: path.loc,
            },
            _ => self.required(&keys, node, "transform", "`computed_from`")?,
        };
        let transform = match t.value.as_str() {
            _ if user.is_some() => user.clone()?,
            "copy_from_parent" | "copy_field" => Transform::CopyFromParent,
            "extract_field" => Transform::ExtractField { legacy: None },
            "constant" | "constant_value" => Transform::Constant,
            "coalesce" => Transform::Coalesce,
            "copy_field_conditional" => Transform::Conditional,
            other => match legacy_getter(other) {
                Some(l) => Transform::ExtractField { legacy: Some(l) },
                None => {
                    self.err_hint(
                        t.loc,
                        format!("unknown transform `{other}`"),
                        did_you_mean(other, TRANSFORMS),
                    );
                    return None;
                }
            },
        };
        let sources = match keys.get("sources") {
            Some(n) => match n.as_sequence() {
                Some(seq) => {
                    let all: Vec<Option<SourceRef>> =
                        seq.iter().map(|s| self.source(s, ctx)).collect();
                    // A bad source was reported; checking the transform would only echo it.
                    all.into_iter().collect::<Option<Vec<_>>>()?
                }
                None => {
                    self.err(loc(n), "`sources` must be a list");
                    return None;
                }
            },
            None => Vec::new(),
        };
        let mut field_path = None;
        let mut value = None;
        if let Some(args) = keys.get("args") {
            let ak = self.mapping(args, ARGS_KEYS, "`args`")?;
            let path = match (ak.get("field_path"), ak.get("field")) {
                (Some(_), Some(f)) => {
                    self.err(loc(f), "`field_path` and its alias `field` are both set");
                    None
                }
                (Some(p), None) | (None, Some(p)) => self.string(p, "`field_path`"),
                (None, None) => None,
            };
            field_path = path.map(|p| Spanned {
                value: p.value.split('.').map(str::to_string).collect::<Vec<_>>(),
                loc: p.loc,
            });
            if let Some(v) = ak.get("value") {
                value = self.literal(v, "`value`");
            }
        }
        let condition = match keys.get("condition") {
            Some(n) => {
                let ck = self.mapping(n, CONDITION_KEYS, "`condition`")?;
                let field = match ck.get("field") {
                    Some(f) => self.source(f, ctx)?,
                    None => {
                        self.err(loc(n), "missing key `field` in `condition`");
                        return None;
                    }
                };
                let equals = match ck.get("equals") {
                    Some(v) => self.literal(v, "`equals`")?,
                    None => {
                        self.err(loc(n), "missing key `equals` in `condition`");
                        return None;
                    }
                };
                Some(Condition {
                    source: field,
                    equals,
                    loc: keys.key_loc("condition").unwrap_or_else(|| loc(n)),
                })
            }
            None => None,
        };
        Some(ComputedFrom {
            transform,
            name: t.value.clone(),
            loc: t.loc,
            sources,
            field_path,
            value,
            condition,
        })
    }

    /// `{rust: <path>, args: [<text>, ...]}`; the path's shape is checked here, with its
    /// position (that the function exists and fits is the compiler's check).
    fn user_transform(&mut self, node: &Node) -> Option<Transform> {
        let keys = self.mapping(node, USER_TRANSFORM_KEYS, "`transform`")?;
        let path = self.required(&keys, node, "rust", "`transform`")?;
        if let Err(why) = crate::ident::check_rust_path(&path.value) {
            self.err(path.loc, format!("`rust: {}`: {why}", path.value));
            return None;
        }
        let args = match keys.get("args") {
            None => Vec::new(),
            Some(n) => match n.as_sequence() {
                Some(seq) => seq
                    .iter()
                    .filter_map(|a| match a.as_scalar() {
                        Some(s) => Some(s.as_str().to_string()),
                        None => {
                            self.err(loc(a), "each of `args` must be a scalar (given as text)");
                            None
                        }
                    })
                    .collect(),
                None => {
                    self.err(loc(n), "`args` of a rust transform must be a list");
                    return None;
                }
            },
        };
        Some(Transform::Rust { path, args })
    }

    fn source(&mut self, node: &Node, ctx: &SourceCx<'_>) -> Option<SourceRef> {
        if let Some(s) = node.as_scalar() {
            return Some(ctx.resolve_scalar(s.as_str(), sloc(s)));
        }
        let keys = self.mapping(node, SOURCE_KEYS, "a source")?;
        let source = self.required(&keys, node, "source", "a source")?;
        let field = self.required(&keys, node, "field", "a source")?;
        let is_parent = source.value == "parent" || Some(source.value.as_str()) == ctx.parent;
        if is_parent {
            if Some(field.value.as_str()) == ctx.element {
                return Some(SourceRef::Element {
                    path: Vec::new(),
                    loc: source.loc,
                });
            }
            return Some(SourceRef::ParentField(field));
        }
        if Some(source.value.as_str()) == ctx.element {
            return Some(SourceRef::Element {
                path: field.value.split('.').map(str::to_string).collect(),
                loc: field.loc,
            });
        }
        let mut known = vec!["parent"];
        known.extend(ctx.parent);
        known.extend(ctx.element);
        self.err_hint(
            source.loc,
            format!("unknown source `{}`", source.value),
            did_you_mean(&source.value, &known),
        );
        None
    }

    fn csv(&mut self, node: &Node, key_loc: Loc) -> Option<CsvDef> {
        let keys = self.mapping(node, CSV_KEYS, "`csv`")?;
        let mut def = CsvDef {
            loc: key_loc,
            ..CsvDef::default()
        };
        def.delimiter = keys
            .get("delimiter")
            .and_then(|n| self.string(n, "`csv.delimiter`"));
        def.quote = keys
            .get("quote")
            .and_then(|n| self.string(n, "`csv.quote`"));
        def.header = keys.get("header").and_then(|n| {
            let value = self.bool(n, "`csv.header`")?;
            Some(Spanned { value, loc: loc(n) })
        });
        if let Some(n) = keys.get("columns") {
            def.columns = self.string_list(n, "`csv.columns`");
        }
        if let Some(n) = keys.get("header_map") {
            match n.as_mapping() {
                Some(map) => {
                    for (k, v) in map.iter() {
                        if let Some(field) = self.string(v, "a `csv.header_map` value") {
                            def.header_map.push((
                                Spanned {
                                    value: k.as_str().to_string(),
                                    loc: sloc(k),
                                },
                                field,
                            ));
                        }
                    }
                }
                None => self.err(
                    loc(n),
                    "`csv.header_map` must be a mapping of header text to field name",
                ),
            }
        }
        def.null = keys.get("null").and_then(|n| self.string(n, "`csv.null`"));
        def.date_format = keys
            .get("date_format")
            .and_then(|n| self.string(n, "`csv.date_format`"));
        Some(def)
    }

    fn persistence(
        &mut self,
        node: &Node,
        ctx: &SourceCx<'_>,
        key_loc: Option<Loc>,
    ) -> Option<Persistence> {
        let keys = self.mapping(node, PERSISTENCE_KEYS, "`persistence`")?;
        let Some(db_node) = keys.get("database") else {
            self.err(loc(node), "missing key `database` in `persistence`");
            return None;
        };
        let db = self.mapping(db_node, DATABASE_KEYS, "`persistence.database`")?;
        let table = self.required(&db, db_node, "conformant_table", "`persistence.database`");
        if let Some(t) = &table
            && !is_snake(&t.value)
        {
            self.err(
                t.loc,
                format!("table name `{}` must be snake_case", t.value),
            );
        }
        let id_from_db = db
            .get("conformant_id_column")
            .and_then(|n| self.string(n, "`conformant_id_column`"));
        let unicity_fields = db
            .get("unicity_fields")
            .map(|n| self.string_list(n, "`unicity_fields`"))
            .unwrap_or_default();
        let on_conflict = match db.get("on_conflict") {
            None => OnConflict::Update,
            Some(n) => {
                let s = self.string(n, "`on_conflict`")?;
                match s.value.as_str() {
                    "update" => OnConflict::Update,
                    "ignore" => OnConflict::Ignore,
                    other => {
                        self.err_hint(
                            s.loc,
                            format!("unknown on_conflict `{other}`"),
                            did_you_mean(other, &["update", "ignore"]),
                        );
                        return None;
                    }
                }
            }
        };
        let order_by = db
            .get("order_by")
            .and_then(|n| self.string(n, "`order_by`"));
        let mut id_column = id_from_db.clone();
        let mut id_type = FieldType::BigInt;
        if let Some(pk_node) = keys.get("primary_key") {
            let pk = self.mapping(pk_node, PRIMARY_KEY_KEYS, "`persistence.primary_key`")?;
            if let Some(n) = pk
                .get("name")
                .and_then(|n| self.string(n, "`primary_key.name`"))
            {
                if let Some(db_id) = &id_from_db
                    && db_id.value != n.value
                {
                    self.err(
                        n.loc,
                        format!(
                            "primary_key.name `{}` disagrees with conformant_id_column `{}`",
                            n.value, db_id.value
                        ),
                    );
                }
                id_column = Some(n);
            }
            if let Some(t) = pk
                .get("type")
                .and_then(|n| self.string(n, "`primary_key.type`"))
            {
                match FieldType::from_yaml(&t.value) {
                    Some(ty @ (FieldType::Integer | FieldType::BigInt)) => id_type = ty,
                    _ => self.err_hint(
                        t.loc,
                        format!("unsupported primary key type `{}`", t.value),
                        "expected `Integer` (SERIAL) or `BigInt` (BIGSERIAL)".into(),
                    ),
                }
            }
            if let Some(a) = pk.get("autogenerate")
                && self.bool(a, "`autogenerate`") == Some(false)
            {
                self.err(
                        loc(a),
                        "`autogenerate: false` is not supported: the surrogate key is assigned by PostgreSQL",
                    );
            }
        }
        let id_column = id_column.unwrap_or(Spanned {
            value: "id".into(),
            loc: key_loc.unwrap_or_default(),
        });
        if !is_snake(&id_column.value) {
            self.err(
                id_column.loc,
                format!("id column `{}` must be snake_case", id_column.value),
            );
        }
        let field_overrides = keys
            .get("field_overrides")
            .map(|n| self.fields(n, ctx, "`field_overrides`"))
            .unwrap_or_default();
        Some(Persistence {
            table: table?,
            id_column,
            id_type,
            unicity_fields,
            on_conflict,
            order_by,
            field_overrides,
            loc: key_loc.unwrap_or_default(),
        })
    }
}

/// What a source name can refer to inside one entity.
struct SourceCx<'a> {
    element: Option<&'a str>,
    parent: Option<&'a str>,
}

impl SourceCx<'_> {
    fn resolve_scalar(&self, s: &str, loc: Loc) -> SourceRef {
        if let Some(e) = self.element {
            if s == e {
                return SourceRef::Element {
                    path: Vec::new(),
                    loc,
                };
            }
            if let Some(rest) = s.strip_prefix(e).and_then(|r| r.strip_prefix('.')) {
                return SourceRef::Element {
                    path: rest.split('.').map(str::to_string).collect(),
                    loc,
                };
            }
        }
        let field = s
            .strip_prefix("parent.")
            .or_else(|| {
                self.parent
                    .and_then(|p| s.strip_prefix(p).and_then(|r| r.strip_prefix('.')))
            })
            .unwrap_or(s);
        SourceRef::ParentField(Spanned {
            value: field.to_string(),
            loc,
        })
    }
}

/// `json_get_*` spellings: the type they check and whether they are the optional variant.
fn legacy_getter(name: &str) -> Option<(FieldType, bool)> {
    let (rest, optional) = match name.strip_prefix("json_get_optional_") {
        Some(r) => (r, true),
        None => (name.strip_prefix("json_get_")?, false),
    };
    let ty = match rest {
        "string" => FieldType::String,
        "int" => FieldType::Integer,
        "float" => FieldType::Float,
        "bool" => FieldType::Boolean,
        _ => return None,
    };
    Some((ty, optional))
}
