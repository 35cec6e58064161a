//! libFuzzer target: `oxccl::fuzz::targets::unique_id`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = oxccl::fuzz::targets::unique_id(data);
});
