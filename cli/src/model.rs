//! The flags of the built-in workflows (Flux and Qwen Image) and the graphs they build.
//!
//! Each model is its own subcommand with only the flags that apply to it, so clap itself refuses
//! a flag of the other model (exit code 2, naming the flag); `main` adds which model it is for.

use clap::{Args, Subcommand};
use comfy_proxy::workflow::{FluxParams, Lora, QwenParams, Size, Workflow, WorkflowError};

use crate::error::{Result, usage};

/// The flags that belong to one model only, and that model's name: used to tell the user which
/// model a refused flag is for.
pub const MODEL_ONLY_FLAGS: &[(&str, &str)] = &[
    ("--guidance", "flux"),
    ("--clip2", "flux"),
    ("--negative", "qwen-image"),
    ("--cfg", "qwen-image"),
    ("--shift", "qwen-image"),
];

/// Flags both models take.
#[derive(Args, Debug, Clone)]
pub struct CommonFlags {
    /// The prompt.
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub prompt: String,
    /// A LoRA to apply, by file name as the server lists it, with an optional weight (1.0 when
    /// omitted). Repeat for more; they are applied in the order given.
    #[arg(long = "lora", value_name = "NAME[:WEIGHT]", value_parser = parse_lora)]
    pub loras: Vec<Lora>,
    /// Image size: WIDTHxHEIGHT or a preset name (default: flux square-1k, qwen-image
    /// portrait-3-4).
    #[arg(long, value_name = "WxH|PRESET", value_parser = parse_size, long_help = size_help())]
    pub size: Option<Size>,
    /// The noise seed (default: a random one). With generate --count N, job i uses SEED+i.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Sampling steps (default 20).
    #[arg(long, value_name = "N")]
    pub steps: Option<u32>,
    /// Sampler name (default euler).
    #[arg(long, value_name = "NAME")]
    pub sampler: Option<String>,
    /// Scheduler name (default: flux normal, qwen-image simple).
    #[arg(long, value_name = "NAME")]
    pub scheduler: Option<String>,
    /// Images per run (default 1).
    #[arg(long, value_name = "N")]
    pub batch: Option<u32>,
    /// Diffusion model file (default: flux flux1-dev.sft, qwen-image
    /// qwen_image_fp8_e4m3fn.safetensors).
    #[arg(long, value_name = "FILE")]
    pub unet: Option<String>,
    /// VAE file (default: flux ae.sft, qwen-image qwen_image_vae.safetensors).
    #[arg(long, value_name = "FILE")]
    pub vae: Option<String>,
    /// Text encoder file: flux's first (default t5xxl_fp16.safetensors), qwen-image's only
    /// (default qwen_2.5_vl_7b_fp8_scaled.safetensors).
    #[arg(long, value_name = "FILE")]
    pub clip: Option<String>,
    /// UNETLoader weight dtype (default: flux fp8_e4m3fn, qwen-image default).
    #[arg(long, value_name = "DTYPE")]
    pub weight_dtype: Option<String>,
}

/// The Flux flags.
#[derive(Args, Debug, Clone)]
pub struct FluxFlags {
    #[command(flatten)]
    pub common: CommonFlags,
    /// FluxGuidance guidance (default 3.5).
    #[arg(long, value_name = "X")]
    pub guidance: Option<f64>,
    /// Second text encoder file (default clip_l.safetensors).
    #[arg(long, value_name = "FILE")]
    pub clip2: Option<String>,
}

/// The Qwen Image flags.
#[derive(Args, Debug, Clone)]
pub struct QwenFlags {
    #[command(flatten)]
    pub common: CommonFlags,
    /// The negative prompt (default "ugly, cartoon, 3d, video game, cg").
    #[arg(long, value_name = "TEXT")]
    pub negative: Option<String>,
    /// KSampler cfg (default 3.5).
    #[arg(long, value_name = "X")]
    pub cfg: Option<f64>,
    /// ModelSamplingAuraFlow shift (default 3.1).
    #[arg(long, value_name = "X")]
    pub shift: Option<f64>,
}

/// A built-in workflow and its flags.
#[derive(Subcommand, Debug, Clone)]
pub enum Model {
    /// Flux text-to-image (UNETLoader, DualCLIPLoader, SamplerCustomAdvanced).
    Flux(FluxFlags),
    /// Qwen Image text-to-image (UNETLoader, CLIPLoader, KSampler).
    #[command(name = "qwen-image")]
    QwenImage(QwenFlags),
}

impl Model {
    /// The seed the user gave, if any.
    pub fn seed(&self) -> Option<u64> {
        self.common().seed
    }

    fn common(&self) -> &CommonFlags {
        match self {
            Self::Flux(f) => &f.common,
            Self::QwenImage(q) => &q.common,
        }
    }

    /// The graph with this seed, or a usage error naming the flag whose value the server would
    /// refuse.
    pub fn build(&self, seed: u64) -> Result<Workflow> {
        let built = match self {
            Self::Flux(f) => flux(f, seed).build(),
            Self::QwenImage(q) => qwen(q, seed).build(),
        };
        built.map_err(|e| usage(flag_error(&e)))
    }
}

fn set<T: Clone>(slot: &mut T, value: &Option<T>) {
    if let Some(v) = value {
        *slot = v.clone();
    }
}

fn flux(f: &FluxFlags, seed: u64) -> FluxParams {
    let c = &f.common;
    let mut p = FluxParams::new(c.prompt.as_str(), seed).loras(c.loras.iter().cloned());
    set(&mut p.size, &c.size);
    set(&mut p.steps, &c.steps);
    set(&mut p.sampler, &c.sampler);
    set(&mut p.scheduler, &c.scheduler);
    set(&mut p.batch_size, &c.batch);
    set(&mut p.unet_name, &c.unet);
    set(&mut p.vae_name, &c.vae);
    set(&mut p.clip_name1, &c.clip);
    set(&mut p.weight_dtype, &c.weight_dtype);
    set(&mut p.guidance, &f.guidance);
    set(&mut p.clip_name2, &f.clip2);
    p
}

fn qwen(q: &QwenFlags, seed: u64) -> QwenParams {
    let c = &q.common;
    let mut p = QwenParams::new(c.prompt.as_str(), seed).loras(c.loras.iter().cloned());
    set(&mut p.size, &c.size);
    set(&mut p.steps, &c.steps);
    set(&mut p.sampler, &c.sampler);
    set(&mut p.scheduler, &c.scheduler);
    set(&mut p.batch_size, &c.batch);
    set(&mut p.unet_name, &c.unet);
    set(&mut p.vae_name, &c.vae);
    set(&mut p.clip_name, &c.clip);
    set(&mut p.weight_dtype, &c.weight_dtype);
    set(&mut p.negative_prompt, &q.negative);
    set(&mut p.cfg, &q.cfg);
    set(&mut p.shift, &q.shift);
    p
}

/// The builder's refusal, led by the flag that set the parameter.
fn flag_error(e: &WorkflowError) -> String {
    let param = match e {
        WorkflowError::OutOfRange { input, .. }
        | WorkflowError::NotFinite { input }
        | WorkflowError::EmptyName { input } => input.as_str(),
        _ => return e.to_string(),
    };
    let flag = match param {
        "width" | "height" => "--size",
        "batch_size" => "--batch",
        "steps" => "--steps",
        "seed" => "--seed",
        "guidance" => "--guidance",
        "cfg" => "--cfg",
        "shift" => "--shift",
        "sampler" => "--sampler",
        "scheduler" => "--scheduler",
        "vae_name" => "--vae",
        "clip_name" | "clip_name1" => "--clip",
        "clip_name2" => "--clip2",
        "unet_name" => "--unet",
        "weight_dtype" => "--weight-dtype",
        p if p.starts_with("loras[") => "--lora",
        _ => return e.to_string(),
    };
    format!("{flag}: {e}")
}

/// Reads `NAME[:WEIGHT]`: the weight is what follows the last `:`, 1.0 when there is none.
fn parse_lora(text: &str) -> std::result::Result<Lora, String> {
    let (name, weight) = match text.rsplit_once(':') {
        Some((name, weight)) => {
            let w: f64 = weight.trim().parse().map_err(|_| {
                format!("the weight {weight:?} is not a number; write NAME or NAME:WEIGHT")
            })?;
            if !w.is_finite() {
                return Err(format!("the weight {weight:?} is not a finite number"));
            }
            (name, w)
        }
        None => (text, 1.0),
    };
    if name.trim().is_empty() {
        return Err("the LoRA name is empty; write NAME or NAME:WEIGHT".into());
    }
    Ok(Lora::new(name).weight(weight))
}

fn parse_size(text: &str) -> std::result::Result<Size, String> {
    Size::parse(text).map_err(|e| e.to_string())
}

fn size_help() -> String {
    let presets: Vec<String> = Size::PRESETS
        .iter()
        .map(|(name, size)| format!("  {name} ({size})"))
        .collect();
    format!(
        "Image size: WIDTHxHEIGHT or a preset name (default: flux square-1k, qwen-image \
         portrait-3-4). Presets:\n{}",
        presets.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lora_specs() {
        let l = parse_lora("a.safetensors").unwrap();
        assert_eq!((l.name.as_str(), l.weight), ("a.safetensors", 1.0));
        let l = parse_lora("dir:x/b:0.5").unwrap();
        assert_eq!((l.name.as_str(), l.weight), ("dir:x/b", 0.5));
        for bad in ["b:x", "b:", ":0.5", "b:inf"] {
            assert!(parse_lora(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refusals_name_the_flag() {
        let e = WorkflowError::OutOfRange {
            input: "batch_size".into(),
            value: "0".into(),
            min: "1".into(),
            max: "4096".into(),
        };
        assert!(flag_error(&e).starts_with("--batch: "));
    }
}
