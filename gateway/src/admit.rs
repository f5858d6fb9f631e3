//! Admission: which site a request is for and whether its `Origin` may send for that site.
//! "The gateway's own origin" (sites with `allow_same_origin`) means the configured
//! `server.public_origins` and the addresses the gateway listens on, never the request's
//! `Host` header, which the page's own script effectively chooses (DNS rebinding). Pure: header
//! values in, a verdict out.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use pulse_http::Bound;
use pulse_protocol::ErrorCode;

use crate::config::SiteConfig;
use crate::entitlements::TokenKeys;

/// The origins that are the gateway's own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnOrigins(Vec<String>);

impl OwnOrigins {
    /// The configured public origins, and the origins of the listen addresses: `http://` for
    /// cleartext, `https://` for TLS; a loopback address also as `localhost`, an unspecified
    /// one (`0.0.0.0`, `::`) as the loopback names only; the default port also without it.
    pub fn new(public: &[String], bound: Option<&Bound>) -> Self {
        let mut all: Vec<String> = public.iter().map(|o| o.to_ascii_lowercase()).collect();
        if let Some(bound) = bound {
            add_listener(&mut all, "http", bound.http, 80);
            if let Some(https) = bound.https {
                add_listener(&mut all, "https", https, 443);
            }
        }
        all.sort();
        all.dedup();
        Self(all)
    }

    /// Whether `origin` is one of them.
    pub fn contains(&self, origin: &str) -> bool {
        self.0.iter().any(|o| o.eq_ignore_ascii_case(origin))
    }

    /// The list.
    pub fn list(&self) -> &[String] {
        &self.0
    }
}

fn add_listener(all: &mut Vec<String>, scheme: &str, addr: SocketAddr, default_port: u16) {
    let ip = addr.ip();
    let mut hosts = Vec::new();
    if ip.is_unspecified() || ip.is_loopback() {
        hosts.push("localhost".to_owned());
    }
    if ip.is_unspecified() {
        hosts.push("127.0.0.1".to_owned());
        hosts.push("[::1]".to_owned());
    } else {
        hosts.push(match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        });
    }
    for host in hosts {
        let port = addr.port();
        all.push(format!("{scheme}://{host}:{port}"));
        if port == default_port {
            all.push(format!("{scheme}://{host}"));
        }
    }
}

/// One configured site.
#[derive(Debug, Clone)]
struct Site {
    origins: Vec<String>,
    allow_same_origin: bool,
    require_origin: bool,
    trust: Arc<Trust>,
}

/// What a site trusts: the keys of its reader tokens, the secret of its server, and whether its
/// decisions are signed.
#[derive(Debug, Default)]
pub struct Trust {
    /// The keys that sign its reader tokens (`None`: user ids as sent, nothing entitled).
    pub tokens: Option<TokenKeys>,
    /// The secret its server sends to `POST /v1/decide`.
    pub server_secret: Option<String>,
    /// Whether decisions given for it are signed.
    pub sign: bool,
}

impl Site {
    fn allows(&self, origin: &str, own: &OwnOrigins) -> bool {
        self.origins.iter().any(|o| o.eq_ignore_ascii_case(origin))
            || (self.allow_same_origin && own.contains(origin))
    }
}

/// The configured sites by key, with the gateway's own origins.
#[derive(Debug, Default)]
pub struct Sites {
    by_key: HashMap<Arc<str>, Site>,
    own: OwnOrigins,
}

/// An admitted request: the site, the origin to echo in `Access-Control-Allow-Origin`, and
/// what the site trusts.
#[derive(Debug, Clone)]
pub struct Admitted {
    /// The site's key.
    pub key: Arc<str>,
    /// The request's origin, when it sent one (and it is allowed).
    pub origin: Option<String>,
    /// The site's keys and settings of trust.
    pub trust: Arc<Trust>,
}

impl PartialEq for Admitted {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key && self.origin == other.origin
    }
}

impl Sites {
    /// Indexes the configured sites.
    pub fn new(sites: &[SiteConfig], own: OwnOrigins) -> Self {
        Self {
            by_key: sites
                .iter()
                .map(|s| {
                    // The configuration was checked: a failure here is a secret gone from the
                    // environment since; then no token vouches and the server is refused.
                    let tokens = s.tokens().unwrap_or_else(|problems| {
                        tracing::error!(site = %s.key, ?problems, "token keys unusable: no token will vouch");
                        TokenKeys::new(&[], None, None, 0, &|_| None).ok()
                    });
                    let site = Site {
                        origins: s.origins.clone(),
                        allow_same_origin: s.allow_same_origin,
                        require_origin: s.require_origin,
                        trust: Arc::new(Trust {
                            tokens,
                            server_secret: s.server_secret().ok().flatten(),
                            sign: s.sign_decisions,
                        }),
                    };
                    (Arc::from(s.key.as_str()), site)
                })
                .collect(),
            own,
        }
    }

    /// The same sites with other own origins.
    pub fn with_own(&self, own: OwnOrigins) -> Self {
        Self {
            by_key: self.by_key.clone(),
            own,
        }
    }

    /// The gateway's own origins these sites were built with.
    pub fn own(&self) -> &OwnOrigins {
        &self.own
    }

    /// Admits a request with site key `key` (from `?k=`) and `Origin` header `origin`, or says
    /// why not.
    pub fn admit(&self, key: Option<&str>, origin: Option<&str>) -> Result<Admitted, ErrorCode> {
        let key = key
            .filter(|k| !k.is_empty())
            .ok_or(ErrorCode::MissingSiteKey)?;
        let (key, site) = self
            .by_key
            .get_key_value(key)
            .ok_or(ErrorCode::UnknownSiteKey)?;
        match origin {
            None if site.require_origin => Err(ErrorCode::OriginNotAllowed),
            None => Ok(Admitted {
                key: Arc::clone(key),
                origin: None,
                trust: Arc::clone(&site.trust),
            }),
            Some(origin) if site.allows(origin, &self.own) => Ok(Admitted {
                key: Arc::clone(key),
                origin: Some(origin.to_owned()),
                trust: Arc::clone(&site.trust),
            }),
            Some(_) => Err(ErrorCode::OriginNotAllowed),
        }
    }

    /// The trust of the site with key `key`, for a server that authenticated as it.
    pub fn trust(&self, key: &str) -> Option<(Arc<str>, Arc<Trust>)> {
        self.by_key
            .get_key_value(key)
            .map(|(k, s)| (Arc::clone(k), Arc::clone(&s.trust)))
    }

    /// Whether `origin` may send for some site (used for preflight answers, which carry no key
    /// in a form we can trust).
    pub fn any_allows(&self, origin: &str) -> bool {
        self.by_key.values().any(|s| s.allows(origin, &self.own))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(http: &str, https: Option<&str>) -> Bound {
        Bound {
            http: http.parse().unwrap(),
            https: https.map(|a| a.parse().unwrap()),
            quic: None,
            admin: None,
        }
    }

    fn sites(own: OwnOrigins) -> Sites {
        Sites::new(
            &[
                SiteConfig {
                    require_origin: true,
                    ..SiteConfig::new("news", &["https://news.example"])
                },
                SiteConfig {
                    allow_same_origin: true,
                    ..SiteConfig::new("demo", &[])
                },
            ],
            own,
        )
    }

    #[test]
    fn keys_and_origins() {
        let s = sites(OwnOrigins::new(&[], Some(&bound("10.0.0.5:9000", None))));
        assert_eq!(s.admit(None, None), Err(ErrorCode::MissingSiteKey));
        assert_eq!(s.admit(Some("nope"), None), Err(ErrorCode::UnknownSiteKey));
        assert_eq!(
            s.admit(Some("news"), Some("https://news.example"))
                .unwrap()
                .origin
                .as_deref(),
            Some("https://news.example")
        );
        assert_eq!(
            s.admit(Some("news"), Some("https://evil.example")),
            Err(ErrorCode::OriginNotAllowed)
        );
        assert_eq!(
            s.admit(Some("news"), None),
            Err(ErrorCode::OriginNotAllowed)
        );
        assert!(s.admit(Some("demo"), None).is_ok());
        assert!(s.admit(Some("demo"), Some("http://10.0.0.5:9000")).is_ok());
        assert_eq!(
            s.admit(Some("demo"), Some("http://evil.example")),
            Err(ErrorCode::OriginNotAllowed)
        );
        assert!(s.any_allows("https://news.example"));
        assert!(!s.any_allows("https://evil.example"));
    }

    #[test]
    fn own_origins_come_from_the_config_and_the_listeners_only() {
        let own = OwnOrigins::new(
            &["https://Pulse.Example.com".into()],
            Some(&bound("127.0.0.1:8080", Some("0.0.0.0:443"))),
        );
        for yes in [
            "https://pulse.example.com",
            "http://127.0.0.1:8080",
            "http://localhost:8080",
            "https://localhost",
            "https://localhost:443",
            "https://127.0.0.1",
            "https://[::1]",
        ] {
            assert!(own.contains(yes), "{yes}: {:?}", own.list());
        }
        for no in [
            "http://evil.example",
            "http://127.0.0.1:8081",
            "https://127.0.0.1:8080",
            "http://localhost",
        ] {
            assert!(!own.contains(no), "{no}");
        }
        let v6 = OwnOrigins::new(&[], Some(&bound("[2001:db8::1]:80", None)));
        assert!(v6.contains("http://[2001:db8::1]"));
        assert!(v6.contains("http://[2001:db8::1]:80"));
    }
}
