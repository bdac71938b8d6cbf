//! The `[types]` section: Debezium's handling modes and the unchanged TOAST
//! representation, read into [`TypeModes`]. Keys are Debezium's option
//! names in snake_case (`decimal.handling.mode` → `decimal_handling_mode`),
//! values Debezium's spellings; every default is Debezium's except
//! `unchanged_toast` (see `docs/types.md`).

use super::reader::Section;
use crate::avro::modes::{
    BinaryMode, DecimalMode, HstoreMode, IntervalMode, TimePrecisionMode, TypeModes,
    UnchangedToastMode,
};

/// Reads and finishes the `[types]` section (missing = all defaults).
pub(super) fn read_types(mut types: Section) -> TypeModes {
    let modes = TypeModes {
        decimal: mode(
            &mut types,
            "decimal_handling_mode",
            DecimalMode::parse,
            DecimalMode::choices,
        ),
        time_precision: mode(
            &mut types,
            "time_precision_mode",
            TimePrecisionMode::parse,
            TimePrecisionMode::choices,
        ),
        binary: mode(
            &mut types,
            "binary_handling_mode",
            BinaryMode::parse,
            BinaryMode::choices,
        ),
        interval: mode(
            &mut types,
            "interval_handling_mode",
            IntervalMode::parse,
            IntervalMode::choices,
        ),
        hstore: mode(
            &mut types,
            "hstore_handling_mode",
            HstoreMode::parse,
            HstoreMode::choices,
        ),
        unchanged_toast: mode(
            &mut types,
            "unchanged_toast",
            UnchangedToastMode::parse,
            UnchangedToastMode::choices,
        ),
    };
    types.finish();
    modes
}

fn mode<M: Default>(
    section: &mut Section,
    key: &str,
    parse: fn(&str) -> Option<M>,
    choices: fn() -> String,
) -> M {
    match section.optional::<String>(key) {
        None => M::default(),
        Some(text) => parse(&text).unwrap_or_else(|| {
            section.problem_at(key, &format!("must be one of {}, got {text:?}", choices()));
            M::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::load_file_with_env;
    use crate::avro::modes::*;

    const BASE: &str = r#"
name = "shop"
[postgres]
database = "shop"
user = "siphon"
tables = ["public.orders"]
[kafka]
bootstrap_servers = "127.0.0.1:9092"
topic_prefix = "shop"
[registry]
url = "http://127.0.0.1:8081"
"#;

    fn load(types: &str) -> Result<super::super::ConnectorConfig, Vec<String>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shop.toml");
        std::fs::write(&path, format!("{BASE}{types}")).unwrap();
        load_file_with_env(&path, Vec::new()).map_err(|e| {
            let file = path.display().to_string();
            e.problems
                .into_iter()
                .map(|p| p.replace(&file, "shop.toml"))
                .collect()
        })
    }

    #[test]
    fn defaults_are_debeziums_and_the_honest_toast_mode() {
        let c = load("").unwrap();
        assert_eq!(c.types, TypeModes::default());
        assert_eq!(c.types.decimal, DecimalMode::Precise);
        assert_eq!(c.types.unchanged_toast, UnchangedToastMode::Null);
    }

    #[test]
    fn every_mode_is_read() {
        let c = load(
            r#"
[types]
decimal_handling_mode = "string"
time_precision_mode = "connect"
binary_handling_mode = "base64-url-safe"
interval_handling_mode = "string"
hstore_handling_mode = "map"
unchanged_toast = "placeholder"
"#,
        )
        .unwrap();
        assert_eq!(
            c.types,
            TypeModes {
                decimal: DecimalMode::String,
                time_precision: TimePrecisionMode::Connect,
                binary: BinaryMode::Base64UrlSafe,
                interval: IntervalMode::String,
                hstore: HstoreMode::Map,
                unchanged_toast: UnchangedToastMode::Placeholder,
            }
        );
    }

    #[test]
    fn bad_values_and_keys_are_named_with_the_choices() {
        let problems = load(
            r#"
[types]
decimal_handling_mode = "exact"
binary_handling_mode = 3
unchanged_toast = "skip"
decimal.handling.mode = "double"
"#,
        )
        .unwrap_err();
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert_eq!(
            problems[0],
            r#"shop.toml: types.decimal_handling_mode: must be one of "precise", "double", "string", got "exact""#
        );
        assert!(
            problems[1].starts_with("shop.toml: types.binary_handling_mode: "),
            "{}",
            problems[1]
        );
        assert_eq!(
            problems[2],
            r#"shop.toml: types.unchanged_toast: must be one of "null", "placeholder", got "skip""#
        );
        assert!(
            problems[3].starts_with("shop.toml: types.decimal: unknown key"),
            "{}",
            problems[3]
        );
    }
}
