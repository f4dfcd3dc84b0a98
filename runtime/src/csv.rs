//! CSV rows as messages: how an entity's CSV is laid out ([`CsvSpec`], generated from its
//! `csv:` block or the defaults), which column feeds which field ([`CsvLayout`]), and a row's
//! cells turned into the JSON object the entity's parser reads. Cells convert by the type
//! table's [`CsvCell`] rule; the parser then checks the result exactly as it checks JSON, so a
//! CSV row is accepted exactly when the same row sent as JSON would be.

use serde_json::{Map, Value};

use crate::{CsvCell, FieldError, FieldType};

/// One field a CSV column can feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsvField {
    /// The field name (what a header cell names).
    pub name: &'static str,
    /// The JSON path the parser reads the field from.
    pub path: &'static [&'static str],
    /// Its type.
    pub ty: FieldType,
    /// Whether an empty cell (or the null marker) is a null rather than an error.
    pub nullable: bool,
}

/// How an entity's CSV files are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsvSpec {
    /// Field separator (default `,`).
    pub delimiter: u8,
    /// Quote character (default `"`).
    pub quote: u8,
    /// Whether the first row names the columns (default true).
    pub header: bool,
    /// Column order, by field name (`_` skips a column): required without a header row.
    pub columns: &'static [&'static str],
    /// Header text → field name, for headers that are not field names.
    pub header_map: &'static [(&'static str, &'static str)],
    /// A cell text meaning null besides the empty cell (e.g. `\N`).
    pub null: Option<&'static str>,
    /// chrono format of `Date` cells (default ISO `YYYY-MM-DD`).
    pub date_format: Option<&'static str>,
    /// The fields columns can feed.
    pub fields: &'static [CsvField],
}

/// Which field each column of a file feeds (`None`: the column is skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvLayout {
    columns: Vec<Option<usize>>,
    names: Vec<String>,
    /// Whether the columns were read off a header row (else from `csv.columns`).
    from_header: bool,
}

fn boolean(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "t" | "1" | "yes" | "y" => Some(true),
        "false" | "f" | "0" | "no" | "n" => Some(false),
        _ => None,
    }
}

impl CsvSpec {
    fn field_index(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name).or_else(|| {
            self.fields
                .iter()
                .position(|f| f.name.eq_ignore_ascii_case(name))
        })
    }

    /// The layout of a file: from its header row (`header`), else from `columns`. Fails on a
    /// header cell that names no field (with a hint), a field named twice, or a required
    /// field no column feeds.
    pub fn layout(&self, header: Option<&[&str]>) -> Result<CsvLayout, String> {
        let mut columns = Vec::new();
        let mut names = Vec::new();
        let from_header = header.is_some() && self.columns.is_empty();
        match header {
            Some(cells) if self.columns.is_empty() => {
                for (i, cell) in cells.iter().enumerate() {
                    let cell = cell.trim();
                    let mapped = self
                        .header_map
                        .iter()
                        .find(|(h, _)| h.eq_ignore_ascii_case(cell))
                        .map(|(_, f)| *f)
                        .unwrap_or(cell);
                    let Some(index) = self.field_index(mapped) else {
                        let known: Vec<&str> = self.fields.iter().map(|f| f.name).collect();
                        return Err(format!(
                            "column {} `{cell}` of the header names no field (fields: {}); map it with `csv.header_map` or remove it",
                            i + 1,
                            known.join(", ")
                        ));
                    };
                    columns.push(Some(index));
                    names.push(cell.to_string());
                }
            }
            _ => {
                for name in self.columns {
                    if *name == "_" {
                        columns.push(None);
                    } else {
                        columns.push(self.field_index(name));
                    }
                    names.push((*name).to_string());
                }
            }
        }
        for (i, f) in self.fields.iter().enumerate() {
            let fed = columns.iter().filter(|c| **c == Some(i)).count();
            if fed > 1 {
                return Err(format!("field `{}` is fed by {fed} columns", f.name));
            }
            if fed == 0 && !f.nullable {
                return Err(format!("no column feeds the required field `{}`", f.name));
            }
        }
        Ok(CsvLayout {
            columns,
            names,
            from_header,
        })
    }

    /// One cell as the JSON value of `field`; `None` is null.
    fn cell(&self, field: &CsvField, text: &str) -> Result<Option<Value>, String> {
        if text.is_empty() || self.null.is_some_and(|n| n == text) {
            return if field.nullable {
                Ok(None)
            } else {
                Err("is empty; a value is required".into())
            };
        }
        Ok(Some(match field.ty.info().csv {
            CsvCell::Text => Value::String(text.to_string()),
            CsvCell::Number => text
                .trim()
                .parse::<serde_json::Number>()
                .map(Value::Number)
                .map_err(|_| format!("`{text}` is not a number"))?,
            CsvCell::Boolean => Value::Bool(
                boolean(text.trim()).ok_or_else(|| format!("`{text}` is not true or false"))?,
            ),
            CsvCell::Date => match self.date_format {
                Some(format) => chrono::NaiveDate::parse_from_str(text.trim(), format)
                    .map(|d| Value::String(d.format("%Y-%m-%d").to_string()))
                    .map_err(|e| format!("`{text}` is not a date in the format `{format}`: {e}"))?,
                None => Value::String(text.to_string()),
            },
            CsvCell::Json => {
                serde_json::from_str(text).map_err(|e| format!("`{text}` is not JSON: {e}"))?
            }
        }))
    }

    /// A row's cells as the JSON object the entity's parser reads. Errors name the column
    /// (1-based, and its header) in `field` as `<field> (column N `header`)`.
    pub fn row_to_json(
        &self,
        layout: &CsvLayout,
        cells: &[&str],
    ) -> Result<Value, Vec<FieldError>> {
        let mut errors = Vec::new();
        if cells.len() != layout.columns.len() {
            errors.push(FieldError {
                field: "$".into(),
                error: if layout.from_header {
                    format!(
                        "the row has {} columns; the header has {}",
                        cells.len(),
                        layout.columns.len()
                    )
                } else {
                    format!(
                        "the row has {} columns; `csv.columns` declares {}",
                        cells.len(),
                        layout.columns.len()
                    )
                },
            });
            return Err(errors);
        }
        let mut object = Map::new();
        for (column, (cell, target)) in cells.iter().zip(&layout.columns).enumerate() {
            let Some(index) = target else { continue };
            let field = &self.fields[*index];
            match self.cell(field, cell) {
                Ok(Some(value)) => insert(&mut object, field.path, value),
                Ok(None) => {}
                Err(error) => errors.push(FieldError {
                    field: layout.column_label(column, field.name),
                    error,
                }),
            }
        }
        if errors.is_empty() {
            Ok(Value::Object(object))
        } else {
            Err(errors)
        }
    }
}

impl CsvSpec {
    /// [`CsvSpec::row_to_json`] written as JSON text into `out` (cleared first). Fields at the
    /// top level (no dotted path) are written as they convert, in column order, without an
    /// object in between: the loader converts every row of a file, and building and sorting a
    /// map per row was most of that work.
    pub fn row_to_json_text(
        &self,
        layout: &CsvLayout,
        cells: &[&str],
        out: &mut Vec<u8>,
    ) -> Result<(), Vec<FieldError>> {
        out.clear();
        let flat = layout
            .columns
            .iter()
            .flatten()
            .all(|i| self.fields[*i].path.len() == 1);
        if !flat || cells.len() != layout.columns.len() {
            let value = self.row_to_json(layout, cells)?;
            // Writing JSON into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, &value);
            return Ok(());
        }
        let mut errors = Vec::new();
        out.push(b'{');
        for (column, (cell, target)) in cells.iter().zip(&layout.columns).enumerate() {
            let Some(index) = target else { continue };
            let field = &self.fields[*index];
            match self.cell(field, cell) {
                Ok(Some(value)) if errors.is_empty() => {
                    if out.len() > 1 {
                        out.push(b',');
                    }
                    let _ = serde_json::to_writer(&mut *out, field.path[0]);
                    out.push(b':');
                    let _ = serde_json::to_writer(&mut *out, &value);
                }
                Ok(_) => {}
                Err(error) => errors.push(FieldError {
                    field: layout.column_label(column, field.name),
                    error,
                }),
            }
        }
        out.push(b'}');
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// Puts `value` at `path` (nested objects created on the way).
fn insert(object: &mut Map<String, Value>, path: &[&str], value: Value) {
    match path {
        [] => {}
        [last] => {
            object.insert((*last).to_string(), value);
        }
        [first, rest @ ..] => {
            let child = object
                .entry((*first).to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(map) = child {
                insert(map, rest, value);
            }
        }
    }
}

impl CsvLayout {
    /// `field (column N `header`)`, for errors.
    pub fn column_label(&self, column: usize, field: &str) -> String {
        let header = self.names.get(column).map(String::as_str).unwrap_or("");
        if header.is_empty() || header == field {
            format!("{field} (column {})", column + 1)
        } else {
            format!("{field} (column {} `{header}`)", column + 1)
        }
    }

    /// The label of the column feeding the field whose JSON path is `path` (dotted), if any.
    pub fn label_of_path(&self, spec: &CsvSpec, path: &str) -> Option<String> {
        let index = spec.fields.iter().position(|f| f.path.join(".") == path)?;
        let column = self.columns.iter().position(|c| *c == Some(index))?;
        Some(self.column_label(column, spec.fields[index].name))
    }
}

/// Checks a `date_format` (build time): a chrono format that can describe a date.
pub fn check_date_format(format: &str) -> Result<(), String> {
    use chrono::format::{Item, StrftimeItems};
    if StrftimeItems::new(format).any(|i| matches!(i, Item::Error)) {
        return Err(format!(
            "`{format}` is not a chrono date format (e.g. `%d/%m/%Y`)"
        ));
    }
    let sample = chrono::NaiveDate::from_ymd_opt(2024, 12, 31).unwrap_or_default();
    let text = sample.format(format).to_string();
    match chrono::NaiveDate::parse_from_str(&text, format) {
        Ok(d) if d == sample => Ok(()),
        _ => Err(format!(
            "`{format}` cannot be read back as a date (it needs a year, a month and a day)"
        )),
    }
}

/// `c` as a regular-expression literal outside a character class.
fn regex_literal(c: u8) -> String {
    let c = char::from(c);
    if "\\^$.|?*+()[]{}/".contains(c) {
        format!("\\{c}")
    } else {
        c.to_string()
    }
}

/// `c` inside a character class.
fn class_literal(c: u8) -> String {
    let c = char::from(c);
    if "\\]^-[".contains(c) {
        format!("\\{c}")
    } else {
        c.to_string()
    }
}

impl CsvSpec {
    /// A JSON Schema `pattern` (ECMA-262) for a CSV body of this entity in its plainest form:
    /// the header row if the entity has one, then rows of unquoted cells, each in a form the
    /// cell rules and the parser accept (`max_length` gives a text field's limit). Every body
    /// it matches is accepted row for row; quoted cells and other forms the reader takes are
    /// accepted too but not described. `None` when a field has no such form (a custom
    /// `date_format`).
    pub fn body_pattern(&self, max_length: impl Fn(&CsvField) -> Option<u32>) -> Option<String> {
        let d = self.delimiter;
        let mut plain = format!(
            "[^{}{}\\r\\n\\x00",
            class_literal(d),
            class_literal(self.quote)
        );
        if let Some(first) = self.null.and_then(|n| n.bytes().next()) {
            // Keeps a cell from being the null marker.
            plain.push_str(&class_literal(first));
        }
        plain.push(']');
        let cell = |f: &CsvField| -> Option<String> {
            let text = match f.ty {
                FieldType::String => match max_length(f) {
                    Some(n) => format!("{plain}{{1,{n}}}"),
                    None => format!("{plain}+"),
                },
                FieldType::Integer => "-?([1-9][0-9]{0,8}|0)".into(),
                FieldType::BigInt => "-?([1-9][0-9]{0,17}|0)".into(),
                FieldType::Float | FieldType::Decimal => {
                    "-?([1-9][0-9]{0,14}|0)(\\.[0-9]{1,6})?".into()
                }
                FieldType::Boolean => "(true|false)".into(),
                FieldType::Date if self.date_format.is_none() => SAFE_DATE.into(),
                FieldType::Date => return None,
                FieldType::DateTime => {
                    format!("{SAFE_DATE}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]Z")
                }
                FieldType::Time => inner(crate::TIME_PATTERN).into(),
                FieldType::Uuid => inner(crate::UUID_PATTERN).into(),
                FieldType::Bytes => "([A-Za-z0-9+/]{4}){1,8}".into(),
                FieldType::ListObject | FieldType::ListString => "\\[\\]".into(),
                FieldType::Json => "\\{\\}".into(),
            };
            Some(if f.nullable {
                format!("({text})?")
            } else {
                format!("({text})")
            })
        };
        let (header, cells): (Option<Vec<&str>>, Vec<String>) = if self.columns.is_empty() {
            let cells = self.fields.iter().map(cell).collect::<Option<Vec<_>>>()?;
            (Some(self.fields.iter().map(|f| f.name).collect()), cells)
        } else {
            let cells = self
                .columns
                .iter()
                .map(|c| match self.fields.iter().find(|f| f.name == *c) {
                    Some(f) => cell(f),
                    None => Some(format!("{plain}*")),
                })
                .collect::<Option<Vec<_>>>()?;
            (self.header.then(|| self.columns.to_vec()), cells)
        };
        let sep = regex_literal(d);
        let row = cells.join(&sep);
        let header = header
            .map(|h| {
                let names: Vec<String> = h
                    .iter()
                    .map(|n| n.bytes().map(regex_literal).collect())
                    .collect();
                format!("{}\\n", names.join(&sep))
            })
            .unwrap_or_default();
        Some(format!("^{header}({row}\\n)*{row}\\n?$"))
    }
}

/// Dates every month has (the CSV pattern describes a form that is always accepted).
const SAFE_DATE: &str = "[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])";

/// An anchored pattern without its anchors.
fn inner(pattern: &'static str) -> &'static str {
    pattern.trim_start_matches('^').trim_end_matches('$')
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELDS: &[CsvField] = &[
        CsvField {
            name: "key",
            path: &["key"],
            ty: FieldType::String,
            nullable: false,
        },
        CsvField {
            name: "qty",
            path: &["qty"],
            ty: FieldType::Integer,
            nullable: true,
        },
        CsvField {
            name: "on",
            path: &["when", "day"],
            ty: FieldType::Date,
            nullable: true,
        },
        CsvField {
            name: "ok",
            path: &["ok"],
            ty: FieldType::Boolean,
            nullable: true,
        },
    ];
    const SPEC: CsvSpec = CsvSpec {
        delimiter: b',',
        quote: b'"',
        header: true,
        columns: &[],
        header_map: &[("QUANTITY", "qty")],
        null: Some("\\N"),
        date_format: Some("%d/%m/%Y"),
        fields: FIELDS,
    };

    #[test]
    fn rows_written_as_text_read_as_the_converted_values() {
        for (header, rows) in [
            (
                &["KEY", "quantity", "on", "ok"][..],
                &[&["a", "12", "31/12/2024", "Yes"][..], &["a", "", "\\N", ""]][..],
            ),
            // All at the top level: written without a map.
            (
                &["key", "qty", "ok"][..],
                &[
                    &["k", "3", "yes"][..],
                    &["k \"q\"", "", "\\N"],
                    &["", "x", "maybe"],
                ][..],
            ),
        ] {
            let layout = SPEC.layout(Some(header)).expect("layout");
            for cells in rows {
                let mut text = Vec::new();
                match SPEC.row_to_json(&layout, cells) {
                    Ok(value) => {
                        SPEC.row_to_json_text(&layout, cells, &mut text)
                            .expect("converts as the value does");
                        let read: Value = serde_json::from_slice(&text).expect("JSON");
                        assert_eq!(read, value, "{cells:?}");
                    }
                    Err(errors) => assert_eq!(
                        SPEC.row_to_json_text(&layout, cells, &mut text),
                        Err(errors)
                    ),
                }
            }
        }
    }

    #[test]
    fn cells_convert_by_the_type_table_into_nested_json() {
        let layout = SPEC
            .layout(Some(&["KEY", "quantity", "on", "ok"]))
            .expect("layout");
        let row = SPEC
            .row_to_json(&layout, &["a", "12", "31/12/2024", "Yes"])
            .expect("valid");
        assert_eq!(
            row,
            serde_json::json!({"key": "a", "qty": 12, "when": {"day": "2024-12-31"}, "ok": true})
        );
        let nulls = SPEC
            .row_to_json(&layout, &["a", "", "\\N", ""])
            .expect("nulls");
        assert_eq!(nulls, serde_json::json!({"key": "a"}));
        let errors = SPEC
            .row_to_json(&layout, &["", "x", "2024-12-31", "maybe"])
            .expect_err("bad cells");
        let shown: Vec<String> = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.error))
            .collect();
        assert_eq!(
            shown[0],
            "key (column 1 `KEY`): is empty; a value is required"
        );
        assert_eq!(shown[1], "qty (column 2 `quantity`): `x` is not a number");
        assert!(
            shown[2]
                .starts_with("on (column 3): `2024-12-31` is not a date in the format `%d/%m/%Y`"),
            "{}",
            shown[2]
        );
        assert_eq!(shown[3], "ok (column 4): `maybe` is not true or false");
        assert_eq!(
            layout.label_of_path(&SPEC, "when.day").as_deref(),
            Some("on (column 3)")
        );
    }

    #[test]
    fn layouts_refuse_unknown_missing_and_doubled_columns() {
        let e = SPEC.layout(Some(&["key", "qtty"])).expect_err("unknown");
        assert!(
            e.contains("column 2 `qtty`") && e.contains("header_map"),
            "{e}"
        );
        let e = SPEC.layout(Some(&["qty"])).expect_err("missing");
        assert_eq!(e, "no column feeds the required field `key`");
        let e = SPEC
            .layout(Some(&["key", "qty", "QUANTITY"]))
            .expect_err("twice");
        assert_eq!(e, "field `qty` is fed by 2 columns");
        let by_order = CsvSpec {
            header: false,
            columns: &["key", "_", "qty"],
            ..SPEC
        };
        let layout = by_order.layout(None).expect("columns");
        let row = by_order
            .row_to_json(&layout, &["k", "skipped", "3"])
            .expect("row");
        assert_eq!(row, serde_json::json!({"key": "k", "qty": 3}));
        let e = by_order
            .row_to_json(&layout, &["k", "3"])
            .expect_err("short row");
        // Without a header row the count is `csv.columns`'s, and the message says so.
        assert_eq!(
            e[0].error,
            "the row has 2 columns; `csv.columns` declares 3"
        );
        let by_header = SPEC.layout(Some(&["key", "qty"])).expect("header");
        let e = SPEC.row_to_json(&by_header, &["k"]).expect_err("short row");
        assert_eq!(e[0].error, "the row has 1 columns; the header has 2");
    }

    #[test]
    fn date_formats_are_checked() {
        assert!(check_date_format("%d/%m/%Y").is_ok());
        assert!(check_date_format("%Y%m%d").is_ok());
        assert!(
            check_date_format("%d/%m")
                .expect_err("no year")
                .contains("cannot be read back")
        );
        assert!(check_date_format("%Q").is_err());
    }
}
