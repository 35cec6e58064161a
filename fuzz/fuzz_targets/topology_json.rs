//! libFuzzer target: `oxccl::fuzz::targets::topology_json`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = oxccl::fuzz::targets::topology_json(data);
});
