//! [`TrustedProxies`]: the networks whose forwarding headers are believed.

use std::{fmt, net::IpAddr, str::FromStr, sync::Arc};

use ipnet::IpNet;

/// What `TRUSTED_PROXIES` must hold, as its [`EnvError`](crate::EnvError) says.
pub(crate) const TRUSTED_PROXIES_EXPECTED: &str =
    "a comma-separated list of IP addresses or CIDR ranges";

/// The networks whose forwarding headers are believed: a list of CIDR ranges.
///
/// Parses from a comma-separated list of ranges or single addresses
/// (`"10.0.0.0/8, 192.168.1.7, fd00::/8"`); a single address is its own /32 or /128.
/// IPv4-mapped IPv6 addresses match the IPv4 ranges. Cloning shares the list.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Arc<[IpNet]>,
}

impl TrustedProxies {
    /// Trusts no proxy: forwarding headers are never read.
    pub fn none() -> Self {
        Self::default()
    }

    /// Trusts the given networks.
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> Self {
        Self {
            nets: nets.into_iter().map(canonical_net).collect(),
        }
    }

    /// The ranges from `TRUSTED_PROXIES` (comma-separated), or none when it is unset or
    /// empty.
    ///
    /// # Errors
    ///
    /// When the variable holds something that is not a list of addresses or CIDR ranges.
    pub fn from_env() -> Result<Self, crate::EnvError> {
        Ok(
            crate::env::var::<Self>("TRUSTED_PROXIES", TRUSTED_PROXIES_EXPECTED)?
                .unwrap_or_default(),
        )
    }

    /// Whether `ip` (canonicalized) is in one of the trusted ranges.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// Whether no range is trusted.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// The trusted ranges.
    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }
}

impl fmt::Debug for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.nets.iter()).finish()
    }
}

/// Reads a comma-separated list of addresses and CIDR ranges; empty entries are skipped.
impl FromStr for TrustedProxies {
    type Err = crate::rate_limit::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut nets = Vec::new();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let net = entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| crate::rate_limit::Error::ParseTrustedProxies {
                    entry: entry.chars().take(64).collect(),
                })?;
            nets.push(canonical_net(net));
        }
        Ok(Self::new(nets))
    }
}

/// The network with its host bits cleared; IPv4-mapped IPv6 ranges as IPv4
/// (`::ffff:10.0.0.0/104` is `10.0.0.0/8`), as addresses are compared canonical.
pub(in crate::rate_limit) fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => {
                IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).map_or(net, |net| net.trunc())
            }
            None => net.trunc(),
        },
        net => net.trunc(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{ip, trusted};
    use super::*;

    #[test]
    fn trusted_proxies_parse_lists_and_name_the_bad_entry() {
        let list = trusted(" 10.0.0.0/8, 192.168.1.7 ,fd00::/8,::ffff:172.16.0.0/108,");
        assert!(list.contains(ip("10.200.0.1")));
        assert!(list.contains(ip("::ffff:10.1.1.1")));
        assert!(list.contains(ip("192.168.1.7")));
        assert!(!list.contains(ip("192.168.1.8")));
        assert!(list.contains(ip("fd12::1")));
        assert!(list.contains(ip("172.16.5.5")));
        assert!(trusted("").is_empty());
        let err = "10.0.0.0/8, nonsense"
            .parse::<TrustedProxies>()
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid trusted proxy `nonsense`: write trusted proxies"),
            "{err}"
        );
        assert!("10.0.0.0/33".parse::<TrustedProxies>().is_err());
    }
}
