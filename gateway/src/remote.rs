//! The admin API of a running gateway, called from the command line (`gateway limits`,
//! `gateway bundle show|push|rollback`, `gateway reader`).

use anyhow::Context;
use pulse_gateway::{Config, TOKEN_ENV};

/// Calls the admin API of the running gateway this config describes, and returns its JSON.
pub(crate) fn admin_call(
    config: &Config,
    admin: Option<String>,
    token: Option<String>,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let base = match admin {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None if config.server.admin_listen.port() == 0 => {
            anyhow::bail!(
                "server.admin_listen has port 0: name the running gateway's admin address with --admin URL"
            )
        }
        None => format!("http://{}", config.server.admin_listen),
    };
    let token = match token {
        Some(t) => t,
        None => {
            let path = pulse_gateway::token_file(&config.server.data);
            std::env::var(TOKEN_ENV)
                .ok()
                .filter(|t| !t.is_empty())
                .or_else(|| config.server.admin_token.clone())
                .or_else(|| {
                    std::fs::read_to_string(&path)
                        .ok()
                        .map(|t| t.trim().to_owned())
                })
                .with_context(|| {
                    format!(
                        "no admin token: pass --token, set {TOKEN_ENV}, or run where {} exists",
                        path.display()
                    )
                })?
        }
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(10)))
        .build()
        .into();
    let url = format!("{base}{path}");
    let auth = format!("Bearer {token}");
    let mut response = match (method, body) {
        ("GET", _) => agent.get(&url).header("authorization", &auth).call(),
        ("DELETE", _) => agent.delete(&url).header("authorization", &auth).call(),
        ("POST", body) => agent
            .post(&url)
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .send(body.unwrap_or_default().to_string()),
        (_, body) => agent
            .put(&url)
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .send(body.unwrap_or_default().to_string()),
    }
    .with_context(|| format!("calling {url}"))?;
    let status = response.status();
    let text = response.body_mut().read_to_string()?;
    if status.is_success() {
        Ok(serde_json::from_str(&text)?)
    } else {
        anyhow::bail!("{url} answered {status}: {text}")
    }
}

/// Percent-encodes a path segment (reader keys may hold any character).
pub(crate) fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `a.b=1 c=2` → `{"a":{"b":1},"c":2}`; values are whole numbers.
pub(crate) fn limits_patch(changes: &[String]) -> anyhow::Result<serde_json::Value> {
    let mut patch = serde_json::Map::new();
    for change in changes {
        let (key, value) = change
            .split_once('=')
            .with_context(|| format!("{change:?} is not KEY=VALUE"))?;
        let value: u64 = value
            .trim()
            .parse()
            .with_context(|| format!("{change:?}: the value must be a whole number"))?;
        match key.trim().split_once('.') {
            Some((limit, field)) => {
                let entry = patch
                    .entry(limit.to_owned())
                    .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
                let Some(map) = entry.as_object_mut() else {
                    anyhow::bail!("{change:?}: {limit} is set twice in different ways");
                };
                map.insert(field.to_owned(), value.into());
            }
            None => {
                patch.insert(key.trim().to_owned(), value.into());
            }
        }
    }
    Ok(serde_json::Value::Object(patch))
}
