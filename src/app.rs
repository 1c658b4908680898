//! Wiring shared by the subcommands: config -> parser definitions, rules, pipeline; and the
//! `run` service itself (collectors, engine thread, API, shutdown).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use vigil_correlate::{EngineLimits, RuleSet};
use vigil_parsers::definitions::DefinitionSet;
use vigil_parsers::normalize::{InvalidUtf8Policy, NormalizeOptions, Normalizer};

use crate::bus::{memory, RawRecord, Received, Subscriber};
use crate::config::{parse_utc_offset, Config, Utf8Policy};
use crate::pipeline::{Pipeline, PipelineLimits};
use crate::store::Store;
use crate::telemetry::Metrics;

/// Records the engine takes from the queue per store transaction at most. A batch takes what
/// is waiting, so under light load batches stay small (latency); under a backlog a larger batch
/// spreads the per-transaction costs (each open offense it touches written once, the commit)
/// over more records. 32,768 rather than 8,192: with 1,000 rules every open offense is touched
/// in every batch, and the larger batch gave 5-14 % more records a second flat out and a lower
/// p99 at 80 k/s (BENCHMARKS.md, "End to end, 2026-12-01 later"), for about 60 MB more RSS at saturation.
pub const BATCH_RECORDS: usize = 32_768;

/// Raw bytes the engine takes per batch at most, whatever the record count: bounds a batch's
/// memory when records are large (64 KiB messages).
pub const BATCH_BYTES: usize = 8 << 20;

/// Adds to `batch` what `next` gives until it gives nothing or the batch holds
/// [`BATCH_RECORDS`] records or [`BATCH_BYTES`] raw bytes.
fn fill_batch(batch: &mut Vec<RawRecord>, mut next: impl FnMut() -> Option<RawRecord>) {
    let mut bytes: usize = batch.iter().map(|r| r.bytes.len()).sum();
    while batch.len() < BATCH_RECORDS && bytes < BATCH_BYTES {
        let Some(r) = next() else {
            break;
        };
        bytes += r.bytes.len();
        batch.push(r);
    }
}

/// Normalized batches waiting for the engine (each at most [`BATCH_RECORDS`] records).
pub const PREPARED_AHEAD: usize = 2;

/// How long in-flight API requests may take to finish at shutdown.
pub const SHUTDOWN_API_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// How often closed offenses past their retention are deleted.
pub const RETENTION_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// How often the live engine is told the wall-clock time.
pub const TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// Loads the built-in parser definitions plus those of `parse.definitions_dir`. Every problem
/// is returned as one line (`file:line: message`).
pub fn load_definitions(config: &Config) -> (DefinitionSet, Vec<String>) {
    let mut sources = DefinitionSet::builtin_sources();
    let mut problems = Vec::new();
    if let Some(dir) = &config.parse.definitions_dir {
        match yaml_files(dir) {
            Ok(files) => {
                for path in files {
                    match std::fs::read_to_string(&path) {
                        Ok(text) => sources.push((path.display().to_string(), text)),
                        Err(e) => problems.push(format!("{}: {e}", path.display())),
                    }
                }
            }
            Err(e) => problems.push(format!("{}: {e}", dir.display())),
        }
    }
    let (set, errors) = DefinitionSet::from_sources(&sources);
    problems.extend(errors.iter().map(|e| e.to_string()));
    (set, problems)
}

fn yaml_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yml") | Some("yaml")
            )
        })
        .collect();
    paths.sort();
    Ok(paths)
}

/// The normalizer for `config`, and the definition problems found.
pub fn build_normalizer(config: &Config) -> anyhow::Result<(Normalizer, Vec<String>)> {
    let (definitions, problems) = load_definitions(config);
    let options = NormalizeOptions {
        default_offset: parse_utc_offset(&config.parse.default_utc_offset)
            .map_err(|e| anyhow::anyhow!("parse.default_utc_offset: {e}"))?,
        invalid_utf8: match config.parse.invalid_utf8 {
            Utf8Policy::DeadLetter => InvalidUtf8Policy::DeadLetter,
            Utf8Policy::Replace => InvalidUtf8Policy::Replace,
        },
        max_future_skew: chrono::Duration::seconds(
            i64::try_from(config.parse.max_future_skew_secs).unwrap_or(i64::MAX / 1000),
        ),
    };
    Ok((Normalizer::new(definitions, options), problems))
}

/// Loads the rules of `rules.dir` (or the built-in pack) against the reference sets the
/// configuration declares, with every problem as a line.
pub fn load_rules(config: &Config) -> anyhow::Result<(RuleSet, Vec<String>)> {
    load_rules_with(
        config,
        Arc::new(crate::context::loader::declare(&config.context)),
        None,
    )
}

/// [`load_rules`] against live reference data, without the rules switched off in `store`.
pub fn load_rules_with(
    config: &Config,
    reference: Arc<crate::context::refdata::ReferenceData>,
    store: Option<&Store>,
) -> anyhow::Result<(RuleSet, Vec<String>)> {
    let disabled: std::collections::BTreeSet<String> = match store {
        Some(s) => s.disabled_rules()?.into_iter().map(|d| d.name).collect(),
        None => Default::default(),
    };
    if !disabled.is_empty() {
        tracing::info!(rules = ?disabled, "rules switched off through the API are left out");
    }
    let (rules, errors) =
        crate::correlate::load_rules_except(&config.rules.dir, reference, &disabled)
            .with_context(|| format!("reading rules from {}", config.rules.dir.display()))?;
    Ok((rules, errors.iter().map(|e| e.to_string()).collect()))
}

/// The enricher for `config`: GeoIP opened, reference data loaded (files, and entries kept in
/// `store`). Problems with reference files are logged and counted; a GeoIP database that does
/// not open is an error (the operator configured it, so running without it would be silent).
pub fn build_enricher(
    config: &Config,
    store: &Store,
    metrics: &Metrics,
) -> anyhow::Result<crate::context::Enricher> {
    let geo = if config.context.geoip_city.is_some() || config.context.geoip_asn.is_some() {
        Some(crate::context::geoip::GeoIp::open(
            &crate::context::geoip::GeoConfig {
                city: config.context.geoip_city.clone(),
                asn: config.context.geoip_asn.clone(),
                cache_entries: config.context.geoip_cache_entries,
            },
        )?)
    } else {
        None
    };
    let (reference, problems) = crate::context::loader::build(&config.context, store, metrics)?;
    for p in &problems {
        tracing::warn!("reference data: {p}");
    }
    let mut enricher = crate::context::Enricher::new(geo, &config.context, reference, metrics);
    let (assets, _) = store.list_assets(None, config.context.max_assets as u64, 0)?;
    enricher.assets_mut().restore(assets);
    Ok(enricher)
}

/// The correlation windows' file in the data directory ([`crate::correlate::saved`]).
pub const STATE_FILE: &str = "engine-state.bin";

/// Where builds before the binary state file saved the windows (as JSON): read when
/// [`STATE_FILE`] is not there yet, then moved to it.
pub const LEGACY_STATE_FILE: &str = "engine-state.json";

/// Restores the saved correlation windows; the spool position they hold everything before.
/// A state saved by an older build (in the JSON file, or before that in the store) is moved
/// to the file first. A state that cannot be read is reported and skipped: the engine starts
/// empty rather than not at all, and the windows are rebuilt from the oldest record the spool
/// kept.
fn restore_windows(pipeline: &mut Pipeline, path: &Path) -> Option<(u64, u64)> {
    use crate::correlate::saved;
    let json = path.with_file_name(LEGACY_STATE_FILE);
    // Moves windows read from the JSON file of an earlier build to `path`.
    let moved = |old: &saved::Saved| {
        let done = saved::write(path, &old.snapshot, old.position, old.taken_at)
            .and_then(|_| std::fs::remove_file(&json));
        if let Err(e) = done {
            tracing::warn!(error = %e, "saved windows not moved to {}", path.display());
        }
    };
    let found = match (saved::read(path), saved::read(&json)) {
        // Both files: a build before the binary file ran since this one saved, or a move
        // failed half-way. The newer save wins; the other file goes.
        (Ok(Some(bin)), Ok(Some(old))) if old.taken_at > bin.taken_at => {
            moved(&old);
            Ok(Some(old))
        }
        (Ok(Some(bin)), old) => {
            // The JSON file is there (older, or unreadable).
            if !matches!(old, Ok(None)) {
                if let Err(e) = std::fs::remove_file(&json) {
                    tracing::warn!(error = %e, "an older {} not removed", json.display());
                }
            }
            Ok(Some(bin))
        }
        (Ok(None), Ok(Some(old))) => {
            moved(&old);
            Ok(Some(old))
        }
        (Ok(None), Err(e)) => Err(e),
        (Ok(None), Ok(None)) => {
            let legacy = saved::read_legacy(pipeline.store());
            if let Ok(Some(l)) = &legacy {
                let moved = saved::write(path, &l.snapshot, l.position, l.taken_at)
                    .map_err(|e| e.to_string())
                    .and_then(|_| {
                        let store = pipeline.store();
                        store.delete_engine_state().map_err(|e| e.to_string())
                    });
                if let Err(e) = moved {
                    tracing::warn!(error = %e, "saved windows not moved out of the store");
                }
            }
            legacy
        }
        (Err(e), _) => Err(e),
    };
    let saved = match found {
        Ok(s) => s?,
        Err(e) => {
            tracing::error!("correlation windows not restored: {e}");
            return None;
        }
    };
    let position = saved.position;
    match pipeline.restore_engine_snapshot(saved.snapshot) {
        Ok(r) => {
            tracing::info!(
                keys = r.keys,
                skipped = r.skipped,
                taken_at = %saved.taken_at,
                "correlation windows restored"
            );
            position
        }
        Err(e) => {
            tracing::error!("correlation windows not restored: {e}");
            None
        }
    }
}

/// A pipeline for `config` over `store`. Definition and rule problems are logged and counted
/// (`vigil_rules_rejected_total`); the rest load.
pub fn build_pipeline(
    config: &Config,
    store: Store,
    metrics: Arc<Metrics>,
    sources: Arc<crate::sources::Sources>,
) -> anyhow::Result<Pipeline> {
    let (normalizer, def_problems) = build_normalizer(config)?;
    for p in &def_problems {
        tracing::error!("parser definition refused: {p}");
    }
    metrics
        .counter(
            "vigil_parse_definitions_rejected_total",
            "Parser definition files that failed to load.",
            &[],
        )
        .add(def_problems.len() as u64);
    let enricher = build_enricher(config, &store, &metrics)?;
    let (rules, rule_problems) =
        load_rules_with(config, enricher.reference().clone(), Some(&store))?;
    for p in &rule_problems {
        tracing::error!("rule refused: {p}");
    }
    metrics
        .counter(
            "vigil_rules_rejected_total",
            "Rules that failed to compile and were not loaded.",
            &[],
        )
        .add(rule_problems.len() as u64);
    metrics
        .gauge("vigil_rules_loaded", "Rules loaded.", &[])
        .set(rules.len() as u64);
    let limits = EngineLimits {
        max_keys_per_rule: config.rules.max_keys_per_rule,
        max_events_per_key: config.rules.max_events_per_key,
        max_values_per_key: config.rules.max_values_per_key,
        max_payload_bytes: config.rules.max_payload_bytes,
        allowed_lateness: chrono::Duration::seconds(
            i64::try_from(config.rules.allowed_lateness_secs).unwrap_or(i64::MAX / 1000),
        ),
    };
    Ok(Pipeline::new(
        normalizer,
        Arc::new(rules),
        limits,
        store,
        PipelineLimits {
            offenses: crate::correlate::OffenseLimits::from_config(&config.offenses),
            max_dead_letters: config.store.max_dead_letters,
            superflow_min_flows: config.store.superflow_min_flows,
            response: config.response.clone(),
            closed_offense_retention: chrono::Duration::days(
                i64::try_from(config.store.closed_offense_retention_days)
                    .unwrap_or(i64::MAX / 86_400_000),
            ),
        },
        metrics,
        sources,
    )
    .with_enricher(
        enricher,
        chrono::Duration::seconds(
            i64::try_from(config.context.geoip_reload_check_secs.max(1)).unwrap_or(60),
        ),
    )
    .with_rule_problems(rule_problems))
}

/// The path of the SQLite file under `data_dir`.
pub fn store_path(config: &Config) -> PathBuf {
    config.data_dir.join("vigil.db")
}

/// Resolves the API token hash: `api.token` or `VIGIL_API_TOKEN` when set (its hash is stored),
/// else the stored hash, else a new random token that is stored hashed and printed once.
pub fn resolve_token(config: &Config, store: &Store) -> anyhow::Result<[u8; 32]> {
    let configured = config
        .api
        .token
        .clone()
        .or_else(|| std::env::var("VIGIL_API_TOKEN").ok())
        .filter(|t| !t.trim().is_empty());
    if let Some(token) = configured {
        let hash = crate::api::hash_token(token.trim());
        store.set_token_hash("default", &hex::encode(hash))?;
        return Ok(hash);
    }
    if let Some(stored) = store.token_hash("default")? {
        let bytes = hex::decode(&stored).context("stored token hash is not hex")?;
        let hash: [u8; 32] = bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("stored token hash has the wrong length"))?;
        return Ok(hash);
    }
    let token = hex::encode(rand::random::<[u8; 32]>());
    let hash = crate::api::hash_token(&token);
    store.set_token_hash("default", &hex::encode(hash))?;
    eprintln!(
        "vigil: generated API token (shown once, stored hashed; set api.token to choose one):\n  {token}"
    );
    Ok(hash)
}

/// Addresses the service actually bound (ports may have been 0 in the config).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Bound {
    /// UDP syslog.
    pub syslog_udp: Option<SocketAddr>,
    /// TCP syslog.
    pub syslog_tcp: Option<SocketAddr>,
    /// Syslog over TLS.
    pub syslog_tls: Option<SocketAddr>,
    /// NetFlow (and IPFIX) UDP.
    pub netflow: Option<SocketAddr>,
    /// IPFIX (and NetFlow) UDP.
    pub ipfix: Option<SocketAddr>,
    /// sFlow UDP.
    pub sflow: Option<SocketAddr>,
    /// HTTP API.
    pub api: Option<SocketAddr>,
}

/// Runs the service until Ctrl-C / SIGTERM: collectors -> bounded queue -> engine thread ->
/// SQLite, and the API. Prints one JSON line `{"ready": ...}` with the bound addresses.
pub async fn run(config: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let path = store_path(&config);
    let store = Store::open(&path).with_context(|| format!("opening store {}", path.display()))?;
    // Checkpoints of the engine's store run beside it, not inside its commits.
    let checkpointer = store.checkpoint_in_background(&path)?;
    let token_sha256 = resolve_token(&config, &store)?;
    let metrics = Metrics::new();
    let sources = Arc::new(crate::sources::Sources::new(
        config.sources.max_sources,
        &metrics,
    ));
    let mut pipeline = build_pipeline(&config, store, metrics.clone(), sources.clone())?;
    let state_path = config.data_dir.join(STATE_FILE);
    let restored_at = restore_windows(&mut pipeline, &state_path);
    let state_save_every = (config.rules.state_save_secs > 0)
        .then(|| std::time::Duration::from_secs(config.rules.state_save_secs));
    // Scaled-out mode: ClickHouse is the shared store, Kafka carries the stages.
    let scaled = config.bus.kind == crate::config::BusKind::Kafka;
    let role = config.bus.role;
    let clickhouse = if config.store.kind == crate::config::StoreKind::Clickhouse {
        let ch = crate::store::clickhouse::ClickHouseStore::connect(&config.store.clickhouse)
            .await
            .with_context(|| {
                format!(
                    "connecting to ClickHouse at {}",
                    config.store.clickhouse.url
                )
            })?;
        Some(Arc::new(ch))
    } else {
        None
    };
    // Embedded mode: rules reloaded and switched on or off through the API, swapped in by the
    // engine thread between batches.
    let mut rules_swaps = None;
    let rules_control = if !scaled {
        match pipeline.enricher() {
            Some(en) => {
                let (rules, problems) = pipeline.rules();
                let (control, rx) = crate::correlate::control::RulesControl::new(
                    config.rules.dir.clone(),
                    en.reference().clone(),
                    crate::correlate::control::RulesView::of(rules, problems.to_vec()),
                );
                rules_swaps = Some(rx);
                Some(control)
            }
            None => None,
        }
    } else {
        None
    };
    // Embedded store: log events searchable in events.db, written by their own thread.
    let events_path = config.data_dir.join("events.db");
    let mut events_writer = None;
    if !scaled && clickhouse.is_none() && config.store.search_events {
        let (sink, handle) = crate::store::events::spawn_writer(
            &events_path,
            config.store.max_events,
            (config.store.event_queue, config.store.event_overflow),
            &metrics,
        )
        .with_context(|| format!("opening the event store {}", events_path.display()))?;
        pipeline = pipeline.with_event_sink(sink);
        events_writer = Some(handle);
    }
    // Embedded store: flow records searchable in flows.db, written by their own thread too
    // (flows an older build kept in vigil.db are moved there first).
    let flows_path = config.data_dir.join("flows.db");
    let mut flows_writer = None;
    if !scaled && clickhouse.is_none() {
        let opened = crate::store::flows::FlowStore::open(&flows_path).and_then(|mut flows| {
            let moved = flows.adopt_legacy(&path)?;
            if moved > 0 {
                tracing::info!(moved, "flow records moved from vigil.db to flows.db");
            }
            crate::store::flows::spawn_writer(
                flows,
                config.store.max_flows,
                config.store.flow_queue,
                &metrics,
            )
        });
        let (sink, handle) =
            opened.with_context(|| format!("opening the flow store {}", flows_path.display()))?;
        pipeline = pipeline.with_flow_sink(sink);
        flows_writer = Some(handle);
    }
    let topics = crate::cluster::wire::Topics::new(&config.bus.topic_prefix, config.bus.wire);
    if scaled {
        crate::cluster::ensure_topics(&config.bus.kafka, &topics, config.bus.partitions)
            .await
            .with_context(|| format!("creating Kafka topics at {}", config.bus.kafka.brokers))?;
    }
    // Stage 2 maps keys to partitions itself (which windows and offenses a partition holds):
    // it needs the real partition count, the same on the matches and detections topics.
    let partitions = if scaled {
        let kafka = config.bus.kafka.clone();
        let (m, d) = (topics.matches.clone(), topics.detections.clone());
        let counts = tokio::task::spawn_blocking(move || -> anyhow::Result<(i32, i32)> {
            Ok((
                crate::bus::kafka::partition_count(&kafka, &m)?,
                crate::bus::kafka::partition_count(&kafka, &d)?,
            ))
        })
        .await??;
        if counts.0 != counts.1 || counts.0 < 1 {
            anyhow::bail!(
                "topics {} and {} must have the same number of partitions (they have {} and {})",
                topics.matches,
                topics.detections,
                counts.0,
                counts.1
            );
        }
        counts.0
    } else {
        config.bus.partitions
    };
    let collecting = !scaled || role != crate::config::Role::Correlate;
    let reference = pipeline.enricher().map(|e| e.reference().clone());

    let cancel = CancellationToken::new();
    // Reference files reloaded when they change, feeds fetched on schedule; ends on shutdown.
    if let Some(r) = &reference {
        tokio::spawn(crate::context::loader::watch(
            config.context.clone(),
            r.clone(),
            path.clone(),
            metrics.clone(),
            cancel.clone(),
        ));
    }
    let depth = metrics.gauge(
        "vigil_bus_queue_depth",
        "Records waiting between collectors and the engine.",
        &[("queue", "records")],
    );
    metrics
        .gauge(
            "vigil_bus_queue_capacity",
            "Capacity of the queue between collectors and the engine.",
            &[("queue", "records")],
        )
        .set(config.bus.queue_capacity as u64);
    let (publisher, mut subscriber) =
        memory::channel::<RawRecord>(config.bus.queue_capacity, config.bus.queue_bytes, depth);
    let mut spool_writer: Option<std::thread::JoinHandle<()>> = None;
    let mut spool_start: Option<(u64, u64)> = None;

    let mut bound = Bound {
        syslog_udp: None,
        syslog_tcp: None,
        syslog_tls: None,
        netflow: None,
        ipfix: None,
        sflow: None,
        api: None,
    };
    let mut tasks = Vec::new();
    if collecting && !config.syslog.udp_listen.is_empty() {
        let socket = crate::collect::syslog::bind_udp(&config.syslog)
            .await
            .with_context(|| format!("binding syslog udp {}", config.syslog.udp_listen))?;
        bound.syslog_udp = socket.local_addr().ok();
        tasks.push(tokio::spawn(crate::collect::syslog::run_udp(
            socket,
            config.syslog.clone(),
            publisher.clone(),
            metrics.clone(),
            cancel.clone(),
        )));
    }
    use crate::collect::flow::FlowProtocol;
    for (listen, protocol, name, slot) in [
        (
            &config.flows.netflow_listen,
            FlowProtocol::Netflow,
            "netflow",
            &mut bound.netflow,
        ),
        (
            &config.flows.ipfix_listen,
            FlowProtocol::Netflow,
            "ipfix",
            &mut bound.ipfix,
        ),
        (
            &config.flows.sflow_listen,
            FlowProtocol::Sflow,
            "sflow",
            &mut bound.sflow,
        ),
    ] {
        if !collecting || listen.is_empty() {
            continue;
        }
        let socket = crate::collect::flow::bind(listen, config.flows.recv_buffer_bytes)
            .with_context(|| format!("binding flow listener {listen}"))?;
        *slot = socket.local_addr().ok();
        tasks.push(tokio::spawn(crate::collect::flow::run(
            socket,
            protocol,
            name,
            config.flows.clone(),
            (protocol == FlowProtocol::Netflow)
                .then(|| config.data_dir.join(format!("{name}-templates.json"))),
            publisher.clone(),
            metrics.clone(),
            cancel.clone(),
        )));
    }
    if collecting && !config.syslog.tcp_listen.is_empty() {
        let listener = TcpListener::bind(&config.syslog.tcp_listen)
            .await
            .with_context(|| format!("binding syslog tcp {}", config.syslog.tcp_listen))?;
        bound.syslog_tcp = listener.local_addr().ok();
        tasks.push(tokio::spawn(crate::collect::syslog::run_tcp(
            listener,
            config.syslog.clone(),
            publisher.clone(),
            metrics.clone(),
            cancel.clone(),
        )));
    }
    if collecting && !config.syslog.tls_listen.is_empty() {
        let (Some(cert), Some(key)) = (&config.syslog.tls_cert, &config.syslog.tls_key) else {
            bail!("syslog.tls_listen needs syslog.tls_cert and syslog.tls_key");
        };
        let tls = crate::tls::server_config(cert, key, config.syslog.tls_client_ca.as_deref(), &[])
            .context("syslog tls settings")?;
        let listener = TcpListener::bind(&config.syslog.tls_listen)
            .await
            .with_context(|| format!("binding syslog tls {}", config.syslog.tls_listen))?;
        bound.syslog_tls = listener.local_addr().ok();
        tasks.push(tokio::spawn(crate::collect::syslog::run_tls(
            listener,
            tls,
            config.syslog.clone(),
            publisher.clone(),
            metrics.clone(),
            cancel.clone(),
        )));
    }
    // The API's ingest route publishes too; its clone goes with the server.
    let ingest_publisher = publisher.clone();
    drop(publisher);

    // The engine thread tells the service when it ends, normally (its queue closed: shutdown,
    // or no collector configured) or by a panic: the guard fires on drop, which runs during
    // unwinding too, and says which.
    let engine_alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (engine_done_tx, engine_done) = tokio::sync::oneshot::channel::<bool>();
    let alive = engine_alive.clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut stage_threads = Vec::new();
    let engine = if scaled {
        let (normalizer, enricher, rules, limits) = pipeline.into_parts();
        let rt = tokio::runtime::Handle::current();
        if role != crate::config::Role::Ingest {
            let ch = clickhouse.clone().ok_or_else(|| {
                anyhow::anyhow!("bus.kind = \"kafka\" needs store.kind = \"clickhouse\"")
            })?;
            let stage = crate::cluster::Stage {
                kafka: config.bus.kafka.clone(),
                topics: topics.clone(),
                group_prefix: config.bus.topic_prefix.clone(),
                metrics: metrics.clone(),
                rt: rt.clone(),
                stop: stop.clone(),
                partitions,
                checkpoint_every: std::time::Duration::from_secs(config.bus.checkpoint_secs.max(1)),
            };
            stage_threads.extend(spawn_stage_two(&config, &rules, limits, stage, ch)?);
        }
        let ingest = (role != crate::config::Role::Correlate)
            .then(|| -> anyhow::Result<crate::cluster::Ingest> {
                Ok(crate::cluster::Ingest {
                    normalizer,
                    enricher: enricher
                        .ok_or_else(|| anyhow::anyhow!("the pipeline has no enricher"))?,
                    engine: vigil_correlate::Engine::new(rules.clone(), limits),
                    topics: topics.clone(),
                    producer: Arc::new(crate::bus::kafka::KafkaProducer::new(&config.bus.kafka)?),
                    metrics: metrics.clone(),
                    sources: sources.clone(),
                    partitions,
                })
            })
            .transpose()?;
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("vigil-ingest".into())
            .spawn(move || {
                let _guard = EngineGuard(alive, Some(engine_done_tx));
                match ingest {
                    Some(ingest) => ingest.run(subscriber, rt, stop),
                    // Correlate only: no collectors; wait for the queue to close at shutdown.
                    None => while !matches!(subscriber.next_within(TICK), Received::Closed) {},
                }
            })
            .context("starting the ingest thread")?
    } else {
        // The burst spool between the queue and the engine: the windows restored above are
        // brought up to the last stored batch by reading again what came after them.
        let (mut subscriber, spool): (
            Box<dyn crate::bus::Subscriber<RawRecord>>,
            Option<Arc<crate::bus::spool::Spool>>,
        ) = if config.bus.spool {
            use crate::bus::spool::{Position, SpoolConfig, SpoolReader};
            let committed = pipeline.committed_spool_position()?;
            let at =
                |p: Option<(u64, u64)>| p.map(|(segment, offset)| Position { segment, offset });
            let committed = at(committed).unwrap_or_default();
            // Windows are saved (state_save_secs > 0): rebuild them from the position of the
            // saved ones, or from the oldest record kept when none was saved yet (nothing is
            // released before the first save). Not saved: they start empty at `committed`.
            let start = if state_save_every.is_some() {
                at(restored_at)
                    .filter(|s| *s <= committed)
                    .unwrap_or_default()
            } else {
                committed
            };
            spool_start = Some((start.segment, start.offset));
            let (spool, writer) = crate::bus::spool::open(
                SpoolConfig {
                    dir: config.data_dir.join("spool"),
                    max_bytes: config.bus.spool_max_bytes,
                    segment_bytes: config.bus.spool_segment_bytes,
                    fsync_every: std::time::Duration::from_millis(config.bus.spool_fsync_ms.max(1)),
                },
                committed,
                subscriber,
                &metrics,
            )
            .context("opening the spool")?;
            spool_writer = Some(writer);
            let mut reader = SpoolReader::new(spool.clone(), start);
            let mut rebuilt = 0usize;
            while reader.position_of() < committed {
                let mut batch = Vec::new();
                fill_batch(&mut batch, || {
                    (reader.position_of() < committed)
                        .then(|| crate::bus::Subscriber::try_next(&mut reader))
                        .flatten()
                });
                if batch.is_empty() {
                    break;
                }
                rebuilt += batch.len();
                pipeline.rebuild_windows(batch);
            }
            if rebuilt > 0 {
                tracing::info!(
                    records = rebuilt,
                    "windows brought up to the last stored batch from the spool"
                );
            }
            let p = reader.position_of();
            pipeline.set_spool_position((p.segment, p.offset));
            (Box::new(reader), Some(spool))
        } else {
            (Box::new(subscriber), None)
        };
        let mut saver = crate::correlate::saved::Saver::start(state_path)
            .context("starting the correlation state saver")?;
        // Records are normalized (parsed, parser definitions applied, flow records made
        // events) on a thread of their own, a batch or two ahead of the engine: that work
        // depends on nothing but the record, and it was a third of the engine thread's.
        let mut at = subscriber.position();
        let (prepared_tx, prepared) = std::sync::mpsc::sync_channel::<(
            crate::pipeline::Prepared,
            Option<(u64, u64)>,
        )>(PREPARED_AHEAD);
        // The engine hands each batch's emptied record vector back for the next batch.
        let (spare_tx, spare_rx) =
            std::sync::mpsc::sync_channel::<crate::pipeline::Spare>(PREPARED_AHEAD + 1);
        let normalizer = pipeline.normalizer();
        // The engine's rules, for the literal prescan of each batch: a fifth of the engine
        // thread's time with 1,000 SigmaHQ rules, done here on the other core instead.
        let rules_now = pipeline.rules_now();
        let normalize = std::thread::Builder::new()
            .name("vigil-normalize".into())
            .spawn(move || {
                // One raw batch vector, drained by each batch and filled again: a fresh one of
                // 32,768 records (5 MB) a batch was fresh pages for the kernel to zero.
                let mut batch = Vec::new();
                loop {
                    let first = match subscriber.next_within(TICK) {
                        Received::Item(first) => first,
                        Received::Idle => continue,
                        Received::Closed => break,
                    };
                    batch.push(first);
                    fill_batch(&mut batch, || subscriber.try_next());
                    let position = subscriber.position();
                    let rules = rules_now.lock().map(|r| Arc::clone(&r)).ok();
                    let prepared = crate::pipeline::prepare(
                        &normalizer,
                        &mut batch,
                        rules.as_ref(),
                        spare_rx.try_recv().ok(),
                    );
                    if prepared_tx.send((prepared, position)).is_err() {
                        break;
                    }
                }
            })
            .context("starting the normalize thread")?;
        std::thread::Builder::new()
            .name("vigil-engine".into())
            .spawn(move || {
                let _guard = EngineGuard(alive, Some(engine_done_tx));
                let mut last_tick = std::time::Instant::now();
                let mut last_retention: Option<std::time::Instant> = None;
                let mut last_save = std::time::Instant::now();
                let mut save_took = std::time::Duration::ZERO;
                // Segments go once the stored batches and the saved windows are both past them
                // (without saved windows, the stored batches alone).
                let release = |committed: Option<(u64, u64)>, saved_at: Option<(u64, u64)>| {
                    use crate::bus::spool::Position;
                    let (Some(spool), Some((segment, offset))) = (&spool, committed) else {
                        return;
                    };
                    let committed = Position { segment, offset };
                    let keep = match (state_save_every, saved_at) {
                        (None, _) => committed,
                        (Some(_), Some((segment, offset))) => {
                            committed.min(Position { segment, offset })
                        }
                        (Some(_), None) => Position::default(),
                    };
                    spool.release(keep);
                };
                // The spool position the saved windows hold everything before.
                let mut saved_at = spool_start;
                let take = |pipeline: &crate::pipeline::Pipeline, at: Option<(u64, u64)>| {
                    crate::correlate::saved::Job {
                        snapshot: crate::correlate::saved::Taken::Cut(pipeline.engine_cut()),
                        position: at,
                        taken_at: chrono::Utc::now(),
                    }
                };
                let saved =
                    |pipeline: &crate::pipeline::Pipeline,
                     saved_at: &mut Option<(u64, u64)>,
                     save_took: &mut std::time::Duration,
                     done: Result<crate::correlate::saved::Done, String>| {
                        match done {
                            Ok(d) => {
                                *saved_at = d.position;
                                *save_took = d.took;
                                pipeline.engine_state_saved(d.bytes, d.took);
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "saving correlation windows failed")
                            }
                        }
                    };
                loop {
                    // Time passes even without events: rules waiting for something not to happen
                    // (absence, silence) are told the wall clock about once a second (the engine
                    // applies the allowed lateness to it).
                    if last_tick.elapsed() >= TICK {
                        last_tick = std::time::Instant::now();
                        pipeline.tick(chrono::Utc::now());
                        pipeline.maintain_context(chrono::Utc::now());
                        pipeline.end_expired_blocks(chrono::Utc::now());
                    }
                    if let Some(rx) = &rules_swaps {
                        while let Ok(swap) = rx.try_recv() {
                            let report = pipeline.replace_rules(swap.rules);
                            if let Ok(r) = &report {
                                tracing::info!(
                                    windows_kept = r.keys,
                                    windows_dropped = r.skipped,
                                    "rules replaced"
                                );
                            }
                            let _ = swap.reply.send(report);
                        }
                    }
                    // A filling spool cannot drop segments older than the saved windows: save
                    // them sooner (at most a tenth of the time goes to saving).
                    let spool_filling = spool.as_ref().is_some_and(|s| {
                        at.is_some_and(|(segment, offset)| {
                            s.filling(crate::bus::spool::Position { segment, offset })
                        })
                    }) && last_save.elapsed()
                        >= (save_took * 10).max(std::time::Duration::from_secs(1));
                    if let Some(done) = saver.poll() {
                        saved(&pipeline, &mut saved_at, &mut save_took, done);
                        release(at, saved_at);
                    }
                    // Written by the saving thread: the engine only takes the snapshot.
                    if !saver.busy()
                        && (spool_filling
                            || state_save_every.is_some_and(|every| last_save.elapsed() >= every))
                    {
                        last_save = std::time::Instant::now();
                        saver.submit(take(&pipeline, at));
                    }
                    if last_retention.is_none_or(|t| t.elapsed() >= RETENTION_EVERY) {
                        last_retention = Some(std::time::Instant::now());
                        pipeline.expire_closed_offenses(chrono::Utc::now());
                    }
                    let (batch, position) = match prepared.recv_timeout(TICK) {
                        Ok(next) => next,
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                    };
                    // The position after this batch: what a stored batch and saved windows
                    // hold everything before (the reader may be a batch or two further).
                    if let Some(p) = position {
                        pipeline.set_spool_position(p);
                        at = Some(p);
                    }
                    pipeline.process_prepared_until_stored(batch);
                    if let Some(spare) = pipeline.take_spare() {
                        let _ = spare_tx.try_send(spare);
                    }
                    release(at, saved_at);
                }
                if let Err(panic) = normalize.join() {
                    // A parser bug: the engine ends as if it had panicked itself (marked dead
                    // for `/healthz`, the service told), as it did when it normalized.
                    tracing::error!("the normalize thread panicked");
                    std::panic::resume_unwind(panic);
                }
                // The queue is drained and closed: store the flows still held for condensing,
                // keep the windows for the next start.
                pipeline.flush_flows();
                let last = take(&pipeline, at);
                saved(&pipeline, &mut saved_at, &mut save_took, saver.finish(last));
            })
            .context("starting the engine thread")?
    };

    // Webhook deliveries from the outbox: the embedded store's, or (scaled out) the outbox of
    // this node's offense stage.
    let outbox = if !scaled {
        (clickhouse.is_none()).then(|| path.clone())
    } else {
        (role != crate::config::Role::Ingest).then(|| config.data_dir.join("offenses-local.db"))
    };
    if let (Some(outbox), false) = (outbox, config.response.webhooks.is_empty()) {
        tasks.push(tokio::spawn(crate::webhook::run(
            outbox,
            config.response.webhooks.clone(),
            metrics.clone(),
            cancel.clone(),
        )));
    }
    let mut api_server = None;
    if !config.api.listen.is_empty() {
        let listener = TcpListener::bind(&config.api.listen)
            .await
            .with_context(|| format!("binding api {}", config.api.listen))?;
        bound.api = listener.local_addr().ok();
        let app = crate::api::router(crate::api::ApiState {
            store_path: path.clone(),
            events_path: (events_writer.is_some()).then(|| events_path.clone()),
            flows_path: (flows_writer.is_some()).then(|| flows_path.clone()),
            token_sha256,
            metrics: metrics.clone(),
            max_page_size: config.api.max_page_size as u64,
            engine_alive: engine_alive.clone(),
            sources: sources.clone(),
            ingest: Some(ingest_publisher),
            max_message_bytes: config.syslog.max_message_bytes,
            max_ingest_bytes: config.api.max_ingest_bytes,
            ingest_received: metrics.counter(
                "vigil_collector_received_total",
                "Records received by collectors.",
                &[("source", "http")],
            ),
            reference: reference.clone(),
            clickhouse: clickhouse.clone(),
            blocklist_token_sha256: config
                .response
                .blocklist_token
                .as_deref()
                .map(crate::api::hash_token),
            block_set: config.response.block_set.clone(),
            tokens: Arc::new(
                config
                    .api
                    .tokens
                    .iter()
                    .filter_map(|t| Some((t.name.clone(), t.role, t.hash()?)))
                    .collect(),
            ),
            webhooks: Arc::new(config.response.webhooks.clone()),
            lockout: Arc::default(),
            rules: rules_control.clone(),
            ingest_acks: !scaled && config.bus.spool,
        });
        let cancel = cancel.clone();
        let tls = match (&config.api.tls_cert, &config.api.tls_key) {
            (Some(cert), Some(key)) => Some(
                crate::tls::server_config(cert, key, None, &[b"http/1.1"])
                    .context("api tls settings")?,
            ),
            _ => None,
        };
        api_server = Some(tokio::spawn(async move {
            if let Some(tls) = tls {
                use axum::serve::ListenerExt;
                let failed = metrics.counter(
                    "vigil_api_tls_handshake_failures_total",
                    "API connections whose TLS handshake failed or timed out.",
                    &[],
                );
                let listener = crate::tls::TlsListener::new(
                    listener,
                    tls,
                    std::time::Duration::from_secs(10),
                    256,
                    failed,
                )?
                .tap_io(|_| {});
                return axum::serve(
                    listener,
                    app.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .with_graceful_shutdown(async move { cancel.cancelled().await })
                .await;
            }
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await
        }));
    }
    if bound.syslog_udp.is_none()
        && bound.syslog_tcp.is_none()
        && bound.api.is_none()
        && bound.netflow.is_none()
        && bound.ipfix.is_none()
        && bound.sflow.is_none()
    {
        bail!("nothing to run: the syslog and flow listeners and api.listen are all empty");
    }
    // Signal handlers exist before anyone is told we are ready: a SIGTERM right after the
    // ready line must shut down cleanly, not kill the process.
    let signals = ShutdownSignals::install()?;
    println!(
        "{}",
        serde_json::json!({ "ready": true, "bound": bound, "data_dir": config.data_dir })
    );
    tracing::info!(?bound, "vigil running");

    let engine_panicked = async {
        match engine_done.await {
            Ok(true) => (),
            // A normal end (the queue closed) is no reason to stop serving the API.
            _ => std::future::pending::<()>().await,
        }
    };
    let engine_failed = tokio::select! {
        _ = signals.wait() => false,
        _ = engine_panicked => true,
    };
    if engine_failed {
        tracing::error!("the engine thread stopped unexpectedly; shutting down");
    } else {
        tracing::info!("shutting down: stopping intake, draining the queue");
    }
    cancel.cancel();
    for t in tasks {
        let _ = t.await;
    }
    // The API server holds the ingest publisher: it stops (gracefully) before the engine is
    // joined. Every publisher is then gone: the engine drains the queue and exits.
    if let Some(server) = api_server {
        // In-flight requests get a bounded time to finish (a slow client cannot hold the
        // shutdown open); then the server is dropped with its ingest publisher.
        let abort = server.abort_handle();
        if tokio::time::timeout(SHUTDOWN_API_GRACE, server)
            .await
            .is_err()
        {
            tracing::warn!("api requests still in flight after the grace period; closing them");
            abort.abort();
        }
    }
    let _ = tokio::task::spawn_blocking(move || engine.join()).await;
    if let Some(w) = spool_writer {
        let _ = tokio::task::spawn_blocking(move || w.join()).await;
    }
    // The engine's sinks are gone with it: the writers store what is queued and end.
    for w in [events_writer, flows_writer].into_iter().flatten() {
        let _ = tokio::task::spawn_blocking(move || w.join()).await;
    }
    // Stage 2 (scaled out) stops after intake: what it consumed is committed as it goes.
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for t in stage_threads {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    let _ = tokio::task::spawn_blocking(move || drop(checkpointer)).await;
    if engine_failed {
        bail!("the engine thread stopped unexpectedly (see the log above)");
    }
    Ok(())
}

/// Starts the stage-2 threads of the scaled-out mode: correlation windows, offenses, storage.
fn spawn_stage_two(
    config: &Config,
    rules: &Arc<vigil_correlate::RuleSet>,
    limits: EngineLimits,
    stage: crate::cluster::Stage,
    ch: Arc<crate::store::clickhouse::ClickHouseStore>,
) -> anyhow::Result<Vec<std::thread::JoinHandle<()>>> {
    fn spawn(
        name: &'static str,
        run: impl FnOnce() -> anyhow::Result<()> + Send + 'static,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name(format!("vigil-{name}"))
            .spawn(move || {
                if let Err(e) = run() {
                    tracing::error!(stage = name, error = %e, "stage stopped");
                }
            })
    }
    let (s, r, h) = (stage.clone(), rules.clone(), ch.clone());
    let correlate = spawn("correlate", move || {
        crate::cluster::run_correlate(&s, r, limits, h)
    })?;
    let (s, r, c, h) = (stage.clone(), rules.clone(), config.clone(), ch.clone());
    let offenses = spawn("offenses", move || {
        crate::cluster::run_offenses(&s, &c, &r, h)
    })?;
    let store = spawn("store", move || crate::cluster::run_store(&stage, ch))?;
    Ok(vec![correlate, offenses, store])
}

/// Tells the service when the engine thread ends and whether it panicked; a panic also marks
/// the engine dead for `/healthz`.
struct EngineGuard(
    Arc<std::sync::atomic::AtomicBool>,
    Option<tokio::sync::oneshot::Sender<bool>>,
);

impl Drop for EngineGuard {
    fn drop(&mut self) {
        let panicked = std::thread::panicking();
        if panicked {
            self.0.store(false, std::sync::atomic::Ordering::SeqCst);
        }
        if let Some(tx) = self.1.take() {
            let _ = tx.send(panicked);
        }
    }
}

/// SIGINT / SIGTERM listeners, installed up front.
struct ShutdownSignals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(ShutdownSignals {
                term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
                int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            })
        }
        #[cfg(not(unix))]
        Ok(ShutdownSignals {})
    }

    async fn wait(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {},
            _ = self.int.recv() => {},
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pipeline(dir: &Path) -> Pipeline {
        pipeline_with(dir, &Config::default())
    }

    fn pipeline_with(dir: &Path, config: &Config) -> Pipeline {
        let metrics = Metrics::new();
        let sources = Arc::new(crate::sources::Sources::new(10, &metrics));
        let store = Store::open(&dir.join("vigil.db")).unwrap();
        build_pipeline(config, store, metrics, sources).unwrap()
    }

    fn failed_logins(n: u16) -> Vec<RawRecord> {
        (0..n)
            .map(|i| RawRecord {
                bytes: format!(
                    "<38>Jan  1 00:00:0{} bastion01 sshd[4242]: Failed password for root from 203.0.113.50 port {} ssh2",
                    i % 10,
                    40_000 + i
                )
                .into_bytes(),
                observer_type: "syslog",
                observer_id: "syslog/udp/127.0.0.1".into(),
                peer: None,
                received_at: chrono::Utc::now(),
                refused: None,
                decoded: None,
                ack: None,
            })
            .collect()
    }

    /// On the default configuration (automatic blocking's guards valid, no magnitude policy,
    /// no webhooks) a batch's detections of one index are applied as one run: one offense
    /// lookup, not one per detection. (Runs were once off whenever the guards were valid.)
    #[test]
    fn default_config_applies_a_batch_detections_of_one_index_as_one_run() {
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("rules");
        std::fs::create_dir(&rules).unwrap();
        std::fs::write(
            rules.join("root.yml"),
            "title: Root login failure\nname: root_failure\ndetection:\n  sel: {user.name: root, event.outcome: failure}\n  condition: sel\nlevel: medium\n",
        )
        .unwrap();
        let mut config = Config::default();
        config.rules.dir = rules;
        let mut p = pipeline_with(dir.path(), &config);
        let out = p.process_batch(failed_logins(8)).unwrap();
        assert_eq!(
            (out.offenses_created, out.offenses_updated),
            (1, 7),
            "{out:?}"
        );
        let s = p.book_stats();
        assert_eq!(s.hits + s.misses, 1, "{s:?}");
    }

    #[test]
    fn windows_an_older_build_saved_in_the_store_are_restored_and_moved_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join(STATE_FILE);
        let snapshot = {
            let mut p = pipeline(dir.path());
            p.process_batch(failed_logins(4)).unwrap();
            let snap = p.engine_snapshot();
            assert!(
                !snap.windows.is_empty(),
                "the failures are held in a window"
            );
            // What builds before the state file did at a save.
            let bytes = serde_json::to_vec(&snap).unwrap();
            Store::open(&dir.path().join("vigil.db"))
                .unwrap()
                .in_transaction(|s| {
                    s.put_engine_state(chrono::Utc::now(), &bytes)?;
                    s.set_spool_position("snapshot", (3, 77))
                })
                .unwrap();
            snap
        };
        let mut p = pipeline(dir.path());
        assert_eq!(restore_windows(&mut p, &state), Some((3, 77)));
        assert_eq!(p.engine_snapshot(), snapshot, "the same windows");
        // Moved: the file holds them, the store no longer does.
        let file = crate::correlate::saved::read(&state).unwrap().unwrap();
        assert_eq!(file.position, Some((3, 77)));
        assert_eq!(file.snapshot, snapshot);
        assert!(p.store().engine_state().unwrap().is_none());
        assert_eq!(p.store().spool_position("snapshot").unwrap(), None);
        // And from the file the next time.
        let mut again = pipeline(dir.path());
        assert_eq!(restore_windows(&mut again, &state), Some((3, 77)));
        assert_eq!(again.engine_snapshot(), snapshot);
    }

    /// Windows a build before the binary file saved (JSON, `engine-state.json`) are restored,
    /// and moved to the binary file.
    #[test]
    fn windows_saved_as_json_are_restored_and_moved_to_the_binary_file() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join(STATE_FILE);
        let json = dir.path().join(LEGACY_STATE_FILE);
        let snapshot = {
            let mut p = pipeline(dir.path());
            p.process_batch(failed_logins(4)).unwrap();
            p.engine_snapshot()
        };
        assert!(!snapshot.windows.is_empty());
        // Format 1, as those builds wrote it.
        let doc = serde_json::json!({
            "format": 1,
            "taken_at_ms": 1_700_000_000_000_i64,
            "position": [5, 55],
            "snapshot": &snapshot,
        });
        std::fs::write(&json, serde_json::to_vec(&doc).unwrap()).unwrap();
        let mut p = pipeline(dir.path());
        assert_eq!(restore_windows(&mut p, &state), Some((5, 55)));
        assert_eq!(p.engine_snapshot(), snapshot);
        assert!(!json.exists(), "moved");
        assert_eq!(
            std::fs::read(&state).unwrap()[0],
            crate::correlate::saved::BINARY_FILE
        );
        let mut again = pipeline(dir.path());
        assert_eq!(restore_windows(&mut again, &state), Some((5, 55)));
        assert_eq!(again.engine_snapshot(), snapshot);
    }

    /// Both files (a build before the binary file ran after this one saved): the newer save
    /// is restored and the JSON file removed, whichever it is.
    #[test]
    fn with_both_state_files_the_newer_save_wins_and_the_json_file_goes() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join(STATE_FILE);
        let json = dir.path().join(LEGACY_STATE_FILE);
        let (empty, held) = {
            let mut p = pipeline(dir.path());
            let empty = p.engine_snapshot();
            p.process_batch(failed_logins(4)).unwrap();
            (empty, p.engine_snapshot())
        };
        let json_at = |snapshot: &vigil_correlate::EngineSnapshot, ms: i64| {
            let doc = serde_json::json!({
                "format": 1, "taken_at_ms": ms, "position": [2, 22], "snapshot": snapshot,
            });
            std::fs::write(&json, serde_json::to_vec(&doc).unwrap()).unwrap();
        };
        let t = |ms| chrono::DateTime::from_timestamp_millis(ms).unwrap();
        // The JSON save is newer.
        crate::correlate::saved::write(&state, &empty, Some((1, 11)), t(1_000)).unwrap();
        json_at(&held, 2_000);
        let mut p = pipeline(dir.path());
        assert_eq!(restore_windows(&mut p, &state), Some((2, 22)));
        assert_eq!(p.engine_snapshot(), held);
        assert!(!json.exists());
        // The binary save is newer.
        crate::correlate::saved::write(&state, &held, Some((3, 33)), t(3_000)).unwrap();
        json_at(&empty, 2_500);
        let mut p = pipeline(dir.path());
        assert_eq!(restore_windows(&mut p, &state), Some((3, 33)));
        assert_eq!(p.engine_snapshot(), held);
        assert!(!json.exists());
    }

    #[test]
    fn an_unreadable_state_file_starts_empty_windows_rebuilt_from_the_oldest_record() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join(STATE_FILE);
        std::fs::write(&state, b"{\"format\":1,\"tak").unwrap();
        let mut p = pipeline(dir.path());
        assert_eq!(restore_windows(&mut p, &state), None);
        assert!(p.engine_snapshot().windows.is_empty());
    }
}
