use super::*;

#[test]
fn levels_subsystems_and_exclusion() {
    assert_eq!(Settings::parse(None, Some("NET"), None), Ok(None));
    assert_eq!(Settings::parse(Some(" "), None, None), Ok(None));
    let s = Settings::parse(Some("info"), None, None).unwrap().unwrap();
    assert_eq!(s.level, Level::INFO);
    assert_eq!(s.subsystems.len(), SUBSYSTEMS.len());
    assert!(s.wants(&Level::WARN, "oxccl::NET"));
    assert!(s.wants(&Level::INFO, "oxccl::INIT"));
    assert!(!s.wants(&Level::TRACE, "oxccl::COLL"));
    assert!(!s.wants(&Level::WARN, "hyper::client"));
    let s = Settings::parse(Some("TRACE"), Some("init, coll"), None)
        .unwrap()
        .unwrap();
    assert_eq!(s.subsystems, vec!["INIT", "COLL"]);
    assert!(s.wants(&Level::TRACE, "oxccl::COLL"));
    assert!(!s.wants(&Level::WARN, "oxccl::NET"));
    let s = Settings::parse(Some("WARN"), Some("^NET,TOPO"), None)
        .unwrap()
        .unwrap();
    assert!(!s.subsystems.contains(&"NET".to_string()));
    assert!(s.subsystems.contains(&"INIT".to_string()));
    assert!(!s.wants(&Level::INFO, "oxccl::INIT"));
}

#[test]
fn bad_values_name_the_variable_and_the_choices() {
    let e = Settings::parse(Some("LOUD"), None, None).unwrap_err();
    assert!(
        e.contains("OXCCL_DEBUG='LOUD'") && e.contains("TRACE"),
        "{e}"
    );
    let e = Settings::parse(Some("INFO"), Some("INIT,GPU"), None).unwrap_err();
    assert!(
        e.contains("OXCCL_DEBUG_SUBSYS") && e.contains("'GPU'"),
        "{e}"
    );
}

#[test]
fn file_names_expand_host_and_pid() {
    assert_eq!(expand("/tmp/x.%h.%p.log", "n1", 42), "/tmp/x.n1.42.log");
    assert_eq!(expand("a%%b%q%", "h", 1), "a%b%q%");
    let s = Settings::parse(Some("INFO"), None, Some("/tmp/o.%p"))
        .unwrap()
        .unwrap();
    assert_eq!(s.file, Some(format!("/tmp/o.{}", std::process::id())));
}
