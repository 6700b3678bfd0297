//! Supervises one engine process for one replica (ORCH-3001, 3002, 3038, 3053): spawns the
//! engine (llama-server, vLLM, TGI or Triton: [`EngineKind`] makes its command line) with the
//! replica's device mask in its own process group (killed with us via PDEATHSIG), streams its
//! output into our logs, declares the replica Ready only after the model answered a one-token
//! decode and passed the startup self-test ([`crate::readiness`], ORCH-3049: telemetry counts
//! that decode, a canceled stream frees its slot), and restarts it after a crash with
//! exponential backoff behind a circuit breaker.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;
use tokio::sync::watch;

use crate::artifacts::{ArtifactError, Artifacts};
pub use crate::engine_kind::EngineKind;
use crate::policy::{RestartConfig, RestartDecision, RestartPolicy};
use crate::provision::verify_artifact;

/// Where a replica's model comes from when it is not simply [`EngineSpec::model`]: a
/// `model_ref` (URL or `sha256:` catalog entry) resolved before every start.
#[derive(Clone)]
pub struct ModelSource {
    pub model_ref: String,
    pub artifacts: Arc<Artifacts>,
}

impl std::fmt::Debug for ModelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelSource")
            .field("model_ref", &self.model_ref)
            .finish_non_exhaustive()
    }
}

/// Everything needed to run one replica's engine.
#[derive(Debug, Clone)]
pub struct EngineSpec {
    pub pool_id: String,
    pub replica_id: String,
    /// Which engine `binary` is: its command line, readiness probe and self-test adapter.
    pub kind: EngineKind,
    pub binary: PathBuf,
    /// The model file (when `source` is None); a model directory (vLLM), a model id (TGI),
    /// the model repository (Triton).
    pub model: PathBuf,
    /// Required digest of the model file; checked before every (re)start.
    pub model_sha256: Option<String>,
    /// When set, the model file is resolved from here before every start (downloaded with
    /// resume, or looked up in the catalog) and `model` is not used.
    pub source: Option<ModelSource>,
    pub port: u16,
    pub slots: u32,
    /// Context per slot.
    pub ctx_per_slot: u32,
    /// GPU ordinals → CUDA_VISIBLE_DEVICES; empty = CPU.
    pub devices: Vec<u32>,
    pub extra_args: Vec<String>,
    /// Extra environment of the engine process.
    pub env: std::collections::BTreeMap<String, String>,
    pub restart: RestartConfig,
    /// Longest time from spawn to Ready before the start counts as failed.
    pub ready_timeout: Duration,
}

impl EngineSpec {
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Lifecycle of a supervised replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Process started, model loading or warm-up decode pending.
    Starting,
    /// Loaded, answered a one-token decode and passed the startup self-test.
    Ready,
    /// Crashed or failed to start; restart pending after backoff.
    Backoff {
        restart_in_ms: u64,
    },
    /// Too many crashes: no restarts until the breaker's timeout.
    BreakerOpen {
        retry_in_ms: u64,
    },
    /// Will not start without operator action (e.g. checksum mismatch).
    Failed,
    Stopped,
}

impl Phase {
    /// Stable name for APIs and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Ready => "ready",
            Phase::Backoff { .. } => "backoff",
            Phase::BreakerOpen { .. } => "breaker_open",
            Phase::Failed => "failed",
            Phase::Stopped => "stopped",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaStatus {
    pub phase: Phase,
    pub last_error: Option<String>,
    pub restarts: u32,
    pub pid: Option<u32>,
    /// True when the engine runs without GPU devices.
    pub cpu: bool,
    /// Engine starts that reached Ready, and starts that failed (preload outcomes).
    pub starts_ready: u32,
    pub starts_failed: u32,
}

pub struct Supervisor {
    status: watch::Receiver<ReplicaStatus>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Supervisor {
    pub fn spawn(spec: EngineSpec) -> Supervisor {
        let (tx, rx) = watch::channel(ReplicaStatus {
            phase: Phase::Starting,
            last_error: None,
            restarts: 0,
            pid: None,
            cpu: spec.devices.is_empty(),
            starts_ready: 0,
            starts_failed: 0,
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(supervise(spec, tx, stop_rx));
        Supervisor {
            status: rx,
            stop: Some(stop_tx),
            task,
        }
    }

    pub fn status(&self) -> ReplicaStatus {
        self.status.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<ReplicaStatus> {
        self.status.clone()
    }

    /// Waits until `pred` holds for the status, or `limit` passes.
    pub async fn wait_for(
        &self,
        limit: Duration,
        pred: impl Fn(&ReplicaStatus) -> bool,
    ) -> Option<ReplicaStatus> {
        let mut rx = self.status.clone();
        tokio::time::timeout(limit, rx.wait_for(|s| pred(s)))
            .await
            .ok()
            .and_then(|r| r.ok().map(|s| s.clone()))
    }

    /// Stops the engine and its supervision but keeps this handle, whose status ends at
    /// [`Phase::Stopped`] (an unloaded replica stays visible in the registry). True when this
    /// call stopped it.
    pub fn stop(&mut self) -> bool {
        self.stop.take().is_some_and(|stop| stop.send(()).is_ok())
    }

    /// Stops the engine (SIGTERM to its process group, SIGKILL after 5 s) and the supervisor.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn set(tx: &watch::Sender<ReplicaStatus>, f: impl FnOnce(&mut ReplicaStatus)) {
    tx.send_modify(f);
}

fn spawn_engine(spec: &EngineSpec, model: &std::path::Path) -> std::io::Result<Child> {
    let mut cmd = spec.kind.command(spec, model);
    cmd
        // Number GPUs like NVML does (PCI bus order), so that device ordinals mean the same
        // GPU to the headroom check and to the engine.
        .env("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
        // The device mask: an empty mask hides every GPU (CPU replica).
        .env(
            "CUDA_VISIBLE_DEVICES",
            spec.devices
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(","),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: setpgid and prctl are async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            // Own process group: signals to the group reach any helper the engine forks.
            if libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // If pool-managerd dies, the engine dies too: no orphaned GPU holders.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Streams the engine's output into our logs, one line per event, tagged with the replica.
fn forward_logs(child: &mut Child, spec: &EngineSpec) {
    let tag = (spec.pool_id.clone(), spec.replica_id.clone());
    if let Some(out) = child.stderr.take() {
        let (pool, replica) = tag.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                tracing::debug!(target: "engine", pool_id = %pool, replica_id = %replica, "{l}");
            }
        });
    }
    if let Some(out) = child.stdout.take() {
        let (pool, replica) = tag;
        tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                tracing::debug!(target: "engine", pool_id = %pool, replica_id = %replica, "{l}");
            }
        });
    }
}

/// Signals the engine's process group (pgid = the engine's pid, set at spawn).
fn kill_group(pgid: Option<u32>, sig: libc::c_int) {
    if let Some(pid) = pgid {
        // SAFETY: signalling the engine's own process group.
        unsafe {
            libc::kill(-(pid as libc::pid_t), sig);
        }
    }
}

/// SIGTERM to the engine's group, SIGKILL after 5 s; then SIGKILL whatever of the group is
/// left (vLLM's engine-core and worker processes, Triton's Python stubs), so a stop leaves no
/// process behind.
async fn stop_engine(child: &mut Child) {
    let pgid = child.id();
    kill_group(pgid, libc::SIGTERM);
    if tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .is_err()
    {
        kill_group(pgid, libc::SIGKILL);
        let _ = child.wait().await;
    }
    kill_group(pgid, libc::SIGKILL);
}

async fn supervise(
    spec: EngineSpec,
    tx: watch::Sender<ReplicaStatus>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let epoch = Instant::now();
    let mut policy = RestartPolicy::new(spec.restart);
    let labels = (spec.pool_id.as_str(), spec.replica_id.as_str());
    let cpu = spec.devices.is_empty();
    loop {
        set(&tx, |s| s.phase = Phase::Starting);
        let prepared = tokio::select! {
            p = prepare(&spec) => p,
            _ = &mut stop => { set(&tx, |s| s.phase = Phase::Stopped); return; }
        };
        let model = match prepared {
            Ok(m) => m,
            Err(Preflight::Permanent(e)) => {
                tracing::error!(pool_id = labels.0, replica_id = labels.1, error = %e, "model rejected");
                set(&tx, |s| {
                    s.phase = Phase::Failed;
                    s.last_error = Some(e);
                    s.starts_failed += 1;
                });
                let _ = stop.await;
                set(&tx, |s| s.phase = Phase::Stopped);
                return;
            }
            Err(Preflight::Retry(e)) => {
                // Not a crash (nothing was started), but the same backoff and breaker apply:
                // a missing GPU or a flaky download must not spin.
                let now = epoch.elapsed().as_millis() as u64;
                let decision = policy.on_crash(now);
                tracing::warn!(pool_id = labels.0, replica_id = labels.1, error = %e, ?decision, cpu, "engine cannot start");
                let wait_ms = match decision {
                    RestartDecision::RestartAfter { delay_ms } => {
                        set(&tx, |s| {
                            s.phase = Phase::Backoff {
                                restart_in_ms: delay_ms,
                            };
                            s.last_error = Some(e);
                            s.starts_failed += 1;
                        });
                        delay_ms
                    }
                    RestartDecision::BreakerOpen { retry_after_ms } => {
                        set(&tx, |s| {
                            s.phase = Phase::BreakerOpen {
                                retry_in_ms: retry_after_ms,
                            };
                            s.last_error = Some(e);
                            s.starts_failed += 1;
                        });
                        retry_after_ms
                    }
                };
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(wait_ms)) => {}
                    _ = &mut stop => { set(&tx, |s| s.phase = Phase::Stopped); return; }
                }
                continue;
            }
        };
        let failure = match spawn_engine(&spec, &model) {
            Err(e) => format!("cannot start {}: {e}", spec.binary.display()),
            Ok(mut child) => {
                forward_logs(&mut child, &spec);
                let pid = child.id();
                set(&tx, |s| s.pid = pid);
                tracing::info!(
                    pool_id = labels.0,
                    replica_id = labels.1,
                    pid,
                    cpu,
                    "engine started"
                );
                let ready = tokio::select! {
                    r = crate::readiness::wait_ready(&spec, &mut child) => r,
                    _ = &mut stop => { stop_engine(&mut child).await; set(&tx, |s| { s.phase = Phase::Stopped; s.pid = None; }); return; }
                };
                match ready {
                    Err(e) => {
                        stop_engine(&mut child).await;
                        set(&tx, |s| {
                            s.starts_failed += 1;
                            s.pid = None;
                        });
                        e
                    }
                    Ok(()) => {
                        policy.on_ready();
                        set(&tx, |s| {
                            s.phase = Phase::Ready;
                            s.last_error = None;
                            s.starts_ready += 1;
                        });
                        tracing::info!(
                            pool_id = labels.0,
                            replica_id = labels.1,
                            cpu,
                            "replica ready"
                        );
                        tokio::select! {
                            st = child.wait() => {
                                // The engine died: its helpers (same group) go too, before a
                                // restart needs their memory and ports.
                                kill_group(pid, libc::SIGKILL);
                                set(&tx, |s| s.pid = None);
                                match st {
                                    Ok(st) => format!("engine exited ({st})"),
                                    Err(e) => format!("engine wait failed: {e}"),
                                }
                            }
                            _ = &mut stop => {
                                stop_engine(&mut child).await;
                                set(&tx, |s| { s.phase = Phase::Stopped; s.pid = None; });
                                return;
                            }
                        }
                    }
                }
            }
        };
        let now = epoch.elapsed().as_millis() as u64;
        let decision = policy.on_crash(now);
        tracing::warn!(pool_id = labels.0, replica_id = labels.1, error = %failure, ?decision, "engine down");
        let wait_ms = match decision {
            RestartDecision::RestartAfter { delay_ms } => {
                set(&tx, |s| {
                    s.phase = Phase::Backoff {
                        restart_in_ms: delay_ms,
                    };
                    s.last_error = Some(failure);
                    s.restarts += 1;
                });
                delay_ms
            }
            RestartDecision::BreakerOpen { retry_after_ms } => {
                set(&tx, |s| {
                    s.phase = Phase::BreakerOpen {
                        retry_in_ms: retry_after_ms,
                    };
                    s.last_error = Some(failure);
                });
                retry_after_ms
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(wait_ms)) => {}
            _ = &mut stop => { set(&tx, |s| s.phase = Phase::Stopped); return; }
        }
    }
}

enum Preflight {
    /// Needs an operator (checksum mismatch, unknown catalog entry, bad model_ref).
    Permanent(String),
    /// May pass later (download failure, GPU busy or absent).
    Retry(String),
}

/// Everything checked before an engine is spawned: the model file is resolved (downloaded,
/// looked up) and its checksum verified; a GPU replica's devices exist and have the VRAM
/// headroom for it (NVML).
async fn prepare(spec: &EngineSpec) -> Result<PathBuf, Preflight> {
    let model = match &spec.source {
        Some(src) => src
            .artifacts
            .resolve(&src.model_ref, spec.model_sha256.as_deref())
            .await
            .map_err(|e: ArtifactError| {
                if e.is_permanent() {
                    Preflight::Permanent(e.to_string())
                } else {
                    Preflight::Retry(e.to_string())
                }
            })?,
        None => {
            if let Some(digest) = &spec.model_sha256 {
                let (m, d) = (spec.model.clone(), digest.clone());
                tokio::task::spawn_blocking(move || verify_artifact(&m, &d))
                    .await
                    .map_err(|e| Preflight::Retry(e.to_string()))?
                    .map_err(|e| Preflight::Permanent(e.to_string()))?;
            }
            spec.model.clone()
        }
    };
    if !spec.devices.is_empty() {
        let size = std::fs::metadata(&model).map(|m| m.len()).unwrap_or(0);
        crate::gpu::gpus()
            .check_headroom(&spec.devices, crate::gpu::vram_estimate(size))
            .map_err(|e| Preflight::Retry(e.to_string()))?;
    }
    Ok(model)
}
