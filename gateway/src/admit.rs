//! Admission: which site a request is for, whether its `Origin` may send for that site, and the
//! CORS headers of the answer. Pure: header values in, a verdict out.

use std::collections::HashMap;

use pulse_protocol::ErrorCode;

use crate::config::SiteConfig;

/// The configured sites by key.
#[derive(Debug, Default)]
pub struct Sites {
    by_key: HashMap<String, SiteConfig>,
}

/// An admitted request: the site and the origin to echo in `Access-Control-Allow-Origin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// The site's key.
    pub key: String,
    /// The request's origin, when it sent one (and it is allowed).
    pub origin: Option<String>,
}

impl Sites {
    /// Indexes the configured sites.
    pub fn new(sites: &[SiteConfig]) -> Self {
        Self {
            by_key: sites.iter().map(|s| (s.key.clone(), s.clone())).collect(),
        }
    }

    /// Admits a request with site key `key` (from `?k=`), `Origin` header `origin` and `Host`
    /// header `host`, or says why not.
    pub fn admit(
        &self,
        key: Option<&str>,
        origin: Option<&str>,
        host: Option<&str>,
    ) -> Result<Admitted, ErrorCode> {
        let key = key
            .filter(|k| !k.is_empty())
            .ok_or(ErrorCode::MissingSiteKey)?;
        let (key, site) = self
            .by_key
            .get_key_value(key)
            .ok_or(ErrorCode::UnknownSiteKey)?;
        let Some(origin) = origin else {
            return if site.require_origin {
                Err(ErrorCode::OriginNotAllowed)
            } else {
                Ok(Admitted {
                    key: key.clone(),
                    origin: None,
                })
            };
        };
        let listed = site.origins.iter().any(|o| o.eq_ignore_ascii_case(origin));
        let same = site.allow_same_origin && host.is_some_and(|h| same_origin(origin, h));
        if listed || same {
            Ok(Admitted {
                key: key.clone(),
                origin: Some(origin.to_owned()),
            })
        } else {
            Err(ErrorCode::OriginNotAllowed)
        }
    }

    /// Whether `origin` may send for some site (used for preflight answers, which carry no key
    /// in a form we can trust).
    pub fn any_allows(&self, origin: &str, host: Option<&str>) -> bool {
        self.by_key.values().any(|s| {
            s.origins.iter().any(|o| o.eq_ignore_ascii_case(origin))
                || (s.allow_same_origin && host.is_some_and(|h| same_origin(origin, h)))
        })
    }
}

/// Whether `origin` (`scheme://host[:port]`) names the same host and port as the `Host` header.
fn same_origin(origin: &str, host: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    rest.eq_ignore_ascii_case(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sites() -> Sites {
        Sites::new(&[
            SiteConfig {
                key: "news".into(),
                origins: vec!["https://news.example".into()],
                allow_same_origin: false,
                require_origin: true,
            },
            SiteConfig {
                key: "demo".into(),
                origins: vec![],
                allow_same_origin: true,
                require_origin: false,
            },
        ])
    }

    #[test]
    fn keys_and_origins() {
        let s = sites();
        assert_eq!(s.admit(None, None, None), Err(ErrorCode::MissingSiteKey));
        assert_eq!(
            s.admit(Some("nope"), None, None),
            Err(ErrorCode::UnknownSiteKey)
        );
        assert_eq!(
            s.admit(Some("news"), Some("https://news.example"), None)
                .unwrap()
                .origin
                .as_deref(),
            Some("https://news.example")
        );
        assert_eq!(
            s.admit(Some("news"), Some("https://evil.example"), None),
            Err(ErrorCode::OriginNotAllowed)
        );
        assert_eq!(
            s.admit(Some("news"), None, None),
            Err(ErrorCode::OriginNotAllowed)
        );
        assert!(s.admit(Some("demo"), None, None).is_ok());
        assert!(
            s.admit(
                Some("demo"),
                Some("http://10.0.0.5:9000"),
                Some("10.0.0.5:9000")
            )
            .is_ok()
        );
        assert_eq!(
            s.admit(
                Some("demo"),
                Some("http://evil.example"),
                Some("10.0.0.5:9000")
            ),
            Err(ErrorCode::OriginNotAllowed)
        );
        assert!(s.any_allows("https://news.example", None));
        assert!(!s.any_allows("https://evil.example", Some("x")));
    }
}
