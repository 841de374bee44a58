//! AMQP field values (header tables, queue arguments) as plain owned Rust data, so bindings never
//! see lapin types. Converts from and to lapin's tables and from JSON-like option values.

use lapin::types::{AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString};
use std::collections::BTreeMap;

/// A header table or an arguments table.
pub type Table = BTreeMap<String, FieldValue>;

/// One value of an AMQP table. Integer and float widths are folded into `Int` / `Float`.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    Void,
    Bool(bool),
    Int(i64),
    Float(f64),
    Decimal {
        scale: u8,
        value: u32,
    },
    /// Short and long strings that are valid UTF-8.
    Str(String),
    /// Byte arrays, and long strings that are not UTF-8.
    Bytes(Vec<u8>),
    /// Seconds since the epoch.
    Timestamp(u64),
    Array(Vec<FieldValue>),
    Table(Table),
}

impl FieldValue {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            FieldValue::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            FieldValue::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_table(&self) -> Option<&Table> {
        match self {
            FieldValue::Table(t) => Some(t),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[FieldValue]> {
        match self {
            FieldValue::Array(a) => Some(a),
            _ => None,
        }
    }

    pub(crate) fn from_amqp(value: &AMQPValue) -> Self {
        use AMQPValue as A;
        match value {
            A::Boolean(b) => FieldValue::Bool(*b),
            A::ShortShortInt(i) => FieldValue::Int((*i).into()),
            A::ShortShortUInt(i) => FieldValue::Int((*i).into()),
            A::ShortInt(i) => FieldValue::Int((*i).into()),
            A::ShortUInt(i) => FieldValue::Int((*i).into()),
            A::LongInt(i) => FieldValue::Int((*i).into()),
            A::LongUInt(i) => FieldValue::Int((*i).into()),
            A::LongLongInt(i) => FieldValue::Int(*i),
            A::Float(f) => FieldValue::Float((*f).into()),
            A::Double(f) => FieldValue::Float(*f),
            A::DecimalValue(d) => FieldValue::Decimal {
                scale: d.scale,
                value: d.value,
            },
            A::ShortString(s) => FieldValue::Str(s.as_str().to_string()),
            A::LongString(s) => match std::str::from_utf8(s.as_bytes()) {
                Ok(text) => FieldValue::Str(text.to_string()),
                Err(_) => FieldValue::Bytes(s.as_bytes().to_vec()),
            },
            A::FieldArray(a) => {
                FieldValue::Array(a.as_slice().iter().map(Self::from_amqp).collect())
            }
            A::Timestamp(t) => FieldValue::Timestamp(*t),
            A::FieldTable(t) => FieldValue::Table(table_from_amqp(t)),
            A::ByteArray(b) => FieldValue::Bytes(b.as_slice().to_vec()),
            A::Void => FieldValue::Void,
        }
    }

    pub(crate) fn to_amqp(&self) -> AMQPValue {
        match self {
            FieldValue::Void => AMQPValue::Void,
            FieldValue::Bool(b) => AMQPValue::Boolean(*b),
            FieldValue::Int(i) => AMQPValue::LongLongInt(*i),
            FieldValue::Float(f) => AMQPValue::Double(*f),
            FieldValue::Decimal { scale, value } => AMQPValue::DecimalValue(DecimalValue {
                scale: *scale,
                value: *value,
            }),
            FieldValue::Str(s) => AMQPValue::LongString(LongString::from(s.as_bytes())),
            FieldValue::Bytes(b) => AMQPValue::ByteArray(ByteArray::from(b.as_slice())),
            FieldValue::Timestamp(t) => AMQPValue::Timestamp(*t),
            FieldValue::Array(a) => AMQPValue::FieldArray(FieldArray::from(
                a.iter().map(Self::to_amqp).collect::<Vec<_>>(),
            )),
            FieldValue::Table(t) => AMQPValue::FieldTable(table_to_amqp(t)),
        }
    }

    /// Converts an option value (JSON-like) into a field value: whole numbers become `Int`,
    /// other numbers `Float`, objects `Table`.
    pub fn from_json(value: &serde_json::Value) -> Self {
        use serde_json::Value as J;
        match value {
            J::Null => FieldValue::Void,
            J::Bool(b) => FieldValue::Bool(*b),
            J::Number(n) => match n.as_i64() {
                Some(i) => FieldValue::Int(i),
                None => FieldValue::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            J::String(s) => FieldValue::Str(s.clone()),
            J::Array(a) => FieldValue::Array(a.iter().map(Self::from_json).collect()),
            J::Object(o) => FieldValue::Table(
                o.iter()
                    .map(|(k, v)| (k.clone(), Self::from_json(v)))
                    .collect(),
            ),
        }
    }

    /// The JSON form, for `retry_info` and logs. Bytes become (lossy) text.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            FieldValue::Void => J::Null,
            FieldValue::Bool(b) => J::Bool(*b),
            FieldValue::Int(i) => J::from(*i),
            FieldValue::Float(f) => J::from(*f),
            FieldValue::Decimal { scale, value } => {
                J::from(f64::from(*value) / 10f64.powi(i32::from(*scale)))
            }
            FieldValue::Str(s) => J::String(s.clone()),
            FieldValue::Bytes(b) => J::String(String::from_utf8_lossy(b).into_owned()),
            FieldValue::Timestamp(t) => J::from(*t),
            FieldValue::Array(a) => J::Array(a.iter().map(Self::to_json).collect()),
            FieldValue::Table(t) => table_to_json(t),
        }
    }
}

pub(crate) fn table_from_amqp(table: &FieldTable) -> Table {
    table
        .inner()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), FieldValue::from_amqp(v)))
        .collect()
}

pub(crate) fn table_to_amqp(table: &Table) -> FieldTable {
    let mut out = FieldTable::default();
    for (k, v) in table {
        out.insert(k.as_str().into(), v.to_amqp());
    }
    out
}

/// Converts an options object (e.g. `queue_options.arguments`) into a table; `option` names it in
/// the error when it is not an object.
pub fn table_from_json(value: &serde_json::Value, option: &str) -> crate::Result<Table> {
    match value {
        serde_json::Value::Null => Ok(Table::new()),
        serde_json::Value::Object(_) => match FieldValue::from_json(value) {
            FieldValue::Table(t) => Ok(t),
            _ => unreachable!("objects convert to tables"),
        },
        other => Err(crate::Error::option(
            option,
            format!("expected a table of arguments, got {other}"),
        )),
    }
}

pub fn table_to_json(table: &Table) -> serde_json::Value {
    serde_json::Value::Object(
        table
            .iter()
            .map(|(k, v)| (k.clone(), v.to_json()))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_tables_round_trip_through_lapin() {
        let mut inner = Table::new();
        inner.insert("count".into(), FieldValue::Int(3));
        inner.insert("queue".into(), FieldValue::Str("q".into()));
        let mut t = Table::new();
        t.insert(
            "x-death".into(),
            FieldValue::Array(vec![FieldValue::Table(inner)]),
        );
        t.insert("bin".into(), FieldValue::Bytes(vec![0xff, 0]));
        t.insert("ts".into(), FieldValue::Timestamp(17));
        t.insert("f".into(), FieldValue::Float(1.5));
        t.insert("b".into(), FieldValue::Bool(true));
        t.insert("v".into(), FieldValue::Void);
        assert_eq!(table_from_amqp(&table_to_amqp(&t)), t);
    }

    #[test]
    fn json_options_become_tables() {
        let t = table_from_json(
            &json!({"x-message-ttl": 60000, "x-queue-type": "quorum", "r": 0.5}),
            "a",
        )
        .unwrap();
        assert_eq!(t["x-message-ttl"], FieldValue::Int(60000));
        assert_eq!(t["x-queue-type"], FieldValue::Str("quorum".into()));
        assert_eq!(t["r"], FieldValue::Float(0.5));
        assert!(table_from_json(&json!([1]), "queue_options.arguments")
            .unwrap_err()
            .to_string()
            .contains("queue_options.arguments"));
    }
}
