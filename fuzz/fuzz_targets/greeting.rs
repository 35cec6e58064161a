//! libFuzzer target: `oxccl::fuzz::targets::greeting`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = oxccl::fuzz::targets::greeting(data);
});
