//! The Qwen Image text-to-image graph of the original library, with any number of LoRAs.

use super::limits::{self, non_empty};
use super::{Inputs, Link, Lora, SAVE_NODE_ID, Size, Workflow, WorkflowError};

/// The parameters of a Qwen Image text-to-image graph; [`QwenParams::build`] makes the graph.
///
/// The defaults are the original library's: `qwen_image_fp8_e4m3fn.safetensors` (weight dtype
/// `default`), `qwen_2.5_vl_7b_fp8_scaled.safetensors` (type `qwen_image`, device `default`),
/// `qwen_image_vae.safetensors`, cfg 3.5, 20 steps, euler / simple, denoise 1.0, shift 3.1,
/// negative prompt `ugly, cartoon, 3d, video game, cg`, 896x1152 (`portrait-3-4`), batch 1, no
/// LoRAs. The seed has no default: the core draws no random numbers.
///
/// ```
/// use comfy_proxy::workflow::{Lora, QwenParams};
/// let mut wf = QwenParams::new("a fox in the snow", 7)
///     .cfg(4.0)
///     .lora(Lora::new("style.safetensors"))
///     .build()?;
/// wf.set("KSampler.steps", 30)?; // by title
/// assert_eq!(wf.class_of("4"), Some("LoraLoaderModelOnly"));
/// # Ok::<(), comfy_proxy::WorkflowError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct QwenParams {
    /// The prompt.
    pub prompt: String,
    /// The negative prompt; default `ugly, cartoon, 3d, video game, cg`.
    pub negative_prompt: String,
    /// The seed (`KSampler.seed`).
    pub seed: u64,
    /// Image size; default 896x1152 (`portrait-3-4`).
    pub size: Size,
    /// Images per run; default 1.
    pub batch_size: u32,
    /// Sampling steps; default 20.
    pub steps: u32,
    /// `KSampler.cfg`; default 3.5.
    pub cfg: f64,
    /// `KSampler.sampler_name`; default `euler`.
    pub sampler: String,
    /// `KSampler.scheduler`; default `simple`.
    pub scheduler: String,
    /// `KSampler.denoise`; default 1.0.
    pub denoise: f64,
    /// `ModelSamplingAuraFlow.shift`; default 3.1.
    pub shift: f64,
    /// Diffusion model file; default `qwen_image_fp8_e4m3fn.safetensors`.
    pub unet_name: String,
    /// `UNETLoader.weight_dtype`; default `default`.
    pub weight_dtype: String,
    /// Text encoder file; default `qwen_2.5_vl_7b_fp8_scaled.safetensors`.
    pub clip_name: String,
    /// `CLIPLoader.type`; default `qwen_image`.
    pub clip_type: String,
    /// `CLIPLoader.device`; default `default`.
    pub clip_device: String,
    /// VAE file; default `qwen_image_vae.safetensors`.
    pub vae_name: String,
    /// LoRAs (model only), applied in order.
    pub loras: Vec<Lora>,
}

impl QwenParams {
    /// The original library's defaults with this prompt and seed.
    pub fn new(prompt: impl Into<String>, seed: u64) -> Self {
        Self {
            prompt: prompt.into(),
            negative_prompt: "ugly, cartoon, 3d, video game, cg".into(),
            seed,
            size: Size::PORTRAIT_3_4,
            batch_size: 1,
            steps: 20,
            cfg: 3.5,
            sampler: "euler".into(),
            scheduler: "simple".into(),
            denoise: 1.0,
            shift: 3.1,
            unet_name: "qwen_image_fp8_e4m3fn.safetensors".into(),
            weight_dtype: "default".into(),
            clip_name: "qwen_2.5_vl_7b_fp8_scaled.safetensors".into(),
            clip_type: "qwen_image".into(),
            clip_device: "default".into(),
            vae_name: "qwen_image_vae.safetensors".into(),
            loras: Vec::new(),
        }
    }

    setters! {
        /// With negative prompt `text`.
        negative_prompt(negative_prompt): String;
        /// With image size `size`.
        size(size): Size;
        /// With `batch_size` images per run.
        batch_size(batch_size): u32;
        /// With `steps` sampling steps.
        steps(steps): u32;
        /// With cfg `cfg`.
        cfg(cfg): f64;
        /// With sampler `sampler`.
        sampler(sampler): String;
        /// With scheduler `scheduler`.
        scheduler(scheduler): String;
        /// With denoise `denoise`.
        denoise(denoise): f64;
        /// With `ModelSamplingAuraFlow` shift `shift`.
        shift(shift): f64;
        /// With diffusion model file `name`.
        unet_name(unet_name): String;
        /// With `UNETLoader.weight_dtype` `dtype`.
        weight_dtype(weight_dtype): String;
        /// With text encoder file `name`.
        clip_name(clip_name): String;
        /// With `CLIPLoader.type` `clip_type`.
        clip_type(clip_type): String;
        /// With `CLIPLoader.device` `device`.
        clip_device(clip_device): String;
        /// With VAE file `name`.
        vae_name(vae_name): String;
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

    /// Refuses what the server would refuse: a size, batch, step count, cfg, denoise, shift or
    /// LoRA weight outside its range (see [`limits`]), a NaN, or an empty model or sampler name.
    /// The error names the parameter.
    pub fn validate(&self) -> Result<(), WorkflowError> {
        limits::LATENT_WIDTH.check("width", self.size.width.into())?;
        limits::LATENT_HEIGHT.check("height", self.size.height.into())?;
        limits::BATCH_SIZE.check("batch_size", self.batch_size.into())?;
        limits::KSAMPLER_STEPS.check("steps", self.steps.into())?;
        limits::KSAMPLER_SEED.check("seed", self.seed)?;
        limits::KSAMPLER_CFG.check("cfg", self.cfg)?;
        limits::KSAMPLER_DENOISE.check("denoise", self.denoise)?;
        limits::AURA_FLOW_SHIFT.check("shift", self.shift)?;
        non_empty("sampler", &self.sampler)?;
        non_empty("scheduler", &self.scheduler)?;
        non_empty("unet_name", &self.unet_name)?;
        non_empty("weight_dtype", &self.weight_dtype)?;
        non_empty("clip_name", &self.clip_name)?;
        non_empty("clip_type", &self.clip_type)?;
        non_empty("clip_device", &self.clip_device)?;
        non_empty("vae_name", &self.vae_name)?;
        for (i, lora) in self.loras.iter().enumerate() {
            non_empty(&format!("loras[{i}].name"), &lora.name)?;
            limits::LORA_MODEL_ONLY_STRENGTH.check(&format!("loras[{i}].weight"), lora.weight)?;
        }
        Ok(())
    }

    /// Checks the parameters ([`QwenParams::validate`]) and builds the graph.
    ///
    /// Nodes are numbered and titled as the original library does: VAE `1`, text encoder `2`,
    /// model `3`, one `LoraLoaderModelOnly` per LoRA from `4` (each on the model output of the one
    /// before), then `ModelSamplingAuraFlow`, the two prompts, the latent, `KSampler`, decoding,
    /// and the output node `save_image_websocket_node`.
    pub fn build(&self) -> Result<Workflow, WorkflowError> {
        self.validate()?;
        let mut wf = Workflow::new();
        let mut add = |class: &str, inputs: Inputs, title: &str| {
            wf.add_node_with(class, inputs, None, Some(title))
        };
        let vae = add(
            "VAELoader",
            Inputs::new().with("vae_name", self.vae_name.as_str()),
            "Load VAE",
        )?;
        let clip = add(
            "CLIPLoader",
            Inputs::new()
                .with("clip_name", self.clip_name.as_str())
                .with("type", self.clip_type.as_str())
                .with("device", self.clip_device.as_str()),
            "Load CLIP",
        )?;
        let unet = add(
            "UNETLoader",
            Inputs::new()
                .with("unet_name", self.unet_name.as_str())
                .with("weight_dtype", self.weight_dtype.as_str()),
            "Load Diffusion Model",
        )?;
        let mut model = Link::new(&unet, 0);
        for lora in &self.loras {
            let id = add(
                "LoraLoaderModelOnly",
                Inputs::new()
                    .with("lora_name", lora.name.as_str())
                    .with("strength_model", lora.weight)
                    .with("model", model),
                "LoraLoaderModelOnly",
            )?;
            model = Link::new(&id, 0);
        }
        let sampling = add(
            "ModelSamplingAuraFlow",
            Inputs::new().with("shift", self.shift).with("model", model),
            "ModelSamplingAuraFlow",
        )?;
        let positive = add(
            "CLIPTextEncode",
            Inputs::new()
                .with("text", self.prompt.as_str())
                .with("clip", Link::new(&clip, 0)),
            "CLIP Text Encode (Positive Prompt)",
        )?;
        let negative = add(
            "CLIPTextEncode",
            Inputs::new()
                .with("text", self.negative_prompt.as_str())
                .with("clip", Link::new(&clip, 0)),
            "CLIP Text Encode (Negative Prompt)",
        )?;
        let latent = add(
            "EmptySD3LatentImage",
            Inputs::new()
                .with("width", self.size.width)
                .with("height", self.size.height)
                .with("batch_size", self.batch_size),
            "EmptySD3LatentImage",
        )?;
        let sampled = add(
            "KSampler",
            Inputs::new()
                .with("seed", self.seed)
                .with("steps", self.steps)
                .with("cfg", self.cfg)
                .with("sampler_name", self.sampler.as_str())
                .with("scheduler", self.scheduler.as_str())
                .with("denoise", self.denoise)
                .with("model", Link::new(&sampling, 0))
                .with("positive", Link::new(&positive, 0))
                .with("negative", Link::new(&negative, 0))
                .with("latent_image", Link::new(&latent, 0)),
            "KSampler",
        )?;
        let decoded = add(
            "VAEDecode",
            Inputs::new()
                .with("samples", Link::new(&sampled, 0))
                .with("vae", Link::new(&vae, 0)),
            "VAE Decode",
        )?;
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
        let p = || QwenParams::new("a cat", 1);
        let cases = [
            (p().size(Size::new(1024, 0)), "height = 0"),
            (p().steps(10001), "steps = 10001"),
            (p().cfg(100.5), "cfg = 100.5"),
            (p().denoise(1.5), "denoise = 1.5"),
            (p().shift(f64::NAN), "shift must be a finite"),
            (p().clip_name(""), "clip_name must not be empty"),
            (
                p().lora(Lora::new("a").weight(-200.0)),
                "loras[0].weight = -200",
            ),
        ];
        for (params, want) in cases {
            let err = params.build().unwrap_err().to_string();
            assert!(err.contains(want), "{want}: {err}");
        }
    }

    #[test]
    fn loras_chain_on_the_model_only() {
        let wf = QwenParams::new("a cat", 1)
            .loras([Lora::new("a"), Lora::new("b")])
            .build()
            .unwrap();
        let model = |node: &str| wf.node(node).and_then(|n| n.input("model")).cloned();
        assert_eq!(model("4"), Some(Link::new("3", 0).into()));
        assert_eq!(model("5"), Some(Link::new("4", 0).into()));
        assert_eq!(model("6"), Some(Link::new("5", 0).into()));
        assert_eq!(
            wf.node("6").map(|n| n.class_type()),
            Some("ModelSamplingAuraFlow")
        );
    }
}
