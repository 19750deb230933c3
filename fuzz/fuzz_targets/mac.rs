//! MAC addresses as the API carries them (`pod_mac`, `host_mac`): text and
//! JSON strings.

#![no_main]

use knet_agent::mac::MacAddr;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(mac) = serde_json::from_slice::<MacAddr>(data) {
        assert_eq!(serde_json::from_str::<MacAddr>(&serde_json::to_string(&mac).expect("serializes")).ok(), Some(mac));
    }
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(mac) = text.parse::<MacAddr>() else { return };
    // A MAC that parses is written back as it was given, in lower case.
    assert_eq!(mac.to_string(), text.to_ascii_lowercase());
    assert_eq!(mac.to_string().parse(), Ok(mac));
});
