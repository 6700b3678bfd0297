//! The relay paths of `--peers` as real processes: `llorch serve` (which supervises the one
//! engine every path shares), the split deployment (orchestratord + llorch-adapterd on a unix
//! socket), nginx with a generated config, and what /proc says about each of them.

use std::path::{Path as FsPath, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};

pub(crate) const POOL: &str = "llm";

/// How a path is spoken to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// llama-server's native `/completion` (the engine itself, or a plain proxy in front).
    Engine,
    /// llama-orch's OrchQueue API (`POST /v1/tasks` + stream).
    Orch,
}

/// A process whose CPU and memory count for a path.
pub(crate) struct Proc {
    pub name: &'static str,
    pub pid: u32,
}

pub(crate) struct RelayPath {
    pub name: String,
    pub kind: Kind,
    pub base: String,
    pub procs: Vec<Proc>,
}

/// What the engine is: the provisioned llama-server, or `llorch-synth-engine`.
pub(crate) struct EngineSetup {
    pub binary: PathBuf,
    pub model: PathBuf,
    pub model_sha256: Option<String>,
    pub slots: u32,
    pub ctx: u32,
}

/// Every process the bench started; stopped (SIGTERM, then SIGKILL) when dropped.
pub(crate) struct Procs {
    children: Vec<(String, Child)>,
}

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, c) in &self.children {
            // SAFETY: signalling a child this bench spawned and has not reaped.
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for (_, c) in &mut self.children {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Procs {
    fn spawn(&mut self, name: &str, cmd: &mut Command, log: &FsPath) -> anyhow::Result<u32> {
        let out = std::fs::File::create(log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {name} ({cmd:?})"))?;
        let pid = child.id();
        self.children.push((name.to_owned(), child));
        Ok(pid)
    }

    /// Fails if a started process has exited (with the tail of its log in the message).
    fn check_alive(&mut self, dir: &FsPath) -> anyhow::Result<()> {
        for (name, c) in &mut self.children {
            if let Ok(Some(st)) = c.try_wait() {
                let log =
                    std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
                let tail: String = log
                    .lines()
                    .rev()
                    .take(15)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n");
                bail!("{name} exited ({st}); its log ends:\n{tail}");
            }
        }
        Ok(())
    }
}

/// A binary built next to this one (`cargo xtask bench --peers` builds them all in release).
pub(crate) fn sibling_binary(name: &str, package: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let p = exe
        .parent()
        .context("bench binary has no directory")?
        .join(name);
    if !p.is_file() {
        bail!(
            "{} is missing: build it with `cargo build --release -p {package}` (cargo xtask bench --peers does)",
            p.display()
        );
    }
    Ok(p)
}

/// The first `name` found on PATH.
pub(crate) fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn wait_until(
    what: &str,
    limit: Duration,
    procs: &mut Procs,
    dir: &FsPath,
    mut ok: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let t0 = Instant::now();
    while !ok() {
        procs.check_alive(dir)?;
        if t0.elapsed() > limit {
            bail!("{what} not up within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Waits until `GET /metrics` on the port answers 200.
async fn wait_http(what: &str, port: u16, procs: &mut Procs, dir: &FsPath) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().no_proxy().build()?;
    let url = format!("http://127.0.0.1:{port}/metrics");
    let t0 = Instant::now();
    loop {
        procs.check_alive(dir)?;
        let ok = http
            .get(&url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            return Ok(());
        }
        if t0.elapsed() > Duration::from_secs(600) {
            bail!("{what}: {url} not answering within 600 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// The shared part of both llama-orch configs: listen, key, a big queue, no watchdog.
fn orch_header(port: u16) -> String {
    crate::config_header(&format!("127.0.0.1:{port}"), 100_000)
}

fn pool(e: &EngineSetup, extra: &str, replica: &str) -> String {
    let sha = e
        .model_sha256
        .as_ref()
        .map(|s| format!("model_sha256 = \"{s}\"\n"))
        .unwrap_or_default();
    format!(
        "\n[[pools]]\nid = \"{POOL}\"\nengine = \"llamacpp\"\nmodel_ref = \"{model}\"\n{sha}\
         ctx_max = {ctx}\nallow_cpu_inference = true\n{extra}\n[[pools.replicas]]\nid = \"r0\"\n\
         slots = {slots}\n{replica}",
        model = e.model.display(),
        ctx = e.ctx,
        slots = e.slots,
    )
}

/// Everything `--peers` runs, started in order: llama-orch all-in-one (with the engine),
/// the split deployment on the same engine, nginx when installed.
pub(crate) struct Setup {
    pub dir: tempfile::TempDir,
    pub engine_url: String,
    pub engine_pid: u32,
    pub model_ref: String,
    pub paths: Vec<RelayPath>,
    pub skipped: Vec<(String, String)>,
    procs: Procs,
}

impl Setup {
    pub(crate) async fn start(e: &EngineSetup) -> anyhow::Result<Setup> {
        let dir = tempfile::Builder::new().prefix("llorch-peers-").tempdir()?;
        let d = dir.path().to_path_buf();
        let mut procs = Procs {
            children: Vec::new(),
        };
        let model_ref = e.model.display().to_string();

        // 1. llorch serve: orchestratord + in-process adapter + the supervised engine.
        let aio_port = free_port()?;
        let aio_cfg = format!(
            "{}\n[pool_manager]\nstate_dir = \"{}\"\n{}",
            orch_header(aio_port),
            d.join("state").display(),
            pool(
                e,
                &format!(
                    "llamacpp = {{ server_binary = \"{}\", ready_timeout_ms = 300000 }}\n",
                    e.binary.display()
                ),
                ""
            )
        );
        std::fs::write(d.join("aio.toml"), &aio_cfg)?;
        let llorch = sibling_binary("llorch", "llama-orch-cli")?;
        let t0 = Instant::now();
        let aio_pid = procs.spawn(
            "llorch-serve",
            Command::new(llorch)
                .arg("serve")
                .arg("--config")
                .arg(d.join("aio.toml"))
                .env("RUST_LOG", "warn"),
            &d.join("llorch-serve.log"),
        )?;
        // The socket is bound before the engines preload; the API answers once they are Ready.
        wait_http("llorch serve", aio_port, &mut procs, &d).await?;
        let (engine_pid, engine_port) = engine_child(aio_pid)?;
        let engine_url = format!("http://127.0.0.1:{engine_port}");
        println!(
            "  llorch serve ready in {:.1} s (pid {aio_pid}); its engine {} (pid {engine_pid}) at {engine_url}",
            t0.elapsed().as_secs_f64(),
            e.binary.display()
        );

        // 2. Split: llorch-adapterd on a unix socket, orchestratord with an endpoint replica.
        let sock = d.join("adapter.sock");
        let adapterd = sibling_binary("llorch-adapterd", "llorch-adapterd")?;
        let ad_pid = procs.spawn(
            "llorch-adapterd",
            Command::new(adapterd)
                .args(["--engine", "llamacpp", "--engine-url", &engine_url])
                .args(["--model-ref", &model_ref])
                .arg("--listen")
                .arg(format!("unix:{}", sock.display()))
                .env("RUST_LOG", "warn"),
            &d.join("llorch-adapterd.log"),
        )?;
        wait_until(
            "llorch-adapterd",
            Duration::from_secs(30),
            &mut procs,
            &d,
            || sock.exists(),
        )
        .await?;
        let split_port = free_port()?;
        let split_cfg = format!(
            "{}{}",
            orch_header(split_port),
            pool(e, "", &format!("endpoint = \"unix:{}\"\n", sock.display()))
        );
        std::fs::write(d.join("split.toml"), &split_cfg)?;
        let orchd = sibling_binary("orchestratord", "orchestratord")?;
        let or_pid = procs.spawn(
            "orchestratord",
            Command::new(orchd)
                .arg("--config")
                .arg(d.join("split.toml"))
                .env("RUST_LOG", "warn"),
            &d.join("orchestratord.log"),
        )?;
        wait_http("orchestratord", split_port, &mut procs, &d).await?;

        let mut paths = vec![RelayPath {
            name: "direct (engine)".into(),
            kind: Kind::Engine,
            base: engine_url.clone(),
            procs: vec![],
        }];
        let mut skipped = Vec::new();

        // 3. nginx, its own process with a generated config.
        match on_path("nginx").or_else(|| {
            let p = PathBuf::from("/usr/sbin/nginx");
            p.is_file().then_some(p)
        }) {
            Some(nginx) => {
                let port = free_port()?;
                let nd = d.join("nginx");
                for sub in ["", "tmp"] {
                    std::fs::create_dir_all(nd.join(sub))?;
                }
                std::fs::write(nd.join("nginx.conf"), nginx_conf(&nd, port, engine_port))?;
                let master = procs.spawn(
                    "nginx",
                    Command::new(nginx)
                        .arg("-p")
                        .arg(&nd)
                        .arg("-c")
                        .arg(nd.join("nginx.conf"))
                        .arg("-e")
                        .arg(nd.join("error.log")),
                    &d.join("nginx.log"),
                )?;
                wait_until("nginx", Duration::from_secs(30), &mut procs, &d, || {
                    port_open(port) && !children(master).is_empty()
                })
                .await?;
                let mut ps = vec![Proc {
                    name: "master",
                    pid: master,
                }];
                ps.extend(children(master).into_iter().map(|pid| Proc {
                    name: "worker",
                    pid,
                }));
                paths.push(RelayPath {
                    name: format!("nginx {}", nginx_version()),
                    kind: Kind::Engine,
                    base: format!("http://127.0.0.1:{port}"),
                    procs: ps,
                });
            }
            None => skipped.push((
                "nginx".into(),
                "not installed (apt-get install nginx)".into(),
            )),
        }
        for tool in ["vllm-router", "litellm"] {
            let why = match on_path(tool) {
                None => "not installed".to_owned(),
                Some(p) => format!(
                    "installed at {}, but the bench does not drive it yet (it speaks the OpenAI API, not /completion)",
                    p.display()
                ),
            };
            skipped.push((tool.into(), why));
        }
        paths.push(RelayPath {
            name: "llama-orch all-in-one (llorch serve)".into(),
            kind: Kind::Orch,
            base: format!("http://127.0.0.1:{aio_port}"),
            procs: vec![Proc {
                name: "llorch",
                pid: aio_pid,
            }],
        });
        paths.push(RelayPath {
            name: "llama-orch split (orchestratord + adapterd, unix socket)".into(),
            kind: Kind::Orch,
            base: format!("http://127.0.0.1:{split_port}"),
            procs: vec![
                Proc {
                    name: "orchestratord",
                    pid: or_pid,
                },
                Proc {
                    name: "adapterd",
                    pid: ad_pid,
                },
            ],
        });
        Ok(Setup {
            dir,
            engine_url,
            engine_pid,
            model_ref,
            paths,
            skipped,
            procs,
        })
    }

    /// Stops every process; the directory with their logs and configs remains until dropped.
    pub(crate) fn stop(self) -> tempfile::TempDir {
        drop(self.procs);
        self.dir
    }

    /// Fails if any process the bench started has died.
    pub(crate) fn check_alive(&mut self) -> anyhow::Result<()> {
        let dir = self.dir.path().to_path_buf();
        self.procs.check_alive(&dir)
    }
}

fn nginx_version() -> String {
    let out = on_path("nginx")
        .or_else(|| Some(PathBuf::from("/usr/sbin/nginx")))
        .and_then(|n| Command::new(n).arg("-v").output().ok());
    out.map(|o| String::from_utf8_lossy(&o.stderr).to_string())
        .and_then(|s| s.trim().rsplit('/').next().map(str::to_owned))
        .unwrap_or_default()
}

fn nginx_conf(dir: &FsPath, port: u16, engine_port: u16) -> String {
    let d = dir.display();
    format!(
        r#"daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    upstream engine {{
        server 127.0.0.1:{engine_port};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        keepalive_requests 1000000;
        location / {{
            proxy_pass http://engine;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 3600s;
        }}
    }}
}}
"#
    )
}

// ---------------------------------------------------------------------------------------------
// /proc

/// The fields after `comm` in /proc/PID/stat (field 3 onward).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// utime + stime of a process (all its threads, dead ones included), in clock ticks.
pub(crate) fn cpu_ticks(pid: u32) -> Option<u64> {
    let f = stat_fields(pid)?;
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Milliseconds per clock tick (USER_HZ).
pub(crate) fn ms_per_tick() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    1000.0 / if hz > 0 { hz as f64 } else { 100.0 }
}

/// CPU milliseconds of a set of processes so far.
pub(crate) fn cpu_ms(procs: &[Proc]) -> f64 {
    procs.iter().filter_map(|p| cpu_ticks(p.pid)).sum::<u64>() as f64 * ms_per_tick()
}

/// (VmRSS, VmHWM) of a process in KiB.
pub(crate) fn rss_kib(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |k: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Processes whose parent is `pid`.
pub(crate) fn children(pid: u32) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&c| {
            stat_fields(c)
                .and_then(|f| f.get(1)?.parse::<u32>().ok())
                .is_some_and(|pp| pp == pid)
        })
        .collect()
}

/// The engine `llorch serve` supervises: its child started with `--port N`.
fn engine_child(aio: u32) -> anyhow::Result<(u32, u16)> {
    for c in children(aio) {
        let cmdline = std::fs::read(format!("/proc/{c}/cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if let Some(i) = args.iter().position(|a| a == "--port") {
            let port = args
                .get(i + 1)
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| anyhow!("engine pid {c}: bad --port in {args:?}"))?;
            return Ok((c, port));
        }
    }
    bail!("llorch serve (pid {aio}) has no engine child with --port")
}
