//! `[[sites]]`: a publisher's site, its origins, tokens and server secret.

use super::*;

/// `[[sites]]`: one publisher site.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// The site key pages send as `?k=` (1–64 characters of `[A-Za-z0-9_-]`).
    pub key: String,
    /// Origins allowed to send with this key, exactly as browsers send them
    /// (`https://news.example`, no path). Default: none.
    #[serde(default)]
    pub origins: Vec<String>,
    /// Also allow pages served by the gateway itself: an `Origin` that is one of
    /// `server.public_origins` or one of the gateway's listen addresses (never whatever the
    /// request's `Host` says). Default false.
    #[serde(default)]
    pub allow_same_origin: bool,
    /// Refuse requests without an `Origin` header (server-side senders). Default false.
    #[serde(default)]
    pub require_origin: bool,
    /// Keys that sign the site's reader tokens (JWT, `HS256` or `EdDSA`), passed to
    /// `pulse('identify', userId, {token})`. With keys, entitlements (`entitled.NAME` in rules)
    /// and the user id come only from a valid token; a batch without one counts under its
    /// anonymous id. Without keys, user ids are taken as sent and nothing is entitled.
    #[serde(default)]
    pub token_keys: Vec<crate::entitlements::TokenKeySpec>,
    /// The `iss` tokens must carry, when set.
    #[serde(default)]
    pub token_issuer: Option<String>,
    /// The `aud` tokens must carry, when set.
    #[serde(default)]
    pub token_audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds. Default 60.
    #[serde(default = "default_token_leeway")]
    pub token_leeway_s: u32,
    /// The secret the publisher's server sends (`Authorization: Bearer`) to ask for a decision
    /// directly (`POST /v1/decide`), or `env:NAME`; at least 32 bytes. Default none: the
    /// endpoint refuses this site.
    #[serde(default)]
    pub server_secret: Option<String>,
    /// Sign every decision given for this site (`signed` in the answer; Ed25519). Default true.
    #[serde(default = "default_true")]
    pub sign_decisions: bool,
}

fn default_token_leeway() -> u32 {
    60
}

impl SiteConfig {
    /// A site with this key and origins, everything else default.
    pub fn new(key: &str, origins: &[&str]) -> Self {
        Self {
            key: key.to_owned(),
            origins: origins.iter().map(|o| (*o).to_owned()).collect(),
            allow_same_origin: false,
            require_origin: false,
            token_keys: Vec::new(),
            token_issuer: None,
            token_audience: None,
            token_leeway_s: default_token_leeway(),
            server_secret: None,
            sign_decisions: true,
        }
    }

    /// The site's token keys, checked (`None` without keys); every problem is listed.
    pub fn tokens(&self) -> Result<Option<crate::entitlements::TokenKeys>, Vec<String>> {
        if self.token_keys.is_empty() {
            return Ok(None);
        }
        crate::entitlements::TokenKeys::new(
            &self.token_keys,
            self.token_issuer.clone(),
            self.token_audience.clone(),
            u64::from(self.token_leeway_s),
            &|name| std::env::var(name).ok(),
        )
        .map(Some)
    }

    /// The server secret, read from the environment when it says `env:NAME`.
    pub fn server_secret(&self) -> Result<Option<String>, String> {
        let Some(secret) = &self.server_secret else {
            return Ok(None);
        };
        let secret = match secret.strip_prefix("env:") {
            Some(name) => std::env::var(name).map_err(|_| format!("${name} is not set"))?,
            None => secret.clone(),
        };
        if secret.len() < 32 {
            return Err("at least 32 bytes".into());
        }
        Ok(Some(secret))
    }
}
