//! Field values (headers, arguments) and properties into Ruby values, the way Bunny gives them:
//! string-keyed hashes, nested tables and arrays, `Time` for timestamps, binary strings for bytes.

use cleats_core::{FieldValue, Properties, Table};
use magnus::value::{LazyId, OpaqueId};
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

/// A hash key symbol interned once, not per message.
pub fn key(id: &LazyId) -> OpaqueId {
    **id
}

static CONTENT_TYPE: LazyId = LazyId::new("content_type");
static CONTENT_ENCODING: LazyId = LazyId::new("content_encoding");
static HEADERS: LazyId = LazyId::new("headers");
static DELIVERY_MODE: LazyId = LazyId::new("delivery_mode");
static PRIORITY: LazyId = LazyId::new("priority");
static CORRELATION_ID: LazyId = LazyId::new("correlation_id");
static REPLY_TO: LazyId = LazyId::new("reply_to");
static EXPIRATION: LazyId = LazyId::new("expiration");
static MESSAGE_ID: LazyId = LazyId::new("message_id");
static TIMESTAMP: LazyId = LazyId::new("timestamp");
static TYPE: LazyId = LazyId::new("type");
static USER_ID: LazyId = LazyId::new("user_id");
static APP_ID: LazyId = LazyId::new("app_id");
static CLUSTER_ID: LazyId = LazyId::new("cluster_id");

/// Bunny's metadata keys (symbols); absent properties are nil, headers a string-keyed hash.
pub fn properties(ruby: &Ruby, p: &Properties) -> Result<RHash, Error> {
    let h = ruby.hash_new();
    h.aset(key(&CONTENT_TYPE), p.content_type.as_deref())?;
    h.aset(key(&CONTENT_ENCODING), p.content_encoding.as_deref())?;
    let headers = match &p.headers {
        Some(t) => table(ruby, t)?.as_value(),
        None => ruby.qnil().as_value(),
    };
    h.aset(key(&HEADERS), headers)?;
    h.aset(key(&DELIVERY_MODE), p.delivery_mode)?;
    h.aset(key(&PRIORITY), p.priority)?;
    h.aset(key(&CORRELATION_ID), p.correlation_id.as_deref())?;
    h.aset(key(&REPLY_TO), p.reply_to.as_deref())?;
    h.aset(key(&EXPIRATION), p.expiration.as_deref())?;
    h.aset(key(&MESSAGE_ID), p.message_id.as_deref())?;
    let timestamp = match p.timestamp {
        Some(t) => ruby.time_new(t as i64, 0)?.as_value(),
        None => ruby.qnil().as_value(),
    };
    h.aset(key(&TIMESTAMP), timestamp)?;
    h.aset(key(&TYPE), p.kind.as_deref())?;
    h.aset(key(&USER_ID), p.user_id.as_deref())?;
    h.aset(key(&APP_ID), p.app_id.as_deref())?;
    h.aset(key(&CLUSTER_ID), p.cluster_id.as_deref())?;
    Ok(h)
}
