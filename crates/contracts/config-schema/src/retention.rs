//! Checks of the finished-task retention budgets (`server.task_log_*`) and the line lookup
//! that gives semantic errors a `file:line` like syntax errors have.

use crate::types::ServerConfig;

/// Largest byte budget accepted for retained task logs (1 TiB): more is a typo, not a plan.
pub const MAX_TASK_LOG_BUDGET_BYTES: u64 = 1 << 40;
/// Smallest byte budget accepted (64 KiB): less could not hold one long answer.
pub const MIN_TASK_LOG_BUDGET_BYTES: u64 = 64 * 1024;
/// Most finished tasks that may be kept, overall or per tenant.
pub const MAX_TASK_LOG_TASKS: u64 = 10_000_000;

/// `(key path, message)` of the first bad retention setting.
pub(crate) fn check(s: &ServerConfig) -> Result<(), (String, String)> {
    let bad = |k: &str, m: String| Err((format!("server.{k}"), m));
    if let Some(b) = s.task_log_budget_bytes {
        if b < MIN_TASK_LOG_BUDGET_BYTES {
            return bad(
                "task_log_budget_bytes",
                format!("{b} is below the minimum of {MIN_TASK_LOG_BUDGET_BYTES} bytes"),
            );
        }
        if b > MAX_TASK_LOG_BUDGET_BYTES {
            return bad(
                "task_log_budget_bytes",
                format!("{b} is over the maximum of {MAX_TASK_LOG_BUDGET_BYTES} bytes (1 TiB)"),
            );
        }
    }
    for (k, v) in [
        ("task_log_max_tasks", s.task_log_max_tasks),
        (
            "task_log_max_tasks_per_tenant",
            s.task_log_max_tasks_per_tenant,
        ),
    ] {
        if v == 0 {
            return bad(
                k,
                "must be > 0 (set task_retention_ms to forget tasks sooner)".into(),
            );
        }
        if v > MAX_TASK_LOG_TASKS {
            return bad(
                k,
                format!("{v} is over the maximum of {MAX_TASK_LOG_TASKS}"),
            );
        }
    }
    if s.task_log_max_tasks_per_tenant > s.task_log_max_tasks {
        return bad(
            "task_log_max_tasks_per_tenant",
            format!(
                "{} is more than task_log_max_tasks ({})",
                s.task_log_max_tasks_per_tenant, s.task_log_max_tasks
            ),
        );
    }
    Ok(())
}

/// The 1-based line where the key at `path` (e.g. `server.task_log_max_tasks`,
/// `pools[1].replicas[0].slots`) is written, best effort: the line of its last key inside
/// the nearest table header that names its parent, else the first line that sets that key,
/// else the header, else 1.
pub(crate) fn line_of(text: &str, path: &str) -> usize {
    let segs: Vec<&str> = path
        .split('.')
        .map(|s| s.split('[').next().unwrap_or(s))
        .filter(|s| !s.is_empty())
        .collect();
    let Some((last, parents)) = segs.split_last() else {
        return 1;
    };
    let header = parents.join(".");
    let sets_key = |l: &str| {
        let l = l.trim_start();
        l.strip_prefix(last)
            .is_some_and(|rest| rest.trim_start().starts_with('='))
    };
    let is_header = |l: &str| {
        let l = l.trim();
        let name = l.trim_start_matches('[').trim_end_matches(']').trim();
        l.starts_with('[') && name == header
    };
    let lines: Vec<&str> = text.lines().collect();
    if !header.is_empty()
        && let Some(h) = lines.iter().position(|l| is_header(l))
    {
        for (i, l) in lines.iter().enumerate().skip(h + 1) {
            if l.trim_start().starts_with('[') {
                break;
            }
            if sets_key(l) {
                return i + 1;
            }
        }
        return h + 1;
    }
    lines.iter().position(|l| sets_key(l)).map_or(1, |i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_found_under_their_table() {
        let text = "[server]\nlisten = \"x\"\ntask_log_max_tasks = 0\n\n[[pools]]\nid = \"a\"\n";
        assert_eq!(line_of(text, "server.task_log_max_tasks"), 3);
        assert_eq!(line_of(text, "server.nothing"), 1);
        assert_eq!(line_of(text, "pools[0].id"), 6);
        assert_eq!(line_of("a = 1\n", "zzz"), 1);
    }
}
