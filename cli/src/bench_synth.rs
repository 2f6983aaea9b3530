//! `adamllm bench synth`: synthesis throughput (images/s, generated tokens/s) of the presets,
//! batched against one image at a time, on random-weight models (their outputs run to the
//! token budget, so the work per image is the same in every configuration).

use adamllm::burn::tensor::DType;
use adamllm::device::{DeviceChoice, select_device};
use adamllm::models::qwen2_vl::Qwen2Vl;
use adamllm::models::qwen2_vl::presets::{Preset, init_model_dir};
use adamllm::synth::pairs::read_caption_pairs;
use adamllm::synth::synthesize::{SynthesizeOptions, run_synthesis};
use anyhow::Result;

/// Runs the synthesis benchmark; prints one JSON line per configuration and a table.
pub fn bench_synth(
    presets: &str,
    devices: &str,
    rows: usize,
    batches: &str,
    max_new_tokens: usize,
) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut lines = String::new();
    for i in 0..rows {
        let img = image::RgbImage::from_fn(224, 168, |x, y| {
            image::Rgb([((x + 11 * i as u32) % 256) as u8, (y * 3 % 256) as u8, 140])
        });
        img.save(tmp.path().join(format!("slide{i}.png")))?;
        let caption = format!(
            "Stained tissue with {} round nuclei, {} of them enlarged, and pink cytoplasm.",
            5 + i,
            1 + i % 3
        );
        lines.push_str(
            &serde_json::json!({"images": [format!("slide{i}.png")], "messages": [
                {"role": "user", "content": "<image>Describe the slide."},
                {"role": "assistant", "content": caption}]})
            .to_string(),
        );
        lines.push('\n');
    }
    let data = tmp.path().join("image_caption_pairs.jsonl");
    std::fs::write(&data, lines)?;
    let pairs = read_caption_pairs(&data)?;
    let mut table = Vec::new();
    for preset_name in presets.split(',').map(str::trim) {
        let preset: Preset = preset_name.parse().map_err(anyhow::Error::msg)?;
        let dir = tmp.path().join(format!("model-{preset_name}"));
        init_model_dir(&dir, preset, 0, true)?;
        for device_name in devices.split(',').map(str::trim) {
            let choice: DeviceChoice = device_name.parse().map_err(anyhow::Error::msg)?;
            let selected = select_device(choice)?;
            let model = Qwen2Vl::load(&dir, &selected.device, DType::F32)?;
            for batch in batches.split(',').map(str::trim) {
                let batch: usize = batch.parse()?;
                let options = SynthesizeOptions {
                    batch_size: batch,
                    max_new_tokens,
                    ..SynthesizeOptions::default()
                };
                let out = tmp
                    .path()
                    .join(format!("{preset_name}-{device_name}-{batch}"));
                // Warm-up (shader compilation on wgpu), then the timed run.
                let warm = SynthesizeOptions {
                    limit: Some(batch.min(rows)),
                    ..options.clone()
                };
                run_synthesis(
                    &model,
                    &pairs,
                    &data,
                    tmp.path(),
                    &out.with_extension("warm"),
                    &warm,
                    &mut |_| {},
                )?;
                let summary = run_synthesis(
                    &model,
                    &pairs,
                    &data,
                    tmp.path(),
                    &out,
                    &options,
                    &mut |_| {},
                )?;
                println!(
                    "{}",
                    serde_json::json!({
                        "bench": "synth", "preset": preset_name, "device": device_name,
                        "adapter": selected.description, "batch": batch, "rows": rows,
                        "max_new_tokens": max_new_tokens,
                        "generated_tokens": summary.generated_tokens,
                        "images_per_s": summary.images_per_second,
                        "tokens_per_s": summary.tokens_per_second,
                        "seconds": summary.seconds,
                    })
                );
                table.push((
                    preset_name.to_string(),
                    device_name.to_string(),
                    batch,
                    summary.images_per_second,
                    summary.tokens_per_second,
                ));
            }
        }
    }
    eprintln!(
        "\n{:<6} {:<6} {:>6} {:>10} {:>10}",
        "preset", "device", "batch", "images/s", "tokens/s"
    );
    for (p, d, b, i, t) in table {
        eprintln!("{p:<6} {d:<6} {b:>6} {i:>10.3} {t:>10.1}");
    }
    Ok(())
}
