//! `edged image import|ls|rm|pull`.

use std::path::{Path, PathBuf};

use super::error::Result;
use super::ImageStore;
use argh::FromArgs;

mod progress;

/// manage the node's images
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "image")]
pub struct ImageCmd {
    /// what to do
    #[argh(subcommand)]
    pub action: ImageAction,
}

/// What `edged image` does.
#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum ImageAction {
    /// `edged image import`.
    Import(ImageImport),
    /// `edged image ls`.
    Ls(ImageLs),
    /// `edged image rm`.
    Rm(ImageRm),
    /// `edged image pull`.
    Pull(ImagePull),
}

/// pull an image from its registry (the registry flags apply: mirrors, CAs, deadlines)
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "pull")]
pub struct ImagePull {
    /// the image reference (nginx, registry.example:5000/team/app:v1, ...@sha256:...)
    #[argh(positional)]
    pub reference: String,
    /// USER:PASS for the image's registry (else <root-dir>/config.json and
    /// $HOME/.docker/config.json)
    #[argh(option)]
    pub creds: Option<String>,
}

/// import an OCI layout or docker-save archive (a .tar, or a directory)
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "import")]
pub struct ImageImport {
    /// the archive
    #[argh(positional)]
    pub file: PathBuf,
}

/// list images
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "ls")]
pub struct ImageLs {}

/// remove an image
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "rm")]
pub struct ImageRm {
    /// the image reference or id
    #[argh(positional)]
    pub reference: String,
}

/// Runs one `edged image` command against the store under `root_dir`; pulls use `registry`.
pub fn run(root_dir: &Path, registry: &super::registry::Options, cmd: &ImageCmd) -> Result<()> {
    use super::error::IoContext;
    crate::paths::private_dir(root_dir).ctx(root_dir.display(), "open root dir")?;
    let store = ImageStore::open(root_dir)?;
    match &cmd.action {
        ImageAction::Import(a) => {
            for img in store.import(&a.file)? {
                let name = img
                    .names
                    .first()
                    .cloned()
                    .unwrap_or_else(|| "<none>".into());
                println!(
                    "imported {name} ({}, {})",
                    short_id(&img.id),
                    human_size(img.size)
                );
            }
        }
        ImageAction::Ls(_) => print!("{}", table(&store.list()?)),
        ImageAction::Pull(a) => {
            use super::registry::{self, Client, Credentials, Keyring};
            let mut keyring = Keyring::default();
            if let Some(c) = &a.creds {
                let c = Credentials::parse(c)
                    .map_err(|e| super::ImageError::invalid("--creds", "pull", e))?;
                keyring.extend(Keyring::single("", c));
            }
            keyring.extend(registry::creds::node_keyring(root_dir));
            let client = Client::new(registry.clone(), keyring);
            let view = progress::View::new(std::io::IsTerminal::is_terminal(&std::io::stdout()));
            // Beside the agent: no image GC here, only the free space.
            let room = |need: u64| {
                let u = store.usage().map_err(|e| e.to_string())?;
                if need > u.available {
                    return Err(format!(
                        "the pull needs about {} and {} has {} free",
                        human_size(need),
                        store.dir().display(),
                        human_size(u.available)
                    ));
                }
                Ok(())
            };
            let never = std::sync::atomic::AtomicBool::new(false);
            let pulled = registry::pull(
                &store,
                &client,
                &a.reference,
                &|p| view.update(p),
                &room,
                &never,
            )?;
            view.finish();
            let img = &pulled.image;
            println!(
                "pulled {} ({}, {}): {} fetched in {:.1}s ({})",
                super::reference::normalize(&a.reference).unwrap_or_else(|_| a.reference.clone()),
                short_id(&img.id),
                human_size(img.size),
                human_size(pulled.fetched),
                pulled.elapsed.as_secs_f64(),
                registry::rate(pulled.fetched, pulled.elapsed)
            );
        }
        ImageAction::Rm(a) => {
            let img = store.remove(&a.reference, false)?;
            let freed = store.prune_unreferenced()?;
            println!(
                "removed {} ({}); freed {}",
                a.reference,
                short_id(&img.id),
                human_size(freed.bytes)
            );
        }
    }
    Ok(())
}

/// The `image ls` table: IMAGE, ID, SIZE, LAST USED.
pub fn table(images: &[super::Image]) -> String {
    let mut rows = vec![[
        "IMAGE".to_string(),
        "ID".into(),
        "SIZE".into(),
        "LAST USED".into(),
    ]];
    for img in images {
        let names = if img.names.is_empty() {
            vec!["<none>".to_string()]
        } else {
            img.names.clone()
        };
        for n in names {
            let used = img.last_used.map_or("never".into(), |s| {
                crate::api::rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s))
            });
            rows.push([n, short_id(&img.id), human_size(img.size), used]);
        }
    }
    let mut w = [0usize; 4];
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let line = format!(
            "{:<a$}  {:<b$}  {:<c$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            a = w[0],
            b = w[1],
            c = w[2]
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The first 12 hex digits of an id.
pub fn short_id(id: &str) -> String {
    super::digest::hex_of(id).chars().take(12).collect()
}

/// Sizes as Docker prints them (powers of 1000).
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else {
        format!("{v:.3}{}", UNITS[u]).replace(".000", "")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1_982_256), "1.982MB");
        assert_eq!(human_size(2_000_000), "2MB");
    }
}
