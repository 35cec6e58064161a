//! libFuzzer target: `oxccl::fuzz::targets::fabric_header`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = oxccl::fuzz::targets::fabric_header(data);
});
