//! The body of `POST /v1/endpoints`: decoded as the API server's `Json`
//! extractor decodes it, then validated against the node's pod CIDR as the
//! agent validates it before programming anything.

#![no_main]

use axum::Json;
use ipnet::Ipv4Net;
use knet_agent::{
    cni::env::valid_ifname,
    endpoints::{validate, AddEndpoint},
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let req = match Json::<AddEndpoint>::from_bytes(data) {
        Ok(Json(req)) => req,
        Err(rejection) => {
            // What the server answers with.
            let _ = rejection.body_text();
            return;
        }
    };
    // What the client sends is what the server reads.
    let sent = serde_json::to_vec(&req).expect("serializes");
    let Json(read) = Json::<AddEndpoint>::from_bytes(&sent).expect("a written request decodes");
    assert_eq!((&read.ip, &read.host_veth, &read.pod_mac), (&req.ip, &req.host_veth, &req.pod_mac));
    for cidr in ["10.244.3.0/24", "10.0.0.0/8", "192.168.7.4/30"] {
        let cidr: Ipv4Net = cidr.parse().expect("a CIDR");
        let Ok(spec) = validate(&req, cidr) else { continue };
        assert!(cidr.contains(&spec.ip) && spec.ip != cidr.network() && spec.ip != cidr.broadcast());
        assert!(spec.pod_mac.is_valid_unicast());
        // The plugin's rule for interface names agrees with the agent's.
        assert!(valid_ifname(&spec.host_veth));
        // The agent programs exactly what was asked, in canonical form.
        assert_eq!(spec.ip.to_string(), req.ip);
        assert_eq!(hex_digits(&spec.pod_mac.to_string()), hex_digits(&req.pod_mac), "{:?}", req.pod_mac);
    }
});

fn hex_digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_hexdigit).map(|c| c.to_ascii_lowercase()).collect()
}
