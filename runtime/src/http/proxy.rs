use std::net::IpAddr;

use http::uri::{Scheme, Uri};

/// Which proxy, if any, a request goes through: `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY` and
/// `NO_PROXY` (either case; lower-case wins), read once.
///
/// Only `http://host[:port]` proxies are used (user info becomes `Proxy-Authorization:
/// Basic`); another scheme (`socks5://`, `https://`) is ignored with a debug log. A request to a
/// loopback IP literal (`127.0.0.0/8`, `[::1]`) never uses a proxy. `localhost` is a name and
/// is proxied like any other unless `NO_PROXY` lists it. `NO_PROXY` is comma-separated: `*`
/// (everything), a host name (matching it and its subdomains, with or without a leading dot),
/// or an IP literal (exact); CIDR ranges and ports are not understood.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyConfig {
    /// For `http:` URLs.
    pub http: Option<Proxy>,
    /// For `https:` URLs (through a `CONNECT` tunnel).
    pub https: Option<Proxy>,
    /// `NO_PROXY` entries, lower-case, leading dots removed.
    pub no_proxy: Vec<String>,
}

/// An HTTP proxy: where to connect and the `Proxy-Authorization` value, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    /// Host name or IP literal (without brackets).
    pub host: String,
    /// Port (default 80).
    pub port: u16,
    /// `Basic …` from the proxy URL's user info.
    pub authorization: Option<http::HeaderValue>,
}

impl ProxyConfig {
    /// No proxy at all.
    pub fn none() -> ProxyConfig {
        ProxyConfig::default()
    }

    /// From this process's environment.
    pub fn from_process_env() -> ProxyConfig {
        ProxyConfig::from_env(&|name| std::env::var(name).ok())
    }

    /// From `env` (looks up `http_proxy`, `HTTP_PROXY`, … ; an empty value counts as unset).
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> ProxyConfig {
        let var = |lower: &str| {
            [lower.to_owned(), lower.to_ascii_uppercase()]
                .iter()
                .find_map(|name| env(name).filter(|v| !v.trim().is_empty()))
        };
        let all = var("all_proxy");
        let http = var("http_proxy").or_else(|| all.clone());
        let https = var("https_proxy").or(all);
        ProxyConfig {
            http: http.as_deref().and_then(Proxy::parse),
            https: https.as_deref().and_then(Proxy::parse),
            no_proxy: var("no_proxy")
                .unwrap_or_default()
                .split(',')
                .map(|e| e.trim().trim_start_matches('.').to_ascii_lowercase())
                .filter(|e| !e.is_empty())
                .collect(),
        }
    }

    /// The proxy for a request to `host` (no brackets) over `scheme`, or `None` to connect
    /// directly.
    pub fn for_target(&self, scheme: &Scheme, host: &str) -> Option<&Proxy> {
        let proxy = if *scheme == Scheme::HTTPS {
            self.https.as_ref()
        } else {
            self.http.as_ref()
        }?;
        if let Ok(ip) = host.parse::<IpAddr>() {
            if ip.is_loopback() {
                return None;
            }
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let bypass = self.no_proxy.iter().any(|entry| {
            entry == "*"
                || host == *entry
                || (host.len() > entry.len()
                    && host.ends_with(entry.as_str())
                    && host.as_bytes()[host.len() - entry.len() - 1] == b'.')
        });
        (!bypass).then_some(proxy)
    }
}

impl Proxy {
    /// Parses `http://[user[:pass]@]host[:port][/]`; a bare `host:port` is taken as http.
    fn parse(url: &str) -> Option<Proxy> {
        let url = url.trim();
        let with_scheme = if url.contains("://") {
            url.to_owned()
        } else {
            format!("http://{url}")
        };
        let uri: Uri = match with_scheme.parse() {
            Ok(uri) => uri,
            Err(e) => {
                tracing::debug!("ignoring unparsable proxy URL: {e}");
                return None;
            }
        };
        if uri.scheme() != Some(&Scheme::HTTP) {
            tracing::debug!(scheme = ?uri.scheme_str(), "ignoring a proxy that is not http://");
            return None;
        }
        let authority = uri.authority()?.as_str();
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let hostport: http::uri::Authority = hostport.parse().ok()?;
        let host = hostport.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return None;
        }
        let authorization = userinfo.and_then(|u| {
            use base64::Engine as _;
            let encoded = base64::engine::general_purpose::STANDARD.encode(u);
            http::HeaderValue::from_str(&format!("Basic {encoded}")).ok()
        });
        Some(Proxy {
            host: host.to_owned(),
            port: hostport.port_u16().unwrap_or(80),
            authorization,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> ProxyConfig {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ProxyConfig::from_env(&move |name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn http_and_https_proxies_come_from_their_variables_or_all_proxy() {
        let c = config(&[("HTTP_PROXY", "http://p:3128"), ("ALL_PROXY", "q:8080")]);
        let http = c
            .for_target(&Scheme::HTTP, "example.com")
            .expect("http proxy");
        assert_eq!((http.host.as_str(), http.port), ("p", 3128));
        let https = c
            .for_target(&Scheme::HTTPS, "example.com")
            .expect("all proxy");
        assert_eq!((https.host.as_str(), https.port), ("q", 8080));
        assert_eq!(config(&[]).for_target(&Scheme::HTTP, "example.com"), None);
    }

    #[test]
    fn loopback_literals_and_no_proxy_entries_bypass_the_proxy() {
        let c = config(&[
            ("http_proxy", "http://user:pw@p"),
            ("NO_PROXY", "internal.example, .corp,10.1.2.3"),
        ]);
        for host in [
            "127.0.0.1",
            "127.9.9.9",
            "::1",
            "internal.example",
            "a.internal.example",
            "x.corp",
            "10.1.2.3",
        ] {
            assert_eq!(c.for_target(&Scheme::HTTP, host), None, "{host}");
        }
        for host in [
            "localhost",
            "example.com",
            "notinternal.example",
            "10.1.2.4",
        ] {
            let proxy = c.for_target(&Scheme::HTTP, host).expect(host);
            assert_eq!(proxy.port, 80);
            assert_eq!(
                proxy.authorization.as_ref().map(|v| v.as_bytes()),
                Some(&b"Basic dXNlcjpwdw=="[..])
            );
        }
        assert_eq!(
            config(&[("http_proxy", "p:1"), ("no_proxy", "*")]).for_target(&Scheme::HTTP, "a"),
            None
        );
    }

    #[test]
    fn non_http_proxies_are_ignored() {
        let c = config(&[
            ("https_proxy", "socks5://p:1080"),
            ("http_proxy", "https://p:1"),
        ]);
        assert_eq!(c, ProxyConfig::none());
    }
}
