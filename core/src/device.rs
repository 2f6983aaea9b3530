//! Device selection: `auto | cpu | wgpu | vulkan | metal | dx12`.
//!
//! `auto` takes a real GPU adapter (discrete, then integrated, then virtual) through wgpu and
//! never a CPU-type adapter (lavapipe, llvmpipe, SwiftShader, WARP): those are about 10× slower
//! than Burn's pure-Rust `flex` backend, which is the fallback. `wgpu` takes wgpu's default
//! adapter whatever its type (this is how CI exercises the wgpu path on lavapipe);
//! `vulkan`/`metal`/`dx12` pin the graphics API (still compiling our WGSL kernels).

#[cfg(not(target_arch = "wasm32"))]
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
#[cfg(not(target_arch = "wasm32"))]
use std::sync::{Mutex, OnceLock};

use burn::tensor::Device;
#[cfg(not(target_arch = "wasm32"))]
use burn::tensor::DeviceKind;
#[cfg(not(target_arch = "wasm32"))]
use burn::tensor::wgpu::WgpuBackend;
use burn::tensor::wgpu::wgpu;
use serde::Serialize;

/// What the user asked for with `--device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DeviceChoice {
    /// A real GPU if there is one, else the `flex` CPU backend.
    #[default]
    Auto,
    /// Burn's `flex` CPU backend.
    Cpu,
    /// wgpu's default adapter, whatever its type (CPU adapters included).
    Wgpu,
    /// wgpu pinned to Vulkan.
    Vulkan,
    /// wgpu pinned to Metal.
    Metal,
    /// wgpu pinned to DirectX 12.
    Dx12,
}

impl DeviceChoice {
    /// Every accepted name.
    pub const NAMES: [&'static str; 6] = ["auto", "cpu", "wgpu", "vulkan", "metal", "dx12"];
}

impl FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "auto" => Self::Auto,
            "cpu" | "flex" => Self::Cpu,
            "wgpu" => Self::Wgpu,
            "vulkan" => Self::Vulkan,
            "metal" => Self::Metal,
            "dx12" => Self::Dx12,
            other => {
                return Err(format!(
                    "unknown device {other:?}; expected one of {}",
                    Self::NAMES.join(", ")
                ));
            }
        })
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = [
            Self::Auto,
            Self::Cpu,
            Self::Wgpu,
            Self::Vulkan,
            Self::Metal,
            Self::Dx12,
        ]
        .iter()
        .position(|c| c == self)
        .expect("listed");
        f.write_str(Self::NAMES[i])
    }
}

/// One adapter wgpu reports.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AdapterSummary {
    /// Adapter name (e.g. "llvmpipe (LLVM 15.0.6, 256 bits)").
    pub name: String,
    /// `DiscreteGpu`, `IntegratedGpu`, `VirtualGpu`, `Cpu` or `Other`.
    pub device_type: String,
    /// Graphics API.
    pub backend: String,
    /// Driver name and version.
    pub driver: String,
    /// Whether `shader-f16` is available.
    pub shader_f16: bool,
    /// Largest buffer.
    pub max_buffer_size: u64,
    /// Largest storage buffer binding (what bounds one tensor, e.g. an embedding table).
    pub max_storage_buffer_binding_size: u64,
    /// Whether `auto` would consider it (not a CPU-type adapter).
    pub is_real_gpu: bool,
}

/// The device chosen for a command.
#[derive(Clone)]
pub struct SelectedDevice {
    /// The Burn device.
    pub device: Device,
    /// Short backend name: `flex`, `wgpu` or (in a browser) `webgpu`.
    pub backend: &'static str,
    /// Human description (adapter name and API, or "CPU (flex)").
    pub description: String,
    /// Why it was chosen.
    pub reason: String,
    /// Whether f16 compute is supported.
    pub supports_f16: bool,
    /// The largest storage buffer one binding may hold (bytes) on a GPU; `None` on the CPU.
    /// A weight larger than this (typically the embedding table) cannot be used there.
    pub max_binding_bytes: Option<u64>,
}

impl fmt::Debug for SelectedDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.description, self.reason)
    }
}

/// Device selection failure.
#[derive(Debug, thiserror::Error)]
#[error("device {choice}: {message}")]
pub struct DeviceError {
    /// What was asked.
    pub choice: DeviceChoice,
    /// Why it failed.
    pub message: String,
}

#[cfg(not(target_arch = "wasm32"))]
/// Lists every adapter on every graphics API compiled into this build.
pub fn list_adapters() -> Vec<AdapterSummary> {
    static CACHE: OnceLock<Vec<AdapterSummary>> = OnceLock::new();
    CACHE
        .get_or_init(|| {
            let backends = wgpu::Backends::all();
            let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
                backends,
                ..wgpu::InstanceDescriptor::new_without_display_handle()
            });
            let adapters = pollster::block_on(instance.enumerate_adapters(backends));
            adapters
                .iter()
                .map(|a| {
                    let info = a.get_info();
                    let limits = a.limits();
                    AdapterSummary {
                        is_real_gpu: matches!(
                            info.device_type,
                            wgpu::DeviceType::DiscreteGpu
                                | wgpu::DeviceType::IntegratedGpu
                                | wgpu::DeviceType::VirtualGpu
                        ) && !looks_like_software(&info.name),
                        name: info.name.clone(),
                        device_type: format!("{:?}", info.device_type),
                        backend: format!("{:?}", info.backend),
                        driver: format!("{} {}", info.driver, info.driver_info)
                            .trim()
                            .to_string(),
                        shader_f16: a.features().contains(wgpu::Features::SHADER_F16),
                        max_buffer_size: limits.max_buffer_size,
                        max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
                    }
                })
                .collect()
        })
        .clone()
}

/// Software rasterizers that some drivers report with a GPU type.
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
fn looks_like_software(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "llvmpipe",
        "lavapipe",
        "swiftshader",
        "warp",
        "softpipe",
        "microsoft basic render",
    ]
    .iter()
    .any(|s| n.contains(s))
}

fn flex(reason: impl Into<String>) -> SelectedDevice {
    SelectedDevice {
        device: Device::flex(),
        backend: "flex",
        description: "CPU (Burn flex backend)".into(),
        reason: reason.into(),
        supports_f16: true,
        max_binding_bytes: None,
    }
}

#[cfg(not(target_arch = "wasm32"))]
/// Devices initialized with a pinned graphics API, kept so each is initialized once.
fn pinned_devices() -> &'static Mutex<HashMap<DeviceChoice, Device>> {
    static DEVICES: OnceLock<Mutex<HashMap<DeviceChoice, Device>>> = OnceLock::new();
    DEVICES.get_or_init(|| Mutex::new(HashMap::new()))
}

#[cfg(not(target_arch = "wasm32"))]
/// Resolves a `--device` choice to a Burn device.
pub fn select_device(choice: DeviceChoice) -> Result<SelectedDevice, DeviceError> {
    let err = |message: String| DeviceError { choice, message };
    match choice {
        DeviceChoice::Cpu => Ok(flex("asked for the CPU")),
        DeviceChoice::Auto => {
            let adapters = list_adapters();
            for (ty, kind) in [
                ("DiscreteGpu", DeviceKind::DiscreteGpu(0)),
                ("IntegratedGpu", DeviceKind::IntegratedGpu(0)),
                ("VirtualGpu", DeviceKind::VirtualGpu(0)),
            ] {
                if let Some(a) = adapters
                    .iter()
                    .find(|a| a.device_type == ty && a.is_real_gpu)
                {
                    return Ok(SelectedDevice {
                        device: Device::wgpu(kind),
                        backend: "wgpu",
                        description: format!("{} ({}, {})", a.name, a.device_type, a.backend),
                        reason: "auto: first real GPU adapter".into(),
                        supports_f16: a.shader_f16,
                        max_binding_bytes: Some(a.max_storage_buffer_binding_size),
                    });
                }
            }
            let seen: Vec<String> = adapters
                .iter()
                .map(|a| format!("{} ({})", a.name, a.device_type))
                .collect();
            Ok(flex(if seen.is_empty() {
                "auto: no wgpu adapter found".to_string()
            } else {
                format!(
                    "auto: only CPU-type adapters found ({}), flex is faster",
                    seen.join(", ")
                )
            }))
        }
        DeviceChoice::Wgpu => {
            let adapters = list_adapters();
            let best = adapters
                .iter()
                .find(|a| a.is_real_gpu)
                .or_else(|| adapters.first())
                .ok_or_else(|| {
                    err("no wgpu adapter found (is a Vulkan driver installed?)".into())
                })?;
            Ok(SelectedDevice {
                device: Device::wgpu(DeviceKind::DefaultDevice),
                backend: "wgpu",
                description: format!("{} ({}, {})", best.name, best.device_type, best.backend),
                reason: "asked for wgpu's default adapter".into(),
                supports_f16: best.shader_f16,
                max_binding_bytes: Some(best.max_storage_buffer_binding_size),
            })
        }
        DeviceChoice::Vulkan | DeviceChoice::Metal | DeviceChoice::Dx12 => {
            let (api, api_name) = match choice {
                DeviceChoice::Vulkan => (WgpuBackend::Vulkan, "Vulkan"),
                DeviceChoice::Metal => (WgpuBackend::Metal, "Metal"),
                _ => (WgpuBackend::Dx12, "Dx12"),
            };
            let adapters = list_adapters();
            let on_api: Vec<&AdapterSummary> =
                adapters.iter().filter(|a| a.backend == api_name).collect();
            let best = on_api
                .iter()
                .find(|a| a.is_real_gpu)
                .or_else(|| on_api.first())
                .ok_or_else(|| err(format!("no {api_name} adapter found")))?;
            let mut pinned = pinned_devices().lock().expect("device registry");
            let device = match pinned.get(&choice) {
                Some(d) => d.clone(),
                None => {
                    let d = Device::wgpu_options()
                        .graphics_api(api)
                        .init()
                        .map_err(|e| err(e.to_string()))?;
                    pinned.insert(choice, d.clone());
                    d
                }
            };
            Ok(SelectedDevice {
                device,
                backend: "wgpu",
                description: format!("{} ({}, {})", best.name, best.device_type, best.backend),
                reason: format!("asked for {api_name}"),
                supports_f16: best.shader_f16,
                max_binding_bytes: Some(best.max_storage_buffer_binding_size),
            })
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
/// Resolves `train --devices` (comma-separated `cpu`, `wgpu`, `wgpu:N` for the N-th discrete
/// GPU, `vulkan`, `metal`, `dx12`, `auto`): one device per replica, in order. A GPU named
/// twice is refused (two replicas on one GPU only cost memory); `cpu` may repeat, which runs
/// several replicas on the CPU (how the data-parallel path is tested).
pub fn select_devices(text: &str) -> Result<Vec<SelectedDevice>, String> {
    // Every name is read first, so a bad list is refused before any adapter is opened.
    let mut parsed: Vec<(String, DeviceChoice, Option<usize>)> = Vec::new();
    for item in text.split(',').map(|item| item.trim().to_ascii_lowercase()) {
        if item.is_empty() {
            return Err(format!(
                "--devices {text:?}: an empty name; list devices as cpu,cpu or wgpu:0,wgpu:1"
            ));
        }
        if item != "cpu" && item != "flex" && parsed.iter().any(|(seen, ..)| *seen == item) {
            return Err(format!(
                "--devices {text:?}: {item} is named twice; give each GPU once (only cpu may \
                 repeat, to test on one machine)"
            ));
        }
        let (name, index) = match item.split_once(':') {
            Some((name, index)) => (name, Some(index)),
            None => (item.as_str(), None),
        };
        let choice: DeviceChoice = name.parse()?;
        let index = match index {
            None => None,
            Some(_) if choice != DeviceChoice::Wgpu => {
                return Err(format!(
                    "--devices: {item}: only wgpu takes an index (wgpu:0, wgpu:1, ...)"
                ));
            }
            Some(index) => Some(
                index
                    .parse::<usize>()
                    .map_err(|_| format!("--devices: {item}: the index must be a number"))?,
            ),
        };
        parsed.push((item.clone(), choice, index));
    }
    parsed
        .into_iter()
        .map(|(item, choice, index)| match index {
            Some(index) => discrete_gpu(index).map_err(|e| format!("--devices: {item}: {e}")),
            None => select_device(choice).map_err(|e| format!("--devices: {e}")),
        })
        .collect()
}

#[cfg(not(target_arch = "wasm32"))]
/// The `index`-th discrete GPU adapter wgpu reports.
fn discrete_gpu(index: usize) -> Result<SelectedDevice, String> {
    let adapters = list_adapters();
    let discrete: Vec<&AdapterSummary> = adapters
        .iter()
        .filter(|a| a.device_type == "DiscreteGpu")
        .collect();
    let adapter = discrete.get(index).ok_or_else(|| {
        format!(
            "there {} {} discrete GPU adapter{} (see `adamllm info`)",
            if discrete.len() == 1 { "is" } else { "are" },
            discrete.len(),
            if discrete.len() == 1 { "" } else { "s" }
        )
    })?;
    Ok(SelectedDevice {
        device: Device::wgpu(DeviceKind::DiscreteGpu(index)),
        backend: "wgpu",
        description: format!(
            "{} ({}, {})",
            adapter.name, adapter.device_type, adapter.backend
        ),
        reason: format!("discrete GPU {index} of --devices"),
        supports_f16: adapter.shader_f16,
        max_binding_bytes: Some(adapter.max_storage_buffer_binding_size),
    })
}

/// Picks the device in a browser (WebAssembly): WebGPU when `navigator.gpu` yields an adapter
/// and `choice` allows it, otherwise Burn's `flex` CPU backend compiled to WebAssembly. The
/// reason says which and why. WebGPU can only be set up once per page (or worker).
#[cfg(target_arch = "wasm32")]
pub async fn select_browser_device(choice: DeviceChoice) -> SelectedDevice {
    if choice == DeviceChoice::Cpu {
        return flex("asked for the CPU (WebAssembly)");
    }
    match Device::wgpu_options().init_with_setup_async().await {
        Ok((device, setup)) => {
            let info = setup.adapter.get_info();
            let limits = setup.adapter.limits();
            SelectedDevice {
                device,
                backend: "webgpu",
                description: format!(
                    "{} ({:?} adapter, WebGPU)",
                    if info.name.is_empty() {
                        "unnamed adapter"
                    } else {
                        info.name.as_str()
                    },
                    info.device_type
                ),
                reason: format!(
                    "WebGPU adapter found (largest buffer binding {} MB)",
                    limits.max_storage_buffer_binding_size / (1024 * 1024)
                ),
                supports_f16: setup
                    .adapter
                    .features()
                    .contains(wgpu::Features::SHADER_F16),
                max_binding_bytes: Some(limits.max_storage_buffer_binding_size),
            }
        }
        Err(error) => flex(format!(
            "WebGPU is not available here ({error}); running on the CPU (WebAssembly)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for n in DeviceChoice::NAMES {
            assert_eq!(n.parse::<DeviceChoice>().unwrap().to_string(), n);
        }
        assert!(
            "tpu"
                .parse::<DeviceChoice>()
                .unwrap_err()
                .contains("auto, cpu")
        );
    }

    #[test]
    fn software_adapters_are_never_real_gpus() {
        assert!(looks_like_software("llvmpipe (LLVM 15.0.7, 256 bits)"));
        assert!(looks_like_software("SwiftShader Device (Subzero)"));
        assert!(!looks_like_software("AMD Radeon RX 7900 XTX"));
    }

    #[test]
    fn auto_never_picks_a_cpu_adapter() {
        let chosen = select_device(DeviceChoice::Auto).unwrap();
        if chosen.backend == "wgpu" {
            assert!(list_adapters().iter().any(|a| a.is_real_gpu));
        } else {
            assert!(list_adapters().iter().all(|a| !a.is_real_gpu));
        }
    }
}
