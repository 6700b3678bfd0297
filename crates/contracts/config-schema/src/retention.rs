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
/// `pools[1].replicas[0].slots`) is written, best effort: walks the table headers the path
/// names (the n-th `[[pools]]` for `pools[n]`), then looks for the key (also inside an inline
/// table) up to the next header; else the line of the innermost header found; else 1.
pub(crate) fn line_of(text: &str, path: &str) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    let segs: Vec<(&str, Option<usize>)> = path
        .split('.')
        .filter(|s| !s.is_empty())
        .map(|s| match s.split_once('[') {
            Some((name, idx)) => (name, idx.trim_end_matches(']').parse().ok()),
            None => (s, None),
        })
        .collect();
    let Some(((last, _), parents)) = segs.split_last() else {
        return 1;
    };
    let header_name = |l: &str| -> Option<String> {
        let t = l.trim();
        t.starts_with('[').then(|| {
            t.trim_start_matches('[')
                .trim_end_matches(']')
                .trim()
                .to_string()
        })
    };
    // Walk the headers: `pos` is the line of the innermost header found so far.
    let mut pos: Option<usize> = None;
    let mut prefix = String::new();
    for (name, idx) in parents {
        if !prefix.is_empty() {
            prefix.push('.');
        }
        prefix.push_str(name);
        let from = pos.map_or(0, |p| p + 1);
        let mut hits = lines
            .iter()
            .enumerate()
            .skip(from)
            .filter(|(_, l)| header_name(l).as_deref() == Some(prefix.as_str()))
            .map(|(i, _)| i);
        if let Some(i) = hits.nth(idx.unwrap_or(0)) {
            pos = Some(i);
        }
    }
    let sets_key = |l: &str| {
        let l = l.trim_start();
        l.strip_prefix(last)
            .is_some_and(|rest| rest.trim_start().starts_with('='))
    };
    let inline = |l: &str| l.split(['{', ',']).skip(1).any(sets_key);
    let from = pos.map_or(0, |p| p + 1);
    let region = lines
        .iter()
        .enumerate()
        .skip(from)
        .take_while(|(_, l)| pos.is_none() || header_name(l).is_none());
    let mut inline_hit = None;
    for (i, l) in region {
        if sets_key(l) {
            return i + 1;
        }
        if inline_hit.is_none() && inline(l) {
            inline_hit = Some(i + 1);
        }
    }
    inline_hit.or(pos.map(|p| p + 1)).unwrap_or(1)
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
        let inline = "[[pools]]\nid = \"a\"\npolicy = { fuel = 1, module = \"x\" }\n";
        assert_eq!(line_of(inline, "pools[0].policy.module"), 3);
        let two = "[[pools]]\nid = \"a\"\n[[pools.replicas]]\nslots = 1\n[[pools]]\nid = \"b\"\nmodel_ref = \"x\"\n[[pools.replicas]]\nid = \"r\"\n[[pools.replicas]]\nslots = 2\n";
        assert_eq!(line_of(two, "pools[1].model_ref"), 7);
        assert_eq!(line_of(two, "pools[1].replicas[1].slots"), 11);
        assert_eq!(line_of(two, "pools[0].replicas[0].slots"), 4);
        assert_eq!(line_of(two, "pools[1].nothing"), 5);
    }
}
