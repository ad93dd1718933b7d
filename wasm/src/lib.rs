//! Browser bindings of riffle-core (wasm-bindgen); the layer over the runtime lands
//! with the browser-demo issue.
#![forbid(unsafe_code)]
