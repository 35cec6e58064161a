use super::vars::{self, Accepts, Value, VARS};
use super::*;

/// The first cell of every table row of docs/environment.md that names variables.
fn documented() -> Vec<String> {
    let text = include_str!("../../docs/environment.md");
    let mut names = Vec::new();
    for line in text.lines() {
        let Some(cell) = line.strip_prefix('|').and_then(|l| l.split('|').next()) else {
            continue;
        };
        // "`OXCCL_RANK` ... `OXCCL_JOB_SECRET`" refers back to rows above.
        if cell.contains("...") {
            continue;
        }
        for part in cell.split('`') {
            let p = part.trim();
            if p.starts_with("OXCCL_")
                && p.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            {
                names.push(p.to_string());
            }
        }
    }
    names
}

#[test]
fn the_docs_list_every_variable_once_and_nothing_else() {
    let docs = documented();
    let mut seen = std::collections::HashSet::new();
    for n in &docs {
        assert!(
            seen.insert(n.clone()),
            "docs/environment.md lists {n} twice"
        );
        assert!(
            vars::var(n).is_ok(),
            "docs/environment.md lists {n}, which is not declared"
        );
    }
    for v in VARS {
        assert!(
            seen.contains(v.name),
            "{} is declared but not in docs/environment.md",
            v.name
        );
    }
    // A table broken by a blank line renders as text: rows must be contiguous.
    let text = include_str!("../../docs/environment.md");
    let lines: Vec<&str> = text.lines().collect();
    for w in lines.windows(3) {
        assert!(
            !(w[0].starts_with('|') && w[1].trim().is_empty() && w[2].starts_with("| `OXCCL")),
            "a blank line splits a table before: {}",
            w[2]
        );
    }
}

/// Bad values for what a variable accepts.
fn bad_values(a: Accepts) -> &'static [&'static str] {
    match a {
        Accepts::Choice(_) => &["maybe", "tcp2", "1"],
        Accepts::Seconds(_) => &["0", "-1", "1e20", "inf", "NaN", "soon"],
        Accepts::Int(_, _) => &["x", "-1", "1.5", "99999999999999999999999"],
        Accepts::Bytes(_) => &["lots", "1T", "-4K", "99999999999999999999G"],
        Accepts::Flag => &["maybe", "yes", "2", "true"],
        Accepts::Text => &[],
    }
}

#[test]
fn every_bad_value_names_the_variable_the_value_and_what_is_accepted() {
    let mut table = Vec::new();
    for v in VARS {
        for bad in bad_values(v.accepts) {
            // Out of range is as bad as malformed, where a range applies.
            let e = match vars::parse(v, bad) {
                Ok(x) => {
                    let in_range = match (v.accepts, &x) {
                        (Accepts::Int(lo, hi), Value::Int(n)) => (lo..=hi).contains(n),
                        _ => true,
                    };
                    assert!(!in_range, "{}='{bad}' was accepted as {x:?}", v.name);
                    continue;
                }
                Err(e) => e,
            };
            assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument);
            let m = e.message();
            assert!(
                m.contains(v.name) && m.contains(bad) && m.contains("expected"),
                "{m}"
            );
            table.push(format!("| {} | `{bad}` | {m} |", v.name));
        }
    }
    // Ranges: one past each end.
    for v in VARS {
        if let Accepts::Int(lo, hi) = v.accepts {
            if hi < u64::MAX {
                assert!(vars::parse(v, &(hi + 1).to_string()).is_err(), "{}", v.name);
            }
            if lo > 0 {
                assert!(vars::parse(v, &(lo - 1).to_string()).is_err(), "{}", v.name);
            }
        }
    }
    eprintln!("{}", table.join("\n"));
}

#[test]
fn good_values_parse_as_declared() {
    let get = |n: &str, s: &str| vars::parse(vars::var(n).unwrap(), s).unwrap();
    assert_eq!(get("OXCCL_TRANSPORT", " TCP "), Value::Word("tcp"));
    assert_eq!(get("OXCCL_TIMEOUT", "2.5"), Value::Seconds(2.5));
    assert_eq!(get("OXCCL_TIMEOUT", "1e7"), Value::Seconds(1e7));
    assert_eq!(get("OXCCL_CHUNK_SIZE", "64K"), Value::Bytes(64 << 10));
    assert!(vars::parse(vars::var("OXCCL_CHUNK_SIZE").unwrap(), "63").is_err());
    assert_eq!(get("OXCCL_TCP_DUPLEX", "0"), Value::Flag(false));
    assert_eq!(
        get("OXCCL_MEM_SEED", "18446744073709551615"),
        Value::Int(u64::MAX)
    );
    assert_eq!(get("OXCCL_DEBUG", "info"), Value::Word("INFO"));
    assert!(vars::var("OXCCL_NO_SUCH").is_err());
}

#[test]
fn ranks_yield_when_they_outnumber_cpus() {
    let auto = Config::default();
    let alone = IdlePolicy {
        spin: SPIN_DEFAULT,
        yield_when_idle: false,
    };
    assert_eq!(auto.idle_for(1), alone);
    let crowded = auto.idle_for(usize::MAX);
    assert_eq!(
        (crowded.spin, crowded.yield_when_idle),
        (SPIN_OVERSUBSCRIBED, true)
    );
    let cpus = super::usable_cpus() as usize;
    assert_eq!(auto.idle_for(cpus), alone);
    assert!(auto.idle_for(cpus + 1).yield_when_idle);
    let set = Config {
        spin: Some(7),
        yield_when_idle: Some(false),
        ..Config::default()
    };
    for n in [1, usize::MAX] {
        let p = set.idle_for(n);
        assert_eq!((p.spin, p.yield_when_idle), (7, false));
    }
}

#[test]
fn flags_are_zero_or_one() {
    assert!(parse_flag("OXCCL_TOPO_AWARE", " 1 ").unwrap());
    assert!(!parse_flag("OXCCL_TOPO_AWARE", "0").unwrap());
    let e = parse_flag("OXCCL_TOPO_AWARE", "yes").unwrap_err();
    assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument);
    assert!(e.to_string().contains("OXCCL_TOPO_AWARE='yes'"), "{e}");
}
