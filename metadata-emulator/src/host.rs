//! Which `Host` the emulator answers. A web page can rebind its own DNS name
//! to 127.0.0.1 and then read the emulator's answers as same-origin; its
//! requests still carry that name in `Host` (or HTTP/2's `:authority`), so
//! only the names a metadata client really uses are served: loopback
//! addresses, `localhost`, and the metadata server's own names and address.

use std::net::{Ipv4Addr, Ipv6Addr};

use http::{header, Request};

/// The names served besides loopback addresses, compared without case.
const NAMES: [&str; 3] = ["localhost", "metadata.google.internal", "metadata"];

/// The real metadata server's link-local address.
const METADATA_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

/// Whether `req` names an allowed host: every authority it carries (the
/// request target's, HTTP/2's `:authority`, and the one `Host` header) must
/// be allowed, and it must carry at least one.
pub(crate) fn allowed<B>(req: &Request<B>) -> bool {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (None, _) => None,
        (Some(value), None) => match value.to_str() {
            Ok(value) => Some(value),
            Err(_) => return false,
        },
        (Some(_), Some(_)) => return false,
    };
    let target = req.uri().authority().map(http::uri::Authority::as_str);
    if host.is_none() && target.is_none() {
        return false;
    }
    host.into_iter().chain(target).all(allowed_authority)
}

/// `host[:port]` with an allowed host and a port that is a port number, or
/// no port.
pub(crate) fn allowed_authority(authority: &str) -> bool {
    let (host, port) = match authority.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, "")) => (Host::V6(v6), None),
            Some((v6, rest)) => match rest.strip_prefix(':') {
                Some(port) => (Host::V6(v6), Some(port)),
                None => return false,
            },
            None => return false,
        },
        None => match authority.split_once(':') {
            Some((name, port)) => (Host::Name(name), Some(port)),
            None => (Host::Name(authority), None),
        },
    };
    // RFC 3986 allows an empty port; `u16::from_str` alone would take `+80`.
    let port_ok = port.is_none_or(|port| {
        port.len() <= 5
            && port.bytes().all(|b| b.is_ascii_digit())
            && (port.is_empty() || port.parse::<u16>().is_ok())
    });
    port_ok && host.allowed()
}

enum Host<'a> {
    /// A name or IPv4 address.
    Name(&'a str),
    /// Between the brackets.
    V6(&'a str),
}

impl Host<'_> {
    fn allowed(&self) -> bool {
        match *self {
            Self::V6(v6) => v6.parse::<Ipv6Addr>().is_ok_and(|ip| ip.is_loopback()),
            Self::Name(name) => {
                if let Ok(ip) = name.parse::<Ipv4Addr>() {
                    return ip.is_loopback() || ip == METADATA_IP;
                }
                // A fully qualified name may end in a dot.
                let name = name.strip_suffix('.').unwrap_or(name);
                NAMES
                    .iter()
                    .any(|allowed| name.eq_ignore_ascii_case(allowed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(target: &str, hosts: &[&str]) -> Request<()> {
        let mut builder = Request::get(target);
        for host in hosts {
            builder = builder.header(header::HOST, *host);
        }
        builder.body(()).expect("request")
    }

    #[test]
    fn authorities() {
        for ok in [
            "127.0.0.1",
            "127.0.0.1:8999",
            "127.255.255.254:1",
            "[::1]",
            "[::1]:8999",
            "[0::1]:",
            "localhost",
            "LOCALHOST:80",
            "localhost.",
            "metadata.google.internal",
            "metadata.google.internal.:80",
            "metadata",
            "169.254.169.254",
            "169.254.169.254:80",
        ] {
            assert!(allowed_authority(ok), "{ok}");
        }
        for refused in [
            "",
            ":80",
            "evil.example",
            "localhost..",
            "localhost.evil.example",
            "metadata.google.internal.evil.example",
            "0.0.0.0",
            "128.0.0.1",
            "127.1",
            "127.000.0.1",
            "[::]",
            "[::ffff:127.0.0.1]",
            "::1",
            "[::1",
            "[::1]x",
            "[::1]:x",
            "127.0.0.1:99999",
            "127.0.0.1:000080",
            "127.0.0.1:+80",
            "127.0.0.1:80:80",
            "user@127.0.0.1",
            "127.0.0.1@evil.example",
        ] {
            assert!(!allowed_authority(refused), "{refused:?}");
        }
    }

    #[test]
    fn requests() {
        assert!(allowed(&request("/", &["127.0.0.1:8999"])));
        assert!(allowed(&request("http://metadata/x", &[])));
        assert!(allowed(&request("http://metadata/x", &["localhost"])));
        assert!(!allowed(&request("/", &[])));
        assert!(!allowed(&request("/", &["127.0.0.1", "127.0.0.1"])));
        assert!(!allowed(&request("http://evil.example/x", &["127.0.0.1"])));
        assert!(!allowed(&request("http://127.0.0.1/x", &["evil.example"])));
    }
}
