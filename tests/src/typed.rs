//! The table of every type in the type table of docs/design.md, and rows at the edges of
//! each type, for the round-trip tests of both sides.

/// `typed`: one column per type, with a composite primary key.
pub const TABLE: &str = "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
    CREATE TABLE typed (id int, sub text, i2 int2, i4 int4, i8 int8, b bool, f4 float4, f8 float8, n numeric, n2 numeric(12,2),
      t text, vc varchar(10), c char(3), u uuid, d date, tm time, ts timestamp, tz timestamptz, by bytea, j json, jb jsonb,
      arr int[], m mood, iv interval, PRIMARY KEY (id, sub));";

/// Largest and smallest values, empty values, and a row of NULLs.
pub const EDGE_ROWS: &str = "INSERT INTO typed VALUES
 (1, 'max', 32767, 2147483647, 9223372036854775807, true, 3.4028235e38, 1.7976931348623157e308,
  123456789012345678901234567890.123456789012345678901234567890, 9999999999.99,
  E'quote '' \" back\\\\slash\\nnewline\\ttab é 😀 \\u0001', 'ten chars!', 'ab', '0B7E1F7A-5D1C-4B2E-9A55-6F1F0C2D9E11',
  '2024-02-29', '23:59:59.999999', '2024-05-01 13:45:00.123456', '2024-05-01 13:45:00.654321+05:30',
  '\\x00ff000a0d'::bytea, '{\"a\": [1, 2],  \"b\": null, \"a\": 3}', '{\"z\": 1, \"a\": \"x\"}', '{1,NULL,3}', 'happy', '1 year 2 mons 3 days 04:05:06.7'),
 (2, 'min', -32768, -2147483648, -9223372036854775808, false, '-Infinity', 'NaN', 'NaN', -0.01,
  '', '', '   ', '00000000-0000-0000-0000-000000000000', '0001-01-01', '00:00', '1970-01-01 00:00:00', '1969-12-31 23:59:59.999999+00',
  '\\x'::bytea, 'null', 'null', '{}', 'sad', '-1 mon -2 days'),
 (3, 'nulls', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);";

/// Every row in key order: the text of each column, plus the exact json
/// text and float bits that a row's text form could hide.
pub fn dump(client: &mut postgres::Client) -> Vec<String> {
    client
        .query(
            "SELECT (t.*)::text || ' ' || coalesce(j::text, '') || ' ' || coalesce(float8send(f8)::text, '') \
             || ' ' || coalesce(float4send(f4)::text, '') FROM typed t ORDER BY id",
            &[],
        )
        .expect("dump typed")
        .iter()
        .map(|r| r.get(0))
        .collect()
}
