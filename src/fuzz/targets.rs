//! The fuzz targets: each takes any bytes and panics only when a property breaks.

/// Store frame bodies: each decodes as a request or a reply, which then re-encodes to
/// itself, or is refused. Returns whether it decoded as a request.
pub fn store_frame(data: &[u8]) -> bool {
    crate::bootstrap::fuzz_frame(data)
}

/// The store's handshake messages (preamble, then the client's answer): only the one real
/// answer proves the secret.
pub fn store_handshake(data: &[u8]) {
    crate::bootstrap::fuzz_handshake(data)
}

/// A valid handshake (preamble and answer), to start a corpus from.
pub fn store_handshake_seed() -> Vec<u8> {
    crate::bootstrap::fuzz_handshake_seed()
}

/// Data-connection greetings: only the peer's real greeting is accepted.
pub fn greeting(data: &[u8]) {
    crate::engine::fuzz_greeting(data)
}

/// A valid greeting, to start a corpus from.
pub fn greeting_seed() -> Vec<u8> {
    crate::engine::fuzz_greeting_seed()
}

/// Unique ids: each decodes, and then round-trips, or is refused.
pub fn unique_id(data: &[u8]) {
    if let Ok(id) = crate::UniqueId::from_bytes(data) {
        let again = crate::UniqueId::from_bytes(id.as_bytes());
        assert!(
            again.is_ok_and(|a| a == id),
            "a unique id did not round-trip"
        );
    }
}

/// The fabric transport's message headers: each decodes, then round-trips, or is refused.
pub fn fabric_header(data: &[u8]) {
    crate::transport::fabric::fuzz_header(data)
}

/// The verbs transport's connection set-up (queue pair info, listen handles): each decodes
/// within bounds or is refused.
pub fn verbs_setup(data: &[u8]) {
    crate::transport::verbs::fuzz_setup(data)
}

/// Topology files: JSON that parses prints back to itself; a parsed value becomes a
/// topology or is refused. Returns whether the text parsed.
pub fn topology_json(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let Ok(v) = crate::topo::json::parse(text) else {
        return false;
    };
    let again = crate::topo::json::parse(&v.to_text());
    assert!(
        again.is_ok_and(|a| a == v),
        "JSON did not round-trip: {text}"
    );
    let _ = crate::topo::file::topology_from_json(&v);
    true
}

/// Valid inputs of the target `name` (see [`ALL`]) to start from: its corpus's seeds.
pub fn seeds(name: &str) -> Vec<Vec<u8>> {
    match name {
        "store_handshake" => vec![store_handshake_seed()],
        "greeting" => vec![greeting_seed()],
        "unique_id" => ["127.0.0.1:29500", "[fd00::1]:7"]
            .iter()
            .filter_map(|a| a.parse().ok())
            .map(|a| crate::UniqueId::from_parts(a, [3; 32]).as_bytes().to_vec())
            .collect(),
        "fabric_header" => vec![crate::transport::fabric::fuzz_header_seed()],
        "verbs_setup" => crate::transport::verbs::fuzz_setup_seeds(),
        "topology_json" => vec![
            br#"{"ranks":[{"host":0,"numa":1,"rail":0},{"host":1}],
            "links":{"intra_gbps":20.5,"inter_gbps":1,"inter_latency_us":25}}"#
                .to_vec(),
            br#"{"a":[1,-2.5e3,"x\u00e9\n",true,null,{}]}"#.to_vec(),
        ],
        "store_frame" => crate::bootstrap::fuzz_frame_seeds(),
        _ => Vec::new(),
    }
}

/// A target that takes any bytes.
pub type Target = fn(&[u8]);

/// Every target, by the name its `fuzz/` binary and corpus folder have.
pub const ALL: &[(&str, Target)] = &[
    ("store_frame", |d| {
        store_frame(d);
    }),
    ("store_handshake", store_handshake),
    ("greeting", greeting),
    ("unique_id", unique_id),
    ("fabric_header", fabric_header),
    ("verbs_setup", verbs_setup),
    ("topology_json", |d| {
        topology_json(d);
    }),
];
