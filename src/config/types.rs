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
