//! Building the live reference data from the configuration and keeping it fresh: files are
//! read at start and again when they change, URLs are fetched on their schedule, and entries
//! that must survive a restart (API, offense actions, URL feeds) come back from the store.
//!
//! Bad input never stops a load: an unreadable line is counted
//! (`vigil_reference_bad_lines_total{set}`) and reported with its file and line number; the
//! rest of the file loads. A file that cannot be read at all, or a feed that fails, keeps the
//! entries it gave last time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::refdata::{BadLine, ReferenceData, SetDecl, SetKind};
use crate::config::ContextConfig;
use crate::store::{Store, StoredReference};
use crate::telemetry::Metrics;

/// How often files are checked for changes.
const FILE_CHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// The reference data the configuration declares, with files, inline entries and stored
/// entries loaded. Returns it with one problem line per unreadable line or file.
pub fn build(
    config: &ContextConfig,
    store: &Store,
    metrics: &Metrics,
) -> anyhow::Result<(Arc<ReferenceData>, Vec<String>)> {
    let data = Arc::new(declare(config));
    let mut problems = Vec::new();
    let now = Utc::now();
    for (collection, path) in files(config) {
        if let Err(e) = load_file(
            &data,
            config,
            &collection,
            &path,
            now,
            metrics,
            &mut problems,
        ) {
            problems.push(e);
        }
    }
    for r in store.references(now)? {
        let added = match &r.map_value {
            Some(v) => data.map_put_until(&r.collection, &r.value, v, r.expires_at, &r.source),
            None => data.add_until(&r.collection, &r.value, r.expires_at, &r.source),
        };
        if let Err(e) = added {
            // A set removed from the configuration, or a value no longer valid: reported, kept
            // in the store in case the set comes back.
            problems.push(format!("stored reference entry skipped: {e}"));
        }
    }
    Ok((data, problems))
}

/// Empty sets and maps as the configuration declares them (for `vigil rules lint` and tests).
pub fn declare(config: &ContextConfig) -> ReferenceData {
    let sets: Vec<SetDecl> = config
        .reference_sets
        .iter()
        .map(|s| SetDecl {
            name: s.name.clone(),
            kind: if s.kind == "string" {
                SetKind::String
            } else {
                SetKind::Ip
            },
        })
        .collect();
    let maps: Vec<String> = config
        .reference_maps
        .iter()
        .map(|m| m.name.clone())
        .collect();
    ReferenceData::new(&sets, &maps)
}

/// (collection, file) pairs of the configuration.
fn files(config: &ContextConfig) -> Vec<(String, PathBuf)> {
    let sets = config
        .reference_sets
        .iter()
        .flat_map(|s| s.files.iter().map(move |f| (s.name.clone(), f.clone())));
    let maps = config
        .reference_maps
        .iter()
        .flat_map(|m| m.files.iter().map(move |f| (m.name.clone(), f.clone())));
    sets.chain(maps).collect()
}

fn ttl_of(config: &ContextConfig, collection: &str) -> Option<chrono::Duration> {
    config
        .reference_sets
        .iter()
        .find(|s| s.name == collection && s.ttl_secs > 0)
        .map(|s| chrono::Duration::seconds(i64::try_from(s.ttl_secs).unwrap_or(i64::MAX / 1000)))
}

fn is_map(config: &ContextConfig, collection: &str) -> bool {
    config.reference_maps.iter().any(|m| m.name == collection)
}

fn kind_of(config: &ContextConfig, collection: &str) -> SetKind {
    match config.reference_sets.iter().find(|s| s.name == collection) {
        Some(s) if s.kind == "string" => SetKind::String,
        _ => SetKind::Ip,
    }
}

fn report_bad(
    what: &str,
    collection: &str,
    bad: &[BadLine],
    metrics: &Metrics,
    problems: &mut Vec<String>,
) {
    if bad.is_empty() {
        return;
    }
    metrics
        .counter(
            "vigil_reference_bad_lines_total",
            "Reference-data lines that could not be read (the rest of the file loads).",
            &[("set", collection)],
        )
        .add(bad.len() as u64);
    for b in bad.iter().take(20) {
        problems.push(format!(
            "{what}:{}: {}: {:?} ({collection})",
            b.line, b.reason, b.text
        ));
    }
    if bad.len() > 20 {
        problems.push(format!(
            "{what}: {} more unreadable lines ({collection})",
            bad.len() - 20
        ));
    }
}

/// Reads one file (capped at `max_reference_bytes`) into its set or map, replacing what that
/// file gave before. Unreadable lines go to `problems`; an unreadable file is the error.
fn load_file(
    data: &ReferenceData,
    config: &ContextConfig,
    collection: &str,
    path: &Path,
    now: DateTime<Utc>,
    metrics: &Metrics,
    problems: &mut Vec<String>,
) -> Result<(), String> {
    let shown = path.display().to_string();
    let text = read_capped(path, config.max_reference_bytes)
        .map_err(|e| format!("{shown}: {e} ({collection}: previous entries kept)"))?;
    let source = format!("file:{shown}");
    let ttl = ttl_of(config, collection);
    if is_map(config, collection) {
        let (pairs, bad) = ReferenceData::parse_map_csv(&text);
        report_bad(&shown, collection, &bad, metrics, problems);
        data.replace_map_source(collection, &source, &pairs, ttl, now)
            .map_err(|e| format!("{shown}: {e}"))?;
    } else {
        let parsed = ReferenceData::parse_list(kind_of(config, collection), &text);
        report_bad(&shown, collection, &parsed.bad, metrics, problems);
        data.replace_source(collection, &source, &parsed.values, ttl, now)
            .map_err(|e| format!("{shown}: {e}"))?;
    }
    Ok(())
}

fn read_capped(path: &Path, max: usize) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.len() > max as u64 {
        return Err(format!(
            "{} bytes, more than context.max_reference_bytes ({max})",
            meta.len()
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Keeps reference data fresh until `cancel`: reloads changed files, fetches URLs on their
/// schedule (entries persisted, replacing the previous fetch's). Problems are logged.
pub async fn watch(
    config: ContextConfig,
    data: Arc<ReferenceData>,
    store_path: PathBuf,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let mut stamps: HashMap<PathBuf, Option<(SystemTime, u64)>> = files(&config)
        .into_iter()
        .map(|(_, p)| {
            let s = stamp(&p);
            (p, s)
        })
        .collect();
    let mut next_fetch: HashMap<String, tokio::time::Instant> = HashMap::new();
    let start = tokio::time::Instant::now();
    for s in &config.reference_sets {
        if s.url.is_some() && s.refresh_secs > 0 {
            // First fetch right away: the stored copy of the last fetch serves meanwhile.
            next_fetch.insert(s.name.clone(), start);
        }
    }
    let mut tick = tokio::time::interval(FILE_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        for (collection, path) in files(&config) {
            let now_stamp = stamp(&path);
            if stamps.get(&path) == Some(&now_stamp) {
                continue;
            }
            stamps.insert(path.clone(), now_stamp);
            let mut problems = Vec::new();
            let (cfg, d, m, p) = (config.clone(), data.clone(), metrics.clone(), path.clone());
            let coll = collection.clone();
            let result = tokio::task::spawn_blocking(move || {
                let r = load_file(&d, &cfg, &coll, &p, Utc::now(), &m, &mut problems);
                (r, problems)
            })
            .await;
            match result {
                Ok((r, problems)) => {
                    for p in problems.iter().chain(r.err().iter()) {
                        tracing::warn!("reference data: {p}");
                    }
                    tracing::info!(set = %collection, file = %path.display(), "reference file reloaded");
                }
                Err(e) => tracing::error!(error = %e, "reference file reload failed"),
            }
        }
        let now = tokio::time::Instant::now();
        for s in &config.reference_sets {
            let (Some(url), Some(due)) = (&s.url, next_fetch.get(&s.name).copied()) else {
                continue;
            };
            if now < due {
                continue;
            }
            next_fetch.insert(
                s.name.clone(),
                now + std::time::Duration::from_secs(s.refresh_secs),
            );
            match refresh_url(&config, &data, &store_path, &s.name, url, &metrics).await {
                Ok(n) => {
                    tracing::info!(set = %s.name, url = %url, entries = n, "reference feed fetched")
                }
                Err(e) => {
                    metrics
                        .counter(
                            "vigil_reference_fetch_failures_total",
                            "Reference-data URL fetches that failed (previous entries kept).",
                            &[("set", &s.name)],
                        )
                        .inc();
                    tracing::warn!(set = %s.name, url = %url, error = %e, "reference feed fetch failed; previous entries kept");
                }
            }
        }
    }
}

/// Fetches a set's URL and replaces the entries of its previous fetch, in memory and in the
/// store. Returns the number of entries.
pub async fn refresh_url(
    config: &ContextConfig,
    data: &Arc<ReferenceData>,
    store_path: &Path,
    set: &str,
    url: &str,
    metrics: &Metrics,
) -> anyhow::Result<usize> {
    let text = super::refdata::fetch_url(
        url,
        config.max_reference_bytes,
        std::time::Duration::from_secs(30),
    )
    .await?;
    let parsed = ReferenceData::parse_list(kind_of(config, set), &text);
    let mut problems = Vec::new();
    report_bad(url, set, &parsed.bad, metrics, &mut problems);
    for p in &problems {
        tracing::warn!("reference data: {p}");
    }
    let source = format!("url:{url}");
    let now = Utc::now();
    let ttl = ttl_of(config, set);
    data.replace_source(set, &source, &parsed.values, ttl, now)?;
    let (path, set_name, values) = (store_path.to_path_buf(), set.to_owned(), parsed.values);
    let n = values.len();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut store = Store::open(&path)?;
        store.in_transaction(|st| {
            st.delete_reference_source(&set_name, &source)?;
            for v in &values {
                st.put_reference(&StoredReference {
                    collection: set_name.clone(),
                    value: v.clone(),
                    map_value: None,
                    source: source.clone(),
                    expires_at: ttl.map(|t| now + t),
                })?;
            }
            Ok(())
        })?;
        Ok(())
    })
    .await??;
    Ok(n)
}
