//! Prometheus text exposition, parsed leniently for engine adapters: a line that is not
//! `name[{labels}] value [timestamp]` with a finite value is skipped (`None`), never an error
//! and never a panic, because the engine is outside our control and a bad scrape must not take
//! a pool manager's own `/metrics` down with it. One parser for every engine's `/metrics`.

pub type Labels = Vec<(String, String)>;

/// One sample: name, labels (unescaped), value.
pub fn parse_sample(line: &str) -> Option<(&str, Labels, f64)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let i = line.find(['{', ' ', '\t'])?;
    let (name, mut rest) = (&line[..i], &line[i..]);
    let mut labels = Vec::new();
    if rest.starts_with('{') {
        let mut chars = rest.char_indices().skip(1).peekable();
        let mut end = None;
        loop {
            // key
            while chars
                .peek()
                .is_some_and(|(_, c)| *c == ',' || c.is_whitespace())
            {
                chars.next();
            }
            match chars.peek() {
                Some((j, '}')) => {
                    end = Some(*j);
                    break;
                }
                None => break,
                _ => {}
            }
            let mut key = String::new();
            while let Some((_, c)) = chars.peek() {
                if *c == '=' {
                    break;
                }
                key.push(*c);
                chars.next();
            }
            if chars.next().is_none() || chars.next().map(|(_, c)| c) != Some('"') {
                break;
            }
            let mut val = String::new();
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, 'n')) => val.push('\n'),
                        Some((_, c)) => val.push(c),
                        None => break,
                    },
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => val.push(c),
                }
            }
            if !closed {
                break;
            }
            labels.push((key.trim().to_string(), val));
        }
        rest = &rest[end? + 1..];
    }
    let v: f64 = rest.split_whitespace().next()?.parse().ok()?;
    if !v.is_finite() || name.is_empty() {
        return None;
    }
    Some((name, labels, v))
}

/// The value of label `key`.
pub fn label<'a>(labels: &'a [(String, String)], key: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}
