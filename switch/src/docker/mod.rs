//! Docker's plugin API on a Unix socket (`vswitch daemon --docker-plugin`): vswitch as a
//! network driver (`docker network create -d vswitch`) and an IPAM driver (`--ipam-driver
//! vswitch`). Docker finds the plugin by its socket's name under /run/docker/plugins. Every
//! call is an HTTP POST with a JSON body (or none); every answer is JSON, `{"Err": "..."}`
//! for a refusal, which the docker CLI shows as `Error response from daemon: remote: ...`.
//! Calls are served one at a time on one thread: each takes the controller's lock anyway.

pub mod api;
pub mod ipam;

use crate::control::controller::docker::DockerNetwork;
use crate::control::controller::Controller;
use crate::daemon::lock;
use crate::mac::MacAddr;
use api::*;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tracing::{info, warn};

pub const DEFAULT_SOCKET: &str = "/run/docker/plugins/vswitch.sock";
const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";

/// The plugin's socket; removed when this is dropped.
pub struct Plugin {
    path: PathBuf,
    server: Arc<tiny_http::Server>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Plugin {
    pub fn start(path: &Path, ctl: Arc<Mutex<Controller>>) -> Result<Plugin, String> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(format!("{} is in use: another plugin answers on it", path.display()));
        }
        let _ = std::fs::remove_file(path); // a socket left by a daemon that died
        let server = tiny_http::Server::http_unix(path).map_err(|e| format!("listening on {}: {e}", path.display()))?;
        // Docker connects as root; nobody else may.
        let _ = std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600));
        let server = Arc::new(server);
        let s = server.clone();
        let thread = std::thread::Builder::new()
            .name("docker-plugin".into())
            .spawn(move || serve(&s, &ctl))
            .map_err(|e| e.to_string())?;
        info!(socket = %path.display(), "Docker plugin listening");
        Ok(Plugin { path: path.to_path_buf(), server, thread: Some(thread) })
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve(server: &tiny_http::Server, ctl: &Mutex<Controller>) {
    let mut ipam = ipam::Ipam::default();
    for mut req in server.incoming_requests() {
        let mut body = String::new();
        let _ = req.as_reader().read_to_string(&mut body);
        let call = req.url().trim_start_matches('/').to_string();
        let reply = match handle(&call, &body, ctl, &mut ipam) {
            Ok(v) => v,
            Err(e) => {
                warn!(call = %call, "Docker plugin: {e}");
                json!({ "Err": e })
            }
        };
        let header = tiny_http::Header::from_bytes("Content-Type", CONTENT_TYPE).expect("a valid header");
        let _ = req.respond(tiny_http::Response::from_string(reply.to_string()).with_header(header));
    }
}

/// A request's body as `T`; an empty body is `T`'s default (Docker sends none on some calls).
fn parse<T: DeserializeOwned + Default>(body: &str) -> Result<T, String> {
    if body.trim().is_empty() {
        return Ok(T::default());
    }
    serde_json::from_str(body).map_err(|e| format!("a request vswitch cannot read: {e}"))
}

/// `ADDR/LEN` or `ADDR` (Docker sends both shapes), or nothing.
fn addr_of(s: &str) -> Result<Option<IpAddr>, String> {
    match s.split('/').next().unwrap_or("") {
        "" => Ok(None),
        a => a.parse().map(Some).map_err(|_| format!("'{s}' is not an address")),
    }
}

/// One call: its answer, or the text of its refusal.
pub fn handle(call: &str, body: &str, ctl: &Mutex<Controller>, ipam: &mut ipam::Ipam) -> Result<Value, String> {
    let err = |e: crate::control::error::Error| e.to_string();
    match call {
        "Plugin.Activate" => Ok(json!({ "Implements": ["NetworkDriver", "IpamDriver"] })),
        "NetworkDriver.GetCapabilities" => Ok(json!({ "Scope": "local", "ConnectivityScope": "local" })),
        "NetworkDriver.CreateNetwork" => {
            let r: CreateNetwork = parse(body)?;
            let d = docker_network(r)?;
            let id = d.id.clone();
            lock(ctl).docker_create_network(d).map_err(err)?;
            info!(docker_network = %id, "Docker network created");
            Ok(json!({}))
        }
        "NetworkDriver.DeleteNetwork" => {
            let r: NetworkRef = parse(body)?;
            lock(ctl).docker_delete_network(&r.network_id).map_err(err)?;
            Ok(json!({}))
        }
        "NetworkDriver.CreateEndpoint" => {
            let r: CreateEndpoint = parse(body)?;
            let v4 = match addr_of(&r.interface.address)? {
                Some(IpAddr::V4(a)) => Some(a),
                Some(IpAddr::V6(_)) => return Err("Address is not IPv4".into()),
                None => None,
            };
            let v6 = match addr_of(&r.interface.address_ipv6)? {
                Some(IpAddr::V6(a)) => Some(a),
                Some(IpAddr::V4(_)) => return Err("AddressIPv6 is not IPv6".into()),
                None => None,
            };
            let mac: Option<MacAddr> = match r.interface.mac_address.as_str() {
                "" => None,
                m => Some(m.parse().map_err(|_| format!("'{m}' is not a MAC address"))?),
            };
            let mut c = lock(ctl);
            let publish = port_specs(&r.options)?;
            let e = c.docker_create_endpoint(&r.network_id, &r.endpoint_id, v4, v6, mac, &publish).map_err(err)?;
            if let Some(a) = e.ipv4 {
                ipam.release(a.into());
            }
            if let Some(a) = e.ipv6 {
                ipam.release(a.into());
            }
            // Docker takes addresses back only where its IPAM left them empty.
            let n = c.docker_network(&r.network_id).map_err(err)?;
            let mut iface = serde_json::Map::new();
            if mac.is_none() {
                iface.insert("MacAddress".into(), json!(e.mac.to_string()));
            }
            if let (true, Some(a), Some(s)) = (r.interface.address.is_empty(), e.ipv4, n.subnet_v4()) {
                iface.insert("Address".into(), json!(format!("{a}/{}", s.subnet.prefix_len())));
            }
            if let (true, Some(a), Some(s)) = (r.interface.address_ipv6.is_empty(), e.ipv6, n.subnet_v6()) {
                iface.insert("AddressIPv6".into(), json!(format!("{a}/{}", s.subnet.prefix_len())));
            }
            info!(docker_endpoint = %r.endpoint_id, port = %e.name, "Docker endpoint created");
            Ok(json!({ "Interface": iface }))
        }
        "NetworkDriver.DeleteEndpoint" => {
            let r: EndpointRef = parse(body)?;
            lock(ctl).docker_delete_endpoint(&r.network_id, &r.endpoint_id).map_err(err)?;
            Ok(json!({}))
        }
        "NetworkDriver.Join" => {
            let r: EndpointRef = parse(body)?;
            let j = lock(ctl).docker_join(&r.network_id, &r.endpoint_id, &r.sandbox_key).map_err(err)?;
            let show = |a: Option<IpAddr>| a.map(|a| a.to_string()).unwrap_or_default();
            let reply = JoinReply {
                interface_name: InterfaceName { src_name: j.peer, dst_prefix: "eth".into() },
                disable_gateway_service: j.gateway4.is_none() && j.gateway6.is_none(),
                gateway: show(j.gateway4),
                gateway_ipv6: show(j.gateway6),
            };
            Ok(serde_json::to_value(reply).expect("json"))
        }
        "NetworkDriver.EndpointOperInfo" => Ok(json!({ "Value": {} })),
        "NetworkDriver.Leave"
        | "NetworkDriver.ProgramExternalConnectivity"
        | "NetworkDriver.RevokeExternalConnectivity"
        | "NetworkDriver.DiscoverNew"
        | "NetworkDriver.DiscoverDelete" => Ok(json!({})),
        "IpamDriver.GetCapabilities" => Ok(json!({ "RequiresMACAddress": false })),
        "IpamDriver.GetDefaultAddressSpaces" => Ok(json!({
            "LocalDefaultAddressSpace": "vswitch-local",
            "GlobalDefaultAddressSpace": "vswitch-global",
        })),
        "IpamDriver.RequestPool" => {
            let r: RequestPool = parse(body)?;
            if !r.sub_pool.is_empty() {
                return Err("--ip-range is not supported with --ipam-driver vswitch".into());
            }
            let pool = ipam.request_pool(&lock(ctl), &r.pool, r.v6)?;
            Ok(json!({ "PoolID": ipam::pool_id(pool), "Pool": pool.to_string(), "Data": {} }))
        }
        "IpamDriver.ReleasePool" => {
            let r: PoolRef = parse(body)?;
            ipam.release_pool(&r.pool_id);
            Ok(json!({}))
        }
        "IpamDriver.RequestAddress" => {
            let r: RequestAddress = parse(body)?;
            let kind = r.options.get("RequestAddressType").map(String::as_str);
            let a = ipam.request_address(&lock(ctl), &r.pool_id, &r.address, kind)?;
            Ok(json!({ "Address": a, "Data": {} }))
        }
        "IpamDriver.ReleaseAddress" => {
            let r: ReleaseAddress = parse(body)?;
            if let Some(a) = addr_of(&r.address)? {
                ipam.release(a);
            }
            Ok(json!({}))
        }
        other => Err(format!("vswitch does not implement {other}")),
    }
}

/// Docker's `-p` mappings (`com.docker.network.portmap`) in its own `-p` syntax, which
/// vswitch's publishing reads. An entry per address family comes for one `-p`: IPv6 host
/// addresses are left out (the uplink is IPv4).
fn port_specs(options: &std::collections::BTreeMap<String, Value>) -> Result<Vec<String>, String> {
    let Some(Value::Array(maps)) = options.get("com.docker.network.portmap") else { return Ok(vec![]) };
    let mut specs = vec![];
    for m in maps {
        let proto = match m["Proto"].as_u64() {
            Some(6) => "tcp",
            Some(17) => "udp",
            other => return Err(format!("publishing protocol {other:?} is not supported (tcp and udp are)")),
        };
        let port = m["Port"].as_u64().ok_or("a port mapping without a Port")?;
        let host_ip = m["HostIP"].as_str().unwrap_or("");
        if host_ip.contains(':') {
            continue;
        }
        let ip = match host_ip {
            "" | "0.0.0.0" => String::new(),
            a => format!("{a}:"),
        };
        let (lo, hi) = (m["HostPort"].as_u64().unwrap_or(0), m["HostPortEnd"].as_u64().unwrap_or(0));
        let spec = match (lo, hi) {
            (0, _) => format!("{ip}{port}/{proto}"),
            (lo, hi) if hi > lo => format!("{ip}{lo}-{hi}:{port}/{proto}"),
            (lo, _) => format!("{ip}{lo}:{port}/{proto}"),
        };
        if !specs.contains(&spec) {
            specs.push(spec);
        }
    }
    Ok(specs)
}

/// CreateNetwork's request as a vswitch network: `-o` pairs, `--internal`, `--ipv6`, pools.
fn docker_network(r: CreateNetwork) -> Result<DockerNetwork, String> {
    let mut d = DockerNetwork { id: r.network_id, ..Default::default() };
    for (k, v) in &r.options {
        match (k.as_str(), v) {
            ("com.docker.network.generic", Value::Object(m)) => {
                for (k, v) in m {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    d.options.insert(k.clone(), v);
                }
            }
            ("com.docker.network.enable_ipv6", Value::Bool(b)) => d.ipv6 = *b,
            ("com.docker.network.internal", Value::Bool(b)) => d.internal = *b,
            _ => {} // Docker's own labels
        }
    }
    for data in r.ipv4_data.iter().chain(&r.ipv6_data) {
        if data.pool.is_empty() {
            continue;
        }
        let pool = data.pool.parse().map_err(|_| format!("pool '{}' is not a subnet", data.pool))?;
        d.subnets.push((pool, addr_of(&data.gateway)?));
        for (name, a) in &data.aux_addresses {
            if let Some(a) = addr_of(a)? {
                d.aux_addresses.push((name.clone(), a));
            }
        }
    }
    d.ipv6 |= !r.ipv6_data.is_empty();
    Ok(d)
}
