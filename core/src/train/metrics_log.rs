//! `metrics.jsonl`: one JSON object per logging step, appended as training goes.
//!
//! Each row is written with a single write of the whole line and synced, so a kill loses at
//! most the row being written, and that row is at worst a torn last line without its newline.
//! Readers skip such a torn tail; reopening the log for appending cuts it off first, so the
//! next row starts on a line of its own.
//!
//! JSON has no NaN or infinity: a non-finite value (a diverged loss, an overflowing gradient
//! norm) is written as `null` and read back as NaN.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use crate::io::{FileError, write_atomic};

/// One logging step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricRow {
    /// Optimizer steps completed.
    pub step: usize,
    /// Epochs completed, fractional.
    pub epoch: f64,
    /// Mean training loss over the steps since the previous row.
    #[serde(deserialize_with = "nan_if_null")]
    pub loss: f64,
    /// Learning rate of the last step.
    #[serde(deserialize_with = "nan_if_null")]
    pub lr: f64,
    /// Global gradient L2 norm of the last step, before clipping.
    #[serde(deserialize_with = "nan_if_null")]
    pub grad_norm: f64,
    /// Training throughput since the previous row, tokens per second.
    #[serde(deserialize_with = "nan_if_null")]
    pub tokens_per_s: f64,
    /// Peak memory so far in MiB (device memory on GPUs, resident memory on CPU); `null` when
    /// the backend cannot say.
    #[serde(default)]
    pub peak_memory_mib: Option<f64>,
    /// Validation loss, on rows where validation ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f64>,
    /// The f16 loss scale after the row's last step (f16 runs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<f64>,
    /// Steps skipped so far for overflowed f16 gradients (f16 runs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped_steps: Option<u64>,
}

fn nan_if_null<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// An open `metrics.jsonl`, appending.
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
    file: fs::File,
}

impl MetricsLog {
    /// Starts an empty log at `path` (replacing any file there).
    pub fn create(path: &Path) -> Result<Self, FileError> {
        let file = fs::File::create(path).map_err(|e| FileError::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Opens the log to append, creating it if missing. A torn last line left by a kill is cut
    /// off first.
    pub fn open_append(path: &Path) -> Result<Self, FileError> {
        let mut file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| FileError::io(path, e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| FileError::io(path, e))?;
        let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if keep < bytes.len() {
            file.set_len(keep as u64)
                .map_err(|e| FileError::io(path, e))?;
        }
        file.seek(SeekFrom::End(0))
            .map_err(|e| FileError::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Opens the log of a run resumed from the checkpoint at `last_step`: rows after that step
    /// (written before the interruption, and about to be logged again) are dropped, then the
    /// log is open to append. The rewrite is atomic.
    pub fn resume(path: &Path, last_step: usize) -> Result<Self, FileError> {
        if path.exists() {
            let rows = read_metrics(path)?;
            let mut text = String::new();
            for row in rows.iter().filter(|r| r.step <= last_step) {
                text.push_str(&row_line(row, path)?);
            }
            write_atomic(path, text.as_bytes())?;
        }
        Self::open_append(path)
    }

    /// Appends one row and syncs it to disk.
    pub fn append(&mut self, row: &MetricRow) -> Result<(), FileError> {
        let line = row_line(row, &self.path)?;
        self.file
            .write_all(line.as_bytes())
            .map_err(|e| FileError::io(&self.path, e))?;
        self.file
            .flush()
            .map_err(|e| FileError::io(&self.path, e))?;
        self.file
            .sync_data()
            .map_err(|e| FileError::io(&self.path, e))?;
        Ok(())
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn row_line(row: &MetricRow, path: &Path) -> Result<String, FileError> {
    let mut line = serde_json::to_string(row)
        .map_err(|e| FileError::new(path, format!("cannot serialize metrics row: {e}")))?;
    line.push('\n');
    Ok(line)
}

/// Reads every row of a `metrics.jsonl`. Blank lines are skipped; a last line without its
/// newline that does not parse is a row torn by a kill and is skipped too. Any other line that
/// does not parse is an error naming its line.
pub fn read_metrics(path: &Path) -> Result<Vec<MetricRow>, FileError> {
    let text = fs::read_to_string(path).map_err(|e| FileError::io(path, e))?;
    let complete = text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let mut rows = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<MetricRow>(line) {
            Ok(row) => rows.push(row),
            Err(_) if i + 1 == lines.len() && !complete => break,
            Err(e) => return Err(FileError::line(path, i + 1, e.to_string())),
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(step: usize) -> MetricRow {
        MetricRow {
            step,
            epoch: step as f64 / 10.0,
            loss: 2.0 / step as f64,
            lr: 1e-4,
            grad_norm: 0.5,
            tokens_per_s: 1234.5,
            peak_memory_mib: Some(512.0),
            val_loss: step.is_multiple_of(2).then_some(1.5),
            loss_scale: None,
            skipped_steps: None,
        }
    }

    #[test]
    fn append_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.jsonl");
        let mut log = MetricsLog::create(&p).unwrap();
        for s in 1..=4 {
            log.append(&row(s)).unwrap();
        }
        let text = fs::read_to_string(&p).unwrap();
        assert_eq!(text.lines().count(), 4);
        assert!(text.lines().next().unwrap().starts_with("{\"step\":1,"));
        assert!(!text.lines().next().unwrap().contains("val_loss"));
        assert_eq!(
            read_metrics(&p).unwrap(),
            (1..=4).map(row).collect::<Vec<_>>()
        );
    }

    #[test]
    fn torn_last_line_is_skipped_and_cut_before_appending() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.jsonl");
        let mut log = MetricsLog::create(&p).unwrap();
        log.append(&row(1)).unwrap();
        log.append(&row(2)).unwrap();
        drop(log);
        let mut f = fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"step\":3,\"epoch\":0.3,\"lo").unwrap();
        drop(f);
        assert_eq!(read_metrics(&p).unwrap().len(), 2);

        let mut log = MetricsLog::open_append(&p).unwrap();
        log.append(&row(3)).unwrap();
        assert_eq!(read_metrics(&p).unwrap(), vec![row(1), row(2), row(3)]);
    }

    #[test]
    fn broken_middle_line_is_an_error_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.jsonl");
        let good = serde_json::to_string(&row(1)).unwrap();
        fs::write(&p, format!("{good}\nnot json\n{good}\n")).unwrap();
        let msg = read_metrics(&p).unwrap_err().to_string();
        assert!(
            msg.contains("metrics.jsonl") && msg.contains("line 2"),
            "{msg}"
        );
        // A broken last line that did end with a newline was written whole: an error too.
        fs::write(&p, format!("{good}\nnot json\n")).unwrap();
        assert!(read_metrics(&p).is_err());
    }

    #[test]
    fn non_finite_values_survive_as_nan() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.jsonl");
        let mut r = row(1);
        r.loss = f64::NAN;
        r.grad_norm = f64::INFINITY;
        r.peak_memory_mib = None;
        let mut log = MetricsLog::create(&p).unwrap();
        log.append(&r).unwrap();
        let back = read_metrics(&p).unwrap();
        assert!(back[0].loss.is_nan() && back[0].grad_norm.is_nan());
        assert_eq!(back[0].peak_memory_mib, None);
        assert!(
            fs::read_to_string(&p)
                .unwrap()
                .contains("\"peak_memory_mib\":null")
        );
    }

    #[test]
    fn resume_drops_rows_after_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.jsonl");
        let mut log = MetricsLog::create(&p).unwrap();
        for s in [10, 20, 30, 40] {
            log.append(&row(s)).unwrap();
        }
        drop(log);
        let mut log = MetricsLog::resume(&p, 20).unwrap();
        log.append(&row(30)).unwrap();
        let steps: Vec<usize> = read_metrics(&p).unwrap().iter().map(|r| r.step).collect();
        assert_eq!(steps, vec![10, 20, 30]);
        // Resuming a run that never logged creates the file.
        let q = dir.path().join("fresh.jsonl");
        MetricsLog::resume(&q, 0).unwrap();
        assert!(read_metrics(&q).unwrap().is_empty());
    }
}
