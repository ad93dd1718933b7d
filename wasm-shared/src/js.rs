//! JavaScript helpers the bindings of both modules use.

use js_sys::{Array, Object, Reflect};
use wasm_bindgen::{JsError, JsValue};

use crate::load::Failure;

/// A failure as the `Error` a binding throws (`"NAME: problem"`).
pub fn error(f: Failure) -> JsError {
    JsError::new(&f.to_string())
}

/// Sets `obj[key] = value`.
pub fn set(obj: &Object, key: &str, value: impl Into<JsValue>) {
    // Setting a property on a fresh plain object cannot fail.
    let _ = Reflect::set(obj, &JsValue::from_str(key), &value.into());
}

/// A JavaScript array of strings.
pub fn strings(v: &[String]) -> Array {
    v.iter().map(|s| JsValue::from_str(s)).collect()
}

/// Bytes of the wasm linear memory.
pub fn memory_bytes() -> f64 {
    let buffer = Reflect::get(&wasm_bindgen::memory(), &JsValue::from_str("buffer"));
    buffer
        .and_then(|b| Reflect::get(&b, &JsValue::from_str("byteLength")))
        .ok()
        .and_then(|v| v.as_f64())
        .unwrap_or(0.0)
}
