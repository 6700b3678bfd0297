//! `llorch submit` rides out dropped connections: a TCP proxy between the real `llorch` binary
//! and a real orchestratord (in-process, mock engine) cuts every stream connection (the
//! one-round-trip POST's, then each GET's) after a seeded random number of bytes; the CLI
//! reconnects with `Last-Event-ID` and must print
//! exactly the tokens a direct reader gets, end with the summary and exit 0, and the task must
//! not have been canceled by the disconnects.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use llama_orch_cli::{ApiKey, Client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const KEY: &str = "resume-data-key";
const CONFIG: &str = r#"
[[auth.api_keys]]
key = "resume-data-key"
tenant = "t"
role = "data"

[[pools]]
id = "p"
engine = "mock"
model_ref = "mock:tiny"
ctx_max = 2048
allow_cpu_inference = true

[[pools.replicas]]
id = "r0"
slots = 1
mock = { tokens_per_second = 300 }
"#;

/// xorshift64*: reproducible cut points.
struct Rng(u64);
impl Rng {
    fn between(&mut self, lo: usize, hi: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        lo + (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % (hi - lo)
    }
}

/// A proxy to `upstream` that closes a connection once it has relayed the next cut's number
/// of response bytes after a stream request (`GET …/stream`, or `POST /v1/tasks` asking for
/// the stream in one round trip). Returns its address and the cut count.
async fn cutting_proxy(upstream: SocketAddr, seed: u64) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let addr = listener.local_addr().expect("addr");
    let rng = Arc::new(Mutex::new(Rng(seed)));
    let cuts = Arc::new(AtomicUsize::new(0));
    let counted = cuts.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (rng, cuts) = (rng.clone(), counted.clone());
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                // 0: not a stream request (yet); else bytes of the response to let through.
                let budget = Arc::new(AtomicUsize::new(0));
                let arm = budget.clone();
                let up = tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n @ 1..) = cr.read(&mut buf).await {
                        let req = String::from_utf8_lossy(&buf[..n]);
                        // GET …/stream, or the one-round-trip submit (POST with the
                        // stream as its answer).
                        let streams = (req.starts_with("GET ") && req.contains("/stream"))
                            || (req.starts_with("POST /v1/tasks ")
                                && req.to_ascii_lowercase().contains("text/event-stream"));
                        if streams {
                            let cut = rng.lock().expect("rng").between(300, 900);
                            arm.store(cut, Ordering::SeqCst);
                        }
                        if sw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n @ 1..) = sr.read(&mut buf).await {
                    let left = budget.load(Ordering::SeqCst);
                    if left == 0 {
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        continue;
                    }
                    let pass = n.min(left);
                    if cw.write_all(&buf[..pass]).await.is_err() {
                        break;
                    }
                    if pass == left {
                        cuts.fetch_add(1, Ordering::SeqCst);
                        break; // the cut: both directions close
                    }
                    budget.store(left - pass, Ordering::SeqCst);
                }
                up.abort();
            });
        }
    });
    (addr, cuts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llorch_submit_resumes_a_stream_cut_many_times() {
    let cfg = config_schema::parse_str(CONFIG, "resume.toml").expect("config");
    let server = orchestratord::LocalServer::start(cfg, Default::default(), None)
        .await
        .expect("server");
    let upstream: SocketAddr = server
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("server address");
    let (proxy, cuts) = cutting_proxy(upstream, 0x05ee_dc11).await;
    let via_proxy = format!("http://{proxy}");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_llorch"))
            .args(["--url", &via_proxy])
            .args([
                "submit",
                "--model-ref",
                "mock:tiny",
                "--prompt",
                "resume me",
            ])
            .args(["--max-tokens", "200", "--task-id", "cut"])
            .env("LLORCH_API_KEY", KEY)
            .output()
            .expect("run llorch")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    let cut = cuts.load(Ordering::SeqCst);
    assert!(cut >= 5, "the proxy cut the stream only {cut} times");

    // What a reader who never lost its connection gets (a replay of the finished task).
    let direct = Client::new(&server.base, Some(ApiKey::new(KEY))).expect("client");
    let mut text = String::new();
    let mut events = std::pin::pin!(direct.stream("cut"));
    while let Some(ev) = events.next().await {
        match ev.expect("direct event") {
            api_types::StreamEvent::Token(t) => text.push_str(&t.t),
            api_types::StreamEvent::End(e) => assert_eq!(e.tokens_out, 200),
            other => assert!(!other.is_terminal(), "ended with {other:?}"),
        }
    }
    assert_eq!(stdout, text, "the CLI printed exactly the task's tokens");
    assert!(stderr.contains("200 tokens"), "{stderr}");
    let metrics = reqwest::get(format!("{}/metrics", server.base))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    assert!(
        !metrics
            .lines()
            .any(|l| l.contains("reason=\"client_disconnect\"") && !l.ends_with(" 0")),
        "a disconnect canceled the task:\n{metrics}"
    );
    eprintln!("llorch resumed across {cut} cut connections; 200 tokens, identical text");
}
