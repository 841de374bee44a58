//! Field values (headers, arguments) and properties into Ruby values, the way Bunny gives them:
//! string-keyed hashes, nested tables and arrays, `Time` for timestamps, binary strings for bytes.

use cleats_core::{FieldValue, Properties, Table};
use magnus::{prelude::*, Error, IntoValue, RHash, Ruby, Value};

pub fn field(ruby: &Ruby, value: &FieldValue) -> Result<Value, Error> {
    Ok(match value {
        FieldValue::Void => ruby.qnil().as_value(),
        FieldValue::Bool(b) => b.into_value_with(ruby),
        FieldValue::Int(i) => i.into_value_with(ruby),
        FieldValue::Float(f) => f.into_value_with(ruby),
        FieldValue::Decimal { scale, value } => {
            (f64::from(*value) / 10f64.powi(i32::from(*scale))).into_value_with(ruby)
        }
        FieldValue::Str(s) => s.as_str().into_value_with(ruby),
        FieldValue::Bytes(b) => ruby.str_from_slice(b).as_value(),
        FieldValue::Timestamp(t) => ruby.time_new(*t as i64, 0)?.as_value(),
        FieldValue::Array(items) => {
            let array = ruby.ary_new_capa(items.len());
            for item in items {
                array.push(field(ruby, item)?)?;
            }
            array.as_value()
        }
        FieldValue::Table(t) => table(ruby, t)?.as_value(),
    })
}

pub fn table(ruby: &Ruby, t: &Table) -> Result<RHash, Error> {
    let hash = ruby.hash_new();
    for (k, v) in t {
        hash.aset(k.as_str(), field(ruby, v)?)?;
    }
    Ok(hash)
}

/// Bunny's metadata keys (symbols); absent properties are nil, headers a string-keyed hash.
pub fn properties(ruby: &Ruby, p: &Properties) -> Result<RHash, Error> {
    let h = ruby.hash_new();
    let sym = |k: &str| ruby.to_symbol(k);
    h.aset(sym("content_type"), p.content_type.clone())?;
    h.aset(sym("content_encoding"), p.content_encoding.clone())?;
    let headers = match &p.headers {
        Some(t) => table(ruby, t)?.as_value(),
        None => ruby.qnil().as_value(),
    };
    h.aset(sym("headers"), headers)?;
    h.aset(sym("delivery_mode"), p.delivery_mode)?;
    h.aset(sym("priority"), p.priority)?;
    h.aset(sym("correlation_id"), p.correlation_id.clone())?;
    h.aset(sym("reply_to"), p.reply_to.clone())?;
    h.aset(sym("expiration"), p.expiration.clone())?;
    h.aset(sym("message_id"), p.message_id.clone())?;
    let timestamp = match p.timestamp {
        Some(t) => ruby.time_new(t as i64, 0)?.as_value(),
        None => ruby.qnil().as_value(),
    };
    h.aset(sym("timestamp"), timestamp)?;
    h.aset(sym("type"), p.kind.clone())?;
    h.aset(sym("user_id"), p.user_id.clone())?;
    h.aset(sym("app_id"), p.app_id.clone())?;
    h.aset(sym("cluster_id"), p.cluster_id.clone())?;
    Ok(h)
}
