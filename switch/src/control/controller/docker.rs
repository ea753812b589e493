//! What the Docker plugin asks of the controller: networks and endpoints named by Docker's
//! ids. A Docker endpoint is a veth pair whose switch end is a port and whose other end
//! Docker takes into the container at Join (and configures: address, routes); the switch
//! deletes the pair when Docker deletes the endpoint. Each call is one transaction, as a
//! CLI command is; calls Docker repeats after a failure find what the first one made.

use super::*;
use ipnet::IpNet;

/// A Docker network, as CreateNetwork describes it.
#[derive(Debug, Default)]
pub struct DockerNetwork {
    pub id: String,
    /// `-o` pairs (`com.docker.network.generic`); `name` names the vswitch network.
    pub options: BTreeMap<String, String>,
    pub internal: bool,
    pub ipv6: bool,
    /// Pool and gateway of each family Docker's IPAM gave.
    pub subnets: Vec<(IpNet, Option<IpAddr>)>,
    pub aux_addresses: Vec<(String, IpAddr)>,
}

/// What Join tells Docker.
#[derive(Debug)]
pub struct Joined {
    pub peer: String,
    pub gateway4: Option<IpAddr>,
    pub gateway6: Option<IpAddr>,
}

impl Controller {
    /// The vswitch network made for Docker network `id`.
    pub fn docker_network(&self, id: &str) -> Result<&Network> {
        self.st
            .networks
            .iter()
            .find(|n| n.docker_id.as_deref() == Some(id))
            .ok_or_else(|| Error::NoNetwork(format!("for Docker network {}", short_id(id))))
    }

    pub fn docker_create_network(&mut self, mut d: DockerNetwork) -> Result<()> {
        if self.docker_network(&d.id).is_ok() {
            return Ok(()); // Docker asked again (it retries after its own failures)
        }
        let name = d.options.remove("name").unwrap_or_else(|| format!("docker-{}", short_id(&d.id)));
        let c = CreateNetwork {
            name,
            driver: Some("bridge".into()),
            subnets: d.subnets.iter().map(|s| s.0).collect(),
            gateways: d.subnets.iter().filter_map(|s| s.1).collect(),
            aux_addresses: d.aux_addresses,
            ipv6: d.ipv6,
            internal: d.internal,
            options: d.options,
            docker_id: Some(d.id),
            ..Default::default()
        };
        self.create(c).map(drop)
    }

    pub fn docker_delete_network(&mut self, id: &str) -> Result<()> {
        let Ok(n) = self.docker_network(id) else { return Ok(()) }; // gone already
        let name = n.name.clone();
        self.remove_networks(&[name])
    }

    fn docker_endpoint(&self, net: &str, ep: &str) -> Result<(&Network, &Endpoint)> {
        let n = self.docker_network(net)?;
        let e = n
            .endpoints
            .iter()
            .find(|e| e.docker.as_ref().is_some_and(|d| d.endpoint_id == ep))
            .ok_or_else(|| Error::invalid(format!("no Docker endpoint {} on network {}", short_id(ep), n.name)))?;
        Ok((n, e))
    }

    /// A new endpoint: its veth pair, the switch's end attached. Docker's addresses if its
    /// IPAM chose them, else vswitch's; `publish` (Docker's `-p`, in its syntax) at the
    /// uplink's address. Returns the endpoint (its MAC and addresses).
    pub fn docker_create_endpoint(
        &mut self,
        net: &str,
        ep: &str,
        ipv4: Option<Ipv4Addr>,
        ipv6: Option<std::net::Ipv6Addr>,
        mac: Option<MacAddr>,
        publish: &[String],
    ) -> Result<Endpoint> {
        if let Ok((_, e)) = self.docker_endpoint(net, ep) {
            return Ok(e.clone());
        }
        let network = self.docker_network(net)?.name.clone();
        self.transact(|c, tx| {
            let n = tx.next.network(&network).expect("found above");
            let (ipv4, ipv6) = ipam::allocate(n, ipv4, ipv6)?;
            let mac = endpoint_mac(n, mac, ipv4, ipv6)?;
            let mtu = n.mtu();
            let (host, peer) = (new_host_ifname(), format!("vp{}", random_hex(5)));
            let published =
                c.plan_publish(&tx.next, &network, ipv4, publish, &format!("container {}", short_id(ep)))?;
            c.sys.make_veth(&host, &peer, mac, mtu)?;
            let e = Endpoint {
                published,
                docker: Some(DockerLink { endpoint_id: ep.into(), peer, sandbox_key: None }),
                ..Endpoint::veth_end(host, mac, ipv4, ipv6)
            };
            c.attach_veth_end(tx, &network, e)
        })
    }

    /// Docker takes the endpoint's interface into `sandbox_key` (a namespace path).
    pub fn docker_join(&mut self, net: &str, ep: &str, sandbox_key: &str) -> Result<Joined> {
        let (n, e) = self.docker_endpoint(net, ep)?;
        let (network, port) = (n.name.clone(), e.name.clone());
        let peer = e.docker.as_ref().expect("a Docker endpoint").peer.clone();
        let gw = |s: Option<&Subnet>| s.map(|s| s.gateway).filter(|_| !n.internal);
        let joined = Joined { peer, gateway4: gw(n.subnet_v4()), gateway6: gw(n.subnet_v6()) };
        self.transact(|_, tx| {
            let n = tx.next.network_mut(&network).expect("found above");
            if let Some(d) = n.endpoints.iter_mut().find(|e| e.name == port).and_then(|e| e.docker.as_mut()) {
                d.sandbox_key = Some(sandbox_key.into());
            }
            Ok(())
        })?;
        Ok(joined)
    }

    pub fn docker_delete_endpoint(&mut self, net: &str, ep: &str) -> Result<()> {
        let Ok((n, e)) = self.docker_endpoint(net, ep) else { return Ok(()) }; // gone already
        let (network, port) = (n.name.clone(), e.name.clone());
        self.transact(|c, tx| {
            c.remove_endpoint_in(tx, &network, &port);
            Ok(())
        })
    }

    /// Every network's subnets (the IPAM driver picks pools that none of them overlap).
    pub fn subnets(&self) -> Vec<(IpNet, String)> {
        self.st.networks.iter().flat_map(|n| n.ipam.iter().map(move |s| (s.subnet, n.name.clone()))).collect()
    }

    /// The network whose subnet is `subnet`.
    pub fn network_with_subnet(&self, subnet: IpNet) -> Option<&Network> {
        self.st.networks.iter().find(|n| n.ipam.iter().any(|s| s.subnet == subnet))
    }
}
