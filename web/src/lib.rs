//! adamllm in the browser: the page's jobs ([`page`]) over the same core as the CLI, and the
//! wasm-bindgen bindings the page's Web Worker calls (`bindings`, wasm32 only).
//!
//! The page (`web/www/`) runs every heavy call in a Web Worker (`worker.js`), so the tab stays
//! responsive; the worker posts progress back to the page.

pub mod page;

#[cfg(target_arch = "wasm32")]
mod bindings;
