//! Debezium's type handling modes (`decimal.handling.mode`,
//! `time.precision.mode`, `binary.handling.mode`, `interval.handling.mode`,
//! `hstore.handling.mode`) and siphon's choice for unchanged TOAST values,
//! and the value conversions that only the non-default modes need.
//!
//! Modes are applied once per relation version: [`TypeModes::apply`] turns
//! the default [`ColumnType`] of a column into the one its mode asks for,
//! so the encoder's per-value work is the same `match` on the column type
//! as with the defaults. Nothing here is consulted per value.
//!
//! Every mode writes the schema and the values Debezium 3.6.3 writes for it
//! (`PostgresValueConverter`, `SpecialValueDecimal`, `Interval`,
//! `HexConverter`), with the differences listed in `docs/types.md`.
//!
//! Invariants: conversions never panic, never allocate for scalar values,
//! and errors never carry the value.

use crate::event::{CustomTypeKind, CustomTypes};

use super::encode::{write_bytes, write_long};
use super::types::{ColumnType, ValueError, hstore_quoted, oid};

macro_rules! mode_enum {
    (
        $(#[$meta:meta])*
        $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in the order the docs list them.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The spelling used in connector files (Debezium's).
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// Parses the connector-file spelling.
            pub fn parse(s: &str) -> Option<$name> {
                Self::ALL.iter().copied().find(|m| m.as_str() == s)
            }

            /// The accepted spellings, for error messages: `"a", "b"`.
            pub fn choices() -> String {
                Self::ALL
                    .iter()
                    .map(|m| format!("{:?}", m.as_str()))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        }
    };
}

mode_enum! {
    /// `decimal.handling.mode`: `numeric` and `money` columns.
    DecimalMode {
        /// Connect `Decimal` bytes (`VariableScaleDecimal` for `numeric`
        /// without a typmod); NaN/±Infinity become null.
        #[default]
        Precise = "precise",
        /// Avro `double`; NaN/±Infinity as IEEE values.
        Double = "double",
        /// Avro `string`: the plain decimal; NaN/±Infinity as `NAN`,
        /// `POSITIVE_INFINITY`, `NEGATIVE_INFINITY`.
        String = "string",
    }
}

mode_enum! {
    /// `time.precision.mode`: `date`, `time` and `timestamp` columns
    /// (`timetz`/`timestamptz` are ISO strings in every mode).
    TimePrecisionMode {
        /// `time`/`timestamp` in milliseconds up to precision 3, else
        /// microseconds (`io.debezium.time.*`).
        #[default]
        Adaptive = "adaptive",
        /// As `adaptive`, but `time` always in microseconds (`MicroTime`).
        AdaptiveTimeMicroseconds = "adaptive_time_microseconds",
        /// Kafka Connect's `Date`/`Time`/`Timestamp` logical types
        /// (days, milliseconds of the day, milliseconds since the epoch).
        Connect = "connect",
    }
}

mode_enum! {
    /// `binary.handling.mode`: `bytea` columns.
    BinaryMode {
        /// Avro `bytes`.
        #[default]
        Bytes = "bytes",
        /// Avro `string`, standard Base64 with padding.
        Base64 = "base64",
        /// Avro `string`, URL-safe Base64 with padding.
        Base64UrlSafe = "base64-url-safe",
        /// Avro `string`, lower-case hex.
        Hex = "hex",
    }
}

mode_enum! {
    /// `interval.handling.mode`: `interval` columns.
    IntervalMode {
        /// `long` microseconds, `io.debezium.time.MicroDuration`.
        #[default]
        Numeric = "numeric",
        /// ISO-8601 string `P<y>Y<m>M<d>DT<h>H<m>M<s>S` with every
        /// component, `io.debezium.time.Interval`.
        String = "string",
    }
}

mode_enum! {
    /// `hstore.handling.mode`: `hstore` columns.
    HstoreMode {
        /// A JSON object string, `io.debezium.data.Json`.
        #[default]
        Json = "json",
        /// An Avro `map` of nullable strings.
        Map = "map",
    }
}

mode_enum! {
    /// What an `after` image carries for an unchanged TOAST value that
    /// PostgreSQL did not resend and no full old row supplies.
    UnchangedToastMode {
        /// siphon's default: the field is null and its name is listed in
        /// the envelope's `unavailable_columns`; toastable columns are
        /// nullable in the `Value` schema. No made-up value reaches
        /// consumers.
        #[default]
        Null = "null",
        /// Debezium's placeholder `__debezium_unavailable_value` (and its
        /// array/bytes equivalents); schemas exactly Debezium's.
        Placeholder = "placeholder",
    }
}

/// The handling modes of one connector (`[types]` in its file).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TypeModes {
    pub decimal: DecimalMode,
    pub time_precision: TimePrecisionMode,
    pub binary: BinaryMode,
    pub interval: IntervalMode,
    pub hstore: HstoreMode,
    pub unchanged_toast: UnchangedToastMode,
}

/// How a `bytea` value travels as a string (`binary.handling.mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextEncoding {
    Base64,
    Base64UrlSafe,
    Hex,
}

impl TypeModes {
    /// The column type `ty` (derived with the default modes) becomes under
    /// these modes. Array element types follow the same modes, as in
    /// Debezium.
    pub fn apply(&self, ty: ColumnType) -> ColumnType {
        use ColumnType as T;
        match ty {
            T::Decimal { .. } | T::VariableScaleDecimal => match self.decimal {
                DecimalMode::Precise => ty,
                DecimalMode::Double => T::DecimalDouble,
                DecimalMode::String => T::DecimalString,
            },
            T::Money => match self.decimal {
                DecimalMode::Precise => ty,
                DecimalMode::Double => T::MoneyDouble,
                DecimalMode::String => T::MoneyString,
            },
            T::Date => match self.time_precision {
                TimePrecisionMode::Connect => T::ConnectDate,
                _ => ty,
            },
            T::TimeMillis | T::TimeMicros => match self.time_precision {
                TimePrecisionMode::Adaptive => ty,
                TimePrecisionMode::AdaptiveTimeMicroseconds => T::TimeMicros,
                TimePrecisionMode::Connect => T::ConnectTime,
            },
            T::TimestampMillis | T::TimestampMicros => match self.time_precision {
                TimePrecisionMode::Connect => T::ConnectTimestamp,
                _ => ty,
            },
            T::Bytes => match self.binary {
                BinaryMode::Bytes => ty,
                BinaryMode::Base64 => T::BinaryText(TextEncoding::Base64),
                BinaryMode::Base64UrlSafe => T::BinaryText(TextEncoding::Base64UrlSafe),
                BinaryMode::Hex => T::BinaryText(TextEncoding::Hex),
            },
            T::MicroDuration => match self.interval {
                IntervalMode::Numeric => ty,
                IntervalMode::String => T::IsoInterval,
            },
            T::Hstore => match self.hstore {
                HstoreMode::Json => ty,
                HstoreMode::Map => T::HstoreMap,
            },
            T::Array { element, delimiter } => T::Array {
                element: Box::new(self.apply(*element)),
                delimiter,
            },
            other => other,
        }
    }

    /// Whether a column is nullable in the `Value` record: as the catalog
    /// says, and under [`UnchangedToastMode::Null`] also every non-key
    /// column whose values PostgreSQL may leave out of an update (a
    /// variable-length, hence toastable, type). Key columns keep the
    /// catalog's nullability: their value always comes from the new row or
    /// the old key.
    pub fn value_nullable(
        &self,
        nullable: bool,
        is_key: bool,
        type_oid: u32,
        custom: &CustomTypes,
    ) -> bool {
        nullable
            || (self.unchanged_toast == UnchangedToastMode::Null
                && !is_key
                && toastable(type_oid, custom))
    }

    /// Whether the envelope carries the `unavailable_columns` field.
    pub fn lists_unavailable_columns(&self) -> bool {
        self.unchanged_toast == UnchangedToastMode::Null
    }
}

/// Built-in types with a fixed length (`typlen > 0`): PostgreSQL never
/// stores their values out of line, so pgoutput always sends them.
const FIXED_LENGTH: &[u32] = &[
    oid::BOOL,
    oid::CHAR,
    oid::NAME,
    oid::INT8,
    oid::INT2,
    oid::INT4,
    24, // regproc
    oid::OID,
    27, // tid
    28, // xid
    29, // cid
    oid::POINT,
    oid::LSEG,
    oid::BOX,
    oid::LINE,
    oid::FLOAT4,
    oid::FLOAT8,
    oid::CIRCLE,
    oid::MACADDR8,
    oid::MONEY,
    oid::MACADDR,
    1033, // aclitem
    oid::DATE,
    oid::TIME,
    oid::TIMESTAMP,
    oid::TIMESTAMPTZ,
    oid::INTERVAL,
    oid::TIMETZ,
    2202, // regprocedure
    2203, // regoper
    2204, // regoperator
    2205, // regclass
    2206, // regtype
    oid::UUID,
    3220, // pg_lsn
    3734, // regconfig
    3769, // regdictionary
    4089, // regnamespace
    4096, // regrole
    4191, // regcollation
    5069, // xid8
];

/// Whether values of `type_oid` can be TOASTed out of line (variable
/// length). Unknown extension types count as toastable.
pub fn toastable(type_oid: u32, custom: &CustomTypes) -> bool {
    toastable_at(type_oid, custom, 0)
}

fn toastable_at(type_oid: u32, custom: &CustomTypes, depth: usize) -> bool {
    if type_oid < oid::FIRST_NON_FIXED {
        return !FIXED_LENGTH.contains(&type_oid);
    }
    match custom.get(&type_oid).map(|t| &t.kind) {
        // Enums are stored as 4-byte OIDs.
        Some(CustomTypeKind::Enum { .. }) => false,
        Some(CustomTypeKind::Domain { base_oid, .. }) if depth < 16 => {
            toastable_at(*base_oid, custom, depth + 1)
        }
        _ => true,
    }
}

/// The `connect.name`-carrying schemas the modes add, as Confluent's
/// `AvroData` renders them.
pub(super) fn write_mode_schema(ty: &ColumnType, out: &mut String) -> bool {
    let s = match ty {
        ColumnType::DecimalDouble | ColumnType::MoneyDouble => r#""double""#,
        ColumnType::DecimalString | ColumnType::MoneyString | ColumnType::BinaryText(_) => {
            r#""string""#
        }
        ColumnType::ConnectDate => concat!(
            r#"{"type":"int","connect.version":1,"#,
            r#""connect.name":"org.apache.kafka.connect.data.Date","logicalType":"date"}"#
        ),
        ColumnType::ConnectTime => concat!(
            r#"{"type":"int","connect.version":1,"#,
            r#""connect.name":"org.apache.kafka.connect.data.Time","logicalType":"time-millis"}"#
        ),
        ColumnType::ConnectTimestamp => concat!(
            r#"{"type":"long","connect.version":1,"#,
            r#""connect.name":"org.apache.kafka.connect.data.Timestamp","logicalType":"timestamp-millis"}"#
        ),
        ColumnType::IsoInterval => {
            r#"{"type":"string","connect.version":1,"connect.name":"io.debezium.time.Interval"}"#
        }
        ColumnType::HstoreMap => r#"{"type":"map","values":["null","string"]}"#,
        _ => return false,
    };
    out.push_str(s);
    true
}

/// `numeric` text → Avro `double` (`decimal.handling.mode=double`).
/// PostgreSQL's text is exact; parsing it rounds once, to nearest, as
/// Java's `BigDecimal.doubleValue()` does.
pub(super) fn write_decimal_double(text: &[u8], out: &mut Vec<u8>) -> Result<(), ValueError> {
    let v: f64 = match text {
        b"NaN" => f64::NAN,
        b"Infinity" => f64::INFINITY,
        b"-Infinity" => f64::NEG_INFINITY,
        _ => {
            check_plain_decimal(text)?;
            std::str::from_utf8(text)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(ValueError::Malformed("numeric"))?
        }
    };
    out.extend_from_slice(&v.to_le_bytes());
    Ok(())
}

/// `-?[0-9]+(\.[0-9]+)?`, the only shape PostgreSQL prints numerics in.
fn check_plain_decimal(text: &[u8]) -> Result<(&[u8], &[u8], bool), ValueError> {
    let (negative, body) = match text {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, text),
    };
    let (int, frac) = match body.iter().position(|&c| c == b'.') {
        Some(dot) => (&body[..dot], &body[dot + 1..]),
        None => (body, &body[body.len()..]),
    };
    let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    if int.is_empty() || !digits(int) || !digits(frac) || (frac.is_empty() && body.ends_with(b"."))
    {
        return Err(ValueError::Malformed("numeric"));
    }
    Ok((int, frac, negative))
}

/// `numeric` text → `string` (`decimal.handling.mode=string`): the plain
/// decimal as PostgreSQL prints it, which is what Debezium 3.6.3 writes
/// (`0.0000001`, `12.3400`, never an exponent). NaN and the infinities are
/// Debezium's `SpecialValueDecimal` names.
pub(super) fn write_decimal_string(text: &[u8], out: &mut Vec<u8>) -> Result<(), ValueError> {
    let special: &[u8] = match text {
        b"NaN" => b"NAN",
        b"Infinity" => b"POSITIVE_INFINITY",
        b"-Infinity" => b"NEGATIVE_INFINITY",
        _ => {
            check_plain_decimal(text)?;
            text
        }
    };
    write_bytes(out, special);
    Ok(())
}

/// Cents → `[-]units.cc` (Java's `BigDecimal.toPlainString()` of a money
/// value with scale 2). Returns the length written into `buf`.
fn money_plain(cents: i64, buf: &mut [u8; 24]) -> usize {
    let mut digits = [0u8; 20];
    let n = super::types::fmt_u64(cents.unsigned_abs(), &mut digits);
    let digits = &digits[20 - n..];
    let mut len = 0;
    if cents < 0 {
        buf[0] = b'-';
        len = 1;
    }
    // At least "0.cc".
    let int_len = n.saturating_sub(2);
    if int_len == 0 {
        buf[len] = b'0';
        len += 1;
    } else {
        buf[len..len + int_len].copy_from_slice(&digits[..int_len]);
        len += int_len;
    }
    buf[len] = b'.';
    len += 1;
    for i in 0..2 {
        // Pad "5" cents to "05".
        let from_end = 2 - i;
        buf[len] = if n >= from_end {
            digits[n - from_end]
        } else {
            b'0'
        };
        len += 1;
    }
    len
}

/// `money` (in cents) → Avro `double` or `string`.
pub(super) fn write_money(cents: i64, as_string: bool, out: &mut Vec<u8>) {
    let mut buf = [0u8; 24];
    let n = money_plain(cents, &mut buf);
    if as_string {
        write_bytes(out, &buf[..n]);
    } else {
        // The text is ASCII digits: parsing cannot fail; 0.0 if it did.
        let v: f64 = std::str::from_utf8(&buf[..n])
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_default();
        out.extend_from_slice(&v.to_le_bytes());
    }
}

const BASE64_STANDARD: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const BASE64_URL_SAFE: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// `bytea` hex text (`\x…`) → Avro string in `encoding`, decoded and
/// re-encoded in one pass without a buffer.
pub(super) fn write_bytea_text(
    text: &[u8],
    encoding: TextEncoding,
    out: &mut Vec<u8>,
) -> Result<(), ValueError> {
    let bad = ValueError::Malformed("bytea hex");
    let hex = match text {
        [b'\\', b'x', rest @ ..] if rest.len() % 2 == 0 => rest,
        _ => return Err(bad),
    };
    let n = hex.len() / 2;
    let byte = |i: usize| -> Result<u8, ValueError> {
        match (hex_value(hex[2 * i]), hex_value(hex[2 * i + 1])) {
            (Some(hi), Some(lo)) => Ok((hi << 4) | lo),
            _ => Err(bad),
        }
    };
    match encoding {
        TextEncoding::Hex => {
            // Debezium's HexConverter writes lower case.
            write_long(out, hex.len() as i64);
            out.reserve(hex.len());
            for &c in hex {
                hex_value(c).ok_or(bad)?;
                out.push(c.to_ascii_lowercase());
            }
        }
        TextEncoding::Base64 | TextEncoding::Base64UrlSafe => {
            let alphabet = if encoding == TextEncoding::Base64 {
                BASE64_STANDARD
            } else {
                BASE64_URL_SAFE
            };
            write_long(out, (n.div_ceil(3) * 4) as i64);
            out.reserve(n.div_ceil(3) * 4);
            let mut i = 0;
            while i < n {
                let b0 = byte(i)?;
                let b1 = if i + 1 < n { Some(byte(i + 1)?) } else { None };
                let b2 = if i + 2 < n { Some(byte(i + 2)?) } else { None };
                let group = (u32::from(b0) << 16)
                    | (u32::from(b1.unwrap_or(0)) << 8)
                    | u32::from(b2.unwrap_or(0));
                out.push(alphabet[(group >> 18) as usize & 63]);
                out.push(alphabet[(group >> 12) as usize & 63]);
                out.push(if b1.is_some() {
                    alphabet[(group >> 6) as usize & 63]
                } else {
                    b'='
                });
                out.push(if b2.is_some() {
                    alphabet[group as usize & 63]
                } else {
                    b'='
                });
                i += 3;
            }
        }
    }
    Ok(())
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// `IntervalStyle=iso_8601` text → Debezium's `Interval.toIsoString`:
/// every component, `P<y>Y<m>M<d>DT<h>H<min>M<s>S`, seconds without
/// trailing zeros (`P1Y2M3DT4H5M6.78S`, zero is `P0Y0M0DT0H0M0S`).
pub(super) fn write_iso_interval(text: &[u8], out: &mut Vec<u8>) -> Result<(), ValueError> {
    let bad = ValueError::Malformed("interval");
    let mut rest = text.strip_prefix(b"P").ok_or(bad)?;
    if rest.is_empty() {
        return Err(bad);
    }
    // years, months, days, hours, minutes as signed integers; seconds as
    // PostgreSQL's text (sign, digits, optional fraction).
    let mut fields = [0i64; 5];
    let mut seconds: &[u8] = b"0";
    let mut in_time = false;
    let mut next = 0;
    while !rest.is_empty() {
        if rest[0] == b'T' && !in_time {
            in_time = true;
            next = next.max(3);
            rest = &rest[1..];
            continue;
        }
        let sign_len = usize::from(rest[0] == b'-');
        let int_len = rest[sign_len..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if int_len == 0 || int_len > 18 {
            return Err(bad);
        }
        let mut len = sign_len + int_len;
        if rest.get(len) == Some(&b'.') {
            let frac = rest[len + 1..]
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .count();
            if frac == 0 || frac > 6 {
                return Err(bad);
            }
            len += 1 + frac;
        }
        let number = &rest[..len];
        let unit = *rest.get(len).ok_or(bad)?;
        rest = &rest[len + 1..];
        let index = match (in_time, unit) {
            (false, b'Y') => 0,
            (false, b'M') => 1,
            (false, b'D') => 2,
            (true, b'H') => 3,
            (true, b'M') => 4,
            (true, b'S') => 5,
            _ => return Err(bad),
        };
        if index < next || (index != 5 && number.contains(&b'.')) {
            return Err(bad);
        }
        next = index + 1;
        if index == 5 {
            seconds = number;
        } else {
            let mut v: i64 = 0;
            for &c in &number[sign_len..] {
                v = v * 10 + i64::from(c - b'0');
            }
            fields[index] = if sign_len == 1 { -v } else { v };
        }
    }
    let mut buf = [0u8; 128];
    let mut len = 0;
    let mut push = |bytes: &[u8]| {
        buf[len..len + bytes.len()].copy_from_slice(bytes);
        len += bytes.len();
    };
    push(b"P");
    for (i, (value, unit)) in fields
        .iter()
        .zip([b"Y", b"M", b"D", b"H", b"M"])
        .enumerate()
    {
        if i == 3 {
            push(b"T");
        }
        let mut digits = [0u8; 20];
        let n = super::types::fmt_u64(value.unsigned_abs(), &mut digits);
        if *value < 0 {
            push(b"-");
        }
        push(&digits[20 - n..]);
        push(unit);
    }
    // BigDecimal.stripTrailingZeros().toPlainString(): "6.780" → "6.78",
    // "-0.0" → "0".
    if seconds.contains(&b'.') {
        while let [head @ .., b'0'] = seconds {
            seconds = head;
        }
        if let [head @ .., b'.'] = seconds {
            seconds = head;
        }
    }
    if seconds == b"-0" {
        seconds = b"0";
    }
    push(seconds);
    push(b"S");
    write_bytes(out, &buf[..len]);
    Ok(())
}

/// `hstore` text (`"k"=>"v", "n"=>NULL`) → Avro `map<["null","string"]>`
/// (`hstore.handling.mode=map`): one block with every pair, in
/// PostgreSQL's order (a map has no order).
pub(super) fn write_hstore_map(text: &[u8], out: &mut Vec<u8>) -> Result<(), ValueError> {
    if std::str::from_utf8(text).is_err() {
        return Err(ValueError::NotUtf8);
    }
    let count = hstore_pairs(text, |_, _| {})?;
    if count > 0 {
        write_long(out, count as i64);
        hstore_pairs(text, |key, value| {
            write_unescaped(out, key);
            match value {
                None => out.push(0),
                Some(v) => {
                    out.push(2);
                    write_unescaped(out, v);
                }
            }
        })?;
    }
    write_long(out, 0);
    Ok(())
}

/// Calls `each` with every (key, value) of an hstore's text (raw, still
/// escaped); returns how many pairs there were.
fn hstore_pairs(
    text: &[u8],
    mut each: impl FnMut(&[u8], Option<&[u8]>),
) -> Result<usize, ValueError> {
    let bad = ValueError::Malformed("hstore");
    let mut rest = text;
    let mut count = 0;
    while !rest.is_empty() {
        if count > 0 {
            rest = rest.strip_prefix(b", ").ok_or(bad)?;
        }
        let (key, after) = hstore_quoted(rest).ok_or(bad)?;
        rest = after.strip_prefix(b"=>").ok_or(bad)?;
        let value = if let Some(after) = rest.strip_prefix(b"NULL") {
            rest = after;
            None
        } else {
            let (value, after) = hstore_quoted(rest).ok_or(bad)?;
            rest = after;
            Some(value)
        };
        each(key, value);
        count += 1;
    }
    Ok(count)
}

/// Writes hstore-escaped `raw` (`\"`, `\\`) as an Avro string.
fn write_unescaped(out: &mut Vec<u8>, raw: &[u8]) {
    let escapes = {
        let mut n = 0;
        let mut i = 0;
        while i < raw.len() {
            if raw[i] == b'\\' && i + 1 < raw.len() {
                n += 1;
                i += 1;
            }
            i += 1;
        }
        n
    };
    write_long(out, (raw.len() - escapes) as i64);
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' && i + 1 < raw.len() {
            i += 1;
        }
        out.push(raw[i]);
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn avro_string(mut bytes: &[u8]) -> String {
        // zigzag varint length, then the bytes.
        let mut len: u64 = 0;
        let mut shift = 0;
        loop {
            let b = bytes[0];
            bytes = &bytes[1..];
            len |= u64::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        assert_eq!((len >> 1) as usize, bytes.len());
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn decimal_string(text: &str) -> String {
        let mut out = Vec::new();
        write_decimal_string(text.as_bytes(), &mut out).unwrap();
        avro_string(&out)
    }

    #[test]
    fn decimal_string_is_the_plain_decimal() {
        // As Debezium 3.6.3 wrote these values (pgoutput, streaming).
        for (pg, java) in [
            ("12.3400", "12.3400"),
            ("0", "0"),
            ("0.00", "0.00"),
            ("-0.000001", "-0.000001"),
            ("0.0000001", "0.0000001"),
            ("-0.00000012", "-0.00000012"),
            ("0.0000000", "0.0000000"),
            (
                "1000000000000000000000000000000",
                "1000000000000000000000000000000",
            ),
            ("NaN", "NAN"),
            ("Infinity", "POSITIVE_INFINITY"),
            ("-Infinity", "NEGATIVE_INFINITY"),
        ] {
            assert_eq!(decimal_string(pg), java, "{pg}");
        }
        for bad in ["", "-", "1.", ".5", "1e5", "1.2.3", "abc"] {
            assert!(
                write_decimal_string(bad.as_bytes(), &mut Vec::new()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn money_plain_text() {
        for (cents, text) in [
            (123456, "1234.56"),
            (5, "0.05"),
            (-1, "-0.01"),
            (0, "0.00"),
            (-50, "-0.50"),
            (i64::MIN, "-92233720368547758.08"),
            (i64::MAX, "92233720368547758.07"),
        ] {
            let mut buf = [0u8; 24];
            let n = money_plain(cents, &mut buf);
            assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), text);
        }
    }

    #[test]
    fn bytea_as_base64_and_hex_match_the_base64_crate() {
        let samples: [&[u8]; 6] = [b"", b"f", b"fo", b"foo", b"foob", &[0xfb, 0xff, 0xfe, 0x00]];
        for raw in samples {
            let text = format!("\\x{}", hex::encode_upper(raw));
            let run = |enc| {
                let mut out = Vec::new();
                write_bytea_text(text.as_bytes(), enc, &mut out).unwrap();
                avro_string(&out)
            };
            assert_eq!(
                run(TextEncoding::Base64),
                base64::engine::general_purpose::STANDARD.encode(raw)
            );
            assert_eq!(
                run(TextEncoding::Base64UrlSafe),
                base64::engine::general_purpose::URL_SAFE.encode(raw)
            );
            assert_eq!(run(TextEncoding::Hex), hex::encode(raw));
        }
        assert!(write_bytea_text(b"\\xzz", TextEncoding::Base64, &mut Vec::new()).is_err());
        assert!(write_bytea_text(b"\\xzz", TextEncoding::Hex, &mut Vec::new()).is_err());
        assert!(write_bytea_text(b"dead", TextEncoding::Hex, &mut Vec::new()).is_err());
    }

    #[test]
    fn interval_as_debezium_iso_string() {
        for (pg, dbz) in [
            ("P1Y2M3DT4H5M6.78S", "P1Y2M3DT4H5M6.78S"),
            ("PT0S", "P0Y0M0DT0H0M0S"),
            ("P1D", "P0Y0M1DT0H0M0S"),
            ("P-1Y-2M3DT-4H-5M-6.5S", "P-1Y-2M3DT-4H-5M-6.5S"),
            ("PT-0.000001S", "P0Y0M0DT0H0M-0.000001S"),
            ("PT2562047788H54.775807S", "P0Y0M0DT2562047788H0M54.775807S"),
            ("P178956970Y7M", "P178956970Y7M0DT0H0M0S"),
        ] {
            let mut out = Vec::new();
            write_iso_interval(pg.as_bytes(), &mut out).unwrap();
            assert_eq!(avro_string(&out), dbz, "{pg}");
        }
        for bad in [
            "",
            "P",
            "1D",
            "PT1Y",
            "P1.5D",
            "P1D1Y",
            "P1",
            "PT1.1234567S",
        ] {
            assert!(
                write_iso_interval(bad.as_bytes(), &mut Vec::new()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn toastable_types() {
        let custom = CustomTypes::new();
        for oid in [
            oid::TEXT,
            oid::BYTEA,
            oid::NUMERIC,
            oid::JSONB,
            1007,
            oid::VARBIT,
        ] {
            assert!(toastable(oid, &custom), "{oid}");
        }
        for oid in [
            oid::INT4,
            oid::UUID,
            oid::TIMESTAMPTZ,
            oid::INTERVAL,
            oid::NAME,
        ] {
            assert!(!toastable(oid, &custom), "{oid}");
        }
        // Unknown extension types: assume they can be toasted.
        assert!(toastable(70_000, &custom));
    }

    #[test]
    fn modes_parse_their_debezium_spelling() {
        for m in BinaryMode::ALL {
            assert_eq!(BinaryMode::parse(m.as_str()), Some(*m));
        }
        assert_eq!(
            TimePrecisionMode::parse("adaptive_time_microseconds"),
            Some(TimePrecisionMode::AdaptiveTimeMicroseconds)
        );
        assert_eq!(DecimalMode::parse("PRECISE"), None);
        assert_eq!(HstoreMode::choices(), r#""json", "map""#);
    }
}
