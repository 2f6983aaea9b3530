//! `adamllm merge`: the shards of a `synthesize`, `filter` or `eval` job run with
//! `--shard K/N`, merged into the files one unsharded run writes.

use std::path::Path;

use adamllm::shard::{shard_folders, shards_beside_file, shards_in_folder};
use adamllm::synth::judge::merge_filter;
use adamllm::synth::synthesize::merge_synthesis;
use anyhow::{Result, bail};

/// Runs `adamllm merge <out>`, `out` being the `--out` the shards were given.
pub fn run(out: &Path) -> Result<()> {
    let in_folder = shards_in_folder(out);
    let beside = shards_beside_file(out);
    let root = if in_folder.is_dir() {
        in_folder
    } else if beside.is_dir() {
        beside
    } else {
        bail!(
            "{}: no shards to merge (looked for {} and {})",
            out.display(),
            in_folder.display(),
            beside.display()
        );
    };
    let Some(job) = shard_folders(&root)?
        .into_iter()
        .find_map(|(_, record)| record.map(|r| r.job))
    else {
        bail!(
            "{}: no shard has finished yet (none holds {})",
            root.display(),
            adamllm::shard::SHARD_FILE
        );
    };
    match job.as_str() {
        "synthesize" => {
            let summary = merge_synthesis(out)?;
            eprintln!(
                "merged {} rows ({} with a triplet, {} skipped) into {}",
                summary.rows,
                summary.with_triplet,
                summary.skipped,
                summary.output.display()
            );
            println!("{}", serde_json::to_string(&summary)?);
        }
        "filter" => {
            let summary = merge_filter(out)?;
            eprintln!(
                "merged {} rows (kept {}) into {}",
                summary.rows,
                summary.kept,
                summary.output.display()
            );
            println!("{}", serde_json::to_string(&summary)?);
        }
        #[cfg(feature = "benchmark-files")]
        "eval" => {
            let summary = adamllm::eval::runner::merge_eval(out)?;
            eprintln!(
                "merged {} predictions into {}",
                summary.examples,
                summary.predictions_path.display()
            );
            println!("{}", serde_json::to_string(&summary.results)?);
        }
        other => bail!("{}: shards of an unknown job `{other}`", root.display()),
    }
    Ok(())
}
