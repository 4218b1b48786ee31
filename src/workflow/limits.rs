//! The numeric ranges the server accepts for the inputs the builders set, in one place.
//!
//! Each constant names the node class and input it was read from (ComfyUI 0.3.64's
//! `object_info`, see `fixtures/object_info.json`); a test compares every one of [`INT_LIMITS`]
//! and [`FLOAT_LIMITS`] with that file, so they cannot drift from it unnoticed.
//!
//! The server refuses a value below `min` or above `max` (`value_smaller_than_min`,
//! `value_bigger_than_max`). It does not refuse a value off the `step` grid (the step is a hint
//! for the UI), so neither do the builders: `landscape-7-5` (1176x840) is not a multiple of 16
//! and works.

use super::WorkflowError;

/// The accepted range of an `INT` input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntLimit {
    /// The node class (`"EmptySD3LatentImage"`).
    pub class: &'static str,
    /// The input (`"width"`).
    pub input: &'static str,
    /// The smallest value accepted.
    pub min: u64,
    /// The largest value accepted.
    pub max: u64,
    /// The UI's step, if the server declares one (not enforced).
    pub step: Option<u64>,
}

/// The accepted range of a `FLOAT` input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FloatLimit {
    /// The node class.
    pub class: &'static str,
    /// The input.
    pub input: &'static str,
    /// The smallest value accepted.
    pub min: f64,
    /// The largest value accepted.
    pub max: f64,
}

impl IntLimit {
    /// Refuses `value` if the server would; `what` names the parameter in the error.
    pub fn check(&self, what: &str, value: u64) -> Result<(), WorkflowError> {
        if (self.min..=self.max).contains(&value) {
            return Ok(());
        }
        Err(WorkflowError::OutOfRange {
            input: what.to_owned(),
            value: value.to_string(),
            min: self.min.to_string(),
            max: self.max.to_string(),
        })
    }
}

impl FloatLimit {
    /// Refuses `value` if the server would, or if it is NaN or infinite; `what` names the
    /// parameter in the error.
    pub fn check(&self, what: &str, value: f64) -> Result<(), WorkflowError> {
        if !value.is_finite() {
            return Err(WorkflowError::NotFinite {
                input: what.to_owned(),
            });
        }
        if (self.min..=self.max).contains(&value) {
            return Ok(());
        }
        Err(WorkflowError::OutOfRange {
            input: what.to_owned(),
            value: value.to_string(),
            min: self.min.to_string(),
            max: self.max.to_string(),
        })
    }
}

const fn int(class: &'static str, input: &'static str, min: u64, max: u64) -> IntLimit {
    IntLimit {
        class,
        input,
        min,
        max,
        step: None,
    }
}

const fn float(class: &'static str, input: &'static str, min: f64, max: f64) -> FloatLimit {
    FloatLimit {
        class,
        input,
        min,
        max,
    }
}

/// `EmptySD3LatentImage.width`: 16 to 16384, step 16.
pub const LATENT_WIDTH: IntLimit = IntLimit {
    step: Some(16),
    ..int("EmptySD3LatentImage", "width", 16, 16384)
};
/// `EmptySD3LatentImage.height`: 16 to 16384, step 16.
pub const LATENT_HEIGHT: IntLimit = IntLimit {
    step: Some(16),
    ..int("EmptySD3LatentImage", "height", 16, 16384)
};
/// `EmptySD3LatentImage.batch_size`: 1 to 4096.
pub const BATCH_SIZE: IntLimit = int("EmptySD3LatentImage", "batch_size", 1, 4096);
/// `ModelSamplingFlux.width`: 16 to 16384, step 8.
pub const FLUX_SAMPLING_WIDTH: IntLimit = IntLimit {
    step: Some(8),
    ..int("ModelSamplingFlux", "width", 16, 16384)
};
/// `ModelSamplingFlux.height`: 16 to 16384, step 8.
pub const FLUX_SAMPLING_HEIGHT: IntLimit = IntLimit {
    step: Some(8),
    ..int("ModelSamplingFlux", "height", 16, 16384)
};
/// `BasicScheduler.steps` (Flux): 1 to 10000.
pub const SCHEDULER_STEPS: IntLimit = int("BasicScheduler", "steps", 1, 10000);
/// `KSampler.steps` (Qwen Image): 1 to 10000.
pub const KSAMPLER_STEPS: IntLimit = int("KSampler", "steps", 1, 10000);
/// `RandomNoise.noise_seed` (Flux): any u64.
pub const NOISE_SEED: IntLimit = int("RandomNoise", "noise_seed", 0, u64::MAX);
/// `KSampler.seed` (Qwen Image): any u64.
pub const KSAMPLER_SEED: IntLimit = int("KSampler", "seed", 0, u64::MAX);

/// `FluxGuidance.guidance`: 0 to 100.
pub const FLUX_GUIDANCE: FloatLimit = float("FluxGuidance", "guidance", 0.0, 100.0);
/// `ModelSamplingFlux.max_shift`: 0 to 100.
pub const FLUX_MAX_SHIFT: FloatLimit = float("ModelSamplingFlux", "max_shift", 0.0, 100.0);
/// `ModelSamplingFlux.base_shift`: 0 to 100.
pub const FLUX_BASE_SHIFT: FloatLimit = float("ModelSamplingFlux", "base_shift", 0.0, 100.0);
/// `BasicScheduler.denoise`: 0 to 1.
pub const SCHEDULER_DENOISE: FloatLimit = float("BasicScheduler", "denoise", 0.0, 1.0);
/// `KSampler.cfg`: 0 to 100.
pub const KSAMPLER_CFG: FloatLimit = float("KSampler", "cfg", 0.0, 100.0);
/// `KSampler.denoise`: 0 to 1.
pub const KSAMPLER_DENOISE: FloatLimit = float("KSampler", "denoise", 0.0, 1.0);
/// `ModelSamplingAuraFlow.shift` (Qwen Image): 0 to 100.
pub const AURA_FLOW_SHIFT: FloatLimit = float("ModelSamplingAuraFlow", "shift", 0.0, 100.0);
/// `LoraLoader.strength_model` (Flux LoRAs): -100 to 100.
pub const LORA_STRENGTH_MODEL: FloatLimit = float("LoraLoader", "strength_model", -100.0, 100.0);
/// `LoraLoader.strength_clip` (Flux LoRAs): -100 to 100.
pub const LORA_STRENGTH_CLIP: FloatLimit = float("LoraLoader", "strength_clip", -100.0, 100.0);
/// `LoraLoaderModelOnly.strength_model` (Qwen Image LoRAs): -100 to 100.
pub const LORA_MODEL_ONLY_STRENGTH: FloatLimit =
    float("LoraLoaderModelOnly", "strength_model", -100.0, 100.0);

/// Every integer limit above.
pub const INT_LIMITS: &[IntLimit] = &[
    LATENT_WIDTH,
    LATENT_HEIGHT,
    BATCH_SIZE,
    FLUX_SAMPLING_WIDTH,
    FLUX_SAMPLING_HEIGHT,
    SCHEDULER_STEPS,
    KSAMPLER_STEPS,
    NOISE_SEED,
    KSAMPLER_SEED,
];

/// Every float limit above.
pub const FLOAT_LIMITS: &[FloatLimit] = &[
    FLUX_GUIDANCE,
    FLUX_MAX_SHIFT,
    FLUX_BASE_SHIFT,
    SCHEDULER_DENOISE,
    KSAMPLER_CFG,
    KSAMPLER_DENOISE,
    AURA_FLOW_SHIFT,
    LORA_STRENGTH_MODEL,
    LORA_STRENGTH_CLIP,
    LORA_MODEL_ONLY_STRENGTH,
];

/// Refuses an empty name; `what` names the parameter in the error.
pub(crate) fn non_empty(what: &str, name: &str) -> Result<(), WorkflowError> {
    if name.trim().is_empty() {
        return Err(WorkflowError::EmptyName {
            input: what.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_name_the_parameter() {
        assert_eq!(
            LATENT_WIDTH.check("width", 8).unwrap_err().to_string(),
            "width = 8 is out of range: the server accepts 16 to 16384"
        );
        assert!(LATENT_WIDTH.check("width", 16).is_ok());
        assert!(LATENT_WIDTH.check("width", 16385).is_err());
        assert!(NOISE_SEED.check("seed", u64::MAX).is_ok());
        assert_eq!(
            LORA_STRENGTH_MODEL
                .check("loras[0].weight", -100.5)
                .unwrap_err()
                .to_string(),
            "loras[0].weight = -100.5 is out of range: the server accepts -100 to 100"
        );
        assert_eq!(
            FLUX_GUIDANCE.check("guidance", f64::NAN),
            Err(WorkflowError::NotFinite {
                input: "guidance".into()
            })
        );
        assert_eq!(
            non_empty("unet_name", " ").unwrap_err().to_string(),
            "unet_name must not be empty"
        );
    }
}
