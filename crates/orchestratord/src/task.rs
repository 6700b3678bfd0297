//! A task's event log. Every event a client can see goes through [`Task::push`], which enforces
//! the stream contract (ORCH-2002): nothing after a terminal event. Cancel appends its terminal
//! event under the same lock, so once a cancel is acknowledged no token can follow (ORCH-3026).

use std::sync::Mutex;
use std::time::Instant;

use api_types::{Engine, ErrorCode, Priority, StreamErrorEvent, StreamEvent};
use tokio::sync::Notify;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Queued,
    Running,
    Finished,
}

/// One entry of a log. Tokens (almost all of a log) are 16 bytes here plus their text in the
/// log's shared buffer, with no heap object of their own; the few other events are boxed.
#[derive(Debug)]
enum Entry {
    Token { start: u32, len: u32, i: u32 },
    Other(Box<StreamEvent>),
}

/// An event of a log as [`Task::visit_from`] lends it.
#[derive(Debug, Clone, Copy)]
pub enum LogEvent<'a> {
    Token { t: &'a str, i: u32 },
    Other(&'a StreamEvent),
}

#[derive(Debug)]
struct Log {
    entries: Vec<Entry>,
    /// The text of all token entries, back to back.
    text: String,
    phase: Phase,
    /// The terminal event is in `events` (readers see the end).
    terminal: bool,
    /// The runner claimed the end (see [`Task::seal`]): nothing else may end or extend the
    /// log, though its terminal event is not appended yet.
    sealed: bool,
}

impl Log {
    fn append(&mut self, ev: StreamEvent) {
        match ev {
            // A log never holds 4 GiB of text (max_tokens is a u32 and tokens are short);
            // should it, the token is kept boxed rather than mis-indexed.
            StreamEvent::Token(t) if u32::try_from(self.text.len() + t.t.len()).is_ok() => {
                let start = self.text.len() as u32;
                self.text.push_str(&t.t);
                self.entries.push(Entry::Token {
                    start,
                    len: t.t.len() as u32,
                    i: t.i,
                });
            }
            other => self.entries.push(Entry::Other(Box::new(other))),
        }
    }

    fn event(&self, e: &Entry) -> StreamEvent {
        match e {
            Entry::Token { start, len, i } => {
                let (s, l) = (*start as usize, *len as usize);
                StreamEvent::Token(api_types::TokenEvent {
                    t: self.text.get(s..s + l).unwrap_or_default().to_string(),
                    i: *i,
                })
            }
            Entry::Other(ev) => (**ev).clone(),
        }
    }

    fn bytes(&self) -> u64 {
        let boxed: usize = self
            .entries
            .iter()
            .map(|e| match e {
                Entry::Token { .. } => 0,
                Entry::Other(ev) => std::mem::size_of::<StreamEvent>() + heap_of(ev),
            })
            .sum();
        (self.entries.capacity() * std::mem::size_of::<Entry>() + self.text.capacity() + boxed)
            as u64
    }
}

/// Heap bytes a non-token event owns besides itself (its strings).
fn heap_of(ev: &StreamEvent) -> usize {
    match ev {
        StreamEvent::Token(t) => t.t.capacity(),
        StreamEvent::Error(e) => {
            e.message.capacity() + e.engine.as_ref().map_or(0, String::capacity)
        }
        StreamEvent::Started(_) | StreamEvent::Metrics(_) | StreamEvent::End(_) => 0,
    }
}

#[derive(Debug)]
pub struct Task {
    pub id: String,
    pub tenant: String,
    pub pool: usize,
    /// The pool's engine: named in the task's stream errors (ORCH-2006).
    pub engine: Engine,
    pub priority: Priority,
    pub session_id: Option<String>,
    pub prompt_tokens: u32,
    pub max_tokens: u32,
    /// Relative deadline from admission, if the client gave one.
    pub deadline_ms: Option<u64>,
    pub admitted_at: Instant,
    log: Mutex<Log>,
    /// Woken after each appended event; readers wait on it (see [`LogReader`]). A `Notify`
    /// and a counter instead of a `watch` channel: ~350 bytes less per task (issue 16).
    appended: Notify,
    /// Streams attached now (live [`LogReader`]s).
    readers: std::sync::atomic::AtomicUsize,
    /// Wakes the runner when the task is canceled.
    pub cancel_signal: Notify,
    /// True once the task holds no slot and no queue entry any more.
    /// A flag and a `Notify` (a `watch` channel per task cost more for the same job).
    released: std::sync::atomic::AtomicBool,
    released_signal: Notify,
    retired: std::sync::atomic::AtomicBool,
    /// When the task was retired (ms on the state's clock); `u64::MAX` while it is live.
    finished_at_ms: std::sync::atomic::AtomicU64,
    /// Bumped each time a reader of the stream goes away (see [`Task::note_detached`]).
    detaches: std::sync::atomic::AtomicU32,
}

/// A stream attached to a task's log, counted by [`Task::readers`] while it lives.
#[derive(Debug)]
pub struct LogReader {
    task: std::sync::Arc<Task>,
}

impl LogReader {
    /// Returns once the log holds more than `seen` events or has ended.
    pub async fn wait_beyond(&self, seen: usize) {
        loop {
            let notified = self.task.appended.notified();
            tokio::pin!(notified);
            // Registered before the check, so an event appended in between still wakes us.
            notified.as_mut().enable();
            {
                let log = self.task.log();
                if log.entries.len() > seen || log.terminal {
                    return;
                }
            }
            notified.await;
        }
    }
}

impl Drop for LogReader {
    fn drop(&mut self) {
        self.task
            .readers
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Why a cancel was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelRefused {
    AlreadyFinished,
}

/// What a task is, fixed at admission.
#[derive(Debug, Clone)]
pub struct TaskSpec {
    pub id: String,
    pub tenant: String,
    pub pool: usize,
    pub engine: Engine,
    pub priority: Priority,
    pub session_id: Option<String>,
    pub prompt_tokens: u32,
    pub max_tokens: u32,
    pub deadline_ms: Option<u64>,
}

impl Task {
    pub fn new(spec: TaskSpec) -> Self {
        let TaskSpec {
            id,
            tenant,
            pool,
            engine,
            priority,
            session_id,
            prompt_tokens,
            max_tokens,
            deadline_ms,
        } = spec;
        Task {
            id,
            tenant,
            pool,
            engine,
            priority,
            session_id,
            prompt_tokens,
            max_tokens,
            deadline_ms,
            admitted_at: Instant::now(),
            log: Mutex::new(Log {
                entries: Vec::new(),
                text: String::new(),
                phase: Phase::Queued,
                terminal: false,
                sealed: false,
            }),
            appended: Notify::new(),
            readers: std::sync::atomic::AtomicUsize::new(0),
            cancel_signal: Notify::new(),
            released: std::sync::atomic::AtomicBool::new(false),
            released_signal: Notify::new(),
            retired: std::sync::atomic::AtomicBool::new(false),
            finished_at_ms: std::sync::atomic::AtomicU64::new(u64::MAX),
            detaches: std::sync::atomic::AtomicU32::new(0),
        }
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        // A panic while holding this lock cannot leave the log inconsistent (single pushes).
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends an event; false (and nothing appended) once the stream is terminal.
    pub fn push(&self, ev: StreamEvent) -> bool {
        if ev.is_terminal() {
            return self.finish_with(ev).is_some();
        }
        {
            let mut log = self.log();
            if log.terminal || log.sealed {
                return false;
            }
            log.append(ev);
        }
        self.appended.notify_waiters();
        true
    }

    /// Ends the stream with an `error` event naming the task's engine (or `engine` when given).
    pub fn fail(
        &self,
        code: ErrorCode,
        message: impl Into<String>,
        engine: Option<String>,
    ) -> bool {
        self.push(StreamEvent::Error(StreamErrorEvent {
            code,
            message: message.into(),
            engine: engine.or_else(|| Some(self.engine.as_str().to_string())),
            retriable: Some(code.retriable()),
            retry_after_ms: None,
        }))
    }

    /// Appends a terminal event unless the log already ended; returns the phase it ended
    /// from. The one place where a log becomes terminal besides [`Task::push`].
    fn finish_with(&self, ev: StreamEvent) -> Option<Phase> {
        let phase = {
            let mut log = self.log();
            if log.terminal || log.sealed {
                return None;
            }
            let phase = log.phase;
            log.terminal = true;
            log.phase = Phase::Finished;
            log.append(ev);
            phase
        };
        self.appended.notify_waiters();
        Some(phase)
    }

    /// Claims the end of the log for a task that completed: from now on a cancel is refused
    /// as already finished and nothing can be appended, but readers see the `end` event only
    /// when [`Task::push_sealed_end`] appends it. Between the two the runner gives back the
    /// slot, quota and session budget, so a client that has read `end` (and at once sends the
    /// next turn) finds them free. False if the log already ended (e.g. canceled).
    pub fn seal(&self) -> bool {
        let mut log = self.log();
        if log.terminal || log.sealed {
            return false;
        }
        log.sealed = true;
        true
    }

    /// Appends `end` to a log claimed with [`Task::seal`].
    pub fn push_sealed_end(&self, end: api_types::EndEvent) {
        self.finish_sealed(StreamEvent::End(end));
    }

    /// Appends the terminal event of a log claimed with [`Task::seal`].
    fn finish_sealed(&self, ev: StreamEvent) {
        {
            let mut log = self.log();
            debug_assert!(log.sealed && !log.terminal);
            log.terminal = true;
            log.phase = Phase::Finished;
            log.append(ev);
        }
        self.appended.notify_waiters();
    }

    /// Marks the task canceled by its client: terminal CANCELED event, runner woken.
    pub fn cancel(&self) -> Result<Phase, CancelRefused> {
        self.cancel_with(ErrorCode::Canceled, "canceled by client")
    }

    /// Ends the task with `code` (CANCELED, or e.g. POOL_UNAVAILABLE when its pool is drained)
    /// and wakes the runner, which frees the engine slot.
    pub fn cancel_with(&self, code: ErrorCode, message: &str) -> Result<Phase, CancelRefused> {
        let phase = self
            .finish_with(StreamEvent::Error(StreamErrorEvent {
                code,
                message: message.into(),
                engine: Some(self.engine.as_str().to_string()),
                retriable: Some(code.retriable()),
                retry_after_ms: None,
            }))
            .ok_or(CancelRefused::AlreadyFinished)?;
        self.cancel_signal.notify_one();
        Ok(phase)
    }

    /// Moves Queued → Running; false if the task was canceled meanwhile.
    pub fn mark_running(&self) -> bool {
        self.set_phase_unless_terminal(Phase::Running)
    }

    /// Moves Running → Queued for a retry on another replica; false if canceled meanwhile.
    pub fn requeue(&self) -> bool {
        self.set_phase_unless_terminal(Phase::Queued)
    }

    fn set_phase_unless_terminal(&self, phase: Phase) -> bool {
        let mut log = self.log();
        if log.terminal || log.sealed {
            return false;
        }
        log.phase = phase;
        true
    }

    pub fn is_terminal(&self) -> bool {
        self.log().terminal
    }

    pub fn phase(&self) -> Phase {
        self.log().phase
    }

    /// Events from index `from`, and whether the log is terminal.
    pub fn events_from(&self, from: usize) -> (Vec<StreamEvent>, bool) {
        let log = self.log();
        let events = log
            .entries
            .get(from..)
            .unwrap_or_default()
            .iter()
            .map(|e| log.event(e))
            .collect();
        (events, log.terminal)
    }

    /// Calls `f` with each event from index `from` on, borrowed from the log (no copy of token
    /// text), under the log's lock: `f` must be quick. Returns how many it visited and whether
    /// the last one is terminal.
    pub fn visit_from(&self, from: usize, mut f: impl FnMut(usize, LogEvent<'_>)) -> (usize, bool) {
        let log = self.log();
        let entries = log.entries.get(from..).unwrap_or_default();
        for (k, e) in entries.iter().enumerate() {
            let ev = match e {
                Entry::Token { start, len, i } => {
                    let (s, l) = (*start as usize, *len as usize);
                    LogEvent::Token {
                        t: log.text.get(s..s + l).unwrap_or_default(),
                        i: *i,
                    }
                }
                Entry::Other(ev) => LogEvent::Other(ev),
            };
            f(from + k, ev);
        }
        (entries.len(), log.terminal)
    }

    /// How many events the log holds: the next event's id. The ids a client has seen are
    /// below it.
    pub fn event_count(&self) -> usize {
        self.log().entries.len()
    }

    /// Frees the log's spare capacity (it will not grow much any more: the task is retired)
    /// and returns the bytes it holds: what retention counts against its budget.
    pub fn compact(&self) -> u64 {
        let mut log = self.log();
        log.entries.shrink_to_fit();
        log.text.shrink_to_fit();
        log.bytes()
    }

    /// Bytes the log holds now (entries, token text, boxed events; no allocator overhead).
    pub fn log_bytes(&self) -> u64 {
        self.log().bytes()
    }

    /// Records when the task was retired (see [`Task::finished_at_ms`]).
    pub fn set_finished_at_ms(&self, now_ms: u64) {
        self.finished_at_ms
            .store(now_ms, std::sync::atomic::Ordering::Release);
    }

    /// When the task was retired, on the state's clock; `None` while it is live.
    pub fn finished_at_ms(&self) -> Option<u64> {
        let v = self
            .finished_at_ms
            .load(std::sync::atomic::Ordering::Acquire);
        (v != u64::MAX).then_some(v)
    }

    /// Attaches a reader to the log. Every open stream holds one, so [`Task::readers`] counts
    /// the streams attached to the task.
    pub fn attach(self: &std::sync::Arc<Self>) -> LogReader {
        self.readers
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        LogReader { task: self.clone() }
    }

    /// Streams attached to the task now.
    pub fn readers(&self) -> usize {
        self.readers.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Records that a reader went away; returns the mark [`Task::abandoned_since`] compares.
    pub fn note_detached(&self) -> u32 {
        self.detaches
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel)
            .wrapping_add(1)
    }

    /// True when no stream is attached and none went away since the detach that returned
    /// `mark`: nobody came back (a reader who reattached and left again restarts the wait).
    pub fn abandoned_since(&self, mark: u32) -> bool {
        self.readers() == 0 && self.detaches.load(std::sync::atomic::Ordering::Acquire) == mark
    }

    /// Marks the task as holding nothing (wakes whoever waits in [`Task::wait_released`]).
    pub fn mark_released(&self) {
        self.released
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.released_signal.notify_waiters();
    }

    /// True only for the first call: whoever gets true settles the task's accounting, once.
    pub fn begin_retire(&self) -> bool {
        !self.retired.swap(true, std::sync::atomic::Ordering::AcqRel)
    }

    /// Worst-case tokens of this task (prompt estimate + max_tokens): what quotas and session
    /// budgets reserve at admission.
    pub fn reserved_tokens(&self) -> u64 {
        u64::from(self.prompt_tokens) + u64::from(self.max_tokens)
    }

    pub fn is_released(&self) -> bool {
        self.released.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until the task holds no slot any more (or `limit` passes); true when released.
    pub async fn wait_released(&self, limit: std::time::Duration) -> bool {
        let until = tokio::time::Instant::now() + limit;
        loop {
            // Register before checking, so a release between the check and the wait wakes us.
            let notified = self.released_signal.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_released() {
                return true;
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                return self.is_released();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> Task {
        Task::new(TaskSpec {
            id: "t".into(),
            tenant: "x".into(),
            pool: 0,
            engine: Engine::Mock,
            priority: Priority::Interactive,
            session_id: None,
            prompt_tokens: 1,
            max_tokens: 1,
            deadline_ms: None,
        })
    }

    /// Between `seal` and `push_sealed_end` nobody else can end or extend the log, and readers
    /// see no end yet; then exactly the sealed `end` is the terminal event.
    #[test]
    fn a_sealed_log_ends_only_with_its_end_event() {
        let t = task();
        assert!(t.mark_running());
        assert!(t.seal());
        assert!(!t.seal(), "sealed once");
        assert_eq!(t.cancel(), Err(CancelRefused::AlreadyFinished));
        assert!(!t.push(StreamEvent::Token(api_types::TokenEvent {
            t: "x".into(),
            i: 0
        })));
        assert!(!t.requeue());
        let (events, terminal) = t.events_from(0);
        assert!(events.is_empty() && !terminal, "readers see no end yet");
        t.push_sealed_end(api_types::EndEvent {
            tokens_out: 1,
            decode_ms: 2,
            finish_reason: None,
            prompt_tokens: None,
        });
        let (events, terminal) = t.events_from(0);
        assert!(terminal);
        assert!(matches!(events.as_slice(), [StreamEvent::End(e)] if e.tokens_out == 1));
    }

    /// Tokens come back exactly as appended, interleaved with other events, and cost their
    /// entry plus their text: no per-token heap object.
    #[test]
    fn the_compact_log_replays_exactly_and_is_small() {
        let t = task();
        t.push(StreamEvent::Started(api_types::StartedEvent {
            queue_position: 0,
            predicted_start_ms: 0,
            on_time_probability: 1.0,
        }));
        let mut sent = Vec::new();
        for i in 0..1000u32 {
            let ev = StreamEvent::Token(api_types::TokenEvent {
                t: format!("w{}é ", i % 7),
                i,
            });
            sent.push(ev.clone());
            assert!(t.push(ev));
        }
        t.fail(ErrorCode::Canceled, "stop", None);
        let (events, terminal) = t.events_from(1);
        assert!(terminal);
        assert_eq!(&events[..1000], &sent[..]);
        assert!(matches!(events[1000], StreamEvent::Error(_)));
        assert_eq!(
            t.events_from(995).0.len(),
            7,
            "tokens 994..=999 and the error"
        );
        assert!(t.events_from(5000).0.is_empty());
        let bytes = t.compact();
        // 1000 tokens of 5 bytes of text: 16 (entry) + 5 per token, plus two boxed events.
        assert!(bytes >= 21_000, "{bytes}");
        assert!(bytes <= 21_000 + 2 * 200, "{bytes} bytes for 1000 tokens");
        assert_eq!(bytes, t.log_bytes());
    }

    #[tokio::test]
    async fn wait_released_wakes_on_release_and_times_out_without() {
        let t = std::sync::Arc::new(task());
        assert!(!t.wait_released(std::time::Duration::from_millis(30)).await);
        let t2 = t.clone();
        let waiter =
            tokio::spawn(async move { t2.wait_released(std::time::Duration::from_secs(10)).await });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        t.mark_released();
        assert!(waiter.await.unwrap());
        assert!(t.is_released());
        assert!(t.wait_released(std::time::Duration::ZERO).await);
    }

    #[test]
    fn a_canceled_log_cannot_be_sealed() {
        let t = task();
        assert!(t.cancel().is_ok());
        assert!(!t.seal());
    }
}
