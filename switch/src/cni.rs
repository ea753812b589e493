//! `vswitch-cni`: the CNI plugin (spec 1.0.0, and 1.1's STATUS) through which
//! Podman, containerd and Kubernetes put containers on vswitch networks. It is a client of
//! the daemon: ADD connects the container's namespace (`CNI_NETNS`, `CNI_IFNAME`) to the
//! network the config names, as `vswitch network connect --netns` does, with the sandbox's
//! id set to the container's id, so that DEL (and CHECK) find it by that id even after the
//! daemon restarted or the namespace is gone. Its conflist entry:
//!
//! ```json
//! {"type": "vswitch-cni", "network": "NAME", "socket": "/run/vswitch/vswitch.sock",
//!  "capabilities": {"portMappings": true, "aliases": true}}
//! ```

use crate::client::call;
use crate::control::state::Endpoint;
use crate::protocol::{Connect, EndpointOptions, NetworkDetail, Request, SandboxView};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Read;
use std::net::IpAddr;
use std::path::PathBuf;

pub const VERSION: &str = "1.0.0";
const SUPPORTED: [&str; 4] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/// CNI's error codes (the spec's well-known ones).
mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const INVALID_ENV: u32 = 4;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    pub const GENERIC: u32 = 999;
}

#[derive(Debug)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

fn fail(code: u32, msg: impl Into<String>) -> CniError {
    CniError { code, msg: msg.into(), details: String::new() }
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    #[serde(default)]
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    /// The vswitch network [default: the conflist's name].
    #[serde(default)]
    pub network: Option<String>,
    /// The daemon's socket [default: $VSWITCH_SOCKET, then /run/vswitch/vswitch.sock].
    #[serde(default)]
    pub socket: Option<PathBuf>,
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    /// Podman sends `{"NETWORK": ["alias", ...]}`; a plain list is taken too.
    #[serde(default)]
    pub aliases: Option<Value>,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default, rename = "hostIP")]
    pub host_ip: Option<String>,
}

/// What the runtime says in the environment.
#[derive(Debug, Default)]
pub struct Env {
    pub command: String,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    /// `CNI_ARGS`: `K=V;K=V`.
    pub args: HashMap<String, String>,
}

impl Env {
    pub fn from_env() -> Env {
        let get = |k: &str| std::env::var(k).unwrap_or_default();
        let args = get("CNI_ARGS")
            .split(';')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env {
            command: get("CNI_COMMAND"),
            container_id: get("CNI_CONTAINERID"),
            netns: get("CNI_NETNS"),
            ifname: get("CNI_IFNAME"),
            args,
        }
    }
}

/// Run one CNI command: the JSON to print on success.
pub fn run(env: &Env, stdin: &str, default_socket: &str) -> Result<Option<Value>, CniError> {
    if env.command == "VERSION" {
        return Ok(Some(json!({ "cniVersion": VERSION, "supportedVersions": SUPPORTED })));
    }
    let conf: Config =
        serde_json::from_str(stdin).map_err(|e| fail(code::DECODE, format!("the network configuration: {e}")))?;
    if !conf.cni_version.is_empty() && !SUPPORTED.contains(&conf.cni_version.as_str()) {
        return Err(fail(
            code::INCOMPATIBLE_VERSION,
            format!("cniVersion {} is not one of {SUPPORTED:?}", conf.cni_version),
        ));
    }
    let socket = conf
        .socket
        .clone()
        .or_else(|| std::env::var_os("VSWITCH_SOCKET").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(default_socket));
    let network = conf.network.clone().unwrap_or_else(|| conf.name.clone());
    if network.is_empty() {
        return Err(fail(code::INVALID_CONFIG, "the configuration names no network (\"network\": \"NAME\")"));
    }
    let need = |v: &str, name: &str| {
        if v.is_empty() {
            Err(fail(code::INVALID_ENV, format!("{name} is not set")))
        } else {
            Ok(())
        }
    };
    match env.command.as_str() {
        "ADD" => {
            need(&env.container_id, "CNI_CONTAINERID")?;
            need(&env.netns, "CNI_NETNS")?;
            need(&env.ifname, "CNI_IFNAME")?;
            add(env, &conf, &socket, &network).map(Some)
        }
        "DEL" => {
            need(&env.container_id, "CNI_CONTAINERID")?;
            del(env, &socket, &network).map(|()| None)
        }
        "CHECK" => {
            need(&env.container_id, "CNI_CONTAINERID")?;
            check(env, &socket, &network).map(|()| None)
        }
        "STATUS" => {
            call(&socket, &Request::NetworkInspect { names: vec![network.clone()] })
                .map_err(|e| fail(code::NOT_AVAILABLE, e))?;
            Ok(None)
        }
        other => {
            Err(fail(code::INVALID_ENV, format!("CNI_COMMAND '{other}' is not ADD, DEL, CHECK, STATUS or VERSION")))
        }
    }
}

/// The daemon's refusal, or that it is not there (then the runtime may try again later).
fn daemon_error(e: String) -> CniError {
    let code = if e.contains("daemon is not running") { code::TRY_AGAIN_LATER } else { code::GENERIC };
    fail(code, e)
}

fn aliases(conf: &Config, network: &str) -> Vec<String> {
    match &conf.runtime_config.aliases {
        Some(Value::Object(m)) => m
            .get(network)
            .or_else(|| m.get(&conf.name))
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default(),
        Some(Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
        _ => vec![],
    }
}

fn add(env: &Env, conf: &Config, socket: &std::path::Path, network: &str) -> Result<Value, CniError> {
    let bad_arg = |k: &str, v: &str| fail(code::INVALID_ENV, format!("CNI_ARGS {k}={v} is not valid"));
    let ip = match env.args.get("IP") {
        Some(v) => Some(v.split('/').next().unwrap_or("").parse().map_err(|_| bad_arg("IP", v))?),
        None => None,
    };
    let mac = match env.args.get("MAC") {
        Some(v) => Some(v.parse().map_err(|_| bad_arg("MAC", v))?),
        None => None,
    };
    let publish = conf
        .runtime_config
        .port_mappings
        .iter()
        .map(|p| {
            let host = p
                .host_ip
                .as_deref()
                .filter(|h| !h.is_empty() && *h != "0.0.0.0")
                .map(|h| format!("{h}:"))
                .unwrap_or_default();
            format!("{host}{}:{}/{}", p.host_port, p.container_port, p.protocol.as_deref().unwrap_or("tcp"))
        })
        .collect();
    let name = sandbox_name(env);
    let mut c = Connect {
        network: network.into(),
        netns: Some(env.netns.clone()),
        name: Some(name.clone()),
        sandbox_id: Some(env.container_id.clone()),
        endpoint: EndpointOptions {
            ip,
            mac,
            aliases: aliases(conf, network),
            publish,
            ifname: Some(env.ifname.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut answer = call(socket, &Request::NetworkConnect(c.clone()));
    // The pod's name taken by another sandbox (a container of that name whose DEL never
    // came): this one goes by its id instead.
    if answer.as_ref().is_err_and(|e| e.contains(&format!("sandbox named '{name}' already exists"))) {
        c.name = Some(id_name(env));
        answer = call(socket, &Request::NetworkConnect(c));
    }
    let v = answer.map_err(daemon_error)?;
    let ep: Endpoint =
        serde_json::from_value(v).map_err(|e| fail(code::GENERIC, format!("the daemon's answer: {e}")))?;
    let detail = inspect(socket, network)?;
    Ok(result(conf, env, &ep, &detail))
}

/// The container's name for DNS: podman's K8S_POD_NAME when it is a valid name, else the
/// short container id.
fn sandbox_name(env: &Env) -> String {
    let valid = |n: &str| crate::control::controller::check_name(n).is_ok();
    match env.args.get("K8S_POD_NAME") {
        Some(n) if valid(n) => n.clone(),
        _ => id_name(env),
    }
}

fn id_name(env: &Env) -> String {
    format!("cni-{}", &env.container_id[..env.container_id.len().min(12)])
}

fn inspect(socket: &std::path::Path, network: &str) -> Result<NetworkDetail, CniError> {
    let v = call(socket, &Request::NetworkInspect { names: vec![network.into()] }).map_err(daemon_error)?;
    let mut d: Vec<NetworkDetail> =
        serde_json::from_value(v).map_err(|e| fail(code::GENERIC, format!("the daemon's answer: {e}")))?;
    d.pop().ok_or_else(|| fail(code::GENERIC, "the daemon described no network"))
}

/// The CNI result of an ADD: the host's veth end, the container's interface, its addresses
/// with the gateway, a default route (not on an internal network), the embedded DNS.
fn result(conf: &Config, env: &Env, ep: &Endpoint, d: &NetworkDetail) -> Value {
    let n = &d.network;
    let mut ips = vec![];
    let mut routes = vec![];
    let mut servers = vec![];
    for (addr, subnet) in [(ep.ipv4.map(IpAddr::V4), n.subnet_v4()), (ep.ipv6.map(IpAddr::V6), n.subnet_v6())] {
        let (Some(a), Some(s)) = (addr, subnet) else { continue };
        ips.push(json!({ "address": format!("{a}/{}", s.subnet.prefix_len()), "gateway": s.gateway, "interface": 1 }));
        if !n.internal {
            routes.push(json!({ "dst": if a.is_ipv4() { "0.0.0.0/0" } else { "::/0" }, "gw": s.gateway }));
        }
        servers.push(s.gateway);
    }
    let version = if conf.cni_version.is_empty() { VERSION } else { conf.cni_version.as_str() };
    json!({
        "cniVersion": version,
        "interfaces": [
            { "name": ep.name, "mac": ep.mac.to_string() },
            { "name": env.ifname, "mac": ep.mac.to_string(), "sandbox": env.netns },
        ],
        "ips": ips,
        "routes": routes,
        "dns": { "nameservers": servers.first().map(|s| vec![s.to_string()]).unwrap_or_default(), "options": ["ndots:0"] },
    })
}

/// DEL: disconnect the container's endpoint; nothing there (already deleted, network gone) is
/// success, as the spec asks.
fn del(env: &Env, socket: &std::path::Path, network: &str) -> Result<(), CniError> {
    let r = call(socket, &Request::NetworkDisconnect { network: network.into(), target: env.container_id.clone() });
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.contains("is not attached") || e.contains("no network") || e.contains("No such") => Ok(()),
        Err(e) => Err(daemon_error(e)),
    }
}

fn sandboxes(socket: &std::path::Path) -> Result<Vec<SandboxView>, CniError> {
    let v = call(socket, &Request::Ps).map_err(daemon_error)?;
    serde_json::from_value(v).map_err(|e| fail(code::GENERIC, format!("the daemon's answer: {e}")))
}

/// CHECK: the container still has its endpoint on the network, with its interface.
fn check(env: &Env, socket: &std::path::Path, network: &str) -> Result<(), CniError> {
    let all = sandboxes(socket)?;
    let sb = all
        .iter()
        .find(|s| s.id.len() >= 12 && env.container_id.starts_with(&s.id)) // ps shows the short id
        .ok_or_else(|| fail(code::GENERIC, format!("container {} has no sandbox in vswitch", env.container_id)))?;
    let on = sb.endpoints.iter().any(|e| {
        e.network == network
            && e.endpoint.sandbox.as_ref().is_some_and(|l| env.ifname.is_empty() || l.ifname == env.ifname)
    });
    if !on {
        return Err(fail(code::GENERIC, format!("container {} is not on network {network}", env.container_id)));
    }
    Ok(())
}

/// The binary's whole life: read stdin, run, print the result or the error, exit status.
pub fn main(default_socket: &str) -> i32 {
    let env = Env::from_env();
    let mut stdin = String::new();
    if env.command != "VERSION" {
        let _ = std::io::stdin().read_to_string(&mut stdin);
    }
    match run(&env, &stdin, default_socket) {
        Ok(Some(v)) => {
            println!("{v}");
            0
        }
        Ok(None) => 0,
        Err(e) => {
            println!("{}", json!({ "cniVersion": VERSION, "code": e.code, "msg": e.msg, "details": e.details }));
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_and_bad_input_are_answered_without_a_daemon() {
        let env = Env { command: "VERSION".into(), ..Default::default() };
        let v = run(&env, "", "/nonexistent").unwrap().unwrap();
        assert_eq!(v["cniVersion"], "1.0.0");
        let env = Env { command: "ADD".into(), ..Default::default() };
        assert_eq!(run(&env, "{not json", "/nonexistent").unwrap_err().code, code::DECODE);
        let conf = r#"{"cniVersion":"1.0.0","name":"blue","type":"vswitch-cni"}"#;
        assert_eq!(run(&env, conf, "/nonexistent").unwrap_err().code, code::INVALID_ENV, "no CNI_CONTAINERID");
        let env = Env {
            command: "ADD".into(),
            container_id: "a".repeat(64),
            netns: "/run/netns/x".into(),
            ifname: "eth0".into(),
            ..Default::default()
        };
        assert_eq!(run(&env, conf, "/nonexistent/sock").unwrap_err().code, code::TRY_AGAIN_LATER);
        let old = r#"{"cniVersion":"0.1.0","name":"blue"}"#;
        assert_eq!(run(&env, old, "/nonexistent").unwrap_err().code, code::INCOMPATIBLE_VERSION);
    }

    #[test]
    fn aliases_come_as_podman_sends_them() {
        let conf: Config =
            serde_json::from_str(r#"{"name":"blue","runtimeConfig":{"aliases":{"blue":["web","www"]}}}"#).unwrap();
        assert_eq!(aliases(&conf, "blue"), vec!["web", "www"]);
        let env = Env { container_id: "0123456789abcdef".into(), ..Default::default() };
        assert_eq!(sandbox_name(&env), "cni-0123456789ab");
    }
}
