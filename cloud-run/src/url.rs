//! URLs a service is given: absolute http(s) URLs without credentials in
//! them, and the one rule for when a secret may travel over plain http (only
//! to this machine).

use std::net::IpAddr;

use reqwest::Url;

use crate::ConfigError;

/// Whether `url`'s host is this machine: `localhost`, 127.0.0.0/8 or `::1`
/// (IPv4-mapped loopback included). Not names under `.localhost`: the
/// system resolver need not pin them to loopback, and a DNS search list
/// may send them elsewhere.
/// Plain http to such a host never leaves the machine (or the pod, for a
/// sidecar), so secrets may travel over it in clear.
pub(crate) fn is_loopback_host(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    // The URL parser has already normalised IP literals (`127.1` is
    // `127.0.0.1`); IPv6 ones keep their brackets.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return is_loopback_ip(ip);
    }
    host.trim_end_matches('.').eq_ignore_ascii_case("localhost")
}

/// Whether a request to `url` would cross the network in clear text:
/// `http` to a host that is not loopback.
pub fn is_cleartext_to_remote(url: &Url) -> bool {
    url.scheme() == "http" && !is_loopback_host(url)
}

/// Whether `ip` is a loopback address, as [`is_loopback_host`] counts them.
pub(crate) fn is_loopback_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Reads `value`, the setting `var`, as an absolute `http` or `https` URL
/// with a host and no user name or password (reqwest would send those as
/// Basic credentials). A value with an `@` is never echoed: it may hold a
/// password.
pub fn http_url(var: &'static str, value: &str) -> Result<Url, ConfigError> {
    let shown = shown(value);
    let url = Url::parse(value)
        .map_err(|err| ConfigError::new(var, format!("not an absolute URL ({err}): {shown}")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::new(
            var,
            "must not hold a user name or password (user:password@)",
        ));
    }
    if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
        return Err(ConfigError::new(
            var,
            format!("not an http or https URL: {shown}"),
        ));
    }
    Ok(url)
}

/// As [`http_url`], for a URL that secrets travel to or that decides who
/// gets in: plain http only to a loopback host. `what` says what would be
/// exposed, for the error.
pub fn secure_url(var: &'static str, value: &str, what: &str) -> Result<Url, ConfigError> {
    let url = http_url(var, value)?;
    if is_cleartext_to_remote(&url) {
        return Err(ConfigError::new(
            var,
            format!(
                "plain http is allowed only to a loopback host (127.0.0.0/8, ::1, localhost), \
                 as {what}; use https: {}",
                shown(value)
            ),
        ));
    }
    Ok(url)
}

/// `value` for an error line, unless it has an `@` and so may hold a
/// password.
fn shown(value: &str) -> String {
    if value.contains('@') {
        "(not shown: it has an @)".to_owned()
    } else {
        format!("{value:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for url in [
            "http://localhost/",
            "http://LOCALHOST.:8080/",
            "http://127.0.0.1:9/",
            "http://127.10.20.30/",
            "http://[::1]:8080/",
            "http://[::ffff:127.0.0.1]/",
        ] {
            let url = Url::parse(url).expect(url);
            assert!(is_loopback_host(&url), "{url}");
            assert!(!is_cleartext_to_remote(&url), "{url}");
        }
        for url in [
            "http://example.com/",
            "http://localhost.example.com/",
            "http://sidecar.localhost/",
            "http://128.0.0.1/",
            "http://10.0.0.1/",
            "http://169.254.169.254/",
            "http://[::2]/",
            "http://0.0.0.0/",
        ] {
            let url = Url::parse(url).expect(url);
            assert!(!is_loopback_host(&url), "{url}");
            assert!(is_cleartext_to_remote(&url), "{url}");
        }
        let https = Url::parse("https://example.com/").expect("url");
        assert!(!is_cleartext_to_remote(&https));
        assert!(is_loopback_ip("127.0.0.2".parse().expect("ip")));
        assert!(!is_loopback_ip("10.0.0.1".parse().expect("ip")));
    }

    #[test]
    fn urls_with_credentials_are_refused_unechoed() {
        for bad in [
            "https://user:hunter2@host.example/",
            "https://user@host.example/",
            "not a url with an @",
        ] {
            let err = http_url("VAR", bad).expect_err(bad);
            assert_eq!(err.var, "VAR");
            assert!(!err.to_string().contains("hunter2"), "{err}");
            assert!(!err.to_string().contains("user@"), "{err}");
        }
        for bad in ["ftp://host/", "/relative", "host:80"] {
            assert!(http_url("VAR", bad).is_err(), "{bad}");
        }
        assert!(http_url("VAR", "http://host.example/").is_ok());
    }

    #[test]
    fn secrets_travel_in_clear_only_to_this_machine() {
        assert!(secure_url("VAR", "https://keys.example/certs", "keys").is_ok());
        assert!(secure_url("VAR", "http://127.0.0.1:9/certs", "keys").is_ok());
        let err =
            secure_url("VAR", "http://keys.example/certs", "the keys decide").expect_err("remote");
        assert!(
            err.problem.contains("loopback") && err.problem.contains("the keys decide"),
            "{err}"
        );
    }
}
