//! Weight precision: which float dtype a model's weights and activations use on a device, and
//! the dynamic loss scale f16 training needs.
//!
//! `auto` keeps a checkpoint's half precision where the device computes it: the CPU backend
//! (flex) computes f16 and bf16, WGSL (every wgpu device of the native and browser builds) f16
//! where the adapter has `shader-f16` and bf16 never, so a bf16 checkpoint runs there in f16,
//! or in f32 without `shader-f16`, with the reason recorded. Whatever the weight dtype, norms,
//! softmax, rotary tables and the loss compute in f32 (see `models::layers`).

use std::fmt;
use std::str::FromStr;

use burn::tensor::{DType, Device};
use serde::{Deserialize, Serialize};

use crate::models::files::ModelFiles;

/// The dtype a user asks for (`--dtype`, a recipe's `dtype:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum DTypeChoice {
    /// The checkpoint's own dtype where the device computes it, else the nearest one it does.
    #[default]
    Auto,
    /// Single precision.
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16 (the dtype most released checkpoints are stored in).
    Bf16,
}

impl DTypeChoice {
    /// Every accepted spelling, for error messages.
    pub const NAMES: [&'static str; 4] = ["auto", "f32", "f16", "bf16"];

    /// The exact dtype asked for (`None` for `auto`).
    pub fn exact(self) -> Option<DType> {
        match self {
            Self::Auto => None,
            Self::F32 => Some(DType::F32),
            Self::F16 => Some(DType::F16),
            Self::Bf16 => Some(DType::BF16),
        }
    }

    /// Whether this is `f32` (a recipe leaves the key out then, keeping its fingerprint).
    pub fn is_f32(&self) -> bool {
        *self == Self::F32
    }

    /// The choice naming exactly `dtype` (f32 for any non-half dtype).
    pub fn of(dtype: DType) -> Self {
        match dtype {
            DType::F16 => Self::F16,
            DType::BF16 => Self::Bf16,
            _ => Self::F32,
        }
    }
}

impl FromStr for DTypeChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "f32" | "float32" | "fp32" => Ok(Self::F32),
            "f16" | "float16" | "fp16" => Ok(Self::F16),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            other => Err(format!(
                "unknown dtype {other:?}; expected one of {}",
                Self::NAMES.join(", ")
            )),
        }
    }
}

impl TryFrom<String> for DTypeChoice {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl fmt::Display for DTypeChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Bf16 => "bf16",
        })
    }
}

/// Our short name of a float dtype (`f32`, `f16`, `bf16`).
pub fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        DType::F64 => "f64",
        _ => "f32",
    }
}

/// What a device can compute in, as far as the dtype choice is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtypeSupport {
    /// f16 arithmetic (flex; wgpu with `shader-f16`).
    pub f16: bool,
    /// bf16 arithmetic (flex only: WGSL has no bf16).
    pub bf16: bool,
}

impl DtypeSupport {
    /// What Burn reports for `device`.
    pub fn of(device: &Device) -> Self {
        Self {
            f16: device.supports_dtype(DType::F16),
            bf16: device.supports_dtype(DType::BF16),
        }
    }

    fn has(self, dtype: DType) -> bool {
        match dtype {
            DType::F16 => self.f16,
            DType::BF16 => self.bf16,
            _ => true,
        }
    }
}

/// The dtype a model loads in, and why when it is not what the checkpoint or user named.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedDtype {
    /// The dtype weights and activations use.
    pub dtype: DType,
    /// Set when `auto` had to leave the checkpoint's dtype (printed by the CLI).
    pub note: Option<String>,
}

/// `--dtype bf16` (or f16) on a device that cannot compute in it.
#[derive(Debug, Clone, PartialEq)]
pub struct UnsupportedDtype {
    /// The dtype asked for.
    pub asked: DTypeChoice,
    /// The device, in words.
    pub device: String,
    /// What to use instead.
    pub alternative: &'static str,
}

impl fmt::Display for UnsupportedDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.asked {
            DTypeChoice::Bf16 => "no bf16 arithmetic (WGSL has none)",
            _ => "no f16 arithmetic (the adapter lacks shader-f16)",
        };
        write!(
            f,
            "--dtype {} is not supported on {}: {why}; use --dtype {}",
            self.asked, self.device, self.alternative
        )
    }
}

impl std::error::Error for UnsupportedDtype {}

/// Resolves `choice` for a checkpoint stored in `checkpoint` (its `torch_dtype`; `None` when
/// unknown) on a device with `support` (named `device` in errors).
pub fn resolve_dtype(
    choice: DTypeChoice,
    checkpoint: Option<DType>,
    support: DtypeSupport,
    device: &str,
) -> Result<ResolvedDtype, UnsupportedDtype> {
    if let Some(exact) = choice.exact() {
        if support.has(exact) {
            return Ok(ResolvedDtype {
                dtype: exact,
                note: None,
            });
        }
        let alternative = if exact == DType::BF16 && support.f16 {
            "f16 or f32"
        } else {
            "f32"
        };
        return Err(UnsupportedDtype {
            asked: choice,
            device: device.to_string(),
            alternative,
        });
    }
    let stored = match checkpoint {
        Some(d @ (DType::F16 | DType::BF16)) => d,
        _ => {
            return Ok(ResolvedDtype {
                dtype: DType::F32,
                note: None,
            });
        }
    };
    if support.has(stored) {
        return Ok(ResolvedDtype {
            dtype: stored,
            note: None,
        });
    }
    let (dtype, why) = if stored == DType::BF16 && support.f16 {
        (DType::F16, "it has no bf16 arithmetic")
    } else {
        (DType::F32, "it has no half-precision arithmetic")
    };
    Ok(ResolvedDtype {
        dtype,
        note: Some(format!(
            "the checkpoint is {}; {device} computes it in {} ({why})",
            dtype_name(stored),
            dtype_name(dtype)
        )),
    })
}

/// The checkpoint's `torch_dtype` from `config.json` (top level, else `text_config`'s), when it
/// names a float dtype.
pub fn checkpoint_dtype(files: &ModelFiles) -> Option<DType> {
    let config: serde_json::Value = files.read_json("config.json").ok()?;
    let name = config
        .get("torch_dtype")
        .and_then(|v| v.as_str())
        .or_else(|| config.get("text_config")?.get("torch_dtype")?.as_str())?;
    match name {
        "bfloat16" => Some(DType::BF16),
        "float16" => Some(DType::F16),
        "float32" => Some(DType::F32),
        _ => None,
    }
}

/// Dynamic loss scaling for f16 training, as `torch.cuda.amp.GradScaler` does it: the loss is
/// multiplied by `scale` before backward; a step whose gradients hold an inf or NaN is skipped
/// and halves the scale; `growth_interval` clean steps in a row double it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossScaler {
    /// The current scale.
    pub scale: f64,
    /// Clean steps since the last change.
    pub clean_steps: u64,
    /// Steps skipped for an overflow so far.
    pub skipped_steps: u64,
    /// Clean steps before the scale doubles (torch: 2000).
    pub growth_interval: u64,
}

impl Default for LossScaler {
    fn default() -> Self {
        Self {
            scale: 65_536.0,
            clean_steps: 0,
            skipped_steps: 0,
            growth_interval: 2000,
        }
    }
}

impl LossScaler {
    /// Records a step whose unscaled gradient norm was `grad_norm`; returns whether the
    /// optimizer may apply it (false on an overflow: the step is skipped).
    pub fn update(&mut self, grad_norm: f64) -> bool {
        if !grad_norm.is_finite() {
            self.scale = (self.scale / 2.0).max(1.0);
            self.clean_steps = 0;
            self.skipped_steps += 1;
            return false;
        }
        self.clean_steps += 1;
        if self.clean_steps >= self.growth_interval {
            self.scale *= 2.0;
            self.clean_steps = 0;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLEX: DtypeSupport = DtypeSupport {
        f16: true,
        bf16: true,
    };
    const WGSL_F16: DtypeSupport = DtypeSupport {
        f16: true,
        bf16: false,
    };
    const WGSL: DtypeSupport = DtypeSupport {
        f16: false,
        bf16: false,
    };

    #[test]
    fn auto_keeps_the_checkpoint_dtype_where_the_device_computes_it() {
        let r = resolve_dtype(DTypeChoice::Auto, Some(DType::BF16), FLEX, "cpu").unwrap();
        assert_eq!((r.dtype, r.note), (DType::BF16, None));
        let r = resolve_dtype(DTypeChoice::Auto, Some(DType::F32), FLEX, "cpu").unwrap();
        assert_eq!(r.dtype, DType::F32);
        let r = resolve_dtype(DTypeChoice::Auto, None, FLEX, "cpu").unwrap();
        assert_eq!(r.dtype, DType::F32);
    }

    #[test]
    fn auto_converts_bf16_where_wgsl_has_none_and_says_why() {
        let r = resolve_dtype(DTypeChoice::Auto, Some(DType::BF16), WGSL_F16, "gpu").unwrap();
        assert_eq!(r.dtype, DType::F16);
        assert!(r.note.unwrap().contains("no bf16 arithmetic"));
        let r = resolve_dtype(DTypeChoice::Auto, Some(DType::F16), WGSL, "gpu").unwrap();
        assert_eq!(r.dtype, DType::F32);
        assert!(r.note.unwrap().contains("f16; gpu computes it in f32"));
    }

    #[test]
    fn an_exact_dtype_the_device_lacks_is_refused_with_the_alternative() {
        let e = resolve_dtype(DTypeChoice::Bf16, None, WGSL_F16, "lavapipe").unwrap_err();
        assert_eq!(
            e.to_string(),
            "--dtype bf16 is not supported on lavapipe: no bf16 arithmetic (WGSL has none); \
             use --dtype f16 or f32"
        );
        let e = resolve_dtype(DTypeChoice::F16, None, WGSL, "lavapipe").unwrap_err();
        assert!(e.to_string().ends_with("use --dtype f32"), "{e}");
        let r = resolve_dtype(DTypeChoice::F32, Some(DType::BF16), WGSL, "x").unwrap();
        assert_eq!(r.dtype, DType::F32);
    }

    #[test]
    fn names_parse_and_print() {
        for name in DTypeChoice::NAMES {
            assert_eq!(name.parse::<DTypeChoice>().unwrap().to_string(), name);
        }
        assert_eq!("bfloat16".parse::<DTypeChoice>(), Ok(DTypeChoice::Bf16));
        assert!(
            "f8".parse::<DTypeChoice>()
                .unwrap_err()
                .contains("auto, f32")
        );
    }

    #[test]
    fn loss_scale_halves_on_overflow_and_doubles_after_clean_steps() {
        let mut s = LossScaler {
            growth_interval: 3,
            ..LossScaler::default()
        };
        assert!(!s.update(f64::INFINITY));
        assert!(!s.update(f64::NAN));
        assert_eq!((s.scale, s.skipped_steps), (16_384.0, 2));
        for _ in 0..3 {
            assert!(s.update(1.0));
        }
        assert_eq!((s.scale, s.clean_steps), (32_768.0, 0));
    }
}
