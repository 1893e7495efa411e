//! Where webhooks may point (ARCHITECTURE.md §17): `http`/`https` URLs of public
//! hosts. chatd POSTs from inside the deployment's network, so a target on
//! a private, loopback or link-local address would let any user probe (and
//! poke) internal services; such targets are refused unless an admin allows
//! them (`CHATD_WEBHOOK_ALLOW_PRIVATE`, for tests and closed networks).
//!
//! The rule is checked twice: when a webhook is registered (the host's
//! addresses now), and at every delivery, by the sender's DNS resolver
//! ([`GuardedResolver`]) and for IP-literal URLs ([`check_literal`]): a
//! name that resolved to a public address at registration may resolve to a
//! private one later (DNS rebinding). Redirects are never followed.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use reqwest::{
    Url,
    dns::{Addrs, Name, Resolve, Resolving},
};

/// Why a target URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetRefused {
    /// Not a URL we can POST to.
    #[error("the webhook URL is not valid: {0}")]
    Invalid(String),
    /// Not `http` or `https`.
    #[error("the webhook URL must use http or https")]
    Scheme,
    /// The host is (or resolves to) a private, loopback or link-local address.
    #[error(
        "the webhook URL's host {host} is a private, loopback or link-local address ({address}); an admin can allow such targets with CHATD_WEBHOOK_ALLOW_PRIVATE"
    )]
    Private {
        /// The host as written.
        host: String,
        /// The refused address.
        address: IpAddr,
    },
    /// The host name does not resolve.
    #[error("the webhook URL's host {0} does not resolve")]
    Unresolvable(String),
}

/// Which addresses webhooks may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TargetPolicy {
    /// Allow private, loopback and link-local addresses too.
    pub allow_private: bool,
}

impl TargetPolicy {
    /// True when deliveries may go to `address`.
    pub fn allows(self, address: IpAddr) -> bool {
        self.allow_private || is_public(address)
    }

    /// Checks a URL a user registers: its form, and every address its host
    /// has now. Returns the parsed URL.
    pub async fn check(self, url: &str) -> Result<Url, TargetRefused> {
        let parsed =
            Url::parse(url.trim()).map_err(|err| TargetRefused::Invalid(err.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(TargetRefused::Scheme);
        }
        let Some(host) = parsed.host_str().map(str::to_owned) else {
            return Err(TargetRefused::Invalid("it has no host".to_owned()));
        };
        if check_literal(self, &parsed)?.is_some() {
            return Ok(parsed);
        }
        let port = parsed.port_or_known_default().unwrap_or(443);
        let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|_| TargetRefused::Unresolvable(host.clone()))?
            .collect();
        if addresses.is_empty() {
            return Err(TargetRefused::Unresolvable(host));
        }
        if let Some(refused) = addresses.iter().find(|a| !self.allows(a.ip())) {
            return Err(TargetRefused::Private {
                host,
                address: refused.ip(),
            });
        }
        Ok(parsed)
    }
}

/// For a URL whose host is an IP address (no DNS involved, so the resolver
/// never sees it): that address, if `policy` allows it. `None` for names.
pub fn check_literal(policy: TargetPolicy, url: &Url) -> Result<Option<IpAddr>, TargetRefused> {
    let address = match url.host() {
        Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
        Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
        _ => return Ok(None),
    };
    if policy.allows(address) {
        Ok(Some(address))
    } else {
        Err(TargetRefused::Private {
            host: url.host_str().unwrap_or_default().to_owned(),
            address,
        })
    }
}

/// The sender's DNS resolver: the system's answer, without the addresses
/// the policy refuses; a name left with none fails to resolve, so the
/// connection is never made.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver(pub TargetPolicy);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|address| policy.allows(address.ip()))
                .collect();
            if found.is_empty() {
                let refused: Box<dyn std::error::Error + Send + Sync> =
                    format!("{host} resolves to no address webhooks may reach").into();
                return Err(refused);
            }
            let addresses: Addrs = Box::new(found.into_iter());
            Ok(addresses)
        })
    }
}

impl GuardedResolver {
    /// The resolver as reqwest takes it.
    pub fn shared(policy: TargetPolicy) -> Arc<Self> {
        Arc::new(Self(policy))
    }
}

/// True for addresses on the public internet: not loopback, private,
/// link-local, unique-local, shared (CGNAT), unspecified, multicast,
/// broadcast, documentation or reserved ranges; IPv4-mapped and NAT64
/// IPv6 addresses are judged by their IPv4 address.
pub fn is_public(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (RFC 6598)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let segments = ip.segments();
    // NAT64 (64:ff9b::/96) reaches the IPv4 address in its last 32 bits.
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [.., high, low] = segments;
        return is_public_v4(Ipv4Addr::from((u32::from(high) << 16) | u32::from(low)));
    }
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_unique_local()
        || ip.is_unicast_link_local()
        || (segments[0] == 0x2001 && segments[1] == 0x0db8)) // documentation
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_loopback_and_link_local_addresses_are_not_public() {
        for refused in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(!is_public(refused.parse().unwrap()), "{refused}");
        }
        for allowed in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "64:ff9b::101:101",
        ] {
            assert!(is_public(allowed.parse().unwrap()), "{allowed}");
        }
    }

    #[tokio::test]
    async fn registration_refuses_loopback_unless_allowed_and_other_schemes_always() {
        let strict = TargetPolicy::default();
        let open = TargetPolicy {
            allow_private: true,
        };
        assert!(matches!(
            strict.check("http://127.0.0.1:9/hook").await,
            Err(TargetRefused::Private { .. })
        ));
        assert!(matches!(
            strict.check("http://[::1]:9/hook").await,
            Err(TargetRefused::Private { .. })
        ));
        assert!(open.check("http://127.0.0.1:9/hook").await.is_ok());
        assert_eq!(
            open.check("ftp://127.0.0.1/").await,
            Err(TargetRefused::Scheme)
        );
        assert!(matches!(
            open.check("not a url").await,
            Err(TargetRefused::Invalid(_))
        ));
    }
}
