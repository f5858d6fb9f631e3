//! The admin API's bearer token: where it comes from, and generating one on first start.

use std::path::{Path, PathBuf};

use crate::config::Config;

/// The environment variable that overrides `server.admin_token`.
pub const TOKEN_ENV: &str = "PULSE_ADMIN_TOKEN";

/// Where a token came from, for the start-up message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `PULSE_ADMIN_TOKEN`.
    Env,
    /// `server.admin_token`.
    Config,
    /// A file under the data folder (generated on first start).
    File(PathBuf),
}

/// The file holding a generated token.
pub fn token_file(data: &Path) -> PathBuf {
    data.join("admin.token")
}

/// The admin token: `PULSE_ADMIN_TOKEN`, else `server.admin_token`, else `<data>/admin.token`,
/// generated (random, 256 bits, file mode 0600) when missing.
pub fn admin_token(config: &Config) -> std::io::Result<(String, TokenSource)> {
    if let Some(token) = std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty()) {
        return Ok((token, TokenSource::Env));
    }
    if let Some(token) = config.server.admin_token.clone().filter(|t| !t.is_empty()) {
        return Ok((token, TokenSource::Config));
    }
    let path = token_file(&config.server.data);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let token = text.trim().to_owned();
        if !token.is_empty() {
            return Ok((token, TokenSource::File(path)));
        }
    }
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| std::io::Error::other(e.to_string()))?;
    let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::create_dir_all(&config.server.data)?;
    write_private(&path, token.as_bytes())?;
    Ok((token, TokenSource::File(path)))
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(bytes)
}
