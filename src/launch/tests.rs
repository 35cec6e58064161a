//! The contracts read from fixed variable sets.

use std::collections::HashMap;
use std::time::Duration;

use super::*;
use crate::bootstrap::StoreClient;
use crate::ErrorKind;

fn read(pairs: &[(&str, &str)]) -> Result<LaunchEnv> {
    let m: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    LaunchEnv::from_lookup(move |k| m.get(k).cloned())
}

fn err(pairs: &[(&str, &str)]) -> String {
    let e = read(pairs).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    e.message().to_string()
}

const SECRET: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

fn rankrun_vars() -> Vec<(&'static str, &'static str)> {
    vec![
        ("OXCCL_RANK", "2"),
        ("OXCCL_WORLD_SIZE", "4"),
        ("OXCCL_LOCAL_RANK", "0"),
        ("OXCCL_LOCAL_SIZE", "2"),
        ("OXCCL_ROOT", "10.0.0.1:4000"),
        ("OXCCL_JOB_SECRET", SECRET),
    ]
}

#[test]
fn rankrun_contract() {
    let e = read(&rankrun_vars()).unwrap();
    assert_eq!(e.launcher, Launcher::Rankrun);
    assert_eq!((e.rank, e.size, e.local_rank, e.local_size), (2, 4, 0, 2));
    assert_eq!((e.root_host.as_str(), e.root_port), ("10.0.0.1", 4000));
    assert!(!e.serves_root);
    assert_eq!(e.secret(), &secret_from_hex(SECRET).unwrap());
    assert!(!format!("{e:?}").contains("0011"), "{e:?}");

    // rankrun's variables win over every other launcher's.
    let mut v = rankrun_vars();
    v.extend([("RANK", "0"), ("WORLD_SIZE", "9"), ("SLURM_PROCID", "1")]);
    assert_eq!(read(&v).unwrap().launcher, Launcher::Rankrun);

    for missing in [
        "OXCCL_WORLD_SIZE",
        "OXCCL_ROOT",
        "OXCCL_JOB_SECRET",
        "OXCCL_LOCAL_RANK",
    ] {
        let v: Vec<_> = rankrun_vars()
            .into_iter()
            .filter(|(k, _)| *k != missing)
            .collect();
        let m = err(&v);
        assert!(m.contains(missing) && m.contains("rankrun"), "{m}");
    }
}

#[test]
fn inconsistent_numbers_are_errors() {
    let with = |k: &'static str, val: &'static str| {
        let mut v = rankrun_vars();
        v.retain(|(x, _)| *x != k);
        v.push((k, val));
        err(&v)
    };
    assert!(with("OXCCL_RANK", "4").contains("rank 4 is not below the world size 4"));
    assert!(with("OXCCL_WORLD_SIZE", "0").contains("world size is 0"));
    assert!(with("OXCCL_LOCAL_RANK", "2").contains("local rank 2"));
    assert!(with("OXCCL_LOCAL_SIZE", "5").contains("local size 5"));
    assert!(with("OXCCL_RANK", "-1").contains("OXCCL_RANK='-1'"));
    for bad_root in [
        "10.0.0.1",
        "10.0.0.1:0",
        ":80",
        "fd00::1:80",
        "[fd00::1:80",
        "h:99999",
    ] {
        let m = with("OXCCL_ROOT", bad_root);
        assert!(m.contains("is not host:port"), "{bad_root}: {m}");
    }
    assert!(with("OXCCL_JOB_SECRET", "xyz").contains("OXCCL_JOB_SECRET"));
}

#[test]
fn no_launcher_lists_what_was_looked_for() {
    let m = err(&[("HOME", "/root")]);
    for name in [
        "OXCCL_RANK",
        "RANK",
        "MASTER_ADDR",
        "SLURM_PROCID",
        "SLURM_STEP_NODELIST",
        "OMPI_COMM_WORLD_RANK",
        "OXCCL_ROOT",
    ] {
        assert!(m.contains(name), "{name} missing from: {m}");
    }
}

fn torch_vars() -> Vec<(&'static str, &'static str)> {
    vec![
        ("RANK", "1"),
        ("WORLD_SIZE", "2"),
        ("LOCAL_RANK", "1"),
        ("LOCAL_WORLD_SIZE", "2"),
        ("MASTER_ADDR", "127.0.0.1"),
        ("MASTER_PORT", "29500"),
    ]
}

#[test]
fn torchrun_contract() {
    let e = read(&torch_vars()).unwrap();
    assert_eq!(e.launcher, Launcher::Torchrun);
    assert_eq!((e.rank, e.size, e.local_rank, e.local_size), (1, 2, 1, 2));
    assert_eq!((e.root_host.as_str(), e.root_port), ("127.0.0.1", 29501));
    assert!(e.serves_root);
    assert!(
        e.secret_origin.starts_with("derived"),
        "{}",
        e.secret_origin
    );

    // A different run id or master port is a different job secret.
    let mut v = torch_vars();
    v.push(("TORCHELASTIC_RUN_ID", "job7"));
    assert_ne!(read(&v).unwrap().secret(), e.secret());

    let mut v = torch_vars();
    v.extend([("OXCCL_ROOT", "h:7"), ("OXCCL_JOB_SECRET", SECRET)]);
    let e = read(&v).unwrap();
    assert_eq!((e.root_host.as_str(), e.root_port), ("h", 7));
    assert_eq!(e.secret_origin, "OXCCL_JOB_SECRET");

    let v: Vec<_> = torch_vars()
        .into_iter()
        .filter(|(k, _)| *k != "MASTER_PORT")
        .collect();
    let m = err(&v);
    assert!(m.contains("MASTER_PORT") && m.contains("torchrun"), "{m}");
    let mut v = torch_vars();
    v.retain(|(k, _)| *k != "MASTER_PORT");
    v.push(("MASTER_PORT", "65535"));
    assert!(err(&v).contains("MASTER_PORT='65535'"));
}

fn slurm_vars() -> Vec<(&'static str, &'static str)> {
    vec![
        ("SLURM_PROCID", "5"),
        ("SLURM_NTASKS", "7"),
        ("SLURM_LOCALID", "1"),
        ("SLURM_NODEID", "2"),
        ("SLURM_STEP_NODELIST", "gpu[07-09],login1"),
        ("SLURM_STEP_TASKS_PER_NODE", "2(x3),1"),
        ("SLURM_JOB_ID", "1234"),
        ("SLURM_STEP_ID", "3"),
    ]
}

#[test]
fn slurm_contract() {
    let e = read(&slurm_vars()).unwrap();
    assert_eq!(e.launcher, Launcher::Slurm);
    assert_eq!((e.rank, e.size, e.local_rank, e.local_size), (5, 7, 1, 2));
    assert_eq!(e.root_host, "gpu07");
    assert_eq!(e.root_port, slurm_port(1234, 3));
    assert!(e.serves_root);
    assert!((SLURM_PORT_BASE..SLURM_PORT_BASE + SLURM_PORT_SPAN).contains(&e.root_port));
    assert_ne!(slurm_port(1234, 3), slurm_port(1234, 4));
    assert_ne!(slurm_port(1234, 3), slurm_port(1235, 3));
    assert_eq!(
        slurm_port(u64::MAX, u64::MAX),
        slurm_port(u64::MAX, u64::MAX)
    );

    // Another step of the same job gets another secret.
    let mut v = slurm_vars();
    v.retain(|(k, _)| *k != "SLURM_STEP_ID");
    v.push(("SLURM_STEPID", "4"));
    let e2 = read(&v).unwrap();
    assert_ne!(e2.secret(), e.secret());

    let mut v = slurm_vars();
    v.push(("OXCCL_ROOT", "10.1.1.1:5000"));
    let e = read(&v).unwrap();
    assert_eq!((e.root_host.as_str(), e.root_port), ("10.1.1.1", 5000));

    // A batch script has no step id: the message says to use srun.
    let mut v = slurm_vars();
    v.retain(|(k, _)| *k != "SLURM_STEP_ID");
    let m = err(&v);
    assert!(m.contains("SLURM_STEP_ID") && m.contains("srun"), "{m}");

    let mut v = slurm_vars();
    v.retain(|(k, _)| *k != "SLURM_NODEID");
    v.push(("SLURM_NODEID", "4"));
    assert!(err(&v).contains("SLURM_NODEID=4"));

    let mut v = slurm_vars();
    v.retain(|(k, _)| *k != "SLURM_STEP_NODELIST");
    v.push(("SLURM_STEP_NODELIST", "gpu[07-"));
    assert!(err(&v).contains("SLURM_STEP_NODELIST"));
}

#[test]
fn open_mpi_contract() {
    let base = vec![
        ("OMPI_COMM_WORLD_RANK", "0"),
        ("OMPI_COMM_WORLD_SIZE", "4"),
        ("OMPI_COMM_WORLD_LOCAL_RANK", "0"),
        ("OMPI_COMM_WORLD_LOCAL_SIZE", "4"),
    ];
    let m = err(&base);
    assert!(m.contains("OXCCL_ROOT") && m.contains("mpirun -x"), "{m}");
    let mut v = base.clone();
    v.push(("OXCCL_ROOT", "127.0.0.1:29400"));
    let e = read(&v).unwrap();
    assert_eq!(e.launcher, Launcher::OpenMpi);
    assert!(e.serves_root);
    let mut v2 = v.clone();
    v2.push(("OMPI_MCA_ess_base_jobid", "99"));
    assert_ne!(read(&v2).unwrap().secret(), e.secret());
}

#[test]
fn loopback_root_is_refused_for_multi_host_jobs() {
    let mut v = torch_vars();
    v.retain(|(k, _)| *k != "LOCAL_WORLD_SIZE" && *k != "LOCAL_RANK");
    v.extend([("LOCAL_WORLD_SIZE", "1"), ("LOCAL_RANK", "0")]);
    let e = read(&v).unwrap().root_addr().unwrap_err();
    assert!(e.message().contains("loopback"), "{e}");
    // All ranks on one host: loopback is fine.
    assert!(read(&torch_vars())
        .unwrap()
        .root_addr()
        .unwrap()
        .ip()
        .is_loopback());
}

#[test]
fn rank0_serves_the_store_others_join() {
    // Pick a free port, then let "rank 0" serve there as a launched job would.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let p = port.to_string();
    let root = format!("127.0.0.1:{p}");
    let env = move |rank: &'static str| {
        read(&[
            ("OMPI_COMM_WORLD_RANK", rank),
            ("OMPI_COMM_WORLD_SIZE", "2"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", rank),
            ("OMPI_COMM_WORLD_LOCAL_SIZE", "2"),
            ("OXCCL_ROOT", root.as_str()),
        ])
        .unwrap()
    };
    let t = Duration::from_secs(10);
    // Rank 1 first: it must wait for rank 0's store to appear.
    let env1 = env.clone();
    let joiner = std::thread::spawn(move || {
        let id = env1("1").unique_id(t).unwrap();
        let mut c = StoreClient::connect(id.root_addr(), id.secret(), 1, 2, t).unwrap();
        c.all_gather("k", b"one", t).unwrap()
    });
    std::thread::sleep(Duration::from_millis(100));
    let id0 = env("0").unique_id(t).unwrap();
    let mut c = StoreClient::connect(id0.root_addr(), id0.secret(), 0, 2, t).unwrap();
    let all = c.all_gather("k", b"zero", t).unwrap();
    assert_eq!(all, vec![b"zero".to_vec(), b"one".to_vec()]);
    assert_eq!(joiner.join().unwrap(), all);

    // A second rank 0 on the same port cannot serve: the error says what to do.
    let e = env("0").unique_id(t).unwrap_err();
    assert!(e.message().contains("OXCCL_ROOT"), "{e}");
    drop(c);
}
