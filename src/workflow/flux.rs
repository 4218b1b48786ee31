//! The Flux text-to-image graph of the original library, with any number of LoRAs.

use super::limits::{self, non_empty};
use super::{Inputs, Link, Lora, SAVE_NODE_ID, Size, Workflow, WorkflowError};

/// The parameters of a Flux text-to-image graph; [`FluxParams::build`] makes the graph.
///
/// The defaults are the original library's: `ae.sft`, `t5xxl_fp16.safetensors` +
/// `clip_l.safetensors`, `flux1-dev.sft` in `fp8_e4m3fn`, euler / normal, 20 steps, guidance
/// 3.5, 1024x1024, batch 1, no LoRAs. The seed has no default: the core draws no random numbers.
///
/// ```
/// use comfy_proxy::workflow::{FluxParams, Lora, Size};
/// let wf = FluxParams::new("a lighthouse at dusk", 42)
///     .size(Size::LANDSCAPE_16_9)
///     .steps(28)
///     .lora(Lora::new("detail.safetensors").weight(0.8))
///     .build()?;
/// assert_eq!(wf.class_of("save_image_websocket_node"), Some("SaveImageWebsocket"));
/// assert_eq!(wf.nodes_of_class("LoraLoader").len(), 1);
/// # Ok::<(), comfy_proxy::WorkflowError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FluxParams {
    /// The prompt.
    pub prompt: String,
    /// The noise seed (`RandomNoise.noise_seed`).
    pub seed: u64,
    /// Image size; default 1024x1024 (`square-1k`).
    pub size: Size,
    /// Images per run; default 1.
    pub batch_size: u32,
    /// Sampling steps; default 20.
    pub steps: u32,
    /// `FluxGuidance.guidance`; default 3.5.
    pub guidance: f64,
    /// Sampler (`KSamplerSelect.sampler_name`); default `euler`.
    pub sampler: String,
    /// Scheduler (`BasicScheduler.scheduler`); default `normal`.
    pub scheduler: String,
    /// VAE file; default `ae.sft`.
    pub vae_name: String,
    /// First text encoder; default `t5xxl_fp16.safetensors`.
    pub clip_name1: String,
    /// Second text encoder; default `clip_l.safetensors`.
    pub clip_name2: String,
    /// Diffusion model file; default `flux1-dev.sft`.
    pub unet_name: String,
    /// `UNETLoader.weight_dtype`; default `fp8_e4m3fn`.
    pub weight_dtype: String,
    /// LoRAs, applied in order.
    pub loras: Vec<Lora>,
}

/// `ModelSamplingFlux` shifts and the scheduler's denoise, fixed as in the original library.
const MAX_SHIFT: f64 = 1.16;
const BASE_SHIFT: f64 = 0.5;
/// Written as the integer `1`, as the original does.
const DENOISE: u32 = 1;

impl FluxParams {
    /// The original library's defaults with this prompt and seed.
    pub fn new(prompt: impl Into<String>, seed: u64) -> Self {
        Self {
            prompt: prompt.into(),
            seed,
            size: Size::SQUARE_1K,
            batch_size: 1,
            steps: 20,
            guidance: 3.5,
            sampler: "euler".into(),
            scheduler: "normal".into(),
            vae_name: "ae.sft".into(),
            clip_name1: "t5xxl_fp16.safetensors".into(),
            clip_name2: "clip_l.safetensors".into(),
            unet_name: "flux1-dev.sft".into(),
            weight_dtype: "fp8_e4m3fn".into(),
            loras: Vec::new(),
        }
    }

    setters! {
        /// With image size `size`.
        size(size): Size;
        /// With `batch_size` images per run.
        batch_size(batch_size): u32;
        /// With `steps` sampling steps.
        steps(steps): u32;
        /// With guidance `guidance`.
        guidance(guidance): f64;
        /// With sampler `sampler`.
        sampler(sampler): String;
        /// With scheduler `scheduler`.
        scheduler(scheduler): String;
        /// With VAE file `name`.
        vae_name(vae_name): String;
    }

    /// With text encoder files `clip_name1` and `clip_name2`.
    #[must_use]
    pub fn clip_names(
        mut self,
        clip_name1: impl Into<String>,
        clip_name2: impl Into<String>,
    ) -> Self {
        self.clip_name1 = clip_name1.into();
        self.clip_name2 = clip_name2.into();
        self
    }

    setters! {
        /// With diffusion model file `name`.
        unet_name(unet_name): String;
        /// With `UNETLoader.weight_dtype` `dtype`.
        weight_dtype(weight_dtype): String;
    }

    /// With one more LoRA, applied after those already given.
    #[must_use]
    pub fn lora(mut self, lora: Lora) -> Self {
        self.loras.push(lora);
        self
    }

    /// With these LoRAs added, in order.
    #[must_use]
    pub fn loras(mut self, loras: impl IntoIterator<Item = Lora>) -> Self {
        self.loras.extend(loras);
        self
    }

    /// Refuses what the server would refuse: a size, batch, step count, guidance or LoRA weight
    /// outside its range (see [`limits`]), a NaN, or an empty model or sampler name. The error
    /// names the parameter.
    pub fn validate(&self) -> Result<(), WorkflowError> {
        for limit in [limits::LATENT_WIDTH, limits::FLUX_SAMPLING_WIDTH] {
            limit.check("width", self.size.width.into())?;
        }
        for limit in [limits::LATENT_HEIGHT, limits::FLUX_SAMPLING_HEIGHT] {
            limit.check("height", self.size.height.into())?;
        }
        limits::BATCH_SIZE.check("batch_size", self.batch_size.into())?;
        limits::SCHEDULER_STEPS.check("steps", self.steps.into())?;
        limits::NOISE_SEED.check("seed", self.seed)?;
        limits::FLUX_GUIDANCE.check("guidance", self.guidance)?;
        limits::FLUX_MAX_SHIFT.check("max_shift", MAX_SHIFT)?;
        limits::FLUX_BASE_SHIFT.check("base_shift", BASE_SHIFT)?;
        limits::SCHEDULER_DENOISE.check("denoise", DENOISE.into())?;
        non_empty("sampler", &self.sampler)?;
        non_empty("scheduler", &self.scheduler)?;
        non_empty("vae_name", &self.vae_name)?;
        non_empty("clip_name1", &self.clip_name1)?;
        non_empty("clip_name2", &self.clip_name2)?;
        non_empty("unet_name", &self.unet_name)?;
        non_empty("weight_dtype", &self.weight_dtype)?;
        for (i, lora) in self.loras.iter().enumerate() {
            non_empty(&format!("loras[{i}].name"), &lora.name)?;
            let what = format!("loras[{i}].weight");
            limits::LORA_STRENGTH_MODEL.check(&what, lora.weight)?;
            limits::LORA_STRENGTH_CLIP.check(&what, lora.weight)?;
        }
        Ok(())
    }

    /// Checks the parameters ([`FluxParams::validate`]) and builds the graph.
    ///
    /// Nodes are numbered as the original library numbers them: VAE `1`, text encoders `2`,
    /// model `3`, sampler `4`, one `LoraLoader` per LoRA from `5`, then the prompt, sampling,
    /// decoding, and the output node `save_image_websocket_node`. Each `LoraLoader` takes the
    /// model from output 0 and the CLIP from output 1 of the one before it (the first, from the
    /// model loader and output 0 of `DualCLIPLoader`).
    pub fn build(&self) -> Result<Workflow, WorkflowError> {
        self.validate()?;
        let mut wf = Workflow::new();
        let vae = wf.add_node(
            "VAELoader",
            Inputs::new().with("vae_name", self.vae_name.as_str()),
        );
        let clip_loader = wf.add_node(
            "DualCLIPLoader",
            Inputs::new()
                .with("clip_name1", self.clip_name1.as_str())
                .with("clip_name2", self.clip_name2.as_str())
                .with("type", "flux"),
        );
        let unet = wf.add_node(
            "UNETLoader",
            Inputs::new()
                .with("unet_name", self.unet_name.as_str())
                .with("weight_dtype", self.weight_dtype.as_str()),
        );
        let sampler = wf.add_node(
            "KSamplerSelect",
            Inputs::new().with("sampler_name", self.sampler.as_str()),
        );
        let mut model = Link::new(&unet, 0);
        let mut clip = Link::new(&clip_loader, 0);
        for lora in &self.loras {
            let id = wf.add_node(
                "LoraLoader",
                Inputs::new()
                    .with("lora_name", lora.name.as_str())
                    .with("strength_model", lora.weight)
                    .with("strength_clip", lora.weight)
                    .with("model", model)
                    .with("clip", clip),
            );
            model = Link::new(&id, 0);
            clip = Link::new(&id, 1);
        }
        let prompt = wf.add_node(
            "CLIPTextEncode",
            Inputs::new()
                .with("text", self.prompt.as_str())
                .with("clip", clip),
        );
        let sampling = wf.add_node(
            "ModelSamplingFlux",
            Inputs::new()
                .with("max_shift", MAX_SHIFT)
                .with("base_shift", BASE_SHIFT)
                .with("width", self.size.width)
                .with("height", self.size.height)
                .with("model", model),
        );
        let scheduler = wf.add_node(
            "BasicScheduler",
            Inputs::new()
                .with("scheduler", self.scheduler.as_str())
                .with("steps", self.steps)
                .with("denoise", DENOISE)
                .with("model", Link::new(&sampling, 0)),
        );
        let guidance = wf.add_node(
            "FluxGuidance",
            Inputs::new()
                .with("guidance", self.guidance)
                .with("conditioning", Link::new(&prompt, 0)),
        );
        let noise = wf.add_node("RandomNoise", Inputs::new().with("noise_seed", self.seed));
        let latent = wf.add_node(
            "EmptySD3LatentImage",
            Inputs::new()
                .with("width", self.size.width)
                .with("height", self.size.height)
                .with("batch_size", self.batch_size),
        );
        let guider = wf.add_node(
            "BasicGuider",
            Inputs::new()
                .with("model", Link::new(&sampling, 0))
                .with("conditioning", Link::new(&guidance, 0)),
        );
        let sampled = wf.add_node(
            "SamplerCustomAdvanced",
            Inputs::new()
                .with("noise", Link::new(&noise, 0))
                .with("guider", Link::new(&guider, 0))
                .with("sampler", Link::new(&sampler, 0))
                .with("sigmas", Link::new(&scheduler, 0))
                .with("latent_image", Link::new(&latent, 0)),
        );
        let decoded = wf.add_node(
            "VAEDecode",
            Inputs::new()
                .with("samples", Link::new(&sampled, 0))
                .with("vae", Link::new(&vae, 0)),
        );
        wf.add_node_with(
            "SaveImageWebsocket",
            Inputs::new().with("images", Link::new(&decoded, 0)),
            Some(SAVE_NODE_ID),
            None,
        )?;
        Ok(wf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_parameter() {
        let p = || FluxParams::new("a cat", 1);
        let cases = [
            (p().size(Size::new(8, 1024)), "width = 8"),
            (p().size(Size::new(1024, 16400)), "height = 16400"),
            (p().steps(0), "steps = 0"),
            (p().batch_size(0), "batch_size = 0"),
            (p().batch_size(5000), "batch_size = 5000"),
            (p().guidance(-1.0), "guidance = -1"),
            (p().guidance(f64::INFINITY), "guidance must be a finite"),
            (p().unet_name(""), "unet_name must not be empty"),
            (
                p().lora(Lora::new("a")).lora(Lora::new("")),
                "loras[1].name",
            ),
            (
                p().lora(Lora::new("a").weight(101.0)),
                "loras[0].weight = 101",
            ),
        ];
        for (params, want) in cases {
            let err = params.build().unwrap_err().to_string();
            assert!(err.contains(want), "{want}: {err}");
        }
    }

    #[test]
    fn lora_chain_passes_clip_output_1() {
        let wf = FluxParams::new("a cat", 1)
            .loras([Lora::new("a"), Lora::new("b"), Lora::new("c")])
            .build()
            .unwrap();
        let link = |node: &str, input: &str| {
            wf.node(node)
                .and_then(|n| n.input(input))
                .and_then(|i| i.as_link())
                .cloned()
        };
        assert_eq!(link("5", "clip"), Some(Link::new("2", 0)));
        assert_eq!(link("6", "clip"), Some(Link::new("5", 1)));
        assert_eq!(link("7", "clip"), Some(Link::new("6", 1)));
        assert_eq!(link("7", "model"), Some(Link::new("6", 0)));
        assert_eq!(link("8", "clip"), Some(Link::new("7", 1)));
        assert_eq!(link("9", "model"), Some(Link::new("7", 0)));
    }
}
