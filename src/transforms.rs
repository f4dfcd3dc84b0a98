//! Transforms of your own: functions that `entities/*.yaml` names for values the built-in
//! transforms cannot compute, e.g.
//!
//! ```yaml
//!     - name: diagnosis_code
//!       type: String
//!       nullable: true
//!       computed_from:
//!         transform: {rust: crate::transforms::hl7_field, args: ["DG1.3.1"]}
//!         sources: [segment]
//! ```
//!
//! Each is a [`nomnom_runtime::UserTransform`]: `fn(JsonRef<'_>, &[&str]) -> Result<Option<T>,
//! String>` where `T` is the field's Rust type (docs/ENTITY_SPEC.md lists them). It gets the
//! JSON value its source names (the element, or the message body without a source) and the
//! YAML's `args`; `Ok(None)` is null, `Err(text)` is reported at the field (422 at the api, a dead
//! letter at the worker), and so is a panic. The api and the worker both call it, so it must
//! give the same answer for the same input: no clock, no randomness, no I/O.

use nomnom_runtime::JsonRef;

/// One field of an HL7 v2 message: `args[0]` names it as `SEG.field[.component[.subcomponent]]`
/// (`DG1.3.1`: the first component of the third field of the DG1 segment). The input is one
/// segment, or a whole message whose segments are separated by carriage returns or newlines
/// (the first segment with that name is read; `MSH.10` is the control id). The first
/// repetition of a repeated field is read; HL7 escapes (`\F\`, `\S\`, `\T\`, `\R\`, `\E\`) are
/// undone. An empty or missing value is null.
pub fn hl7_field(input: JsonRef<'_>, args: &[&str]) -> Result<Option<String>, String> {
    let spec = match args {
        [spec] => Hl7Ref::parse(spec)?,
        _ => {
            return Err(format!(
                "hl7_field takes one argument like \"DG1.3.1\", got {}",
                args.len()
            ));
        }
    };
    let text = input
        .as_str()
        .ok_or_else(|| format!("expected HL7 text (a string), found {}", input.kind()))?;
    let Some(segment) = text
        .split(['\r', '\n'])
        .find(|s| s.split('|').next() == Some(spec.segment))
    else {
        return if text.contains('|') && !text.contains(['\r', '\n']) {
            Err(format!(
                "expected a {} segment, found {}",
                spec.segment,
                text.split('|').next().unwrap_or_default()
            ))
        } else {
            Ok(None)
        };
    };
    // In MSH the field separator itself is MSH-1, so MSH-2 is the first text after it.
    let index = if spec.segment == "MSH" {
        spec.field - 1
    } else {
        spec.field
    };
    let field = segment.split('|').nth(index).unwrap_or_default();
    let repetition = field.split('~').next().unwrap_or_default();
    let mut value = repetition;
    if let Some(component) = spec.component {
        value = value.split('^').nth(component - 1).unwrap_or_default();
    }
    if let Some(sub) = spec.subcomponent {
        value = value.split('&').nth(sub - 1).unwrap_or_default();
    }
    Ok((!value.is_empty()).then(|| unescape(value)))
}

/// An HL7 field holding a whole number (a set id, a count): [`hl7_field`] read as an
/// `Integer` field's `i32`; text that is not one is an error.
pub fn hl7_integer(input: JsonRef<'_>, args: &[&str]) -> Result<Option<i32>, String> {
    hl7_field(input, args)?
        .map(|text| {
            text.trim()
                .parse::<i32>()
                .map_err(|_| format!("`{text}` is not a whole number"))
        })
        .transpose()
}

/// `SEG.field[.component[.subcomponent]]`, numbered from 1 as HL7 numbers them.
struct Hl7Ref<'a> {
    segment: &'a str,
    field: usize,
    component: Option<usize>,
    subcomponent: Option<usize>,
}

impl<'a> Hl7Ref<'a> {
    fn parse(spec: &'a str) -> Result<Self, String> {
        let bad = || {
            format!(
                "hl7_field: `{spec}` is not SEG.field[.component[.subcomponent]] (e.g. DG1.3.1)"
            )
        };
        let mut parts = spec.split('.');
        let segment = parts.next().filter(|s| {
            s.len() == 3
                && s.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        });
        let mut number = || -> Result<Option<usize>, String> {
            match parts.next() {
                None => Ok(None),
                Some(n) => match n.parse::<usize>() {
                    Ok(n) if n >= 1 => Ok(Some(n)),
                    _ => Err(bad()),
                },
            }
        };
        let (Some(segment), Some(field)) = (segment, number()?) else {
            return Err(bad());
        };
        let component = number()?;
        let subcomponent = number()?;
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Self {
            segment,
            field,
            component,
            subcomponent,
        })
    }
}

/// Undoes HL7's escapes of its delimiters.
fn unescape(value: &str) -> String {
    if !value.contains('\\') {
        return value.to_string();
    }
    value
        .replace("\\F\\", "|")
        .replace("\\S\\", "^")
        .replace("\\T\\", "&")
        .replace("\\R\\", "~")
        .replace("\\E\\", "\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(input: serde_json::Value, spec: &str) -> Result<Option<String>, String> {
        let doc = nomnom_runtime::doc_from_value(&input);
        hl7_field(doc.root(), &[spec])
    }

    const MESSAGE: &str = "MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240101120000||ADT^A01|MSG00001|P|2.5\rPID|1||12345^^^HOSP^MR||Doe^Jane\rDG1|1||I10^Essential hypertension^ICD10||20240101|A\rDG1|2||E11.9^Type 2 diabetes \\T\\ more^ICD10~X^Y||20240102|F";

    #[test]
    fn fields_components_and_subcomponents_are_read() {
        let dg1 = "DG1|1||I10^Essential hypertension^ICD10||20240101|A";
        assert_eq!(field(dg1.into(), "DG1.3.1"), Ok(Some("I10".into())));
        assert_eq!(
            field(dg1.into(), "DG1.3.2"),
            Ok(Some("Essential hypertension".into()))
        );
        assert_eq!(field(dg1.into(), "DG1.6"), Ok(Some("A".into())));
        assert_eq!(field(dg1.into(), "DG1.2"), Ok(None), "empty is null");
        assert_eq!(field(dg1.into(), "DG1.16.1"), Ok(None), "missing is null");
        assert_eq!(field(dg1.into(), "DG1.3.1.1"), Ok(Some("I10".into())));
    }

    #[test]
    fn a_whole_message_is_searched_and_msh_is_numbered_from_its_separator() {
        assert_eq!(field(MESSAGE.into(), "MSH.10"), Ok(Some("MSG00001".into())));
        assert_eq!(field(MESSAGE.into(), "MSH.9.2"), Ok(Some("A01".into())));
        assert_eq!(field(MESSAGE.into(), "PID.5.2"), Ok(Some("Jane".into())));
        // The first DG1; a segment the message lacks is null.
        assert_eq!(field(MESSAGE.into(), "DG1.3.1"), Ok(Some("I10".into())));
        assert_eq!(field(MESSAGE.into(), "OBX.5"), Ok(None));
    }

    #[test]
    fn repetitions_and_escapes() {
        let dg1 = MESSAGE.split('\r').nth(3).expect("second DG1");
        assert_eq!(
            field(dg1.into(), "DG1.3.2"),
            Ok(Some("Type 2 diabetes & more".into()))
        );
        assert_eq!(field(dg1.into(), "DG1.3.3"), Ok(Some("ICD10".into())));
    }

    #[test]
    fn integers_are_read_and_other_text_refused() {
        let doc = nomnom_runtime::doc_from_value(&"DG1|12||I10".into());
        assert_eq!(hl7_integer(doc.root(), &["DG1.1"]), Ok(Some(12)));
        assert_eq!(hl7_integer(doc.root(), &["DG1.2"]), Ok(None));
        assert!(hl7_integer(doc.root(), &["DG1.3"]).is_err());
    }

    #[test]
    fn bad_arguments_and_inputs_are_errors_not_panics() {
        let dg1 = serde_json::Value::from("DG1|1||I10");
        for spec in [
            "DG1",
            "dg1.3",
            "DG1.0",
            "DG1.x",
            "DG1.3.1.1.1",
            "",
            "DG1.3.",
        ] {
            assert!(field(dg1.clone(), spec).is_err(), "{spec}");
        }
        assert!(field(serde_json::json!(3), "DG1.3").is_err());
        assert_eq!(
            field("PID|1||12345".into(), "DG1.3"),
            Err("expected a DG1 segment, found PID".into())
        );
        let doc = nomnom_runtime::doc_from_value(&dg1);
        assert!(hl7_field(doc.root(), &[]).is_err());
        assert!(hl7_field(doc.root(), &["DG1.3", "DG1.4"]).is_err());
    }
}
