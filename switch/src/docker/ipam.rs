//! vswitch as Docker's IPAM driver (`--ipam-driver vswitch`): pools that overlap no vswitch
//! network, the gateway, endpoint addresses from vswitch's own allocator. Docker asks for
//! addresses between its calls to the network driver, so an address handed out is held here
//! until the endpoint that takes it exists (or Docker releases it). A pool's id is its subnet
//! (`vswitch/10.60.0.0/24`): it means the same after a daemon restart.

use crate::control::controller::Controller;
use crate::control::ipam;
use crate::control::state::Network;
use ipnet::IpNet;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

const POOL_PREFIX: &str = "vswitch/";
/// Docker's RequestAddressType for a network's gateway.
const GATEWAY: &str = "com.docker.network.gateway";

#[derive(Default)]
pub struct Ipam {
    /// Pools handed out whose networks may not exist yet.
    pools: HashSet<IpNet>,
    /// Addresses handed out, not yet an endpoint's.
    held: HashMap<IpNet, HashSet<IpAddr>>,
}

pub fn pool_id(pool: IpNet) -> String {
    format!("{POOL_PREFIX}{pool}")
}

fn pool_of(id: &str) -> Result<IpNet, String> {
    id.strip_prefix(POOL_PREFIX).and_then(|p| p.parse().ok()).ok_or_else(|| format!("unknown pool id '{id}'"))
}

impl Ipam {
    /// A pool: `want` if given and free, else the first default pool nothing uses.
    pub fn request_pool(&mut self, c: &Controller, want: &str, v6: bool) -> Result<IpNet, String> {
        let mut taken = c.subnets();
        taken.extend(self.pools.iter().map(|p| (*p, "another pool of Docker's".to_string())));
        let subnets: Vec<IpNet> = match want {
            "" => vec![],
            w => vec![w.parse().map_err(|_| format!("'{w}' is not a subnet"))?],
        };
        let req = ipam::Request { subnets, ipv6: v6, ..Default::default() };
        let plan = ipam::plan(&req, &taken).map_err(|e| e.to_string())?;
        let pool =
            plan.into_iter().map(|s| s.subnet).find(|s| s.addr().is_ipv6() == v6).ok_or("no pool of that family")?;
        self.pools.insert(pool);
        Ok(pool)
    }

    pub fn release_pool(&mut self, id: &str) {
        if let Ok(p) = pool_of(id) {
            self.pools.remove(&p);
            self.held.remove(&p);
        }
    }

    /// An address of pool `id` as `ADDR/LEN`: the gateway (the given one or the first), or an
    /// endpoint's (the given one if free, else the first free).
    pub fn request_address(
        &mut self,
        c: &Controller,
        id: &str,
        want: &str,
        kind: Option<&str>,
    ) -> Result<String, String> {
        let pool = pool_of(id)?;
        let want: Option<IpAddr> = match want {
            "" => None,
            w => Some(w.parse().map_err(|_| format!("'{w}' is not an address"))?),
        };
        if kind == Some(GATEWAY) {
            let gw = match want {
                Some(a) => a,
                None => first_host(pool),
            };
            return Ok(format!("{gw}/{}", pool.prefix_len()));
        }
        let net = c.network_with_subnet(pool).ok_or_else(|| format!("no vswitch network has pool {pool} yet"))?;
        // The network with what is held here as if it were taken.
        let held = self.held.entry(pool).or_default();
        let mut view: Network = net.clone();
        for (i, a) in held.iter().enumerate() {
            for s in view.ipam.iter_mut() {
                s.aux_addresses.insert(format!("docker-held-{i}"), *a);
            }
        }
        let (v4, v6) = match want {
            Some(IpAddr::V4(a)) => ipam::allocate(&view, Some(a), None),
            Some(IpAddr::V6(a)) => ipam::allocate(&view, None, Some(a)),
            None => ipam::allocate(&view, None, None),
        }
        .map_err(|e| e.to_string())?;
        let addr = if pool.addr().is_ipv4() { v4.map(IpAddr::V4) } else { v6.map(IpAddr::V6) };
        let addr = addr.ok_or_else(|| format!("pool {pool} has no address left"))?;
        held.insert(addr);
        Ok(format!("{addr}/{}", pool.prefix_len()))
    }

    /// `addr` is no longer held: Docker released it, or an endpoint has it now.
    pub fn release(&mut self, addr: IpAddr) {
        for h in self.held.values_mut() {
            h.remove(&addr);
        }
    }
}

fn first_host(pool: IpNet) -> IpAddr {
    match pool {
        IpNet::V4(n) => IpAddr::V4((u32::from(n.network()) + 1).into()),
        IpNet::V6(n) => IpAddr::V6((u128::from(n.network()) + 1).into()),
    }
}
