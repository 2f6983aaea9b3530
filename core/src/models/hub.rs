//! Models by id: `org/name[@revision]` found in the local Hugging Face cache, offline.
//!
//! The cache is laid out as `huggingface_hub` writes it (`huggingface-cli download`,
//! `snapshot_download`, `from_pretrained`):
//!
//! ```text
//! <cache>/models--<org>--<name>/
//!     blobs/<sha>                      the files' bytes
//!     refs/<revision>                  a branch or tag name -> the commit hash (text)
//!     snapshots/<commit>/<file>        symlinks into ../../blobs (copies where links cannot be made)
//! ```
//!
//! The cache folder is `HF_HUB_CACHE`, else `HUGGINGFACE_HUB_CACHE` (its older name), else
//! `HF_HOME/hub`, else `XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`.
//! A path that exists always wins over an id with the same spelling.

use std::path::{Path, PathBuf};

/// A model id: `org/name` and an optional revision (branch, tag or commit hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubModelId {
    /// `org/name`.
    pub repo: String,
    /// What follows `@`, if anything; `main` when absent.
    pub revision: Option<String>,
}

impl HubModelId {
    /// Parses `org/name` or `org/name@revision`; `None` for anything that is not spelled like a
    /// hub id (absolute or relative paths with `.`/`..`, more than one `/`, other characters).
    pub fn parse(arg: &str) -> Option<Self> {
        let (repo, revision) = match arg.split_once('@') {
            Some((repo, rev)) if !rev.is_empty() => (repo, Some(rev.to_owned())),
            Some(_) => return None,
            None => (arg, None),
        };
        let (org, name) = repo.split_once('/')?;
        let part_ok = |p: &str| {
            !p.is_empty()
                && !p.starts_with('.')
                && !p.starts_with('-')
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !part_ok(org) || !part_ok(name) {
            return None;
        }
        Some(Self {
            repo: repo.to_owned(),
            revision,
        })
    }

    /// The revision asked for (`main` when none was).
    pub fn revision(&self) -> &str {
        self.revision.as_deref().unwrap_or("main")
    }

    /// The cache folder name of the repository (`models--org--name`).
    pub fn cache_folder_name(&self) -> String {
        format!("models--{}", self.repo.replace('/', "--"))
    }

    /// The command that would put this model into the cache.
    pub fn download_command(&self) -> String {
        match &self.revision {
            Some(rev) => format!("huggingface-cli download {} --revision {rev}", self.repo),
            None => format!("huggingface-cli download {}", self.repo),
        }
    }
}

/// Why an id did not resolve.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// No cache holds the repository.
    #[error(
        "{id}: no such folder, and not in the Hugging Face cache (looked in {looked}); fetch it with `{command}`, or give the model folder's path"
    )]
    NotCached {
        /// The id as given.
        id: String,
        /// The repository folders looked for, comma-separated.
        looked: String,
        /// The `huggingface-cli download` command.
        command: String,
    },
    /// The repository is cached, but not at this revision.
    #[error(
        "{id}: revision {revision} is not in the cache at {repo_dir} (cached: {cached}); fetch it with `{command}`"
    )]
    RevisionNotCached {
        /// The id as given.
        id: String,
        /// The revision asked for.
        revision: String,
        /// The repository's cache folder.
        repo_dir: PathBuf,
        /// Refs and snapshots the cache holds, comma-separated.
        cached: String,
        /// The `huggingface-cli download` command.
        command: String,
    },
    /// A snapshot file points at a blob that is not there (an interrupted download, a pruned
    /// cache).
    #[error(
        "{file}: the snapshot's link points at {blob}, which is missing (an interrupted download or a pruned cache?); fetch it again with `{command}`"
    )]
    MissingBlob {
        /// The snapshot entry.
        file: PathBuf,
        /// Where its link points.
        blob: PathBuf,
        /// The `huggingface-cli download` command.
        command: String,
    },
    /// The cache could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// What was being read.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// The hub cache folders to look in, first first.
pub fn cache_dirs() -> Vec<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let mut dirs = Vec::new();
    if let Some(dir) = var("HF_HUB_CACHE").or_else(|| var("HUGGINGFACE_HUB_CACHE")) {
        dirs.push(dir);
    } else if let Some(home) = var("HF_HOME") {
        dirs.push(home.join("hub"));
    } else if let Some(xdg) = var("XDG_CACHE_HOME") {
        dirs.push(xdg.join("huggingface").join("hub"));
    } else if let Some(home) = var("HOME").or_else(|| var("USERPROFILE")) {
        dirs.push(home.join(".cache").join("huggingface").join("hub"));
    }
    dirs
}

/// The folder `arg` names: `arg` itself when it exists or is not spelled like an id, else the
/// cached snapshot of the id (each of its links checked).
pub fn resolve_model_path(arg: &Path) -> Result<PathBuf, HubError> {
    match model_id_of(arg) {
        Some(id) => resolve_in(&id, &cache_dirs()),
        None => Ok(arg.to_path_buf()),
    }
}

/// The hub id a `--model` argument stands for: `None` when it is an existing path or is not
/// spelled like an id.
pub fn model_id_of(arg: &Path) -> Option<HubModelId> {
    if arg.exists() {
        return None;
    }
    arg.to_str().and_then(HubModelId::parse)
}

/// The snapshot folder of `id` in the first of `caches` that holds its repository.
pub fn resolve_in(id: &HubModelId, caches: &[PathBuf]) -> Result<PathBuf, HubError> {
    let repo_dirs: Vec<PathBuf> = caches
        .iter()
        .map(|c| c.join(id.cache_folder_name()))
        .collect();
    let Some(repo_dir) = repo_dirs.iter().find(|d| d.is_dir()) else {
        return Err(HubError::NotCached {
            id: display_id(id),
            looked: repo_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            command: id.download_command(),
        });
    };
    let snapshot = snapshot_of(id, repo_dir)?;
    check_links(id, &snapshot)?;
    Ok(snapshot)
}

fn display_id(id: &HubModelId) -> String {
    match &id.revision {
        Some(rev) => format!("{}@{rev}", id.repo),
        None => id.repo.clone(),
    }
}

/// `snapshots/<commit>` for the revision: through `refs/<revision>`, or the commit itself.
fn snapshot_of(id: &HubModelId, repo_dir: &Path) -> Result<PathBuf, HubError> {
    let revision = id.revision();
    let snapshots = repo_dir.join("snapshots");
    let ref_file = repo_dir.join("refs").join(revision);
    let commit = if ref_file.is_file() && !revision.contains("..") {
        std::fs::read_to_string(&ref_file)
            .map_err(|source| HubError::Io {
                path: ref_file.clone(),
                source,
            })?
            .trim()
            .to_owned()
    } else {
        revision.to_owned()
    };
    let snapshot = snapshots.join(&commit);
    if !commit.is_empty() && !commit.contains(['/', '\\']) && snapshot.is_dir() {
        return Ok(snapshot);
    }
    Err(HubError::RevisionNotCached {
        id: display_id(id),
        revision: revision.to_owned(),
        repo_dir: repo_dir.to_path_buf(),
        cached: cached_revisions(repo_dir),
        command: id.download_command(),
    })
}

/// The refs and snapshot folders a repository cache holds, for messages.
fn cached_revisions(repo_dir: &Path) -> String {
    let names = |dir: PathBuf| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|e| {
                e.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    let mut all: Vec<String> = names(repo_dir.join("refs"))
        .into_iter()
        .map(|r| format!("ref {r}"))
        .collect();
    all.extend(
        names(repo_dir.join("snapshots"))
            .into_iter()
            .map(|s| format!("snapshot {s}")),
    );
    if all.is_empty() {
        "nothing".to_owned()
    } else {
        all.join(", ")
    }
}

/// Every link of the snapshot (and of its sub-folders) must reach its blob.
fn check_links(id: &HubModelId, dir: &Path) -> Result<(), HubError> {
    let entries = std::fs::read_dir(dir).map_err(|source| HubError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries.flatten() {
        let path = entry.path();
        let is_link = entry.file_type().map(|t| t.is_symlink()).unwrap_or(false);
        if is_link && !path.exists() {
            let target = std::fs::read_link(&path).unwrap_or_default();
            let blob = path.parent().map(|p| p.join(&target)).unwrap_or(target);
            return Err(HubError::MissingBlob {
                file: path,
                blob: normalize(&blob),
                command: id.download_command(),
            });
        }
        if path.is_dir() {
            check_links(id, &path)?;
        }
    }
    Ok(())
}

/// `a/b/../c` → `a/c`, without touching the file system (the target does not exist).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_told_from_paths() {
        let id = HubModelId::parse("AdaptLLM/biomed-Qwen2-VL-2B-Instruct@v1.0").unwrap();
        assert_eq!(id.repo, "AdaptLLM/biomed-Qwen2-VL-2B-Instruct");
        assert_eq!(id.revision(), "v1.0");
        assert_eq!(
            id.cache_folder_name(),
            "models--AdaptLLM--biomed-Qwen2-VL-2B-Instruct"
        );
        assert_eq!(
            HubModelId::parse("meta-llama/Meta-Llama-3-8B")
                .unwrap()
                .revision(),
            "main"
        );
        for path in [
            "./model",
            "../a/b",
            "/abs/model",
            "a/b/c",
            "model",
            "a/b@",
            "a b/c",
            "~/m",
        ] {
            assert_eq!(HubModelId::parse(path), None, "{path}");
        }
    }

    #[test]
    fn download_command_carries_the_revision() {
        let id = HubModelId::parse("org/m@dev").unwrap();
        assert_eq!(
            id.download_command(),
            "huggingface-cli download org/m --revision dev"
        );
    }

    /// A cache entry as `huggingface_hub` writes one: blobs, snapshot links, refs.
    #[cfg(unix)]
    fn cache_with(files: &[(&str, &str)], commit: &str) -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("models--org--m");
        let snapshot = repo.join("snapshots").join(commit);
        std::fs::create_dir_all(repo.join("blobs")).unwrap();
        std::fs::create_dir_all(snapshot.join("sub")).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        for (i, (name, text)) in files.iter().enumerate() {
            let blob = format!("blob{i}");
            std::fs::write(repo.join("blobs").join(&blob), text).unwrap();
            let depth = name.matches('/').count();
            let up = "../".repeat(depth + 2);
            std::os::unix::fs::symlink(format!("{up}blobs/{blob}"), snapshot.join(name)).unwrap();
        }
        std::fs::write(repo.join("refs/main"), format!("{commit}\n")).unwrap();
        let cache = tmp.path().to_path_buf();
        (tmp, cache)
    }

    #[cfg(unix)]
    #[test]
    fn refs_and_commits_lead_to_the_snapshot() {
        let commit = "a".repeat(40);
        let (_tmp, cache) = cache_with(&[("config.json", "{}"), ("sub/x.json", "1")], &commit);
        let snapshot = cache.join("models--org--m/snapshots").join(&commit);
        let caches = [cache.join("elsewhere"), cache.clone()];
        for id in [
            "org/m".to_owned(),
            format!("org/m@{commit}"),
            "org/m@main".to_owned(),
        ] {
            let id = HubModelId::parse(&id).unwrap();
            assert_eq!(resolve_in(&id, &caches).unwrap(), snapshot);
        }
        assert_eq!(
            std::fs::read_to_string(snapshot.join("sub/x.json")).unwrap(),
            "1"
        );
        let e = resolve_in(&HubModelId::parse("org/m@dev").unwrap(), &caches).unwrap_err();
        assert!(matches!(e, HubError::RevisionNotCached { .. }), "{e}");
        assert!(
            e.to_string().contains("ref main") && e.to_string().contains("--revision dev"),
            "{e}"
        );
        let e = resolve_in(&HubModelId::parse("org/other").unwrap(), &caches).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("elsewhere/models--org--other"), "{text}");
        assert!(
            text.contains("huggingface-cli download org/other"),
            "{text}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_missing_blob_is_named() {
        let commit = "b".repeat(40);
        let (_tmp, cache) = cache_with(
            &[("config.json", "{}"), ("sub/w.safetensors", "x")],
            &commit,
        );
        std::fs::remove_file(cache.join("models--org--m/blobs/blob1")).unwrap();
        let e = resolve_in(
            &HubModelId::parse("org/m").unwrap(),
            std::slice::from_ref(&cache),
        )
        .unwrap_err();
        let HubError::MissingBlob { file, blob, .. } = &e else {
            panic!("{e}")
        };
        assert!(file.ends_with("sub/w.safetensors"), "{e}");
        assert_eq!(blob, &cache.join("models--org--m/blobs/blob1"));
    }
}
