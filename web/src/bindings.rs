//! The functions `worker.js` calls. They hold the page's state (device, loaded models) and
//! convert between JavaScript values and [`crate::page`]'s Rust types; results go back as
//! JSON text. Errors become JavaScript exceptions carrying the core's message.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use adamllm::device::{DeviceChoice, SelectedDevice, select_browser_device};
use adamllm::models::Model;
use adamllm::models::files::ModelFiles;
use js_sys::{Array, Function, Uint8Array};
use serde_json::json;
use wasm_bindgen::prelude::*;

use crate::page::{
    EvalSettings, ModelInfo, SynthSettings, evaluate, inspect_model, load_model,
    parse_weights_choice, read_picked_benchmark, synthesize_and_judge,
};

/// Which loaded model a call means.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Role {
    Model,
    Synthesizer,
    Judge,
}

impl Role {
    fn parse(name: &str) -> Result<Self, JsError> {
        match name {
            "model" => Ok(Self::Model),
            "synthesizer" => Ok(Self::Synthesizer),
            "judge" => Ok(Self::Judge),
            other => Err(JsError::new(&format!(
                "unknown model role {other:?}; expected model, synthesizer or judge"
            ))),
        }
    }
}

#[derive(Default)]
struct State {
    device: Option<SelectedDevice>,
    models: BTreeMap<Role, (Rc<Model>, ModelInfo)>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

fn now_ms() -> f64 {
    js_sys::Date::now()
}

fn to_js_error(message: String) -> JsError {
    JsError::new(&message)
}

fn device() -> Result<SelectedDevice, JsError> {
    STATE
        .with(|s| s.borrow().device.clone())
        .ok_or_else(|| JsError::new("no device yet: call init_device first"))
}

fn model(role: Role) -> Result<(Rc<Model>, ModelInfo), JsError> {
    STATE
        .with(|s| s.borrow().models.get(&role).cloned())
        .ok_or_else(|| JsError::new(&format!("no {role:?} loaded yet").to_lowercase()))
}

/// `[[name, Uint8Array], ...]` → (name, bytes) pairs.
fn named_files(files: &Array) -> Result<Vec<(String, Vec<u8>)>, JsError> {
    files
        .iter()
        .map(|entry| {
            let pair = Array::from(&entry);
            let name = pair
                .get(0)
                .as_string()
                .ok_or_else(|| JsError::new("a file entry has no name"))?;
            let bytes = Uint8Array::new(&pair.get(1)).to_vec();
            Ok((name, bytes))
        })
        .collect()
}

/// Sets up the device once: `auto` tries WebGPU and falls back to the CPU, `cpu` skips
/// WebGPU. Returns `{backend, description, reason}` as JSON.
#[wasm_bindgen]
pub async fn init_device(choice: String) -> Result<String, JsError> {
    install_panic_hook();
    if let Some(existing) = STATE.with(|s| s.borrow().device.clone()) {
        return Ok(device_json(&existing));
    }
    let choice: DeviceChoice = choice.parse().map_err(to_js_error)?;
    let selected = select_browser_device(choice).await;
    let text = device_json(&selected);
    STATE.with(|s| s.borrow_mut().device = Some(selected));
    Ok(text)
}

fn device_json(device: &SelectedDevice) -> String {
    json!({
        "backend": device.backend,
        "description": device.description,
        "reason": device.reason,
        "max_binding_bytes": device.max_binding_bytes,
    })
    .to_string()
}

#[wasm_bindgen]
extern "C" {
    /// `adamllmPanicMessage(text)`, set by the worker: where a panic's message goes before
    /// the trap, so the page can say what failed.
    #[wasm_bindgen(js_namespace = globalThis, js_name = adamllmPanicMessage)]
    fn report_panic(message: &str);
}

/// Panics print to the console (as `console_error_panic_hook` does) and are handed to the
/// worker, which reports them when it restarts the engine.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            console_error_panic_hook::hook(info);
            report_panic(&info.to_string());
        }));
    });
}

/// Panics on purpose: the page tests use it to check that a trap in the engine restarts the
/// worker and leaves the page usable. Nothing in the page calls it.
#[wasm_bindgen]
pub fn debug_panic() {
    panic!("debug_panic: a deliberate panic (the page tests' crash check)");
}

/// Reads a model folder's config and checkpoint headers without loading weights; returns
/// [`ModelInfo`] as JSON.
#[wasm_bindgen]
pub fn inspect_model_files(name: String, files: Array) -> Result<String, JsError> {
    let files = ModelFiles::in_memory(name, named_files(&files)?);
    let info = inspect_model(&files).map_err(to_js_error)?;
    Ok(serde_json::to_string(&info).expect("serializable"))
}

/// Loads a model folder (picked files or the built-in demo's) as `role` (`model`,
/// `synthesizer` or `judge`), its linear layers quantized as `weights` says (`dense`, `q8`,
/// `q4`); returns its [`ModelInfo`] as JSON.
#[wasm_bindgen]
pub fn load_model_files(
    role: String,
    name: String,
    files: Array,
    weights: String,
) -> Result<String, JsError> {
    let role = Role::parse(&role)?;
    let quantize = parse_weights_choice(&weights).map_err(to_js_error)?;
    let device = device()?;
    let files = ModelFiles::in_memory(name, named_files(&files)?);
    let (model, info) = load_model(&files, &device, quantize).map_err(to_js_error)?;
    let text = serde_json::to_string(&info).expect("serializable");
    STATE.with(|s| s.borrow_mut().models.insert(role, (Rc::new(model), info)));
    Ok(text)
}

/// Evaluates a benchmark with the loaded `model`. `settings` is [`EvalSettings`] as JSON;
/// `images` is `[[path, Uint8Array], ...]`; `progress(done, total)` is called per batch.
/// Returns [`crate::page::EvalOutcome`] as JSON.
#[wasm_bindgen]
pub async fn evaluate_benchmark(
    settings: String,
    benchmark_name: String,
    benchmark: Uint8Array,
    images: Array,
    progress: Function,
) -> Result<String, JsError> {
    let settings: EvalSettings = serde_json::from_str(&settings)
        .map_err(|e| JsError::new(&format!("evaluation settings: {e}")))?;
    let task = settings.task.resolve().map_err(to_js_error)?;
    let images: BTreeMap<String, Vec<u8>> = named_files(&images)?.into_iter().collect();
    let rows = read_picked_benchmark(
        &benchmark_name,
        benchmark.to_vec(),
        &images,
        &task,
        settings.limit,
    )
    .map_err(to_js_error)?;
    let (model, info) = model(Role::Model)?;
    let mut report = |done: usize, total: usize| {
        let _ = progress.call2(&JsValue::NULL, &done.into(), &total.into());
    };
    let outcome = evaluate(&model, &info.name, &settings, &rows, &now_ms, &mut report)
        .await
        .map_err(to_js_error)?;
    Ok(serde_json::to_string(&outcome).expect("serializable"))
}

/// Synthesizes a task triplet for one image + caption with the loaded `synthesizer`, and
/// labels it with the loaded `judge` when there is one. `settings` is [`SynthSettings`] as
/// JSON. Returns [`crate::page::SynthOutcome`] as JSON.
#[wasm_bindgen]
pub async fn synthesize_image(settings: String, image: Uint8Array) -> Result<String, JsError> {
    let settings: SynthSettings = serde_json::from_str(&settings)
        .map_err(|e| JsError::new(&format!("synthesis settings: {e}")))?;
    let (synthesizer, _) = model(Role::Synthesizer)?;
    let judge = STATE.with(|s| s.borrow().models.get(&Role::Judge).map(|(m, _)| m.clone()));
    let outcome = synthesize_and_judge(
        &synthesizer,
        judge.as_deref(),
        &image.to_vec(),
        &settings,
        &now_ms,
    )
    .await
    .map_err(to_js_error)?;
    Ok(serde_json::to_string(&outcome).expect("serializable"))
}

/// The crate version (shown in the page footer).
#[wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}
