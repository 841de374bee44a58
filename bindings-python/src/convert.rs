//! Python values <-> the core's plain data: option dicts become `serde_json` trees, header tables
//! and property sets become dicts.

use cleats_core::{DeliveryInfo, FieldValue, Options, Properties, Table};
use pyo3::exceptions::PyTypeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::Value;

/// A Python option value as JSON: None, bool, int, float, str, bytes (UTF-8), list/tuple, dict
/// with str keys. Anything else is a TypeError naming the option path.
pub fn to_json(value: &Bound<'_, PyAny>, path: &str) -> PyResult<Value> {
    if value.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(b) = value.downcast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if value.is_instance_of::<PyInt>() {
        if let Ok(i) = value.extract::<i64>() {
            return Ok(Value::from(i));
        }
        return Ok(Value::from(value.extract::<u64>()?));
    }
    if value.is_instance_of::<PyFloat>() {
        let f: f64 = value.extract()?;
        return Ok(serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number));
    }
    if let Ok(s) = value.downcast::<PyString>() {
        return Ok(Value::String(s.to_cow()?.into_owned()));
    }
    if let Ok(b) = value.downcast::<PyBytes>() {
        return Ok(Value::String(
            String::from_utf8_lossy(b.as_bytes()).into_owned(),
        ));
    }
    if let Ok(d) = value.downcast::<PyDict>() {
        return Ok(Value::Object(dict_to_options(d, path)?));
    }
    if value.is_instance_of::<PyList>() || value.is_instance_of::<PyTuple>() {
        let mut items = Vec::new();
        for (i, item) in value.try_iter()?.enumerate() {
            items.push(to_json(&item?, &format!("{path}[{i}]"))?);
        }
        return Ok(Value::Array(items));
    }
    Err(PyTypeError::new_err(format!(
        "option `{path}`: cannot pass a {} to the engine (expected None, bool, int, float, str, list or dict)",
        value.get_type().name()?
    )))
}

/// A dict of options (str keys) as the core's [`Options`].
pub fn dict_to_options(dict: &Bound<'_, PyDict>, path: &str) -> PyResult<Options> {
    let mut out = Options::new();
    for (k, v) in dict.iter() {
        let key: String = k.extract().map_err(|_| {
            PyTypeError::new_err(format!("option keys must be strings (in `{path}`)"))
        })?;
        let child = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        out.insert(key, to_json(&v, &child)?);
    }
    Ok(out)
}

/// An optional dict of options; `None` is empty.
pub fn options(dict: Option<&Bound<'_, PyDict>>) -> PyResult<Options> {
    dict.map_or_else(|| Ok(Options::new()), |d| dict_to_options(d, ""))
}

pub fn json_to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => i.into_pyobject(py)?.into_any(),
            (None, Some(u)) => u.into_pyobject(py)?.into_any(),
            _ => n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any(),
        },
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(a) => {
            let list = PyList::empty(py);
            for item in a {
                list.append(json_to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(o) => options_to_dict(py, o)?.into_any(),
    })
}

pub fn options_to_dict<'py>(py: Python<'py>, opts: &Options) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (k, v) in opts {
        dict.set_item(k, json_to_py(py, v)?)?;
    }
    Ok(dict)
}

/// A header value as Python: tables are dicts with str keys, arrays lists, byte arrays bytes,
/// timestamps ints (seconds).
pub fn field_to_py<'py>(py: Python<'py>, value: &FieldValue) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        FieldValue::Void => py.None().into_bound(py),
        FieldValue::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        FieldValue::Int(i) => i.into_pyobject(py)?.into_any(),
        FieldValue::Float(f) => f.into_pyobject(py)?.into_any(),
        FieldValue::Decimal { .. } => json_to_py(py, &value.to_json())?,
        FieldValue::Str(s) => PyString::new(py, s).into_any(),
        FieldValue::Bytes(b) => PyBytes::new(py, b).into_any(),
        FieldValue::Timestamp(t) => t.into_pyobject(py)?.into_any(),
        FieldValue::Array(a) => {
            let list = PyList::empty(py);
            for item in a {
                list.append(field_to_py(py, item)?)?;
            }
            list.into_any()
        }
        FieldValue::Table(t) => table_to_py(py, t)?.into_any(),
    })
}

pub fn table_to_py<'py>(py: Python<'py>, table: &Table) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (k, v) in table {
        dict.set_item(k, field_to_py(py, v)?)?;
    }
    Ok(dict)
}

/// Bunny's metadata keys; `kind` is `type`, headers a dict (or None).
pub fn properties_to_py<'py>(py: Python<'py>, p: &Properties) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let headers = match &p.headers {
        Some(t) => table_to_py(py, t)?.into_any(),
        None => py.None().into_bound(py),
    };
    d.set_item(intern!(py, "headers"), headers)?;
    d.set_item(intern!(py, "content_type"), &p.content_type)?;
    d.set_item(intern!(py, "content_encoding"), &p.content_encoding)?;
    d.set_item(intern!(py, "delivery_mode"), p.delivery_mode)?;
    d.set_item(intern!(py, "priority"), p.priority)?;
    d.set_item(intern!(py, "correlation_id"), &p.correlation_id)?;
    d.set_item(intern!(py, "reply_to"), &p.reply_to)?;
    d.set_item(intern!(py, "expiration"), &p.expiration)?;
    d.set_item(intern!(py, "message_id"), &p.message_id)?;
    d.set_item(intern!(py, "timestamp"), p.timestamp)?;
    d.set_item(intern!(py, "type"), &p.kind)?;
    d.set_item(intern!(py, "user_id"), &p.user_id)?;
    d.set_item(intern!(py, "app_id"), &p.app_id)?;
    d.set_item(intern!(py, "cluster_id"), &p.cluster_id)?;
    Ok(d)
}

pub fn info_to_py<'py>(py: Python<'py>, i: &DeliveryInfo) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item(intern!(py, "delivery_tag"), i.delivery_tag)?;
    d.set_item(intern!(py, "routing_key"), &i.routing_key)?;
    d.set_item(intern!(py, "exchange"), &i.exchange)?;
    d.set_item(intern!(py, "redelivered"), i.redelivered)?;
    d.set_item(intern!(py, "consumer_tag"), &i.consumer_tag)?;
    Ok(d)
}
