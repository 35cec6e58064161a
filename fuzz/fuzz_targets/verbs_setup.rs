//! libFuzzer target: `oxccl::fuzz::targets::verbs_setup`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = oxccl::fuzz::targets::verbs_setup(data);
});
