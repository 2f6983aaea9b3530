//! `adamllm bench synth`: synthesis throughput (images/s, generated tokens/s) of the presets,
//! batched against one image at a time, on random-weight models (their outputs run to the
//! token budget, so the work per image is the same in every configuration).

use adamllm::synth::pairs::read_caption_pairs;
use adamllm::synth::synthesize::{SynthesizeOptions, run_synthesis};
use anyhow::Result;

use crate::bench::each_config;

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
    each_config(presets, devices, batches, tmp.path(), |c| {
        let options = SynthesizeOptions {
            batch_size: c.batch,
            max_new_tokens,
            ..SynthesizeOptions::default()
        };
        let out = tmp
            .path()
            .join(format!("{}-{}-{}", c.preset, c.device, c.batch));
        // Warm-up (shader compilation on wgpu), then the timed run.
        let warm = SynthesizeOptions {
            limit: Some(c.batch.min(rows)),
            ..options.clone()
        };
        let images = tmp.path();
        run_synthesis(
            c.model,
            &pairs,
            &data,
            images,
            &out.with_extension("warm"),
            &warm,
            &mut |_| {},
        )?;
        let summary = run_synthesis(c.model, &pairs, &data, images, &out, &options, &mut |_| {})?;
        println!(
            "{}",
            serde_json::json!({
                "bench": "synth", "preset": c.preset, "device": c.device,
                "adapter": c.adapter, "batch": c.batch, "rows": rows,
                "max_new_tokens": max_new_tokens,
                "generated_tokens": summary.generated_tokens,
                "images_per_s": summary.images_per_second,
                "tokens_per_s": summary.tokens_per_second,
                "seconds": summary.seconds,
            })
        );
        table.push((
            c.preset.to_string(),
            c.device.to_string(),
            c.batch,
            summary.images_per_second,
            summary.tokens_per_second,
        ));
        Ok(())
    })?;
    eprintln!(
        "\n{:<6} {:<6} {:>6} {:>10} {:>10}",
        "preset", "device", "batch", "images/s", "tokens/s"
    );
    for (p, d, b, i, t) in table {
        eprintln!("{p:<6} {d:<6} {b:>6} {i:>10.3} {t:>10.1}");
    }
    Ok(())
}
