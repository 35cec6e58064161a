//! libFuzzer target: `oxccl::fuzz::targets::store_frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = oxccl::fuzz::targets::store_frame(data);
});
