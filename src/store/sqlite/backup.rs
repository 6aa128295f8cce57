//! `posthorn backup`: a consistent copy of a live SQLite store.
//!
//! `VACUUM INTO` reads one snapshot of the database (WAL mode: the server's writer goes
//! on meanwhile, nothing waits) and writes it compacted into a new file, created mode
//! 0600 first like the database itself. The master key file beside the database is
//! copied beside the backup, so the two restore together: a backup is a database
//! (`sqlite://BACKUP`), opened as is, whose leases end when a server opens it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rusqlite::{Connection, OpenFlags};

use super::{beside, file_of};

/// What a backup wrote.
#[derive(Debug)]
pub struct Backup {
    pub bytes: u64,
    /// The copied key file, if the database had one beside it.
    pub key_file: Option<PathBuf>,
}

/// Copies the database at `url` into `to`, which must not exist.
pub fn run(url: &str, to: &Path) -> anyhow::Result<Backup> {
    let from = file_of(url)?;
    anyhow::ensure!(from.exists(), "no database at {}", from.display());
    let key_from = beside(&from, ".master-key");
    let key_to = beside(to, ".master-key");
    for target in [to, key_to.as_path()] {
        anyhow::ensure!(
            !target.exists(),
            "{} exists already: a backup never overwrites",
            target.display()
        );
    }
    write_private(to, &[]).with_context(|| format!("cannot create {}", to.display()))?;
    let copied = (|| -> anyhow::Result<u64> {
        let conn = Connection::open_with_flags(
            &from,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("cannot open {}", from.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let target = to.to_str().context("the backup path is not UTF-8")?;
        conn.execute("VACUUM INTO ?1", [target])
            .context("cannot copy the database")?;
        Ok(std::fs::metadata(to)?.len())
    })();
    let bytes = match copied {
        Ok(bytes) => bytes,
        Err(e) => {
            let _ = std::fs::remove_file(to);
            return Err(e);
        }
    };
    let key_file = match std::fs::read(&key_from) {
        Ok(key) => {
            write_private(&key_to, &key)
                .with_context(|| format!("cannot write {}", key_to.display()))?;
            Some(key_to)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", key_from.display())),
    };
    Ok(Backup { bytes, key_file })
}

/// Writes a new file readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
