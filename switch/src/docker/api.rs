//! The messages of Docker's legacy plugin API (libnetwork `drivers/remote/api`, `ipams/remote/api`),
//! as a Docker 20.10 daemon sends them: bodies may be empty, fields may be missing or null.
//! Only what vswitch reads is declared; the rest is ignored.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// A field Docker sends as null as often as it leaves it out.
fn or_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "PascalCase")]
pub struct IpData {
    #[serde(default, deserialize_with = "or_default")]
    pub pool: String,
    #[serde(default, deserialize_with = "or_default")]
    pub gateway: String,
    #[serde(default, deserialize_with = "or_default")]
    pub aux_addresses: BTreeMap<String, String>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "PascalCase")]
pub struct CreateNetwork {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(default, deserialize_with = "or_default")]
    pub options: BTreeMap<String, Value>,
    #[serde(rename = "IPv4Data", default, deserialize_with = "or_default")]
    pub ipv4_data: Vec<IpData>,
    #[serde(rename = "IPv6Data", default, deserialize_with = "or_default")]
    pub ipv6_data: Vec<IpData>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkRef {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointInterface {
    #[serde(default, deserialize_with = "or_default")]
    pub address: String,
    #[serde(rename = "AddressIPv6", default, deserialize_with = "or_default")]
    pub address_ipv6: String,
    #[serde(default, deserialize_with = "or_default")]
    pub mac_address: String,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "PascalCase")]
pub struct CreateEndpoint {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(default, deserialize_with = "or_default")]
    pub interface: EndpointInterface,
    /// `com.docker.network.portmap` (`-p`), `com.docker.network.endpoint.exposedports`.
    #[serde(default, deserialize_with = "or_default")]
    pub options: BTreeMap<String, Value>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointRef {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(default, deserialize_with = "or_default")]
    pub sandbox_key: String,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "PascalCase")]
pub struct RequestPool {
    #[serde(default, deserialize_with = "or_default")]
    pub pool: String,
    #[serde(default, deserialize_with = "or_default")]
    pub sub_pool: String,
    #[serde(rename = "V6", default)]
    pub v6: bool,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "PascalCase")]
pub struct RequestAddress {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    #[serde(default, deserialize_with = "or_default")]
    pub address: String,
    #[serde(default, deserialize_with = "or_default")]
    pub options: BTreeMap<String, String>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ReleaseAddress {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    #[serde(default, deserialize_with = "or_default")]
    pub address: String,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "PascalCase")]
pub struct PoolRef {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
}

/// Join's answer: the interface Docker takes into the container, and the gateway (a reply
/// with neither a gateway nor DisableGatewayService makes Docker add docker_gwbridge).
#[derive(Serialize, Debug)]
#[serde(rename_all = "PascalCase")]
pub struct JoinReply {
    pub interface_name: InterfaceName,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    #[serde(rename = "GatewayIPv6", skip_serializing_if = "String::is_empty")]
    pub gateway_ipv6: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub disable_gateway_service: bool,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "PascalCase")]
pub struct InterfaceName {
    pub src_name: String,
    pub dst_prefix: String,
}
