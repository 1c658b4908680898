//! State kept in a file beside the databases (the correlation windows, learned flow templates),
//! replaced atomically so a crash leaves the old file or the new one.

use std::path::{Path, PathBuf};

/// `<path>.tmp`, where [`write_atomically`] writes before renaming.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Writes `value` as JSON to `path`: streamed through a 1 MiB buffer (memory does not grow with
/// the value) into [`tmp_path`], synced, renamed over `path`, and the directory synced so the
/// rename survives a power cut. Returns the bytes written.
pub fn write_atomically(path: &Path, value: &impl serde::Serialize) -> std::io::Result<u64> {
    replace_atomically(path, |out| Ok(serde_json::to_writer(out, value)?))
}

/// Replaces `path` with what `write` writes, the way [`write_atomically`] does (through a
/// 1 MiB buffer into [`tmp_path`], synced, renamed, the directory synced). Returns the bytes
/// written.
pub fn replace_atomically(
    path: &Path,
    write: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> std::io::Result<u64> {
    let tmp = tmp_path(path);
    let file = std::fs::File::create(&tmp)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    write(&mut out)?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    let bytes = file.metadata()?.len();
    drop(file);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(bytes)
}
