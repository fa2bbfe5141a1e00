#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| phasegate_fuzz_targets::progress(data));
