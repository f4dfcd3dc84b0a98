//! `nomnom-runtime`: what the generated parsers and writers stand on, as a short facade over its
//! modules: the type table (`types`), JSON conversions (`convert`, over the `json` document),
//! `Decimal` limits (`numeric`), field errors (`error`), table descriptions and positions
//! (`table`), CSV (`csv`), PostgreSQL binds (`pg`); the helpers only generated code calls are
//! in `__private`.

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;
mod convert;
pub mod csv;
mod error;
mod json;
mod names;
mod numeric;
#[cfg(feature = "diesel")]
pub mod pg;
mod table;
mod types;

pub use bigdecimal::BigDecimal as Decimal;
pub use chrono::{NaiveDate, NaiveTime};
pub use csv::{CsvField, CsvSpec};
pub use json::{Elements, JsonDoc, JsonNumber, JsonRef, Members, doc_from_value};
pub use names::closest_name;
pub use serde_json::Value as JsonValue;
pub use types::{Bind, ColumnType, Constant, CsvCell, FieldType, ReportedColumn, TYPES, TypeInfo};
pub use uuid::Uuid;

pub use convert::{
    BASE64_PATTERN, Base64Field, DATE_PATTERN, DECIMAL_TEXT_PATTERN, FromJson, NO_NUL_PATTERN,
    ObjectList, TIME_PATTERN, UUID_PATTERN, serialize_base64,
};
pub use error::{FieldError, ParseError, parse_json_object};
pub use numeric::{NUMERIC_MAX_INTEGER_DIGITS, NUMERIC_MAX_SCALE, Numeric, check_numeric};
pub use table::{
    ColumnDef, EPOCH_COLUMN, MESSAGE_ID_COLUMN, Origin, Position, RowCounts, SEQUENCE_COLUMN,
    TableCopy, TableDef, WriteMode,
};

pub use __private::{
    MAX_INDEX_KEY_BYTES, convert_literal, message_index_name, same_entity_name,
    unicity_constraint_name,
};

/// The signature of a user transform (`transform: {rust: <path>, args: [...]}` in YAML): it gets
/// the JSON value its source names (the element, or the message body, when no source is given)
/// and the YAML's `args`, and gives the field's value of the field's Rust type `T` (`None`:
/// null, an error when the field is not nullable) or an error text, which is reported at the
/// field like any other. A panic is caught and reported the same way.
pub type UserTransform<T> = for<'a> fn(JsonRef<'a>, &[&str]) -> Result<Option<T>, String>;

/// `DateTime` fields: a UTC timestamp.
pub type DateTimeUtc = chrono::DateTime<chrono::Utc>;

#[cfg(test)]
mod tests {
    use super::__private::*;
    use super::numeric::{check_numeric_limits, is_short_plain_decimal};
    use super::*;
    use serde::Serialize;
    use serde_json::json;

    fn conv<T: FromJson>(v: &JsonValue) -> Result<T, String> {
        T::from_json(doc_from_value(v).root())
    }

    #[test]
    fn integers_reject_overflow_and_fractions() {
        assert_eq!(conv::<i32>(&json!(2147483647)), Ok(i32::MAX));
        assert!(
            conv::<i32>(&json!(2147483648i64))
                .unwrap_err()
                .contains("out of range")
        );
        assert!(conv::<i64>(&json!(18446744073709551615u64)).is_err());
        assert!(conv::<i32>(&json!(1.5)).is_err());
        assert!(conv::<i32>(&json!("1")).is_err());
        // JSON Schema's `integer` is any number without a fractional part.
        let number = |text: &str| serde_json::from_str::<JsonValue>(text).unwrap();
        for (text, value) in [
            ("96667.0", 96667),
            ("-4465.0", -4465),
            ("1e3", 1000),
            ("1.5e1", 15),
            ("-0.0", 0),
            ("2.147483647e9", i32::MAX),
        ] {
            assert_eq!(conv::<i32>(&number(text)), Ok(value), "{text}");
        }
        for text in ["1.25e1", "1e-1", "0.5"] {
            assert!(conv::<i32>(&number(text)).is_err(), "{text}");
        }
        for text in ["2.147483648e9", "1e19", "1e400"] {
            let e = conv::<i32>(&number(text)).unwrap_err();
            assert!(e.contains("out of range"), "{text}: {e}");
        }
        assert_eq!(
            conv::<i64>(&number("9.223372036854775807e18")),
            Ok(i64::MAX)
        );
    }

    #[test]
    fn decimal_keeps_every_digit() {
        type Decimal = Numeric;
        let v: JsonValue =
            serde_json::from_str("123456789012345678901234567890.123456789").unwrap();
        let d = conv::<Decimal>(&v).unwrap();
        assert_eq!(d.to_string(), "123456789012345678901234567890.123456789");
        assert_eq!(conv::<Decimal>(&json!("0.10")).unwrap().to_string(), "0.10");
        assert!(conv::<Decimal>(&json!("NaN")).is_err());
        assert!(
            conv::<Decimal>(&json!("1e200000"))
                .unwrap_err()
                .contains("out of range")
        );
        assert!(conv::<Decimal>(&json!("1e-20000")).is_err());
        assert!(conv::<Decimal>(&json!("1e100")).is_ok());
        assert!(conv::<Decimal>(&json!(true)).is_err());
    }

    #[test]
    fn short_plain_decimals_pass_the_full_check_too() {
        let long = format!("{}.{}", "9".repeat(500), "1".repeat(499));
        for text in [
            "0",
            "-0",
            "+7",
            "12.50",
            ".5",
            "5.",
            "-.5",
            "0000.0000",
            "123456789012345678901234567890",
            long.as_str(),
        ] {
            assert!(is_short_plain_decimal(text), "{text}");
            assert_eq!(check_numeric_limits(text), Ok(()), "{text}");
        }
        for text in ["", "-", ".", "1.2.3", "1e5", "--1", "1-", " 1", "1,5", "١"] {
            assert!(!is_short_plain_decimal(text), "{text}");
        }
        assert!(!is_short_plain_decimal(&format!("{long}1")));
    }

    #[test]
    fn numerics_compare_and_hash_by_value_and_keep_their_text() {
        use std::collections::HashSet;
        let n = |s: &str| Numeric::parse(s).unwrap();
        assert_eq!(n("1.50"), n("1.5"));
        assert_eq!(n("15e-1"), n("+1.5"));
        assert_eq!(n("0.000"), n("-0"));
        assert_eq!(n("100"), n("1e2"));
        assert_ne!(n("1.5"), n("-1.5"));
        assert_ne!(n("1.5"), n("1.05"));
        let set: HashSet<Numeric> = ["1.50", "1.5", "15e-1", "2"].iter().map(|s| n(s)).collect();
        assert_eq!(set.len(), 2);
        assert_eq!(n("1.50").to_string(), "1.50");
        for (text, value) in [
            ("1.50", "1.5"),
            (".5", "0.5"),
            ("5.", "5"),
            ("+5", "5"),
            ("1E+5", "100000"),
            ("-1.5e-3", "-0.0015"),
        ] {
            assert_eq!(
                n(text).to_decimal().ok(),
                value.parse::<Decimal>().ok(),
                "{text}"
            );
        }
        assert_eq!(serde_json::to_value(n("1.50")).unwrap(), json!("1.50"));
        for bad in [
            "", "-", "1.2.3", "1e", "0x10", "1_000", "NaN", "Infinity", " 1",
        ] {
            assert!(Numeric::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn nul_characters_are_refused_before_the_database() {
        assert!(
            conv::<String>(&json!("a\u{0}b"))
                .unwrap_err()
                .contains("NUL")
        );
        assert!(conv::<JsonValue>(&json!({"k": ["x\u{0}"]})).is_err());
        assert!(conv::<Vec<String>>(&json!(["ok", "\u{0}"])).is_err());
        assert_eq!(conv::<String>(&json!("fine")), Ok("fine".to_string()));
    }

    #[test]
    fn dates_and_times_are_strict() {
        assert!(conv::<NaiveDate>(&json!("2024-02-29")).is_ok());
        assert!(conv::<NaiveDate>(&json!("2023-02-29")).is_err());
        assert!(conv::<NaiveDate>(&json!("29/02/2024")).is_err());
        // Exactly DATE_PATTERN (four, two and two ASCII digits), and then only real dates.
        for (text, accepted) in [
            ("0001-01-01", true),
            ("9999-12-31", true),
            ("0000-01-01", true),
            ("2023-13-01", false),
            ("2023-00-10", false),
            ("2023-04-31", false),
            ("12345-01-01", false),
            ("-0044-03-15", false),
            ("+2024-02-29", false),
            ("2024-2-29", false),
            ("2024-02-29 ", false),
            ("２０２４-02-29", false),
        ] {
            assert_eq!(conv::<NaiveDate>(&json!(text)).is_ok(), accepted, "{text}");
        }
        assert!(conv::<Uuid>(&json!("67e55044-10b1-426f-9247-bb680e5fe0c8")).is_ok());
        for not_hyphenated in [
            "67e5504410b1426f9247bb680e5fe0c8",
            "{67e55044-10b1-426f-9247-bb680e5fe0c8}",
            "urn:uuid:67e55044-10b1-426f-9247-bb680e5fe0c8",
        ] {
            assert!(
                conv::<Uuid>(&json!(not_hyphenated)).is_err(),
                "{not_hyphenated}"
            );
        }
        let t = conv::<DateTimeUtc>(&json!("2024-01-01T10:00:00+02:00")).unwrap();
        assert_eq!(t.to_rfc3339(), "2024-01-01T08:00:00+00:00");
    }

    #[test]
    fn times_are_hh_mm_ss_with_at_most_microseconds() {
        let time = |s: &str| conv::<NaiveTime>(&json!(s));
        assert_eq!(time("00:00:00").unwrap().to_string(), "00:00:00");
        assert_eq!(
            time("23:59:59.999999").unwrap().to_string(),
            "23:59:59.999999"
        );
        for bad in [
            "24:00:00",
            "23:59:60",
            "7:05:00",
            "07:05",
            "07:05:00.",
            "07:05:00.1234567",
            "07:05:00Z",
            "07:05:00+01:00",
            "\u{0661}7:05:00",
            "07:05:0\u{0661}",
            "07:05:00.\u{0661}",
        ] {
            assert!(time(bad).is_err(), "{bad} accepted");
        }
        assert!(conv::<NaiveTime>(&json!(3600)).is_err());
    }

    #[test]
    fn bytes_are_padded_standard_base64_both_ways() {
        let bytes = |s: &str| conv::<Vec<u8>>(&json!(s));
        assert_eq!(bytes("").unwrap(), b"");
        assert_eq!(bytes("AAEC/w==").unwrap(), vec![0, 1, 2, 255]);
        for bad in ["AAEC/w", "AAEC_w==", "AA EC", "A===", "AAEC/w==="] {
            assert!(bytes(bad).is_err(), "{bad} accepted");
        }
        assert!(conv::<Vec<u8>>(&json!([0, 1])).is_err());
        #[derive(Serialize)]
        struct Row {
            #[serde(serialize_with = "serialize_base64")]
            a: Vec<u8>,
            #[serde(serialize_with = "serialize_base64")]
            b: Option<Vec<u8>>,
            #[serde(serialize_with = "serialize_base64")]
            c: Option<Vec<u8>>,
        }
        let row = Row {
            a: vec![0, 1, 2, 255],
            b: Some(vec![104, 105]),
            c: None,
        };
        assert_eq!(
            serde_json::to_value(&row).unwrap(),
            json!({"a": "AAEC/w==", "b": "aGk=", "c": null})
        );
    }

    #[test]
    fn extract_reports_paths() {
        let doc = doc_from_value(&json!({"a": {"b": "x"}, "n": null}));
        let v = doc.root();
        let mut errors = Vec::new();
        assert_eq!(
            extract::<String>(v, "", &["a", "b"], &mut errors),
            Some("x".into())
        );
        assert_eq!(
            extract_opt::<String>(v, "", &["n"], &mut errors),
            Some(None)
        );
        assert_eq!(
            extract::<i32>(v, "items[1]", &["a", "b"], &mut errors),
            None
        );
        assert_eq!(extract::<String>(v, "", &["missing"], &mut errors), None);
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].field, "items[1].a.b");
        assert_eq!(errors[1].field, "missing");
        assert_eq!(element_path("", "line_items", 3), "line_items[3]");
        assert_eq!(element_path("a[1]", "b", 0), "a[1].b[0]");
        assert_eq!(element_path("", "l", 1_234_567), "l[1234567]");
        assert_eq!(
            element_path("", "l", usize::MAX),
            format!("l[{}]", usize::MAX)
        );
    }

    #[test]
    fn dedup_keeps_the_latest_or_earliest_message_of_each_key() {
        let at = |epoch, sequence| Origin {
            position: Position { epoch, sequence },
            message_id: Uuid::nil(),
        };
        let rows = [(1, "a"), (2, "b"), (1, "c"), (1, "d")];
        let with_pos = || {
            vec![
                (&rows[0], at(1, 5)),
                (&rows[1], at(1, 6)),
                (&rows[2], at(1, 9)),
                (&rows[3], at(1, 7)),
            ]
        };
        fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
            v.sort();
            v
        }
        let latest = dedup_latest(with_pos(), true, |r| r.0, |_| ());
        assert_eq!(
            sorted(latest),
            vec![(&(1, "c"), at(1, 9)), (&(2, "b"), at(1, 6))]
        );
        let earliest = dedup_latest(with_pos(), false, |r| r.0, |_| ());
        assert_eq!(
            sorted(earliest),
            vec![(&(1, "a"), at(1, 5)), (&(2, "b"), at(1, 6))]
        );
        // A later epoch is later whatever its sequence (a stream deleted and re-created).
        let renewed = vec![(&rows[0], at(1, 900)), (&rows[2], at(2, 1))];
        assert_eq!(
            dedup_latest(renewed, true, |r| r.0, |_| ()),
            vec![(&(1, "c"), at(2, 1))]
        );
    }

    #[test]
    fn a_declared_version_decides_before_the_position() {
        let at = |sequence| Origin {
            position: Position { epoch: 1, sequence },
            message_id: Uuid::nil(),
        };
        // (key, version): version 3 arrived first, version 2 later.
        let rows = [(1, 3), (1, 2), (2, 1), (2, 1)];
        let pos = vec![
            (&rows[0], at(1)),
            (&rows[1], at(2)),
            (&rows[2], at(3)),
            (&rows[3], at(4)),
        ];
        let mut kept = dedup_latest(pos, true, |r| r.0, |r| r.1);
        kept.sort();
        // Equal versions: the later position.
        assert_eq!(kept, vec![(&(1, 3), at(1)), (&(2, 1), at(4))]);
    }

    #[test]
    fn rows_come_out_in_one_key_order_whatever_order_they_came_in() {
        let at = |sequence| Origin {
            position: Position { epoch: 1, sequence },
            message_id: Uuid::nil(),
        };
        let keys: Vec<u32> = (0..200).collect();
        let forward: Vec<_> = keys.iter().map(|k| (k, at(1))).collect();
        let backward: Vec<_> = keys.iter().rev().map(|k| (k, at(1))).collect();
        let a: Vec<u32> = dedup_latest(forward, true, |k| *k, |_| ())
            .into_iter()
            .map(|(k, _)| *k)
            .collect();
        let b: Vec<u32> = dedup_latest(backward, true, |k| *k, |_| ())
            .into_iter()
            .map(|(k, _)| *k)
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, keys, "a hash order, not the arrival order");
    }

    #[test]
    fn unicity_constraint_names_fit_postgresql_identifiers() {
        assert_eq!(unicity_constraint_name("orders"), "orders_unicity");
        let long = "a".repeat(60);
        let name = unicity_constraint_name(&long);
        assert!(name.len() <= 63, "{name}");
        assert!(name.ends_with("_unicity"), "{name}");
        assert_eq!(name, unicity_constraint_name(&long), "deterministic");
        let other = format!("{}b", "a".repeat(59));
        assert_ne!(name, unicity_constraint_name(&other));
    }

    #[test]
    fn repeated_keys_name_both_rows_for_few_rows_and_many() {
        for n in [5usize, 40] {
            let rows: Vec<u32> = (0..n as u32).map(|i| if i == 3 { 1 } else { i }).collect();
            let paths: Vec<String> = (0..n).map(|i| format!("items[{i}]")).collect();
            let mut errors = Vec::new();
            refuse_repeated_keys(&rows, &paths, |r| *r, "id", &mut errors);
            assert_eq!(errors.len(), 1, "{n}");
            assert_eq!(errors[0].field, "items[3]");
            assert!(
                errors[0].error.contains("(id) of items[1]"),
                "{}",
                errors[0].error
            );
        }
    }

    #[test]
    fn positions_read_back_what_they_print() {
        let p = Position {
            epoch: 1_765_000_000_000_000,
            sequence: 42,
        };
        assert_eq!(Position::parse(&p.to_string()), Some(p));
        assert_eq!(Position::parse("12"), None);
        assert_eq!(Position::parse("a:1"), None);
    }

    fn upper(v: crate::JsonRef<'_>, args: &[&str]) -> Result<Option<String>, String> {
        match v.as_str() {
            Some("boom") => panic!("the input was {}", "boom"),
            Some("static") => std::panic::panic_any("a static message"),
            Some(s) => Ok(Some(format!("{}{}", s.to_uppercase(), args.concat()))),
            None => Err(format!("expected text, found {}", v.kind())),
        }
    }

    #[test]
    fn a_user_transform_is_called_and_its_errors_and_panics_recorded() {
        let call = |input: serde_json::Value| {
            let doc = crate::doc_from_value(&input);
            let mut errors = Vec::new();
            let value = user_transform::<String>(
                upper,
                value_at(doc.root(), &[]),
                &["!"],
                "items[0]",
                "name",
                "crate::upper",
                &mut errors,
            );
            (value, errors)
        };
        assert_eq!(call("ab".into()), (Some(Some("AB!".into())), vec![]));
        assert_eq!(call(serde_json::Value::Null), (Some(None), vec![]));
        let (value, errors) = call(3.into());
        assert_eq!(value, None);
        assert_eq!(errors[0].field, "items[0].name");
        assert_eq!(errors[0].error, "expected text, found a number");
        for (input, shown) in [
            ("boom", "the input was boom"),
            ("static", "a static message"),
        ] {
            let (value, errors) = call(input.into());
            assert_eq!(value, None);
            assert_eq!(
                errors[0].error,
                format!("transform `crate::upper` failed: it panicked ({shown})")
            );
        }
    }
}
