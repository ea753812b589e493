//! A state file as someone might have edited it: loading (either format) and checking it
//! never panics; what passes the check is what the daemon will start from.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vswitch::control::{migrate, state::State};

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    if let Ok(st) = serde_json::from_value::<State>(v.clone()) {
        let _ = st.validate();
    }
    if let Ok(st) = migrate::from_v1(v) {
        let _ = st.validate();
    }
});
