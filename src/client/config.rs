//! Where the client finds its server and key: flags, then `POSTHORN_URL` and
//! `POSTHORN_API_KEY`, then a named profile of the config file that `posthorn login`
//! writes.
//!
//! Policy: the file is `$POSTHORN_CONFIG`, else `$XDG_CONFIG_HOME/posthorn/config.toml`,
//! else `~/.config/posthorn/config.toml`; it holds keys, so it is written with mode
//! 0600 (and put back to 0600 if it was looser) and never printed.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::api::{ClientError, ClientResult};

/// The profile used when none is named.
pub const DEFAULT_PROFILE: &str = "default";

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ConfigFile {
    /// The profile used when none is named (`posthorn login` sets it to the last one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Profile {
    pub url: String,
    pub key: String,
}

pub fn path() -> ClientResult<PathBuf> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(file) = var("POSTHORN_CONFIG") {
        return Ok(PathBuf::from(file));
    }
    let dir = match (var("XDG_CONFIG_HOME"), var("HOME")) {
        (Some(xdg), _) => PathBuf::from(xdg),
        (None, Some(home)) => PathBuf::from(home).join(".config"),
        (None, None) => {
            return Err(ClientError::Usage(
                "no config file: set POSTHORN_CONFIG, XDG_CONFIG_HOME or HOME".into(),
            ))
        }
    };
    Ok(dir.join("posthorn").join("config.toml"))
}

impl ConfigFile {
    /// The file's profiles; none when it does not exist.
    pub fn load() -> ClientResult<Self> {
        let path = path()?;
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| {
                ClientError::Usage(format!(
                    "{} is not a posthorn config file: {e}",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(ClientError::Usage(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }

    /// The profile named, or the default one.
    pub fn profile(&self, name: Option<&str>) -> Option<&Profile> {
        let name = name.or(self.default.as_deref()).unwrap_or(DEFAULT_PROFILE);
        self.profiles.get(name)
    }

    /// Writes the file, mode 0600, through a temporary file renamed over it.
    pub fn save(&self) -> ClientResult<PathBuf> {
        use std::io::Write;
        #[cfg(unix)]
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let path = path()?;
        let failed =
            |e: std::io::Error| ClientError::Usage(format!("cannot write {}: {e}", path.display()));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(failed)?;
        }
        let text = toml::to_string(self)
            .map_err(|e| ClientError::Usage(format!("cannot write the config: {e}")))?;
        let temp = path.with_extension("toml.tmp");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        options.mode(0o600);
        let mut file = options.open(&temp).map_err(failed)?;
        #[cfg(unix)]
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(failed)?;
        file.write_all(text.as_bytes()).map_err(failed)?;
        file.sync_all().map_err(failed)?;
        std::fs::rename(&temp, &path).map_err(failed)?;
        Ok(path)
    }
}
