//! A request line as a stranger on the control socket could send it: parsing never panics,
//! and what parses as a network to create is planned by IPAM without a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vswitch::control::ipam;
use vswitch::protocol::Request;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = serde_json::from_slice::<Request>(data) else { return };
    if let Request::NetworkCreate(c) = req {
        let r = ipam::Request {
            subnets: c.subnets,
            gateways: c.gateways,
            ip_ranges: c.ip_ranges,
            aux_addresses: c.aux_addresses,
            ipv6: c.ipv6,
        };
        let taken = [("10.0.0.0/8".parse().unwrap(), "other".to_string())];
        let _ = ipam::plan(&r, &taken);
    }
});
