//! Every PostgreSQL type end to end: rows with edge-case values (min, max,
//! NULL, empty, NaN/infinity, arrays with NULLs and escapes) go through the
//! real `siphon` binary; each decoded Avro value is compared with what
//! PostgreSQL itself says about the same row, computed by a SQL expression
//! per column (`extract(epoch …)`, `encode(…, 'hex')`, the text form, …).
//!
//! Three tables (scalars, arrays, catalog types) and one siphon run keep
//! it fast. docs/types.md documents the mapping being checked.

mod support;

use std::collections::BTreeMap;

use apache_avro::types::Value;
use num_bigint::{BigInt, BigUint};
use support::bed::Bed;
use support::events::unwrap_union;

/// How to read an Avro value as text that can be compared with what the
/// column's SQL expression returns.
#[derive(Clone, Copy, Debug)]
enum K {
    /// Strings (and everything carried as one), as they are.
    Text,
    /// `int`/`long`, in decimal.
    Int,
    Bool,
    F32,
    F64,
    /// A Connect `Decimal` with this scale.
    Dec(u32),
    /// Debezium's `VariableScaleDecimal` record.
    Vsd,
    /// Bytes, as lower-case hex.
    Hex,
    /// Debezium `Bits` bytes; PostgreSQL gives the bit string.
    Bits,
    /// The `Point` record as `x,y`; PostgreSQL gives `x,y` too.
    Point,
    /// A JSON document, compared as parsed JSON.
    Json,
    /// An Avro map of nullable strings; PostgreSQL gives a JSON object.
    Map,
}

/// One column: name, SQL type, how to compare, the SQL expression (with
/// `{}` for the value) that gives the expected text, and one SQL literal
/// per row (`NULL` for none).
struct Col {
    name: &'static str,
    decl: &'static str,
    kind: K,
    array: bool,
    expr: &'static str,
    values: [&'static str; 5],
}

const fn col(
    name: &'static str,
    decl: &'static str,
    kind: K,
    expr: &'static str,
    values: [&'static str; 5],
) -> Col {
    Col {
        name,
        decl,
        kind,
        array: false,
        expr,
        values,
    }
}

const fn arr(
    name: &'static str,
    decl: &'static str,
    kind: K,
    expr: &'static str,
    values: [&'static str; 5],
) -> Col {
    Col {
        name,
        decl,
        kind,
        array: true,
        expr,
        values,
    }
}

const TEXT: &str = "CASE WHEN num_nulls({0}) = 1 THEN NULL ELSE format('%s', {0}) END";
const CAST: &str = "({})::text";
const DATE: &str = "CASE WHEN {0} = 'infinity' THEN '-2147472692' WHEN {0} = '-infinity' THEN '-2147472691' ELSE ({0} - date '1970-01-01')::text END";
const MICROTIME: &str = "(extract(epoch FROM {}) * 1000000)::bigint::text";
const MILLITIME: &str = "(extract(epoch FROM {}) * 1000)::bigint::text";
const ZONED_TIME: &str = "to_char(date '2000-01-01' + ({0} AT TIME ZONE 'UTC')::time, 'HH24:MI:SS') \
     || COALESCE('.' || NULLIF(rtrim(to_char(date '2000-01-01' + ({0} AT TIME ZONE 'UTC')::time, 'US'), '0'), ''), '') || 'Z'";
const MICROTS: &str = "CASE WHEN {0} = 'infinity' THEN '9223372036825200000' WHEN {0} = '-infinity' THEN '-9223372036832400000' \
     ELSE (extract(epoch FROM {0}) * 1000000)::bigint::text END";
const MILLITS: &str = "CASE WHEN {0} = 'infinity' THEN '9223372036825200' ELSE floor(extract(epoch FROM {0}) * 1000)::bigint::text END";
const ZONED_TS6: &str = "CASE WHEN {0} = 'infinity' THEN 'infinity' \
     ELSE to_char({0} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') END";
const ZONED_TS3: &str = "to_char({0} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')";
/// Debezium's `MicroDuration`: months of 30.4375 days (2,629,800 s),
/// saturated at the long range.
const MICRODURATION: &str = "CASE WHEN {0} IS NULL THEN NULL ELSE GREATEST(-9223372036854775808, LEAST(9223372036854775807, \
     (extract(year FROM {0}) * 12 + extract(month FROM {0})) * 2629800000000 \
     + extract(day FROM {0}) * 86400000000 + extract(hour FROM {0}) * 3600000000 \
     + extract(minute FROM {0}) * 60000000 + extract(microseconds FROM {0})))::text END";
const NUMERIC: &str =
    "CASE WHEN {0} IN ('NaN', 'Infinity', '-Infinity') THEN NULL ELSE ({0})::text END";
const VSD: &str =
    "CASE WHEN {0} IN ('NaN', 'Infinity', '-Infinity') THEN NULL ELSE trim_scale({0})::text END";
const POINT: &str = "({0})[0]::text || ',' || ({0})[1]::text";

fn scalar_columns() -> Vec<Col> {
    use K::*;
    vec![
        col(
            "b",
            "boolean",
            Bool,
            CAST,
            ["true", "NULL", "false", "true", "NULL"],
        ),
        col(
            "i2",
            "int2",
            Int,
            CAST,
            ["1", "NULL", "-32768", "32767", "0"],
        ),
        col(
            "i4",
            "int4",
            Int,
            CAST,
            ["1", "NULL", "-2147483648", "2147483647", "0"],
        ),
        col(
            "i8",
            "int8",
            Int,
            CAST,
            [
                "1",
                "NULL",
                "-9223372036854775808",
                "9223372036854775807",
                "0",
            ],
        ),
        col(
            "o",
            "oid",
            Int,
            CAST,
            ["1", "NULL", "0", "4294967295", "NULL"],
        ),
        col(
            "f4",
            "real",
            F32,
            CAST,
            ["1.5", "NULL", "'NaN'", "'-Infinity'", "3.4028235e38"],
        ),
        col(
            "f8",
            "float8",
            F64,
            CAST,
            [
                "2.5",
                "NULL",
                "'Infinity'",
                "-1.7976931348623157e308",
                "5e-324",
            ],
        ),
        col(
            "n",
            "numeric",
            Vsd,
            VSD,
            [
                "12.3400",
                "NULL",
                "'NaN'",
                "-0.000001",
                "12345678901234567890123456789012345678901234567890.5",
            ],
        ),
        col(
            "n0",
            "numeric",
            Vsd,
            VSD,
            ["'Infinity'", "NULL", "'-Infinity'", "0.000", "1e30"],
        ),
        col(
            "n2",
            "numeric(10,2)",
            Dec(2),
            NUMERIC,
            ["12.34", "NULL", "'NaN'", "99999999.99", "-99999999.99"],
        ),
        col(
            "n38",
            "numeric(38,0)",
            Dec(0),
            NUMERIC,
            [
                "1",
                "NULL",
                "-99999999999999999999999999999999999999",
                "99999999999999999999999999999999999999",
                "0",
            ],
        ),
        col(
            "m",
            "money",
            Dec(2),
            "({})::numeric::text",
            [
                "1234.56",
                "NULL",
                "-92233720368547758.08",
                "92233720368547758.07",
                "0",
            ],
        ),
        col(
            "t",
            "text",
            Text,
            TEXT,
            [
                "'héllo ☃'",
                "NULL",
                "''",
                "E'tab\\there \"q\" \\\\ back'",
                "'NULL'",
            ],
        ),
        col(
            "vc",
            "varchar(5)",
            Text,
            TEXT,
            ["'short'", "NULL", "''", "'ab'", "'日本語'"],
        ),
        col(
            "bp",
            "char(3)",
            Text,
            TEXT,
            ["'ab'", "NULL", "''", "'abc'", "' '"],
        ),
        col(
            "ch",
            "\"char\"",
            Text,
            TEXT,
            ["'x'", "NULL", "''", "'z'", "NULL"],
        ),
        col(
            "nm",
            "name",
            Text,
            TEXT,
            ["'a name'", "NULL", "''", "'n'", "NULL"],
        ),
        col(
            "by",
            "bytea",
            Hex,
            "encode({}, 'hex')",
            ["'\\xdeadbeef'", "NULL", "''", "'\\x00ff'", "NULL"],
        ),
        col(
            "u",
            "uuid",
            Text,
            TEXT,
            [
                "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'",
                "NULL",
                "'00000000-0000-0000-0000-000000000000'",
                "'ffffffff-ffff-ffff-ffff-ffffffffffff'",
                "NULL",
            ],
        ),
        col(
            "j",
            "json",
            Text,
            TEXT,
            ["'{\"b\": 1}'", "NULL", "'[]'", "'\"x\"'", "'null'"],
        ),
        col(
            "jb",
            "jsonb",
            Text,
            TEXT,
            ["'{\"a\": [1, 2]}'", "NULL", "'{}'", "'null'", "'\"☃\"'"],
        ),
        col(
            "x",
            "xml",
            Text,
            TEXT,
            ["'<a b=\"1\">x &amp; y</a>'", "NULL", "''", "'<r/>'", "NULL"],
        ),
        col(
            "tv",
            "tsvector",
            Text,
            TEXT,
            ["'a fat cat:1 sat'", "NULL", "''", "'''q'''", "NULL"],
        ),
        col(
            "tq",
            "tsquery",
            Text,
            TEXT,
            ["'fat & (rat | cat)'", "NULL", "'!x'", "'a <-> b'", "NULL"],
        ),
        col(
            "ine",
            "inet",
            Text,
            TEXT,
            [
                "'192.168.0.1/24'",
                "NULL",
                "'::1'",
                "'255.255.255.255'",
                "NULL",
            ],
        ),
        col(
            "ci",
            "cidr",
            Text,
            TEXT,
            ["'10.0.0.0/8'", "NULL", "'::/0'", "'0.0.0.0/0'", "NULL"],
        ),
        col(
            "mac",
            "macaddr",
            Text,
            TEXT,
            [
                "'08:00:2b:01:02:03'",
                "NULL",
                "'00:00:00:00:00:00'",
                "'ff:ff:ff:ff:ff:ff'",
                "NULL",
            ],
        ),
        col(
            "mac8",
            "macaddr8",
            Text,
            TEXT,
            [
                "'08:00:2b:01:02:03:04:05'",
                "NULL",
                "'00:00:00:00:00:00:00:00'",
                "'ff:ff:ff:ff:ff:ff:ff:ff'",
                "NULL",
            ],
        ),
        col(
            "pt",
            "point",
            Point,
            POINT,
            [
                "'(1.5,-2.25)'",
                "NULL",
                "'(NaN,Infinity)'",
                "'(1e300,-0)'",
                "'(0,0)'",
            ],
        ),
        col(
            "ln",
            "line",
            Text,
            TEXT,
            ["'{1,2,3}'", "NULL", "'{0,1,0}'", "NULL", "NULL"],
        ),
        col(
            "ls",
            "lseg",
            Text,
            TEXT,
            ["'[(0,0),(1,1)]'", "NULL", "NULL", "NULL", "NULL"],
        ),
        col(
            "bx",
            "box",
            Text,
            TEXT,
            ["'((1,1),(0,0))'", "NULL", "NULL", "NULL", "NULL"],
        ),
        col(
            "pa",
            "path",
            Text,
            TEXT,
            [
                "'[(0,0),(1,1),(2,0)]'",
                "NULL",
                "'((0,0),(1,1))'",
                "NULL",
                "NULL",
            ],
        ),
        col(
            "pg",
            "polygon",
            Text,
            TEXT,
            ["'((0,0),(1,1),(2,0))'", "NULL", "NULL", "NULL", "NULL"],
        ),
        col(
            "cr",
            "circle",
            Text,
            TEXT,
            ["'<(1,2),3>'", "NULL", "NULL", "NULL", "NULL"],
        ),
        col(
            "i4r",
            "int4range",
            Text,
            TEXT,
            [
                "'[1,10)'",
                "NULL",
                "'empty'",
                "'(,)'",
                "'[-2147483648,2147483647)'",
            ],
        ),
        col(
            "i8r",
            "int8range",
            Text,
            TEXT,
            [
                "'[1,9223372036854775807)'",
                "NULL",
                "'empty'",
                "NULL",
                "NULL",
            ],
        ),
        col(
            "nr",
            "numrange",
            Text,
            TEXT,
            ["'(1.5,2.5]'", "NULL", "'empty'", "'(,1)'", "NULL"],
        ),
        col(
            "tsr",
            "tsrange",
            Text,
            TEXT,
            [
                "'[2024-01-01,2024-02-01)'",
                "NULL",
                "'empty'",
                "NULL",
                "NULL",
            ],
        ),
        col(
            "tstzr",
            "tstzrange",
            Text,
            TEXT,
            [
                "'[2024-01-01 00:00+00,infinity)'",
                "NULL",
                "NULL",
                "NULL",
                "NULL",
            ],
        ),
        col(
            "dr",
            "daterange",
            Text,
            TEXT,
            [
                "'[2024-01-01,2024-02-01)'",
                "NULL",
                "'empty'",
                "NULL",
                "NULL",
            ],
        ),
        col(
            "i4mr",
            "int4multirange",
            Text,
            TEXT,
            ["'{[1,3),[5,7)}'", "NULL", "'{}'", "NULL", "NULL"],
        ),
        col(
            "nmr",
            "nummultirange",
            Text,
            TEXT,
            ["'{(1.5,2.5]}'", "NULL", "NULL", "NULL", "NULL"],
        ),
        col(
            "dmr",
            "datemultirange",
            Text,
            TEXT,
            [
                "'{[2024-01-01,2024-02-01)}'",
                "NULL",
                "NULL",
                "NULL",
                "NULL",
            ],
        ),
        col(
            "tsmr",
            "tsmultirange",
            Text,
            TEXT,
            [
                "'{[2024-01-01,2024-02-01)}'",
                "NULL",
                "NULL",
                "NULL",
                "NULL",
            ],
        ),
        col(
            "tstzmr",
            "tstzmultirange",
            Text,
            TEXT,
            [
                "'{[2024-01-01 00:00+00,2024-02-01 00:00+00)}'",
                "NULL",
                "NULL",
                "NULL",
                "NULL",
            ],
        ),
        col(
            "i8mr",
            "int8multirange",
            Text,
            TEXT,
            ["'{[1,3)}'", "NULL", "NULL", "NULL", "NULL"],
        ),
        col(
            "rc",
            "regclass",
            Text,
            TEXT,
            ["'pg_class'", "NULL", "'-'", "NULL", "NULL"],
        ),
        col(
            "rp",
            "regproc",
            Text,
            TEXT,
            ["'now'", "NULL", "NULL", "NULL", "NULL"],
        ),
        col(
            "rt",
            "regtype",
            Text,
            TEXT,
            ["'int4'", "NULL", "'text[]'", "NULL", "NULL"],
        ),
        col(
            "rn",
            "regnamespace",
            Text,
            TEXT,
            ["'public'", "NULL", "NULL", "NULL", "NULL"],
        ),
        col(
            "rcfg",
            "regconfig",
            Text,
            TEXT,
            ["'english'", "NULL", "NULL", "NULL", "NULL"],
        ),
        col(
            "xi",
            "xid",
            Text,
            TEXT,
            ["'12345'", "NULL", "'0'", "'4294967295'", "NULL"],
        ),
        col(
            "xi8",
            "xid8",
            Text,
            TEXT,
            ["'12345'", "NULL", "'0'", "'18446744073709551615'", "NULL"],
        ),
        col(
            "ti",
            "tid",
            Text,
            TEXT,
            ["'(0,1)'", "NULL", "NULL", "NULL", "NULL"],
        ),
        col(
            "lsn",
            "pg_lsn",
            Text,
            TEXT,
            [
                "'16/B374D848'",
                "NULL",
                "'0/0'",
                "'FFFFFFFF/FFFFFFFF'",
                "NULL",
            ],
        ),
        col(
            "snap",
            "pg_snapshot",
            Text,
            TEXT,
            ["'10:20:10,14,15'", "NULL", "NULL", "NULL", "NULL"],
        ),
        col(
            "jp",
            "jsonpath",
            Text,
            TEXT,
            ["'$.a'", "NULL", "NULL", "NULL", "NULL"],
        ),
        col(
            "i2v",
            "int2vector",
            Text,
            TEXT,
            ["'1 2'", "NULL", "''", "NULL", "NULL"],
        ),
        col(
            "d",
            "date",
            Int,
            DATE,
            [
                "'2024-01-02'",
                "NULL",
                "'4713-01-01 BC'",
                "'5874897-12-31'",
                "'infinity'",
            ],
        ),
        col(
            "d2",
            "date",
            Int,
            DATE,
            [
                "'0044-03-15 BC'",
                "NULL",
                "'-infinity'",
                "'1970-01-01'",
                "'1969-12-31'",
            ],
        ),
        col(
            "tm",
            "time",
            Int,
            MICROTIME,
            [
                "'04:05:06.789123'",
                "NULL",
                "'00:00:00'",
                "'24:00:00'",
                "'23:59:59.999999'",
            ],
        ),
        col(
            "tm3",
            "time(3)",
            Int,
            MILLITIME,
            [
                "'04:05:06.789'",
                "NULL",
                "'00:00:00'",
                "'24:00:00'",
                "'23:59:59.999'",
            ],
        ),
        col(
            "ttz",
            "timetz",
            Text,
            ZONED_TIME,
            [
                "'04:05:06.789+02'",
                "NULL",
                "'00:00:00+15:59'",
                "'24:00:00-15:59'",
                "'12:00:00.5-03:30:15'",
            ],
        ),
        col(
            "ts",
            "timestamp",
            Int,
            MICROTS,
            [
                "'2024-01-02 03:04:05.123456'",
                "NULL",
                "'4713-01-01 00:00:00 BC'",
                "'99999-12-31 23:59:59.999999'",
                "'-infinity'",
            ],
        ),
        col(
            "ts3",
            "timestamp(3)",
            Int,
            MILLITS,
            [
                "'2024-01-02 03:04:05.123'",
                "NULL",
                "'1969-12-31 23:59:59.999'",
                "'infinity'",
                "'0044-03-15 12:00:00 BC'",
            ],
        ),
        col(
            "tstz",
            "timestamptz",
            Text,
            ZONED_TS6,
            [
                "'2024-01-02 03:04:05.123456+02'",
                "NULL",
                "'0001-01-01 00:00:00+00'",
                "'9999-12-31 23:59:59.999999+00'",
                "'infinity'",
            ],
        ),
        col(
            "tstz3",
            "timestamptz(3)",
            Text,
            ZONED_TS3,
            [
                "'2024-01-02 03:04:05.1+00'",
                "NULL",
                "'1970-01-01 00:00:00+00'",
                "'2024-12-31 23:30:00-03:30'",
                "NULL",
            ],
        ),
        col(
            "iv",
            "interval",
            Int,
            MICRODURATION,
            [
                "'1 year 2 months 3 days 04:05:06.789'",
                "NULL",
                "'-178000000 years'",
                "'178000000 years'",
                "'1 mon -1 day -0.000001 sec'",
            ],
        ),
        col(
            "iv2",
            "interval",
            Int,
            MICRODURATION,
            [
                "'0'",
                "NULL",
                "'1.000001 sec'",
                "'123456 days 23:59:59.999999'",
                "'-7 mons -0.999999 sec'",
            ],
        ),
        col(
            "b1",
            "bit(1)",
            Bool,
            "({} = B'1')::text",
            ["B'1'", "NULL", "B'0'", "B'1'", "NULL"],
        ),
        col(
            "b12",
            "bit(12)",
            Bits,
            CAST,
            [
                "B'101000000001'",
                "NULL",
                "B'000000000000'",
                "B'111111111111'",
                "B'000000000001'",
            ],
        ),
        col(
            "b70",
            "bit(70)",
            Bits,
            CAST,
            [
                "B'1000000000000000000000000000000000000000000000000000000000000000000001'",
                "NULL",
                "NULL",
                "NULL",
                "NULL",
            ],
        ),
        col(
            "vb",
            "varbit",
            Bits,
            CAST,
            ["B'1011'", "NULL", "B''", "B'0001'", "B'100000000'"],
        ),
        col(
            "vb1",
            "varbit(1)",
            Bool,
            "({} = B'1')::text",
            ["B'1'", "NULL", "B'0'", "B''", "NULL"],
        ),
    ]
}

fn array_columns() -> Vec<Col> {
    use K::*;
    vec![
        arr(
            "a_i2",
            "int2[]",
            Int,
            CAST,
            ["'{1,NULL,-32768}'", "NULL", "'{}'", "'{32767}'", "'{NULL}'"],
        ),
        arr(
            "a_i4",
            "int4[]",
            Int,
            CAST,
            [
                "'{2147483647,NULL}'",
                "NULL",
                "'{}'",
                "'{{1,2},{3,NULL}}'",
                "'[0:1]={7,8}'",
            ],
        ),
        arr(
            "a_i8",
            "int8[]",
            Int,
            CAST,
            [
                "'{-9223372036854775808,9223372036854775807}'",
                "NULL",
                "'{}'",
                "NULL",
                "NULL",
            ],
        ),
        arr(
            "a_o",
            "oid[]",
            Int,
            CAST,
            ["'{1,4294967295,NULL}'", "NULL", "NULL", "NULL", "NULL"],
        ),
        arr(
            "a_f4",
            "real[]",
            F32,
            CAST,
            [
                "'{1.5,NaN,Infinity,-Infinity,NULL}'",
                "NULL",
                "NULL",
                "NULL",
                "NULL",
            ],
        ),
        arr(
            "a_f8",
            "float8[]",
            F64,
            CAST,
            ["'{2.5,-0,1e300}'", "NULL", "NULL", "NULL", "NULL"],
        ),
        arr(
            "a_n",
            "numeric[]",
            Vsd,
            VSD,
            [
                "'{1.5,NULL,-0.001,NaN,Infinity}'",
                "NULL",
                "'{}'",
                "NULL",
                "NULL",
            ],
        ),
        arr(
            "a_n2",
            "numeric(10,2)[]",
            Dec(2),
            NUMERIC,
            ["'{12.30,NULL,NaN}'", "NULL", "NULL", "NULL", "NULL"],
        ),
        arr(
            "a_m",
            "money[]",
            Dec(2),
            "({})::numeric::text",
            ["'{1.5,NULL,-1234.56}'", "NULL", "NULL", "NULL", "NULL"],
        ),
        arr(
            "a_t",
            "text[]",
            Text,
            TEXT,
            [
                r#"'{"a","b c","NULL",NULL,"q\"uo\\te","","{x}"," sp ","x,y"}'"#,
                "NULL",
                "'{}'",
                "'{\"\"}'",
                "ARRAY[E'new\\nline', '日本']",
            ],
        ),
        arr(
            "a_vc",
            "varchar(5)[]",
            Text,
            TEXT,
            ["'{ab,NULL}'", "NULL", "NULL", "NULL", "NULL"],
        ),
        arr(
            "a_bp",
            "char(2)[]",
            Text,
            TEXT,
            ["'{a,\"b \"}'", "NULL", "NULL", "NULL", "NULL"],
        ),
        arr(
            "a_ch",
            "\"char\"[]",
            Text,
            TEXT,
            ["'{a,NULL}'", "NULL", "NULL", "NULL", "NULL"],
        ),
        arr(
            "a_nm",
            "name[]",
            Text,
            TEXT,
            ["'{a,NULL}'", "NULL", "NULL", "NULL", "NULL"],
        ),
        arr(
            "a_b",
            "bool[]",
            Bool,
            CAST,
            ["'{t,f,NULL}'", "NULL", "NULL", "NULL", "NULL"],
        ),
        arr(
            "a_by",
            "bytea[]",
            Hex,
            "encode({}, 'hex')",
            [
                "ARRAY['\\xdead'::bytea, NULL, '']",
                "NULL",
                "NULL",
                "NULL",
                "NULL",
            ],
        ),
        arr(
            "a_u",
            "uuid[]",
            Text,
            TEXT,
            [
                "'{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11,NULL}'",
                "NULL",
                "NULL",
                "NULL",
                "NULL",
            ],
        ),
        arr(
            "a_j",
            "json[]",
            Text,
            TEXT,
            [
                "ARRAY['{\"b\":1}'::json, NULL]",
                "NULL",
                "NULL",
                "NULL",
                "NULL",
            ],
        ),
        arr(
            "a_jb",
            "jsonb[]",
            Text,
            TEXT,
            [
                r#"ARRAY['{"a": [1, "x\"y"]}'::jsonb, NULL]"#,
                "NULL",
                "NULL",
                "NULL",
                "NULL",
            ],
        ),
        arr(
            "a_x",
            "xml[]",
            Text,
            TEXT,
            ["ARRAY['<a/>'::xml, NULL]", "NULL", "NULL", "NULL", "NULL"],
        ),
        arr(
            "a_d",
            "date[]",
            Int,
            DATE,
            [
                "'{2024-01-02,NULL,infinity,\"0044-03-15 BC\"}'",
                "NULL",
                "NULL",
                "NULL",
                "NULL",
            ],
        ),
        arr(
            "a_tm",
            "time[]",
            Int,
            MICROTIME,
            ["'{04:05:06.789123,NULL}'", "NULL", "NULL", "NULL", "NULL"],
        ),
        arr(
            "a_tm3",
            "time(3)[]",
            Int,
            MILLITIME,
            ["'{04:05:06.789}'", "NULL", "NULL", "NULL", "NULL"],
        ),
        arr(
            "a_ttz",
            "timetz[]",
            Text,
            ZONED_TIME,
            ["'{04:05:06+02,NULL}'", "NULL", "NULL", "NULL", "NULL"],
        ),
        arr(
            "a_ts",
            "timestamp[]",
            Int,
            MICROTS,
            [
                "'{\"2024-01-02 03:04:05.5\",NULL,infinity}'",
                "NULL",
                "NULL",
                "NULL",
                "NULL",
            ],
        ),
        arr(
            "a_tstz",
            "timestamptz[]",
            Text,
            ZONED_TS6,
            [
                "'{\"2024-01-02 03:04:05+02\",NULL}'",
                "NULL",
                "NULL",
                "NULL",
                "NULL",
            ],
        ),
        arr(
            "a_iv",
            "interval[]",
            Int,
            MICRODURATION,
            [
                "'{\"1 day\",NULL,\"-1 mon 2.5 sec\"}'",
                "NULL",
                "NULL",
                "NULL",
                "NULL",
            ],
        ),
        arr(
            "a_pt",
            "point[]",
            Point,
            POINT,
            ["'{\"(1,2)\",NULL}'", "NULL", "NULL", "NULL", "NULL"],
        ),
        arr(
            "a_bx",
            "box[]",
            Text,
            TEXT,
            [
                "'{(1,1),(0,0);(2,2),(1,1)}'",
                "NULL",
                "NULL",
                "NULL",
                "NULL",
            ],
        ),
        arr(
            "a_ine",
            "inet[]",
            Text,
            TEXT,
            ["'{192.168.0.1,NULL}'", "NULL", "NULL", "NULL", "NULL"],
        ),
        arr(
            "a_i4r",
            "int4range[]",
            Text,
            TEXT,
            ["'{\"[1,2)\",NULL,empty}'", "NULL", "NULL", "NULL", "NULL"],
        ),
        arr(
            "a_b1",
            "bit(1)[]",
            Bool,
            "({} = B'1')::text",
            ["'{1,0,NULL}'", "NULL", "NULL", "NULL", "NULL"],
        ),
        arr(
            "a_vb",
            "varbit[]",
            Bits,
            CAST,
            ["'{101,NULL,\"\"}'", "NULL", "NULL", "NULL", "NULL"],
        ),
        arr(
            "a_tsv",
            "tsvector[]",
            Text,
            TEXT,
            [
                "ARRAY['a b'::tsvector, NULL]",
                "NULL",
                "NULL",
                "NULL",
                "NULL",
            ],
        ),
    ]
}

fn catalog_columns() -> Vec<Col> {
    use K::*;
    vec![
        col(
            "e",
            "mood",
            Text,
            TEXT,
            ["'happy ☺'", "NULL", "'sad'", "'a,b'", "'ok'"],
        ),
        col(
            "dpos",
            "posint",
            Int,
            CAST,
            ["7", "NULL", "1", "2147483647", "NULL"],
        ),
        col(
            "dtext",
            "short_text",
            Text,
            TEXT,
            ["'short'", "NULL", "''", "NULL", "NULL"],
        ),
        col(
            "dnum",
            "money_num",
            Dec(2),
            NUMERIC,
            ["12.34", "NULL", "-999999.99", "999999.99", "'NaN'"],
        ),
        col(
            "comp",
            "pair",
            Text,
            TEXT,
            [
                "ROW(1, 'x,\"y\"')",
                "NULL",
                "ROW(NULL, NULL)",
                "ROW(0, '')",
                "NULL",
            ],
        ),
        col(
            "fr",
            "floatrange",
            Text,
            TEXT,
            ["'[1.5,2.5)'", "NULL", "'empty'", "NULL", "NULL"],
        ),
        col(
            "hs",
            "hstore",
            Json,
            "hstore_to_json({})::text",
            [
                r#"'"a"=>"1", "b"=>NULL'"#,
                "NULL",
                "''",
                r#"'"k\"q"=>"v\\w", "é"=>""'"#,
                "NULL",
            ],
        ),
        col(
            "ct",
            "citext",
            Text,
            TEXT,
            ["'MiXeD'", "NULL", "''", "NULL", "NULL"],
        ),
        col(
            "lt",
            "ltree",
            Text,
            TEXT,
            ["'top.science.astronomy'", "NULL", "''", "NULL", "NULL"],
        ),
        arr(
            "a_e",
            "mood[]",
            Text,
            TEXT,
            [
                "'{sad,NULL,\"happy ☺\",\"a,b\"}'",
                "NULL",
                "'{}'",
                "NULL",
                "NULL",
            ],
        ),
        arr(
            "a_dpos",
            "posint[]",
            Int,
            CAST,
            ["'{1,NULL}'", "NULL", "NULL", "NULL", "NULL"],
        ),
        arr(
            "a_hs",
            "hstore[]",
            Json,
            "hstore_to_json({})::text",
            [
                "ARRAY['a=>1'::hstore, NULL]",
                "NULL",
                "NULL",
                "NULL",
                "NULL",
            ],
        ),
        arr(
            "a_ct",
            "citext[]",
            Text,
            TEXT,
            ["'{AbC,NULL}'", "NULL", "NULL", "NULL", "NULL"],
        ),
        arr(
            "a_lt",
            "ltree[]",
            Text,
            TEXT,
            ["ARRAY['a.b'::ltree, NULL]", "NULL", "NULL", "NULL", "NULL"],
        ),
    ]
}

const CATALOG_SETUP: &str =
    "CREATE EXTENSION hstore; CREATE EXTENSION citext; CREATE EXTENSION ltree;
     CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy ☺', 'a,b');
     CREATE DOMAIN posint AS int CHECK (VALUE > 0);
     CREATE DOMAIN short_text AS varchar(10);
     CREATE DOMAIN money_num AS numeric(8,2);
     CREATE TYPE pair AS (a int, b text);
     CREATE TYPE floatrange AS RANGE (subtype = float8);";

fn create_table(table: &str, cols: &[Col]) -> String {
    let decls: Vec<String> = cols
        .iter()
        .map(|c| format!("{} {}", c.name, c.decl))
        .collect();
    format!(
        "CREATE TABLE {table} (id int PRIMARY KEY, {});",
        decls.join(", ")
    )
}

/// The five rows of `cols`, with ids `first_id..first_id + 5`.
fn inserts(table: &str, cols: &[Col], first_id: usize) -> String {
    let names: Vec<&str> = cols.iter().map(|c| c.name).collect();
    (0..5)
        .map(|row| {
            let values: Vec<&str> = cols.iter().map(|c| c.values[row]).collect();
            format!(
                "INSERT INTO {table} (id, {}) VALUES ({}, {});\n",
                names.join(", "),
                row + first_id,
                values.join(", ")
            )
        })
        .collect()
}

/// The SQL expression giving the expected text of `c` (a JSON array of
/// element texts for arrays; multi-dimensional arrays unnest row-major).
fn expected_sql(c: &Col) -> String {
    if c.array {
        let element = c.expr.replace("{0}", "e").replace("{}", "e");
        format!(
            "CASE WHEN {n} IS NULL THEN NULL ELSE COALESCE((SELECT json_agg(({element})::text ORDER BY i) \
             FROM unnest({n}) WITH ORDINALITY AS u(e, i)), '[]')::text END",
            n = c.name
        )
    } else {
        c.expr.replace("{0}", c.name).replace("{}", c.name)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decimal_text(unscaled: BigInt, scale: u32) -> String {
    let negative = unscaled < BigInt::from(0);
    let digits = unscaled.magnitude().to_string();
    let scale = scale as usize;
    let digits = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = digits.split_at(digits.len() - scale);
    let sign = if negative { "-" } else { "" };
    if scale == 0 {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    }
}

/// The Avro value of one column (or array element) as comparable text.
fn actual(kind: K, v: &Value) -> Option<String> {
    let v = unwrap_union(v);
    if *v == Value::Null {
        return None;
    }
    Some(match (kind, v) {
        (K::Text, Value::String(s)) => s.clone(),
        (K::Int, Value::Int(i) | Value::Date(i) | Value::TimeMillis(i)) => i.to_string(),
        (K::Int, Value::Long(l) | Value::TimestampMillis(l)) => l.to_string(),
        (K::Bool, Value::Boolean(b)) => b.to_string(),
        (K::F32, Value::Float(f)) => format!("{f:?}"),
        (K::F64, Value::Double(f)) => format!("{f:?}"),
        (K::Dec(scale), Value::Decimal(d)) => {
            let bytes: Vec<u8> = d.try_into().expect("decimal bytes");
            decimal_text(BigInt::from_signed_bytes_be(&bytes), scale)
        }
        (K::Vsd, Value::Record(fields)) => {
            let (Value::Int(scale), Value::Bytes(value)) = (&fields[0].1, &fields[1].1) else {
                panic!("VariableScaleDecimal {fields:?}")
            };
            decimal_text(BigInt::from_signed_bytes_be(value), *scale as u32)
        }
        (K::Hex | K::Bits, Value::Bytes(b)) => hex(b),
        (K::Point, Value::Record(fields)) => {
            let (Value::Double(x), Value::Double(y)) = (&fields[0].1, &fields[1].1) else {
                panic!("Point {fields:?}")
            };
            let mut wkb = vec![1, 1, 0, 0, 0];
            wkb.extend_from_slice(&x.to_le_bytes());
            wkb.extend_from_slice(&y.to_le_bytes());
            assert_eq!(unwrap_union(&fields[2].1), &Value::Bytes(wkb), "point wkb");
            assert_eq!(unwrap_union(&fields[3].1), &Value::Null, "point srid");
            format!("{x:?},{y:?}")
        }
        (K::Json, Value::String(s)) => json_text(s),
        (K::Map, Value::Map(m)) => {
            let sorted: BTreeMap<&String, Option<&String>> = m
                .iter()
                .map(|(k, v)| match unwrap_union(v) {
                    Value::Null => (k, None),
                    Value::String(s) => (k, Some(s)),
                    other => panic!("map value {other:?}"),
                })
                .collect();
            serde_json::to_string(&sorted).unwrap()
        }
        (kind, v) => panic!("{kind:?} column holds {v:?}"),
    })
}

fn json_text(s: &str) -> String {
    serde_json::from_str::<serde_json::Value>(s)
        .expect("valid JSON")
        .to_string()
}

/// Puts what PostgreSQL returned into the form [`actual`] produces.
fn normalize(kind: K, pg: &str) -> String {
    match kind {
        K::F32 => format!("{:?}", pg.parse::<f32>().expect("float4 text")),
        K::F64 => format!("{:?}", pg.parse::<f64>().expect("float8 text")),
        K::Bits => {
            // Debezium's Bits: the bit string as a number, little-endian,
            // no high zero bytes.
            let n = if pg.is_empty() {
                BigUint::from(0u8)
            } else {
                BigUint::parse_bytes(pg.as_bytes(), 2).expect("bit string")
            };
            if n == BigUint::from(0u8) {
                String::new()
            } else {
                hex(&n.to_bytes_le())
            }
        }
        K::Point => {
            let (x, y) = pg.split_once(',').expect("x,y");
            let f = |s: &str| format!("{:?}", s.parse::<f64>().expect("float8 text"));
            format!("{},{}", f(x), f(y))
        }
        K::Json => json_text(pg),
        K::Map => {
            let sorted: BTreeMap<String, Option<String>> =
                serde_json::from_str(pg).expect("hstore_to_json");
            serde_json::to_string(&sorted).unwrap()
        }
        _ => pg.to_string(),
    }
}

fn compare(
    table: &str,
    cols: &[Col],
    expected: &BTreeMap<i32, Vec<Option<String>>>,
    rows: &BTreeMap<i32, BTreeMap<String, Value>>,
) {
    let mut problems = Vec::new();
    for (id, want) in expected {
        let row = rows
            .get(id)
            .unwrap_or_else(|| panic!("{table}: no event for id {id}"));
        for (c, want) in cols.iter().zip(want) {
            let got = row
                .get(c.name)
                .unwrap_or_else(|| panic!("{table}: event has no field {}", c.name));
            let (got, want) = if c.array {
                let got = match unwrap_union(got) {
                    Value::Null => None,
                    Value::Array(items) => Some(serde_json::Value::Array(
                        items
                            .iter()
                            .map(|i| match actual(c.kind, i) {
                                Some(s) => serde_json::Value::String(s),
                                None => serde_json::Value::Null,
                            })
                            .collect(),
                    )),
                    other => panic!("{table}.{}: not an array: {other:?}", c.name),
                };
                let want = want.as_ref().map(|w| {
                    let parsed: serde_json::Value = serde_json::from_str(w).expect("json_agg");
                    serde_json::Value::Array(
                        parsed
                            .as_array()
                            .expect("array")
                            .iter()
                            .map(|e| match e {
                                serde_json::Value::String(s) => {
                                    serde_json::Value::String(normalize(c.kind, s))
                                }
                                other => other.clone(),
                            })
                            .collect(),
                    )
                });
                (got.map(|g| g.to_string()), want.map(|w| w.to_string()))
            } else {
                (
                    actual(c.kind, got),
                    want.as_deref().map(|w| normalize(c.kind, w)),
                )
            };
            if got != want {
                problems.push(format!(
                    "{table} id {id} column {} ({}): siphon {got:?}, PostgreSQL {want:?}",
                    c.name, c.decl
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// What PostgreSQL says each column of each row should read as.
async fn expected_rows(
    client: &tokio_postgres::Client,
    table: &str,
    cols: &[Col],
) -> BTreeMap<i32, Vec<Option<String>>> {
    let exprs: Vec<String> = cols.iter().map(expected_sql).collect();
    let sql = format!("SELECT id, {} FROM {table} ORDER BY id", exprs.join(", "));
    let rows = client
        .query(&sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.iter()
        .map(|r| {
            let values = (1..=cols.len())
                .map(|i| r.get::<_, Option<String>>(i))
                .collect();
            (r.get::<_, i32>(0), values)
        })
        .collect()
}

/// The registered schema of field `name` in the value's `after` record.
fn field_schema(envelope: &serde_json::Value, name: &str) -> serde_json::Value {
    let value = &envelope["fields"][0]["type"][1];
    value["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no field {name}"))["type"][1]
        .clone()
}

// ---------------------------------------------------------------------
// Phases: the same five rows reach consumers three ways — read by the
// initial snapshot (ids 1–5, there before siphon started), streamed (ids
// 11–15, inserted while it streams), and read again by an incremental
// snapshot in watermark windows (all ten) — and each way must give
// PostgreSQL's own values. The database's session defaults are set to
// ones that change how values print (DMY dates, verbose intervals, escaped
// bytea, a non-UTC time zone): siphon must not depend on them.

const MESSY_DEFAULTS: &str = "SET DateStyle = 'SQL, DMY'; SET IntervalStyle = 'postgres_verbose';
    SET bytea_output = 'escape'; SET extra_float_digits = 0; SET TimeZone = 'Asia/Kolkata'";

/// `ALTER DATABASE` statements giving `db` [`MESSY_DEFAULTS`].
fn messy_defaults(db: &str) -> String {
    MESSY_DEFAULTS
        .split(';')
        .map(|s| format!("ALTER DATABASE {db} {};", s.trim()))
        .collect()
}

/// A signal table and the signal that snapshots `tables` incrementally.
const SIGNALS: &str =
    "CREATE TABLE siphon_signals (id text PRIMARY KEY, type text NOT NULL, data text);";
fn execute_snapshot(tables: &[&str]) -> String {
    let list: Vec<String> = tables.iter().map(|t| format!("\"{t}\"")).collect();
    format!(
        "INSERT INTO siphon_signals VALUES ('all', 'execute-snapshot', '{{\"data-collections\": [{}]}}');",
        list.join(", ")
    )
}

/// Rows of each phase by id, told apart by `op` and `source.snapshot`.
type Rows = BTreeMap<i32, BTreeMap<String, Value>>;
fn by_phase(events: &[support::events::Event]) -> BTreeMap<&'static str, Rows> {
    let mut phases: BTreeMap<&'static str, Rows> = BTreeMap::new();
    for e in events {
        let phase = match (e.op().as_deref(), e.source("snapshot")) {
            (Some("c"), _) => "stream",
            (Some("r"), Some(Value::String(s) | Value::Enum(_, s))) if s == "incremental" => {
                "incremental snapshot"
            }
            (Some("r"), _) => "initial snapshot",
            (op, _) => panic!("unexpected op {op:?}"),
        };
        let row = e.row("after").expect("after");
        let Value::Int(id) = row["id"] else {
            panic!("id {:?}", row["id"])
        };
        let previous = phases.entry(phase).or_default().insert(id, row);
        assert!(previous.is_none(), "id {id} twice in the {phase}");
    }
    phases
}

/// Compares every phase's rows with PostgreSQL's expected values.
fn compare_phases(
    table: &str,
    cols: &[Col],
    expected: &BTreeMap<i32, Vec<Option<String>>>,
    events: &[support::events::Event],
) {
    let phases = by_phase(events);
    for (phase, ids) in [
        ("initial snapshot", 1..=5),
        ("stream", 11..=15),
        ("incremental snapshot", 1..=15),
    ] {
        let rows = phases
            .get(phase)
            .unwrap_or_else(|| panic!("{table}: nothing in the {phase}"));
        let want: BTreeMap<i32, Vec<Option<String>>> = expected
            .iter()
            .filter(|(id, _)| ids.contains(*id))
            .map(|(id, v)| (*id, v.clone()))
            .collect();
        assert_eq!(
            rows.keys().copied().collect::<Vec<_>>(),
            want.keys().copied().collect::<Vec<_>>(),
            "{table}: ids in the {phase}"
        );
        compare(&format!("{table} ({phase})"), cols, &want, rows);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_arrives_as_postgres_says() {
    let bed = Bed::start("types").await;
    let tables: [(&str, Vec<Col>); 3] = [
        ("scalars", scalar_columns()),
        ("arrays", array_columns()),
        ("catalog", catalog_columns()),
    ];
    let mut ddl = String::from(CATALOG_SETUP);
    ddl.push_str(SIGNALS);
    ddl.push_str(&messy_defaults("types"));
    for (table, cols) in &tables {
        ddl.push_str(&create_table(table, cols));
        ddl.push_str(&inserts(table, cols, 1));
    }
    bed.pg.psql("types", &ddl);
    let file = bed.connector(
        "types",
        "types",
        &["public.scalars", "public.arrays", "public.catalog"],
        "",
    );
    let body = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        format!("{body}\n[snapshot]\nsignal_table = \"public.siphon_signals\"\n"),
    )
    .unwrap();
    let siphon = bed.siphon(&file);
    bed.wait_slot_active("types", "siphon_types").await;
    let mut dml = String::new();
    for (table, cols) in &tables {
        dml.push_str(&inserts(table, cols, 11));
    }
    dml.push_str(&execute_snapshot(&[
        "public.scalars",
        "public.arrays",
        "public.catalog",
    ]));
    bed.pg.psql("types", &dml);

    let client = bed.pg.client("types").await;
    client
        .batch_execute(
            "SET DateStyle = ISO; SET TimeZone = UTC; SET IntervalStyle = iso_8601;
             SET extra_float_digits = 3; SET bytea_output = hex",
        )
        .await
        .expect("session settings");
    for (table, cols) in &tables {
        let events = bed
            .wait_events(&format!("types.public.{table}"), 20, &siphon)
            .await;
        let expected = expected_rows(&client, table, cols).await;
        compare_phases(table, cols, &expected, &events);

        // The catalog facts reached the registered schema.
        if *table == "catalog" {
            let id = events[0].value_schema_id.expect("value schema id");
            let schema: serde_json::Value =
                serde_json::from_str(&bed.client.schema_by_id(id).await.expect("schema"))
                    .expect("schema JSON");
            assert_eq!(
                field_schema(&schema, "e"),
                serde_json::json!({"type": "string", "connect.version": 1,
                    "connect.parameters": {"allowed": "sad,ok,happy ☺,a,b"},
                    "connect.name": "io.debezium.data.Enum"})
            );
            assert_eq!(field_schema(&schema, "dnum")["precision"], 8);
            assert_eq!(field_schema(&schema, "dpos"), serde_json::json!("int"));
            assert_eq!(
                field_schema(&schema, "hs")["connect.name"],
                "io.debezium.data.Json"
            );
            assert_eq!(
                field_schema(&schema, "lt")["connect.name"],
                "io.debezium.data.Ltree"
            );
            assert_eq!(
                field_schema(&schema, "a_e")["items"][1]["connect.name"],
                "io.debezium.data.Enum"
            );
        }
    }
    // Every type has a mapping: no text-fallback warning.
    assert!(
        !siphon.log().contains("unknown to siphon"),
        "unexpected fallback warning:\n{}",
        siphon.log()
    );
}

// ---------------------------------------------------------------------
// Handling modes: the same rows read by three connectors whose `[types]`
// differ; each one's values are compared with PostgreSQL's under the
// representation its modes promise (docs/types.md, "Handling modes").

/// Connector A: the numeric/temporal/string alternatives.
const MODES_A: &str = r#"
[types]
decimal_handling_mode = "double"
time_precision_mode = "connect"
binary_handling_mode = "base64"
interval_handling_mode = "string"
hstore_handling_mode = "map"
"#;
/// Connector B: the remaining non-default modes.
const MODES_B: &str = r#"
[types]
decimal_handling_mode = "string"
time_precision_mode = "adaptive_time_microseconds"
binary_handling_mode = "hex"
"#;
/// Connector C: URL-safe Base64, everything else at its default.
const MODES_C: &str = r#"
[types]
binary_handling_mode = "base64-url-safe"
"#;

/// `numeric` as the plain decimal, NaN/infinities as Debezium's names
/// (what Debezium 3.6.3 writes with `decimal.handling.mode=string`).
const DEC_STRING: &str = "CASE WHEN {0} = 'NaN' THEN 'NAN' WHEN {0} = 'Infinity' THEN 'POSITIVE_INFINITY' \
     WHEN {0} = '-Infinity' THEN 'NEGATIVE_INFINITY' ELSE ({0})::text END";
const FLOAT8: &str = "({})::float8::text";
const MONEY_FLOAT8: &str = "({})::numeric::float8::text";
const MONEY_TEXT: &str = "({})::numeric::text";
/// Connect `Time`: milliseconds of the day, truncated.
const CONNECT_TIME: &str = "floor(extract(epoch FROM {}) * 1000)::bigint::text";
/// Connect `Timestamp`: milliseconds since the epoch, floored; Debezium's
/// infinity numbers.
const CONNECT_TS: &str = "CASE WHEN {0} = 'infinity' THEN '9223372036825200' WHEN {0} = '-infinity' THEN '-9223372036832400' \
     ELSE floor(extract(epoch FROM {0}) * 1000)::bigint::text END";
const BASE64: &str = "replace(encode({}, 'base64'), E'\\n', '')";
const BASE64_URL: &str = "translate(replace(encode({}, 'base64'), E'\\n', ''), '+/', '-_')";
const HEX: &str = "encode({}, 'hex')";
/// Debezium's `Interval.toIsoString`: every component, seconds without
/// trailing zeros.
const ISO_INTERVAL: &str = "'P' || extract(year FROM {0})::text || 'Y' || extract(month FROM {0})::text || 'M' \
     || extract(day FROM {0})::text || 'DT' || extract(hour FROM {0})::text || 'H' \
     || extract(minute FROM {0})::text || 'M' || trim_scale(extract(second FROM {0}))::text || 'S'";
const HSTORE_JSON: &str = "hstore_to_json({})::text";

/// One column of the modes table and how connectors A, B and C each
/// represent it.
struct ModeCol {
    name: &'static str,
    decl: &'static str,
    array: bool,
    values: [&'static str; 5],
    views: [(K, &'static str); 3],
}

fn mode_specs() -> Vec<ModeCol> {
    use K::*;
    let scalar = |name, decl, values, views| ModeCol {
        name,
        decl,
        array: false,
        values,
        views,
    };
    let array = |name, decl, values, views| ModeCol {
        name,
        decl,
        array: true,
        values,
        views,
    };
    vec![
        scalar(
            "n",
            "numeric",
            ["12.3400", "NULL", "'NaN'", "0.0000001", "'-Infinity'"],
            [(F64, FLOAT8), (Text, DEC_STRING), (Vsd, VSD)],
        ),
        scalar(
            "nb",
            "numeric",
            [
                "0.0000000",
                "NULL",
                "'Infinity'",
                "-0.00000012",
                "12345678901234567890123456789012345678901234567890.5",
            ],
            [(F64, FLOAT8), (Text, DEC_STRING), (Vsd, VSD)],
        ),
        scalar(
            "n2",
            "numeric(10,2)",
            ["12.30", "NULL", "-99999999.99", "0", "'NaN'"],
            [(F64, FLOAT8), (Text, DEC_STRING), (Dec(2), NUMERIC)],
        ),
        scalar(
            "m",
            "money",
            [
                "1234.56",
                "NULL",
                "'-92233720368547758.08'",
                "'92233720368547758.07'",
                "0",
            ],
            [
                (F64, MONEY_FLOAT8),
                (Text, MONEY_TEXT),
                (Dec(2), MONEY_TEXT),
            ],
        ),
        array(
            "a_n",
            "numeric[]",
            [
                "'{1.5,NULL,NaN}'",
                "NULL",
                "'{}'",
                "'{0.0000001,-Infinity}'",
                "'{{1,2},{3,NULL}}'",
            ],
            [(F64, FLOAT8), (Text, DEC_STRING), (Vsd, VSD)],
        ),
        scalar(
            "d",
            "date",
            [
                "'2024-01-02'",
                "NULL",
                "'infinity'",
                "'-infinity'",
                "'0044-03-15 BC'",
            ],
            [(Int, DATE), (Int, DATE), (Int, DATE)],
        ),
        scalar(
            "t",
            "time",
            [
                "'04:05:06.789123'",
                "NULL",
                "'00:00:00'",
                "'23:59:59.999999'",
                "'24:00:00'",
            ],
            [(Int, CONNECT_TIME), (Int, MICROTIME), (Int, MICROTIME)],
        ),
        scalar(
            "t3",
            "time(3)",
            [
                "'04:05:06.789'",
                "NULL",
                "'00:00:00'",
                "'23:59:59.999'",
                "'12:00:00.5'",
            ],
            [(Int, CONNECT_TIME), (Int, MICROTIME), (Int, MILLITIME)],
        ),
        scalar(
            "ts",
            "timestamp",
            [
                "'2024-01-02 03:04:05.123456'",
                "NULL",
                "'infinity'",
                "'-infinity'",
                "'0044-03-15 12:00:00.999999 BC'",
            ],
            [(Int, CONNECT_TS), (Int, MICROTS), (Int, MICROTS)],
        ),
        scalar(
            "ts3",
            "timestamp(3)",
            [
                "'2024-01-02 03:04:05.123'",
                "NULL",
                "'1969-12-31 23:59:59.999'",
                "'infinity'",
                "'2000-01-01'",
            ],
            [(Int, CONNECT_TS), (Int, MILLITS), (Int, MILLITS)],
        ),
        array(
            "a_d",
            "date[]",
            [
                "'{2024-01-02,NULL}'",
                "NULL",
                "'{}'",
                "'{infinity}'",
                "'{1970-01-01}'",
            ],
            [(Int, DATE), (Int, DATE), (Int, DATE)],
        ),
        array(
            "a_t",
            "time[]",
            [
                "'{04:05:06.789123,NULL}'",
                "NULL",
                "'{}'",
                "'{23:59:59.999999}'",
                "'{00:00:00}'",
            ],
            [(Int, CONNECT_TIME), (Int, MICROTIME), (Int, MICROTIME)],
        ),
        array(
            "a_ts",
            "timestamp[]",
            [
                r#"'{"2024-01-02 03:04:05.5",NULL}'"#,
                "NULL",
                "'{}'",
                "'{infinity,-infinity}'",
                r#"'{"1969-12-31 23:59:59.999999"}'"#,
            ],
            [(Int, CONNECT_TS), (Int, MICROTS), (Int, MICROTS)],
        ),
        scalar(
            "by",
            "bytea",
            [
                r"'\xdead'",
                "NULL",
                r"'\x'",
                r"'\xfbff00'",
                "decode(repeat('fbef', 1500), 'hex')",
            ],
            [(Text, BASE64), (Text, HEX), (Text, BASE64_URL)],
        ),
        array(
            "a_by",
            "bytea[]",
            [
                r#"'{"\\xdead",NULL}'"#,
                "NULL",
                "'{}'",
                r"ARRAY['\xfbff'::bytea]",
                r"ARRAY['\x'::bytea, NULL, '\x00'::bytea]",
            ],
            [(Text, BASE64), (Text, HEX), (Text, BASE64_URL)],
        ),
        scalar(
            "iv",
            "interval",
            [
                "'1 year 2 months 3 days 04:05:06.78'",
                "NULL",
                "'0'",
                "'-1 year -2 months 3 days -04:05:06.5'",
                "'-0.000001 sec'",
            ],
            [
                (Text, ISO_INTERVAL),
                (Int, MICRODURATION),
                (Int, MICRODURATION),
            ],
        ),
        array(
            "a_iv",
            "interval[]",
            [
                r#"'{"1 day",NULL}'"#,
                "NULL",
                "'{}'",
                "ARRAY['14 months'::interval]",
                "ARRAY['-1 hour'::interval]",
            ],
            [
                (Text, ISO_INTERVAL),
                (Int, MICRODURATION),
                (Int, MICRODURATION),
            ],
        ),
        scalar(
            "hs",
            "hstore",
            [
                r#"'"a"=>"1", "b"=>NULL'"#,
                "NULL",
                "''",
                r#"'"q\"uo"=>"x\\y", "é"=>""'"#,
                r#"'""=>"1"'"#,
            ],
            [(Map, HSTORE_JSON), (Json, HSTORE_JSON), (Json, HSTORE_JSON)],
        ),
    ]
}

/// The modes table's columns as connector `view` (0 = A, 1 = B, 2 = C)
/// represents them.
fn mode_columns(view: usize) -> Vec<Col> {
    mode_specs()
        .into_iter()
        .map(|m| Col {
            name: m.name,
            decl: m.decl,
            kind: m.views[view].0,
            array: m.array,
            expr: m.views[view].1,
            values: m.values,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handling_modes_arrive_as_postgres_says() {
    let bed = Bed::start("modes").await;
    let base = mode_columns(0);
    bed.pg.psql(
        "modes",
        &format!(
            "CREATE EXTENSION hstore; {SIGNALS} {} {} {}",
            messy_defaults("modes"),
            create_table("modes", &base),
            inserts("modes", &base, 1)
        ),
    );
    let connectors = [
        ("modes_a", MODES_A),
        ("modes_b", MODES_B),
        ("modes_c", MODES_C),
    ];
    for (name, types) in connectors {
        let file = bed.connector(name, "modes", &["public.modes"], types);
        let body = std::fs::read_to_string(&file).unwrap();
        std::fs::write(
            &file,
            format!("{body}\n[snapshot]\nsignal_table = \"public.siphon_signals\"\n"),
        )
        .unwrap();
    }
    // One process runs the three connector files of the bed's directory.
    let siphon = bed.siphon(bed.dir.path());
    for (name, _) in connectors {
        bed.wait_slot_active("modes", &format!("siphon_{name}"))
            .await;
    }
    // One signal row reaches all three connectors (the same table).
    bed.pg.psql(
        "modes",
        &format!(
            "{} {}",
            inserts("modes", &base, 11),
            execute_snapshot(&["public.modes"])
        ),
    );

    let client = bed.pg.client("modes").await;
    client
        .batch_execute(
            "SET DateStyle = ISO; SET TimeZone = UTC; SET IntervalStyle = iso_8601;
             SET extra_float_digits = 3; SET bytea_output = hex",
        )
        .await
        .expect("session settings");
    for (view, (name, _)) in connectors.iter().enumerate() {
        let cols = mode_columns(view);
        let topic = format!("{name}.public.modes");
        let events = bed.wait_events(&topic, 20, &siphon).await;
        let expected = expected_rows(&client, "modes", &cols).await;
        compare_phases(&topic, &cols, &expected, &events);

        let id = events[0].value_schema_id.expect("value schema id");
        let schema: serde_json::Value =
            serde_json::from_str(&bed.client.schema_by_id(id).await.expect("schema"))
                .expect("schema JSON");
        let connect = |f: &str| field_schema(&schema, f)["connect.name"].clone();
        match view {
            0 => {
                assert_eq!(field_schema(&schema, "n"), "double");
                assert_eq!(field_schema(&schema, "m"), "double");
                assert_eq!(connect("d"), "org.apache.kafka.connect.data.Date");
                assert_eq!(field_schema(&schema, "d")["logicalType"], "date");
                assert_eq!(connect("t"), "org.apache.kafka.connect.data.Time");
                assert_eq!(field_schema(&schema, "t")["logicalType"], "time-millis");
                assert_eq!(connect("ts"), "org.apache.kafka.connect.data.Timestamp");
                assert_eq!(
                    field_schema(&schema, "ts")["logicalType"],
                    "timestamp-millis"
                );
                assert_eq!(field_schema(&schema, "by"), "string");
                assert_eq!(connect("iv"), "io.debezium.time.Interval");
                assert_eq!(
                    field_schema(&schema, "hs"),
                    serde_json::json!({"type": "map", "values": ["null", "string"]})
                );
            }
            1 => {
                assert_eq!(field_schema(&schema, "n"), "string");
                assert_eq!(connect("t3"), "io.debezium.time.MicroTime");
                assert_eq!(field_schema(&schema, "by"), "string");
                assert_eq!(connect("iv"), "io.debezium.time.MicroDuration");
            }
            _ => {
                assert_eq!(connect("n"), "io.debezium.data.VariableScaleDecimal");
                assert_eq!(connect("t3"), "io.debezium.time.Time");
            }
        }
    }
}

// ---------------------------------------------------------------------
// Unchanged TOAST values: an update that does not touch a value stored out
// of line (`SET STORAGE EXTERNAL`, > 2 kB) makes pgoutput send 'u' for it.

const TOAST_SETUP: &str = "
    CREATE TABLE toasty (id int PRIMARY KEY, body text NOT NULL, doc jsonb, blob bytea,
        tags text[], n int NOT NULL);
    ALTER TABLE toasty ALTER COLUMN body SET STORAGE EXTERNAL, ALTER COLUMN doc SET STORAGE EXTERNAL,
        ALTER COLUMN blob SET STORAGE EXTERNAL, ALTER COLUMN tags SET STORAGE EXTERNAL;
    CREATE TABLE toasty_full (LIKE toasty INCLUDING ALL);
    ALTER TABLE toasty_full REPLICA IDENTITY FULL;";

const TOAST_ROW: &str = "(1, repeat('body ', 1000), jsonb_build_object('k', repeat('v', 3000)),
     decode(repeat('00ff', 2000), 'hex'), ARRAY[repeat('t', 3000), NULL], 1)";

/// The `unavailable_columns` list of an event (None when null).
fn unavailable(e: &support::events::Event) -> Option<Vec<String>> {
    let v = support::events::field(e.value.as_ref()?, "unavailable_columns")?;
    match unwrap_union(v) {
        Value::Null => None,
        Value::Array(items) => Some(
            items
                .iter()
                .map(|i| match i {
                    Value::String(s) => s.clone(),
                    other => panic!("{other:?}"),
                })
                .collect(),
        ),
        other => panic!("unavailable_columns {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_toast_is_null_and_listed_or_the_placeholder() {
    let bed = Bed::start("toast").await;
    bed.pg.psql("toast", TOAST_SETUP);
    let tables = ["public.toasty", "public.toasty_full"];
    bed.connector("toast_null", "toast", &tables, "");
    bed.connector(
        "toast_ph",
        "toast",
        &tables,
        "\n[types]\nunchanged_toast = \"placeholder\"\n",
    );
    let siphon = bed.siphon(bed.dir.path());
    for slot in ["siphon_toast_null", "siphon_toast_ph"] {
        bed.wait_slot_active("toast", slot).await;
    }
    bed.pg.psql(
        "toast",
        &format!(
            "INSERT INTO toasty VALUES {TOAST_ROW}; INSERT INTO toasty_full VALUES {TOAST_ROW};
             UPDATE toasty SET n = n + 1; UPDATE toasty_full SET n = n + 1;"
        ),
    );
    let expected_body = "body ".repeat(1000);
    let expected_blob: Vec<u8> = [0u8, 0xff].repeat(2000);
    let expected_tags = Value::Array(vec![
        Value::Union(1, Box::new(Value::String("t".repeat(3000)))),
        Value::Union(0, Box::new(Value::Null)),
    ]);
    let expected_doc = json_text(&format!(r#"{{"k":"{}"}}"#, "v".repeat(3000)));

    for prefix in ["toast_null", "toast_ph"] {
        // REPLICA IDENTITY FULL: the old row carries the values; both modes
        // write them, nothing is listed as unavailable.
        let events = bed
            .wait_events(&format!("{prefix}.public.toasty_full"), 2, &siphon)
            .await;
        let update = &events[1];
        assert_eq!(update.op().as_deref(), Some("u"));
        let after = update.row("after").unwrap();
        assert_eq!(
            after["body"],
            Value::String(expected_body.clone()),
            "{prefix}"
        );
        assert_eq!(after["blob"], Value::Bytes(expected_blob.clone()));
        assert_eq!(after["tags"], expected_tags);
        let Value::String(doc) = &after["doc"] else {
            panic!("{:?}", after["doc"])
        };
        assert_eq!(json_text(doc), expected_doc);
        assert_eq!(after["n"], Value::Int(2));
        assert_eq!(unavailable(update), None);
    }

    // Default: null in the field, the column named in the envelope.
    let events = bed
        .wait_events("toast_null.public.toasty", 2, &siphon)
        .await;
    let insert = events[0].row("after").unwrap();
    assert_eq!(insert["body"], Value::String(expected_body.clone()));
    assert_eq!(unavailable(&events[0]), None);
    let update = &events[1];
    let after = update.row("after").unwrap();
    for column in ["body", "doc", "blob", "tags"] {
        assert_eq!(after[column], Value::Null, "{column}");
    }
    assert_eq!(after["n"], Value::Int(2));
    assert_eq!(
        unavailable(update),
        Some(vec![
            "body".to_string(),
            "doc".to_string(),
            "blob".to_string(),
            "tags".to_string()
        ])
    );
    // The NOT NULL text column is nullable in the registered Value record;
    // the NOT NULL int column is not.
    let id = update.value_schema_id.unwrap();
    let schema: serde_json::Value =
        serde_json::from_str(&bed.client.schema_by_id(id).await.unwrap()).unwrap();
    let fields = &schema["fields"][0]["type"][1]["fields"];
    assert_eq!(fields[1]["type"], serde_json::json!(["null", "string"]));
    assert_eq!(fields[5]["type"], "int");

    // Placeholder: Debezium's values, and its exact schema (no list field,
    // NOT NULL text stays a plain string).
    let events = bed.wait_events("toast_ph.public.toasty", 2, &siphon).await;
    let update = &events[1];
    let after = update.row("after").unwrap();
    let placeholder = "__debezium_unavailable_value";
    assert_eq!(after["body"], Value::String(placeholder.into()));
    assert_eq!(after["doc"], Value::String(placeholder.into()));
    assert_eq!(after["blob"], Value::Bytes(placeholder.as_bytes().to_vec()));
    assert_eq!(
        after["tags"],
        Value::Array(vec![Value::Union(
            1,
            Box::new(Value::String(placeholder.into()))
        )])
    );
    assert!(
        support::events::field(update.value.as_ref().unwrap(), "unavailable_columns").is_none()
    );
    let id = update.value_schema_id.unwrap();
    let schema: serde_json::Value =
        serde_json::from_str(&bed.client.schema_by_id(id).await.unwrap()).unwrap();
    assert_eq!(
        schema["fields"][0]["type"][1]["fields"][1]["type"],
        "string"
    );
}
