//! `llorch`, the command-line client of llama-orch: submits tasks to orchestratord over the public
//! OrchQueue v1 HTTP API, streams their tokens, cancels tasks and manages sessions; and drives the
//! control plane (pools, drain, reload, model catalog, capabilities, `top`).
//!
//! This crate is a pure API consumer: it must depend only on `api-types` for the wire contract,
//! never on server crates (orchestratord, orchestrator-core, adapters), so that it exercises the
//! API exactly as any third-party client would.
//!
//! The library half exists so the CLI can be driven in-process by tests: [`run`] takes the parsed
//! [`Cli`] and writers for stdout and stderr and returns the exit code.

mod args;
mod client;
mod commands;
mod control_args;
mod control_client;
mod error;
mod prom;
mod render;

use std::io::{IsTerminal, Read, Write};
use std::time::{Duration, Instant};

use anyhow::Context;
use api_types::{StreamEvent, TaskAccepted, TaskRequest, Workload};
use futures::StreamExt;

pub use args::{
    ApiKey, CatalogCommand, Cli, Command, ControlCommand, DEFAULT_URL, OutputFormat, PriorityArg,
    SessionCommand, SubmitArgs, TopArgs,
};
pub use client::{Client, backoff_from_headers, sse_events};
pub use commands::{Frame, PoolLoad, PoolTenantLoad, PoolView, TenantLoad};
pub use control_args::parse_duration_ms;
pub use error::{
    CliError, EXIT_CLIENT, EXIT_LOCAL, EXIT_OK, EXIT_RETRY, exit_code_for_status,
    exit_code_for_stream_error, format_error, format_stream_error,
};

/// Longest `backoff_ms` from `TaskAccepted` that is honoured before opening the stream.
const MAX_STREAM_BACKOFF: Duration = Duration::from_secs(30);
/// How long a best-effort cancel (after stdout broke mid-stream) may take.
const CANCEL_ON_ABORT_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs one CLI invocation, writing normal output to `out` and diagnostics to `err`; returns the
/// process exit code ([`EXIT_OK`], [`EXIT_LOCAL`], [`EXIT_CLIENT`] or [`EXIT_RETRY`]).
pub async fn run(
    cli: Cli,
    out: &mut (impl Write + ?Sized),
    err: &mut (impl Write + ?Sized),
) -> i32 {
    if let Some(code) = commands::generate(&cli.command, out, err) {
        let _ = out.flush();
        return code;
    }
    let opts = commands::Opts {
        output: cli.output,
        catalog_url: cli.catalog_url.clone(),
    };
    let code = match Client::new(&cli.url, cli.api_key.clone()) {
        Ok(client) => match dispatch(&client, &opts, cli.command, out, err).await {
            Ok(code) => code,
            Err(Failure::Cli(e)) => report(err, &e),
            Err(Failure::Io(e)) => {
                let _ = writeln!(err, "error: cannot write output: {e}");
                EXIT_LOCAL
            }
        },
        Err(e) => report(err, &e),
    };
    let _ = out.flush();
    let _ = err.flush();
    code
}

/// Internal failure of a command: a client error, or a failed write to `out`/`err`.
enum Failure {
    Cli(CliError),
    Io(std::io::Error),
}

impl From<CliError> for Failure {
    fn from(e: CliError) -> Self {
        Failure::Cli(e)
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Io(e)
    }
}

fn report(err: &mut (impl Write + ?Sized), e: &CliError) -> i32 {
    let _ = err.write_all(format_error(e).as_bytes());
    e.exit_code()
}

async fn dispatch(
    client: &Client,
    opts: &commands::Opts,
    command: Command,
    out: &mut (impl Write + ?Sized),
    err: &mut (impl Write + ?Sized),
) -> Result<i32, Failure> {
    match command {
        Command::Submit(mut args) => {
            args.json |= opts.json();
            submit(client, args, out, err).await
        }
        Command::Cancel { task_id } => {
            client.cancel(&task_id).await?;
            if opts.json() {
                render::write_json(
                    out,
                    &serde_json::json!({"task_id": task_id, "canceled": true}),
                )?;
            } else {
                writeln!(err, "canceled: task {task_id}")?;
            }
            Ok(EXIT_OK)
        }
        Command::Session(SessionCommand::Get { session_id }) => {
            let info = client.session_get(&session_id).await?;
            let text = serde_json::to_string_pretty(&info)
                .map_err(|e| CliError::Protocol(format!("cannot render session: {e}")))?;
            writeln!(out, "{text}")?;
            Ok(EXIT_OK)
        }
        Command::Session(SessionCommand::Delete { session_id }) => {
            client.session_delete(&session_id).await?;
            if opts.json() {
                render::write_json(
                    out,
                    &serde_json::json!({"session_id": session_id, "deleted": true}),
                )?;
            } else {
                writeln!(err, "deleted: session {session_id}")?;
            }
            Ok(EXIT_OK)
        }
        Command::Control(c) => commands::run(client, opts, c, out, err).await,
        // `serve` is a server, not a client command: the `llorch` binary runs it (llorch-serve)
        // before this library is involved.
        Command::Serve { .. } => {
            Err(CliError::Usage("`serve` runs only from the llorch binary".into()).into())
        }
    }
}

/// Builds the wire request of `llorch submit` (the prompt already resolved).
pub fn task_request(args: &SubmitArgs, prompt: String) -> TaskRequest {
    TaskRequest {
        task_id: args.task_id.clone(),
        session_id: args.session_id.clone(),
        tenant: None,
        workload: Workload::Completion,
        model_ref: args.model_ref.clone(),
        engine: None,
        ctx: args.ctx,
        priority: args.priority.into(),
        seed: args.seed,
        determinism: None,
        sampler_profile_version: None,
        prompt: Some(prompt),
        messages: None,
        inputs: None,
        temperature: None,
        top_p: None,
        top_k: None,
        min_p: None,
        repeat_penalty: None,
        stop: None,
        grammar: None,
        json_schema: None,
        max_tokens: args.max_tokens,
        deadline_ms: args.deadline_ms,
        expected_tokens: None,
        kv_hint: None,
    }
}

async fn submit(
    client: &Client,
    args: SubmitArgs,
    out: &mut (impl Write + ?Sized),
    err: &mut (impl Write + ?Sized),
) -> Result<i32, Failure> {
    let prompt =
        resolve_prompt(args.prompt.as_deref()).map_err(|e| CliError::Usage(format!("{e:#}")))?;
    let req = task_request(&args, prompt);
    let t0 = Instant::now();
    if args.no_stream {
        let accepted = client.submit(&req).await?;
        if args.json {
            writeln!(out, "{}", json_line("accepted", &accepted_json(&accepted)))?;
        } else {
            writeln!(out, "{}", accepted.task_id)?;
            writeln!(
                err,
                "queued: position {}, predicted start in {} ms",
                accepted.queue_position, accepted.predicted_start_ms
            )?;
        }
        out.flush()?;
        return Ok(EXIT_OK);
    }
    // One round trip where the server offers it (issue 15 item 2); two steps otherwise.
    let (accepted, events) = match client.submit_streaming(&req).await? {
        client::Submitted::Streaming { accepted, events } => (accepted, Some(events)),
        client::Submitted::Accepted(accepted) => (accepted, None),
    };
    let mut view = StreamView {
        json: args.json,
        line_open: false,
        t0,
        // With one round trip the queue position comes with `started`: the `accepted` line
        // waits for it.
        pending_accepted: None,
    };
    if let Some(events) = events {
        if args.json {
            view.pending_accepted = Some(accepted.clone());
        } else {
            writeln!(err, "accepted: task {}", accepted.task_id)?;
        }
        return view
            .guarded(client, &accepted.task_id, events, out, err)
            .await;
    }

    if args.json {
        writeln!(out, "{}", json_line("accepted", &accepted_json(&accepted)))?;
        out.flush()?;
    }
    if !args.json {
        writeln!(err, "accepted: task {}", accepted.task_id)?;
    }
    if accepted.backoff_ms > 0 {
        tokio::time::sleep(Duration::from_millis(accepted.backoff_ms).min(MAX_STREAM_BACKOFF))
            .await;
    }

    let events = Box::pin(client.stream(&accepted.task_id));
    view.guarded(client, &accepted.task_id, events, out, err)
        .await
}

/// Renders a task's stream.
struct StreamView {
    json: bool,
    /// Token text was printed on stdout and did not end in a newline.
    line_open: bool,
    t0: Instant,
    /// `--json` with one round trip: the `accepted` line, printed when `started` fills in the
    /// queue position.
    pending_accepted: Option<TaskAccepted>,
}

impl StreamView {
    /// [`Self::follow`], canceling the task when the output goes away.
    async fn guarded(
        &mut self,
        client: &Client,
        task_id: &str,
        events: client::EventStream,
        out: &mut (impl Write + ?Sized),
        err: &mut (impl Write + ?Sized),
    ) -> Result<i32, Failure> {
        match self.follow(events, out, err).await {
            Err(Failure::Io(e)) => {
                // Nobody reads the output any more: free the server's slot (best effort).
                let _ = tokio::time::timeout(CANCEL_ON_ABORT_TIMEOUT, client.cancel(task_id)).await;
                Err(Failure::Io(e))
            }
            Err(Failure::Cli(e)) => {
                self.close_line(err)?;
                Err(Failure::Cli(e))
            }
            ok => ok,
        }
    }

    async fn follow(
        &mut self,
        mut events: client::EventStream,
        out: &mut (impl Write + ?Sized),
        err: &mut (impl Write + ?Sized),
    ) -> Result<i32, Failure> {
        while let Some(item) = events.next().await {
            let ev = item?;
            if let (StreamEvent::Started(s), Some(mut a)) = (&ev, self.pending_accepted.take()) {
                a.queue_position = s.queue_position;
                a.predicted_start_ms = s.predicted_start_ms;
                writeln!(out, "{}", json_line("accepted", &accepted_json(&a)))?;
            }
            if self.json {
                writeln!(out, "{}", json_line(ev.name(), &ev.data_json()))?;
                out.flush()?;
            }
            match ev {
                StreamEvent::Started(s) => {
                    if !self.json {
                        writeln!(
                            err,
                            "queued: position {}, predicted start in {} ms",
                            s.queue_position, s.predicted_start_ms
                        )?;
                    }
                }
                StreamEvent::Token(t) => {
                    if !self.json && !t.t.is_empty() {
                        out.write_all(t.t.as_bytes())?;
                        out.flush()?;
                        self.line_open = !t.t.ends_with('\n');
                    }
                }
                StreamEvent::Metrics(_) => {}
                StreamEvent::End(end) => {
                    if !self.json {
                        self.close_line(err)?;
                        err.write_all(
                            format_summary(end.tokens_out, self.t0.elapsed(), end.decode_ms)
                                .as_bytes(),
                        )?;
                    }
                    return Ok(EXIT_OK);
                }
                StreamEvent::Error(e) => {
                    self.close_line(err)?;
                    err.write_all(format_stream_error(&e).as_bytes())?;
                    return Ok(exit_code_for_stream_error(&e));
                }
            }
        }
        // `Client::stream` always ends with a terminal event or an error.
        Err(CliError::Protocol("the stream closed before an `end` or `error` event".into()).into())
    }

    /// Ends an open token line (on stderr, so stdout stays exactly the generated text).
    fn close_line(&mut self, err: &mut (impl Write + ?Sized)) -> std::io::Result<()> {
        if std::mem::take(&mut self.line_open) {
            writeln!(err)?;
        }
        Ok(())
    }
}

/// One `--json` output line: `{"event":NAME,"data":DATA}`; `data` must be one line of JSON.
fn json_line(name: &str, data: &str) -> String {
    format!("{{\"event\":\"{name}\",\"data\":{data}}}")
}

fn accepted_json(a: &TaskAccepted) -> String {
    // Serializing a plain struct of strings and integers cannot fail.
    serde_json::to_string(a).unwrap_or_else(|_| "{}".to_string())
}

/// The summary printed on stderr after `end`, e.g.
/// `done: 42 tokens in 1.53 s (decode 0.80 s, 52.5 tokens/s)`. The rate uses the server's decode
/// time when it reports one, else the elapsed wall time (which includes queueing).
pub fn format_summary(tokens_out: u32, elapsed: Duration, decode_ms: u64) -> String {
    let noun = if tokens_out == 1 { "token" } else { "tokens" };
    let secs = elapsed.as_secs_f64();
    let rate = |s: f64| f64::from(tokens_out) / s;
    if decode_ms > 0 {
        let d = decode_ms as f64 / 1000.0;
        format!(
            "done: {tokens_out} {noun} in {secs:.2} s (decode {d:.2} s, {:.1} tokens/s)\n",
            rate(d)
        )
    } else if secs > 0.0 {
        format!(
            "done: {tokens_out} {noun} in {secs:.2} s ({:.1} tokens/s)\n",
            rate(secs)
        )
    } else {
        format!("done: {tokens_out} {noun} in {secs:.2} s\n")
    }
}

/// `--prompt TEXT` is used as is; `--prompt -` or no `--prompt` reads stdin.
fn resolve_prompt(arg: Option<&str>) -> anyhow::Result<String> {
    match arg {
        Some(p) if p != "-" => Ok(p.to_string()),
        _ => {
            let stdin = std::io::stdin();
            if arg.is_none() && stdin.is_terminal() {
                anyhow::bail!("no prompt given: pass --prompt TEXT, or pipe the prompt on stdin");
            }
            let mut s = String::new();
            stdin
                .lock()
                .read_to_string(&mut s)
                .context("cannot read the prompt from stdin")?;
            let s = strip_one_newline(s);
            if s.is_empty() {
                anyhow::bail!("the prompt read from stdin is empty");
            }
            Ok(s)
        }
    }
}

/// Drops one trailing `\n` or `\r\n` (as left by `echo` or an editor).
fn strip_one_newline(mut s: String) -> String {
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn summary_uses_decode_time_when_known() {
        assert_eq!(
            format_summary(42, Duration::from_millis(1530), 800),
            "done: 42 tokens in 1.53 s (decode 0.80 s, 52.5 tokens/s)\n"
        );
        assert_eq!(
            format_summary(10, Duration::from_secs(2), 0),
            "done: 10 tokens in 2.00 s (5.0 tokens/s)\n"
        );
        assert_eq!(
            format_summary(1, Duration::ZERO, 0),
            "done: 1 token in 0.00 s\n"
        );
    }

    #[test]
    fn json_lines() {
        assert_eq!(
            json_line("token", r#"{"t":"a","i":0}"#),
            r#"{"event":"token","data":{"t":"a","i":0}}"#
        );
        let ev = StreamEvent::parse("end", r#"{"tokens_out":2,"decode_ms":3}"#).expect("parses");
        let line = json_line(ev.name(), &ev.data_json());
        let v: serde_json::Value = serde_json::from_str(&line).expect("valid json");
        assert_eq!(v["event"], "end");
        assert_eq!(v["data"]["tokens_out"], 2);
    }

    #[test]
    fn newline_stripping() {
        assert_eq!(strip_one_newline("hi\n".into()), "hi");
        assert_eq!(strip_one_newline("hi\r\n".into()), "hi");
        assert_eq!(strip_one_newline("hi\n\n".into()), "hi\n");
        assert_eq!(strip_one_newline("hi".into()), "hi");
        assert_eq!(resolve_prompt(Some("literal")).expect("ok"), "literal");
    }

    #[test]
    fn request_from_args() {
        let cli = Cli::try_parse_from([
            "llorch",
            "submit",
            "--model-ref",
            "m",
            "--prompt",
            "p",
            "--priority",
            "batch",
            "--seed",
            "3",
        ])
        .expect("parses");
        let Command::Submit(a) = cli.command else {
            panic!("not submit")
        };
        let req = task_request(&a, "p".into());
        let v = serde_json::to_value(&req).expect("serializes");
        assert_eq!(
            v,
            serde_json::json!({
                "workload": "completion", "model_ref": "m", "ctx": 2048, "priority": "batch",
                "seed": 3, "prompt": "p", "max_tokens": 64
            })
        );
    }

    #[tokio::test]
    async fn invalid_url_is_a_client_error() {
        let cli =
            Cli::try_parse_from(["llorch", "--url", "not a url", "cancel", "t"]).expect("parses");
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(run(cli, &mut out, &mut err).await, EXIT_CLIENT);
        let err = String::from_utf8(err).expect("utf8");
        assert!(err.starts_with("error: invalid --url `not a url`"), "{err}");
        assert!(out.is_empty());
    }
}
