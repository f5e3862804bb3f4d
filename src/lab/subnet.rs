//! The lab's IPv4 subnet and its address plan: bridge at .1, node i at .(10+i).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::sys::run;
use super::{LabError, Result};

/// An IPv4 subnet with the lab's address plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    /// Network address.
    pub network: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
}

impl Subnet {
    /// Parses `A.B.C.D/N`, requiring room for `nodes` nodes.
    pub fn parse(text: &str, nodes: usize) -> Result<Self> {
        let bad = || LabError::BadSubnet(text.to_string());
        let net: Ipv4Net = text.parse().map_err(|_| bad())?;
        if !(8..=28).contains(&net.prefix_len())
            || (10 + nodes as u64) >= (1u64 << net.max_prefix_len().saturating_sub(net.prefix_len())) - 2
        {
            return Err(bad());
        }
        Ok(Subnet {
            network: net.network(),
            prefix: net.prefix_len(),
        })
    }

    fn net(&self) -> Ipv4Net {
        Ipv4Net::new(self.network, self.prefix).expect("a parsed prefix is valid")
    }

    fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + n)
    }

    /// The bridge's (gateway's) address.
    pub fn gateway(&self) -> Ipv4Addr {
        self.nth(1)
    }

    /// Address of node `index` (1-based).
    pub fn node(&self, index: usize) -> Ipv4Addr {
        self.nth(10 + index as u32)
    }

    /// The web LB's floating address: the subnet's last usable one (never a node's).
    pub fn vip(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.net().broadcast()) - 1)
    }

    /// Whether the network `other` overlaps this subnet.
    pub fn overlaps(&self, other: Ipv4Net) -> bool {
        let mine = self.net();
        mine.contains(&other.network()) || other.contains(&mine.network())
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.net())
    }
}

/// A route destination or interface address as `ip` prints it (`A.B.C.D/N` or a bare address).
fn parse_cidr(text: &str) -> Option<Ipv4Net> {
    text.parse()
        .ok()
        .or_else(|| text.parse::<Ipv4Addr>().ok().map(Ipv4Net::from))
}

/// Refuses a subnet that overlaps an address or a route already on the host.
pub(super) fn check_subnet_free(subnet: &Subnet) -> Result<()> {
    let taken = |by: String| LabError::SubnetTaken {
        subnet: subnet.to_string(),
        by,
    };
    let routes = run("ip", &["-4", "-o", "route", "show", "table", "all"])?;
    for line in routes.lines() {
        let dest = line.split_whitespace().next().unwrap_or("");
        if dest == "default" || dest == "broadcast" || dest == "local" {
            continue;
        }
        if let Some(net) = parse_cidr(dest) {
            if net.prefix_len() > 0 && subnet.overlaps(net) {
                return Err(taken(format!("route {}", line.trim())));
            }
        }
    }
    let addrs = run("ip", &["-4", "-o", "addr", "show"])?;
    for line in addrs.lines() {
        let mut fields = line.split_whitespace();
        let dev = fields.nth(1).unwrap_or("?").to_string();
        if let Some(cidr) = fields.skip_while(|f| *f != "inet").nth(1) {
            if let Some(net) = parse_cidr(cidr) {
                if subnet.overlaps(Ipv4Net::from(net.addr())) {
                    return Err(taken(format!("address {cidr} on {dev}")));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_address_plan() {
        let s = Subnet::parse("10.213.0.77/24", 3).unwrap();
        assert_eq!(s.to_string(), "10.213.0.0/24");
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 213, 0, 1));
        assert_eq!(s.node(3), Ipv4Addr::new(10, 213, 0, 13));
        assert_eq!(s.vip(), Ipv4Addr::new(10, 213, 0, 254));
        let small = Subnet::parse("10.9.0.0/28", 3).unwrap();
        assert_eq!(
            (small.node(3), small.vip()),
            (Ipv4Addr::new(10, 9, 0, 13), Ipv4Addr::new(10, 9, 0, 14))
        );
    }

    #[test]
    fn subnet_rejects_bad_input() {
        assert!(Subnet::parse("10.0.0.0", 3).is_err());
        assert!(Subnet::parse("10.0.0.0/30", 3).is_err());
        assert!(Subnet::parse("300.0.0.0/24", 3).is_err());
    }

    #[test]
    fn overlap_detection() {
        let s = Subnet::parse("10.213.0.0/24", 3).unwrap();
        assert!(s.overlaps(parse_cidr("10.213.0.5").unwrap()));
        assert!(s.overlaps(parse_cidr("10.0.0.0/8").unwrap()));
        assert!(!s.overlaps(parse_cidr("10.214.0.0/24").unwrap()));
    }
}
