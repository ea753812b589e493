//! `vswitch explain --frame` words: any text gives a frame or an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = vswitch::frame_spec::parse(text);
        let _ = vswitch::frame_spec::hex(text);
    }
});
