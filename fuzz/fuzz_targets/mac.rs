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
    // A MAC that parses is written back with the same twelve hex digits
    // (whichever separators it came with), and reads back the same.
    assert_eq!(hex_digits(&mac.to_string()), hex_digits(text), "{text:?}");
    assert_eq!(hex_digits(text).len(), 12, "{text:?}");
    assert_eq!(mac.to_string().parse(), Ok(mac));
});

fn hex_digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_hexdigit).map(|c| c.to_ascii_lowercase()).collect()
}
