//! Slurm's compressed list syntaxes: host lists (`node[01-04,7],login1`) and task counts
//! per node (`2(x3),1`).
//!
//! Owns only the parsing; which variable holds which list is `contract`'s business.

use crate::error::{Error, Result};

/// Most names an expansion may produce: a larger list is a typo, not a cluster, and
/// expanding it would only exhaust memory.
const MAX_HOSTS: usize = 1 << 20;

/// Expands a Slurm host list: comma-separated items, each a name in which bracketed
/// groups of numbers and ranges (`[1-3,07,10-12]`) stand for every value, zero-padded to
/// the width of the range's first bound. Several groups in one item multiply out, the
/// leftmost varying slowest (`r[1-2]n[1-2]` is `r1n1,r1n2,r2n1,r2n2`).
///
/// `var` names the variable the list came from, for error messages.
pub fn expand_hostlist(var: &str, list: &str) -> Result<Vec<String>> {
    let bad = |why: String| {
        Error::invalid_argument(format!("{var}='{list}' is not a Slurm host list: {why}"))
    };
    let mut out = Vec::new();
    for item in split_top(list).map_err(&bad)? {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        // Each entry: the expansion so far; each group multiplies it.
        let mut names = vec![String::new()];
        let mut rest = item;
        while !rest.is_empty() {
            let (lit, after) = match rest.find('[') {
                Some(i) => (&rest[..i], Some(&rest[i + 1..])),
                None => (rest, None),
            };
            if lit.contains(']') {
                return Err(bad(format!("unmatched ']' in '{item}'")));
            }
            for n in &mut names {
                n.push_str(lit);
            }
            let Some(after) = after else { break };
            let close = after
                .find(']')
                .ok_or_else(|| bad(format!("unclosed '[' in '{item}'")))?;
            let values = expand_group(&after[..close]).map_err(&bad)?;
            if names.len().saturating_mul(values.len()) + out.len() > MAX_HOSTS {
                return Err(bad(format!("expands to more than {MAX_HOSTS} names")));
            }
            names = names
                .iter()
                .flat_map(|n| values.iter().map(move |v| format!("{n}{v}")))
                .collect();
            rest = &after[close + 1..];
        }
        out.extend(names);
    }
    if out.is_empty() {
        return Err(bad("no host names".into()));
    }
    Ok(out)
}

/// Splits at the commas that are outside brackets.
fn split_top(list: &str) -> std::result::Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in list.char_indices() {
        match c {
            '[' if depth > 0 => return Err("nested '['".into()),
            '[' => depth += 1,
            ']' if depth == 0 => return Err("unmatched ']'".into()),
            ']' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth > 0 {
        return Err("unclosed '['".into());
    }
    parts.push(&list[start..]);
    Ok(parts)
}

/// The values of one bracketed group: `1-3,07,10-12`.
fn expand_group(group: &str) -> std::result::Result<Vec<String>, String> {
    let mut values = Vec::new();
    for part in group.split(',') {
        let part = part.trim();
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(lo) || !digits(hi) {
            return Err(format!("'[{group}]' has '{part}', not a number or a range"));
        }
        let (a, b): (u64, u64) = match (lo.parse(), hi.parse()) {
            (Ok(a), Ok(b)) => (a, b),
            _ => return Err(format!("'{part}' is out of range")),
        };
        if b < a {
            return Err(format!("the range '{part}' runs backwards"));
        }
        if b - a >= MAX_HOSTS as u64 || values.len() + (b - a) as usize >= MAX_HOSTS {
            return Err(format!("expands to more than {MAX_HOSTS} names"));
        }
        let width = lo.len();
        values.extend((a..=b).map(|v| format!("{v:0width$}")));
    }
    Ok(values)
}

/// Expands Slurm's tasks-per-node syntax (`SLURM_STEP_TASKS_PER_NODE`): comma-separated
/// counts, each optionally repeated with `(xN)`: `2(x3),1` is `[2, 2, 2, 1]`.
pub fn expand_tasks_per_node(var: &str, list: &str) -> Result<Vec<usize>> {
    let bad = |why: &str| {
        Error::invalid_argument(format!(
            "{var}='{list}' is not a Slurm task count list (like '2(x3),1'): {why}"
        ))
    };
    let mut out = Vec::new();
    for item in list.split(',') {
        let item = item.trim();
        let (count, times) = match item.split_once('(') {
            Some((c, rep)) => {
                let n = rep
                    .strip_prefix('x')
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(|| bad(&format!("'{item}'")))?;
                (
                    c,
                    n.parse::<usize>().map_err(|_| bad(&format!("'{item}'")))?,
                )
            }
            None => (item, 1),
        };
        let count: usize = count.parse().map_err(|_| bad(&format!("'{item}'")))?;
        if out.len().saturating_add(times) > MAX_HOSTS {
            return Err(bad("too many nodes"));
        }
        out.extend(std::iter::repeat(count).take(times));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hl(s: &str) -> Vec<String> {
        expand_hostlist("V", s).unwrap()
    }

    #[test]
    fn host_lists_expand_as_slurm_does() {
        assert_eq!(hl("localhost"), ["localhost"]);
        assert_eq!(hl("a,b"), ["a", "b"]);
        assert_eq!(hl("node[1-3]"), ["node1", "node2", "node3"]);
        assert_eq!(hl("node[08-10]"), ["node08", "node09", "node10"]);
        assert_eq!(hl("n[8-10]"), ["n8", "n9", "n10"]);
        assert_eq!(
            hl("gpu[01-02,7],login1"),
            ["gpu01", "gpu02", "gpu7", "login1"]
        );
        assert_eq!(hl("r[1-2]n[1-2]"), ["r1n1", "r1n2", "r2n1", "r2n2"]);
        assert_eq!(hl("a[1]-x"), ["a1-x"]);
        assert_eq!(hl(" a , b "), ["a", "b"]);
    }

    #[test]
    fn bad_host_lists_are_errors_naming_the_variable() {
        for bad in [
            "",
            "n[1-",
            "n[1-3",
            "n1-3]",
            "n[3-1]",
            "n[a-b]",
            "n[[1]]",
            "n[]",
            ",",
            "n[0-99999999]",
        ] {
            let e = expand_hostlist("SLURM_STEP_NODELIST", bad).unwrap_err();
            assert!(e.message().contains("SLURM_STEP_NODELIST"), "{bad}: {e}");
        }
    }

    #[test]
    fn task_counts_expand() {
        let t = |s: &str| expand_tasks_per_node("V", s).unwrap();
        assert_eq!(t("4"), [4]);
        assert_eq!(t("2(x3),1"), [2, 2, 2, 1]);
        assert_eq!(t("1,3(x2)"), [1, 3, 3]);
        for bad in ["", "x", "2(3)", "2(x)", "2(x3", "-1"] {
            assert!(expand_tasks_per_node("V", bad).is_err(), "{bad}");
        }
    }
}
